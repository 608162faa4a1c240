"""A1111's `modules.sd_models`: the checkpoint list and the loaded model, as A1111 names them.

`checkpoints_list` is {title: CheckpointInfo} of the app's checkpoint registry; each entry has
A1111's fields (`title`, `filename`, `name`, `model_name`, `name_for_hash`, `hash`, `sha256`,
`shorthash`, `short_title`, `ids`). `SDModel` wraps the loaded model (`shared.sd_model`): A1111's
`sd_checkpoint_info`, `sd_model_checkpoint`, `sd_model_hash`, `is_sdxl`, `is_sd1`, `is_sd2`, and
otherwise the attributes of our model (`unet`, `vae`, `text_encoders`, ... diffusers modules — not
LDM's `model.diffusion_model`, `cond_stage_model` or `first_stage_model`, which do not exist here).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from webui.extensions.compat import binding
from webui.hashes import legacy_model_hash


class CheckpointInfo:
    """A1111's CheckpointInfo over one entry of our registry."""

    def __init__(self, info: Any) -> None:
        self._info = info

    @property
    def webui_info(self) -> Any:
        """Our `webui.models.registry.CheckpointInfo`."""
        return self._info

    @property
    def filename(self) -> str:
        return str(self._info.path)

    @property
    def name_for_hash(self) -> str:
        return self._info.name

    @property
    def hash(self) -> str | None:
        """A1111's old 8-hex `model_hash` (computed once from 64 KiB of the file)."""
        if self._info.legacy_hash is None and not self._info.is_folder:
            try:
                self._info.legacy_hash = legacy_model_hash(self._info.path)
            except OSError:
                return None
        return self._info.legacy_hash

    @property
    def ids(self) -> list[str]:
        return self._info.aliases()

    @property
    def is_safetensors(self) -> bool:
        return str(self._info.path).lower().endswith(".safetensors")

    def calculate_shorthash(self) -> str | None:
        binding.current().registry.ensure_hash(self._info)
        return self._info.shorthash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._info, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CheckpointInfo):
            return other._info.path == self._info.path
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self._info.path))

    def __repr__(self) -> str:
        return f"CheckpointInfo({self._info.title!r})"


class SDModel:
    """The loaded model as `shared.sd_model` (A1111's LatentDiffusion names where they exist here)."""

    def __init__(self, loaded: Any) -> None:
        self._loaded = loaded

    @property
    def webui_model(self) -> Any:
        """Our `webui.services.model_service.LoadedModel`."""
        return self._loaded

    @property
    def sd_checkpoint_info(self) -> CheckpointInfo:
        return CheckpointInfo(self._loaded.info)

    @property
    def sd_model_checkpoint(self) -> str:
        return str(self._loaded.info.path)

    @property
    def sd_model_hash(self) -> str | None:
        return self._loaded.sd_model_hash

    @property
    def is_sdxl(self) -> bool:
        return self._loaded.is_sdxl

    @property
    def is_sd1(self) -> bool:
        return self._loaded.is_sd1

    @property
    def is_sd2(self) -> bool:
        return self._loaded.is_sd2

    @property
    def is_sd3(self) -> bool:
        return False

    @property
    def is_ssd(self) -> bool:
        return False

    @property
    def device(self) -> Any:
        return self._loaded.policy.device

    @property
    def dtype(self) -> Any:
        return self._loaded.policy.unet_dtype

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for obj in (self._loaded, self._loaded.sd):
            try:
                return getattr(obj, name)
            except AttributeError:
                continue
        raise AttributeError(f"sd_model has no {name!r} here (this app runs diffusers modules; A1111's LDM "
                             f"attributes are not available)")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SDModel):
            return other._loaded is self._loaded
        return NotImplemented

    def __hash__(self) -> int:
        return id(self._loaded)

    def __repr__(self) -> str:
        return f"SDModel({self._loaded.info.title!r}, {self._loaded.family})"


def wrap_model(loaded: Any) -> SDModel | None:
    return SDModel(loaded) if loaded is not None else None


def __getattr__(name: str) -> Any:
    if name == "checkpoints_list":
        return {i.title: CheckpointInfo(i) for i in binding.current().registry.list() if not i.error}
    if name == "checkpoint_aliases":
        out: dict[str, CheckpointInfo] = {}
        for i in binding.current().registry.list():
            if not i.error:
                for alias in i.aliases():
                    out.setdefault(alias, CheckpointInfo(i))
        return out
    raise AttributeError(f"module 'modules.sd_models' has no attribute {name!r}")


def list_models() -> None:
    """Rescan the checkpoint folder."""
    binding.current().registry.refresh()


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    return [i.short_title if use_short else i.title for i in binding.current().registry.list() if not i.error]


def get_closet_checkpoint_match(search_string: str) -> CheckpointInfo | None:
    """A1111's (misspelt) lookup: alias, then title substring; None when nothing matches."""
    try:
        return CheckpointInfo(binding.current().registry.get(search_string))
    except KeyError:
        return None


def select_checkpoint() -> CheckpointInfo | None:
    """The checkpoint in use (or the one a job would load)."""
    models = binding.current().models
    if models.current is not None:
        return CheckpointInfo(models.current.info)
    info = models.default_checkpoint()
    return CheckpointInfo(info) if info is not None else None


def model_hash(filename: str | os.PathLike[str]) -> str:
    """A1111's old 8-hex checkpoint hash."""
    try:
        return legacy_model_hash(Path(filename))
    except FileNotFoundError:
        return "NOFILE"


def reload_model_weights(sd_model: Any = None, info: CheckpointInfo | None = None) -> SDModel | None:
    """Load `info`'s checkpoint (or the selected one) on the calling thread, as A1111 does."""
    models = binding.current().models
    name = info.title if info is not None else None
    return wrap_model(models.load(name) if name else models.require())


def load_model(checkpoint_info: CheckpointInfo | None = None, already_loaded_state_dict: Any = None) -> SDModel | None:
    return reload_model_weights(None, checkpoint_info)


def unload_model_weights(sd_model: Any = None, info: Any = None) -> None:
    binding.current().models.unload()

__all__ = [
    "CheckpointInfo", "SDModel", "checkpoint_tiles", "get_closet_checkpoint_match", "list_models", "load_model",
    "model_hash", "reload_model_weights", "select_checkpoint", "unload_model_weights", "wrap_model"
]
