"""ControlNet files in every layout people download: lllyasviel's original single file
(`control_model.*`, as `.safetensors` and as a `.pth` pickle) and diffusers' layout
(`controlnet_cond_embedding.*`, the `diffusion_pytorch_model.safetensors` of Hugging Face repos),
for SD1, SD2 and SDXL; each must load to exactly the network that was saved, say which
architecture it is for, and drive the loop of a model of that architecture (and only that one)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def tiny_controlnet(family: str, seed: int = 1):
    from diffusers import ControlNetModel
    from tiny_models import build_tiny_models

    base = build_tiny_models(family, seed=seed)
    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(base.unet, conditioning_embedding_out_channels=(16, 32, 96, 256)).eval()
    with torch.no_grad():  # zero convs start at 0: make every output depend on every weight
        for name, p in cn.named_parameters():
            strong = name.startswith(("controlnet_down_blocks", "controlnet_mid_block"))  # visible residuals
            p.add_(torch.randn(p.shape) * (0.5 if strong else 0.05))
    return cn


def write_layouts(cn, folder: Path, stem: str) -> dict[str, Path]:
    from safetensors.torch import load_file, save_file

    from webui.models.controlnet_io import save_controlnet

    original = save_controlnet(folder / f"{stem}.safetensors", cn)
    diffusers = folder / f"{stem}_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in cn.state_dict().items()}, str(diffusers))
    pth = folder / f"{stem}.pth"  # the ControlNet-v1-1 release format: a torch pickle of control_model.* keys
    torch.save(load_file(str(original)), str(pth))
    return {"original": original, "diffusers": diffusers, "pth": pth}


def residuals(cn, family: str):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 7, cn.config.cross_attention_dim, generator=g)
    hint = torch.rand(1, 3, 64, 64, generator=g)
    kw = {}
    if family == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    with torch.no_grad():
        down, mid = cn(x, torch.tensor([500]), encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False, **kw)
    return list(down) + [mid]


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_every_layout_loads_to_the_saved_network(tmp_path: Path, family: str) -> None:
    from webui.models.controlnet_io import check_controlnet_file, load_controlnet

    cn = tiny_controlnet(family)
    want = residuals(cn, family)
    assert max(float(t.abs().max()) for t in want) > 0.01  # the comparison below means something
    for layout, path in write_layouts(cn, tmp_path, f"cn_{family}").items():
        assert check_controlnet_file(path).error is None and check_controlnet_file(path).family == family, layout
        got = residuals(load_controlnet(path), family)
        assert all(torch.equal(a, b) for a, b in zip(want, got)), layout


def test_files_that_are_not_controlnets_are_named_for_what_they_are(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from webui.models.controlnet_io import check_controlnet_file
    from webui.models.file_io import ModelFileError

    def z() -> torch.Tensor:
        return torch.zeros(4, 4)
    cases = {
        "adapter": ({"body.0.block1.weight": z(), "conv_in.weight": z()}, "T2I-Adapter"),
        "control_lora": ({"lora_controlnet": z(), "input_blocks.1.0.up": z()}, "Control-LoRA"),
        "checkpoint": ({"model.diffusion_model.input_blocks.0.0.weight": z()}, "Stable Diffusion checkpoint"),
        "random": ({"foo.weight": z()}, "not a ControlNet"),
    }
    for stem, (tensors, words) in cases.items():
        save_file(tensors, str(tmp_path / f"{stem}.safetensors"))
        assert words in (check_controlnet_file(tmp_path / f"{stem}.safetensors").error or ""), stem
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(ModelFileError):
        check_controlnet_file(tmp_path / "cut.safetensors")


@pytest.fixture(scope="module")
def sdxl_service(tmp_path_factory: pytest.TempPathFactory):
    from tiny_models import make_tiny_checkpoint
    from webui.memory.devices import DevicePolicy
    from webui.models.registry import CheckpointRegistry
    from webui.services.model_service import ModelService
    from webui.services.txt2img import Txt2ImgService
    from webui.settings import Settings

    tmp = tmp_path_factory.mktemp("cnxl")
    (tmp / "ckpt").mkdir()
    make_tiny_checkpoint(tmp / "ckpt" / "tiny-xl.safetensors", family="sdxl", seed=1)
    cn_dir = tmp / "ControlNet"
    cn_dir.mkdir()
    write_layouts(tiny_controlnet("sdxl"), cn_dir, "xl_cn")
    write_layouts(tiny_controlnet("sd1"), cn_dir, "sd1_cn")
    reg = CheckpointRegistry(tmp / "ckpt", tmp / "cache")
    reg.refresh()
    models = ModelService(reg, DevicePolicy.from_flags(["all"], None, "full", True, True), controlnet_dir=cn_dir)
    models.load("tiny-xl.safetensors")
    settings = Settings.load(tmp / "config.json")
    settings.set("live_previews_enable", False, save=False)
    return Txt2ImgService(models, settings, tmp / "out")


def generate(svc, units: list[dict]) -> np.ndarray:
    from webui.services.jobs import JobState
    from webui.services.requests import Txt2ImgRequest

    req = Txt2ImgRequest(prompt="a cat", steps=4, cfg_scale=5, seed=3, width=64, height=64,
                         alwayson_scripts={"controlnet": {"args": units}})
    return np.asarray(svc.run(req, JobState("t", "test"), save=False).images[0], np.int16)


def test_sdxl_controlnets_of_both_layouts_drive_an_sdxl_model_and_refuse_sd1(sdxl_service) -> None:
    from webui.services.txt2img import GenerationError

    hint = np.zeros((64, 64, 3), np.uint8)
    hint[16:48, 8:24] = 255

    def unit(model: str) -> dict:
        import base64
        import io

        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(hint).save(buf, format="PNG")
        return {"enabled": True, "module": "none", "model": model, "image": base64.b64encode(buf.getvalue()).decode(),
                "weight": 1.0, "resize_mode": "Just Resize"}

    plain = generate(sdxl_service, [])
    original = generate(sdxl_service, [unit("xl_cn")])
    diffusers = generate(sdxl_service, [unit("xl_cn_diffusers")])
    # the control residuals reach the SDXL UNet (measured: mean 1.26, max 9 levels on this random tiny model)
    assert np.abs(original - plain).mean() > 0.5 and np.abs(original - plain).max() >= 5
    assert np.array_equal(original, diffusers)  # the same network, whichever layout it came in
    with pytest.raises(GenerationError, match="sd1_cn does not fit the loaded model"):
        generate(sdxl_service, [unit("sd1_cn")])
    assert np.array_equal(generate(sdxl_service, []), plain)  # the refused unit changed nothing
