"""A1111's `modules` package for extensions, mapped onto our services (see `../binding.py`).

Only extension code imports this (the loader puts `webui/extensions/compat` on `sys.path`); our
own code never does. What A1111 exposes of its LDM / k-diffusion internals is not here: this app
runs diffusers models through its own sampler, so there is no `sd_hijack`, no `ldm.*` model and no
`KDiffusionSampler` to patch. Importing one of `UNSUPPORTED` raises ImportError saying so (an
extension's `try: import ... except ImportError:` fallback then works) instead of handing out an
object that would silently do nothing.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Sequence

# module → why it is not offered (for the README's table and the ImportError)
UNSUPPORTED: dict[str, str] = {
    "modules.sd_hijack": "patches the LDM model's text encoder and attention",
    "modules.sd_hijack_clip": "LDM text-encoder wrapper",
    "modules.sd_hijack_open_clip": "LDM text-encoder wrapper",
    "modules.sd_hijack_optimizations": "LDM attention replacements",
    "modules.sd_hijack_unet": "LDM UNet patches",
    "modules.sd_hijack_utils": "monkey-patching helpers for LDM internals",
    "modules.sd_hijack_checkpoint": "LDM gradient checkpointing",
    "modules.sd_hijack_inpainting": "LDM inpainting patches",
    "modules.sd_samplers_kdiffusion": "k-diffusion sampler classes (KDiffusionSampler)",
    "modules.sd_samplers_timesteps": "LDM timestep sampler classes",
    "modules.sd_samplers_common": "LDM sampler internals",
    "modules.sd_samplers_cfg_denoiser": "the LDM CFG denoiser class (use script_callbacks.on_cfg_denoiser)",
    "modules.sd_samplers_extra": "k-diffusion sampler internals",
    "modules.sd_models_config": "LDM model configs",
    "modules.sd_models_xl": "LDM SDXL model patches",
    "modules.sd_unet": "LDM UNet replacement registry",
    "modules.sd_vae_approx": "LDM VAE approximation",
    "modules.lowvram": "LDM low-VRAM hooks (memory is placed by webui/memory here)",
    "modules.sd_disable_initialization": "LDM load-time patches",
    "modules.xlmr": "LDM alt-diffusion text encoder",
    "modules.hypernetworks": "LDM hypernetwork attention patches",
    "modules.textual_inversion": "LDM textual-inversion training",
    "ldm": "the CompVis LDM package (models here are diffusers modules)",
    "sgm": "Stability's generative-models package (models here are diffusers modules)",
    "k_diffusion": "A1111's copy of k-diffusion (samplers here are our own)",
    "repositories": "A1111's vendored repositories",
}


def _unsupported_root(fullname: str) -> str | None:
    for name in UNSUPPORTED:
        if fullname == name or fullname.startswith(name + "."):
            return name
    return None


class _UnsupportedFinder(importlib.abc.MetaPathFinder):
    """Last on sys.meta_path: reached only when nothing else found the module (a really installed
    `k_diffusion` still imports), and then says why it is not offered."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        root = _unsupported_root(fullname)
        if root is None:
            return None
        raise ImportError(f"{fullname} is not supported by this web UI ({UNSUPPORTED[root]}): it runs diffusers "
                          f"models with its own sampler, so A1111's LDM/k-diffusion internals do not exist here",
                          name=fullname)


if not any(isinstance(f, _UnsupportedFinder) for f in sys.meta_path):
    sys.meta_path.append(_UnsupportedFinder())
