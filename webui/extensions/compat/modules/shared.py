"""A1111's `modules.shared` on the bound services.

* `opts` — the live settings (see `modules.options`); `OptionInfo`, `OptionHTML`, `options_section`.
* `cmd_opts` — the parsed flags (every flag, those extensions add in `preload.py` included).
  Path values are strings, as in A1111; A1111 flags this app does not have answer A1111's default
  where that default describes this app (`share` False, `gradio_auth` None, ...), see
  `A1111_FLAG_DEFAULTS`; any other unknown name raises AttributeError.
* `state` — the running job's progress (`interrupted`, `skipped`, `job`, `job_no`, `job_count`,
  `sampling_step`, `sampling_steps`, `textinfo`, `interrupt()`, `skip()`); idle values between jobs.
* `sd_model` — the loaded model wrapped with A1111's names (`modules.sd_models.SDModel`), or None
  while none is loaded (our app loads the checkpoint after the UI is up, and never from here).
* `prompt_styles` (the styles.csv database), `device`, `hypernetworks` ({name: path}),
  `sd_upscalers` (each `.name`, `.scaler.upscale(img, scale)` through the app's upscalers),
  `models_path`, `data_path`, `script_path`, `extensions_dir`, `extensions_builtin_dir`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from webui.extensions.compat import binding
from .options import OptionHTML, OptionInfo, Options, options_section  # noqa: F401
from .paths_internal import NAMES, app_paths


opts = Options()


def _str_path(v: Any) -> Any:
    return str(v) if isinstance(v, Path) else v


# A1111 flags this app has no flag for, with A1111's default, which is also what this app does
A1111_FLAG_DEFAULTS: dict[str, Any] = {
    "share": False, "ngrok": None, "gradio_auth": None, "gradio_auth_path": None, "api_auth": None,
    "freeze_settings": False, "hide_ui_dir_config": False, "ui_debug_mode": False, "disable_safe_unpickle": False,
    "no_download_sd_model": True, "do_not_download_clip": True, "autolaunch": False, "tls_keyfile": None,
    "tls_certfile": None, "subpath": None, "disable_console_progressbars": False, "enable_console_prompts": False,
    "no_gradio_queue": False, "theme": None, "lowram": False, "always_batch_cond_uncond": False,
    "disable_model_loading_ram_optimization": False, "update_check": False, "test_server": False,
    "skip_version_check": False, "skip_prepare_environment": False, "skip_torch_cuda_test": False,
}


class CmdOpts:
    """`shared.cmd_opts`: the app's parsed flags (reads and writes go to the bound namespace)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        svc = binding.current()
        args, paths = svc.args, svc.paths
        value = getattr(args, name, None)
        if value is None:
            # A1111's defaults are paths where ours are None (meaning the same folder)
            filled = {"data_dir": paths.data_dir, "models_dir": None, "embeddings_dir": paths.embeddings_dir,
                      "hypernetwork_dir": paths.hypernetwork_dir, "lora_dir": paths.lora_dir,
                      "lyco_dir_backcompat": paths.lyco_dir, "ui_settings_file": paths.config_file}
            if name in filled:
                return _str_path(filled[name])
            if not hasattr(args, name):
                if name in A1111_FLAG_DEFAULTS:
                    return A1111_FLAG_DEFAULTS[name]
                raise AttributeError(f"cmd_opts has no flag {name!r}")
        return _str_path(value)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(binding.current().args, name, value)

    def __contains__(self, name: str) -> bool:
        return hasattr(binding.current().args, name)

    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]  # vars(cmd_opts)
        return {k: _str_path(v) for k, v in vars(binding.current().args).items()}

    def __repr__(self) -> str:
        return f"cmd_opts({binding.current().args!r})"


cmd_opts = CmdOpts()


class State:
    """`shared.state`: the running job's `JobState` (the queue's current job), idle values between jobs."""

    def __init__(self) -> None:
        from webui.services.jobs import JobState
        object.__setattr__(self, "_idle", JobState(job_id="", label=""))
        object.__setattr__(self, "_own", None)

    def _job(self) -> Any:
        if binding.is_bound():
            current = binding.current().queue.current
            if current is not None:
                return current
        return self._own or self._idle

    @property
    def job(self) -> str:
        return self._job().label

    @job.setter
    def job(self, value: str) -> None:
        self._job().label = value

    @property
    def server_start(self) -> float:
        return 0.0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        job = self._job()
        if name in {f.name for f in fields(job)}:
            return getattr(job, name)
        raise AttributeError(f"state has no {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
            return
        job = self._job()
        if name not in {f.name for f in fields(job)}:
            raise AttributeError(f"state has no {name!r}")
        setattr(job, name, value)

    def interrupt(self) -> None:
        self._job().interrupt()

    def skip(self) -> None:
        self._job().skip()

    def nextjob(self) -> None:
        job = self._job()
        job.job_no += 1
        job.sampling_step = 0

    def begin(self, job: str = "(unknown)") -> None:
        """Work an extension runs itself, outside the job queue: its progress is kept here."""
        from webui.services.jobs import JobState
        import time
        own = JobState(job_id="extension", label=job)
        own.started = time.time()
        object.__setattr__(self, "_own", own)

    def end(self) -> None:
        if self._own is not None:
            self._own.finished = True
        object.__setattr__(self, "_own", None)

    def dict(self) -> dict[str, Any]:
        j = self._job()
        return {"skipped": j.skipped, "interrupted": j.interrupted, "job": j.label, "job_count": j.job_count,
                "job_timestamp": j.job_timestamp, "job_no": j.job_no, "sampling_step": j.sampling_step,
                "sampling_steps": j.sampling_steps}


state = State()


@dataclass
class _Scaler:
    """What `UpscalerData.scaler` offers: `upscale(img, scale)` by the named upscaler."""
    name: str

    def upscale(self, img: Any, scale: float, selected_model: Any = None) -> Any:
        pipeline = binding.current().pipeline
        if pipeline.upscale is None:
            raise RuntimeError("no upscalers in this app instance")
        return pipeline.upscale(img, self.name, float(scale))


@dataclass
class UpscalerData:
    name: str
    scaler: _Scaler
    data_path: str | None = None
    scale: float = 4
    model: Any = None


def __getattr__(name: str) -> Any:
    if name == "sd_model":
        from .sd_models import wrap_model
        return wrap_model(binding.current().models.current)
    if name == "prompt_styles":
        return binding.current().styles
    if name == "device":
        return binding.current().models.policy.device
    if name == "hypernetworks":
        return {k: str(v) for k, v in binding.current().models.hypernetworks.files.items()}
    if name == "sd_upscalers":
        pipeline = binding.current().pipeline
        names = pipeline.upscaler_names() if pipeline.upscaler_names is not None else []
        return [UpscalerData(n, _Scaler(n)) for n in names]
    if name in NAMES:
        return app_paths()[name]
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")


def list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    from .sd_models import checkpoint_tiles
    return checkpoint_tiles(use_short)


def refresh_checkpoints() -> None:
    binding.current().registry.refresh()


def list_samplers() -> list[Any]:
    from .sd_samplers import all_samplers
    return list(all_samplers)


def walk_files(path: str, allowed_extensions: list[str] | None = None) -> Iterator[str]:
    """A1111's util.walk_files: every file under `path` (following links), filtered by extension."""
    if not os.path.exists(path):
        return
    exts = {e.lower() for e in allowed_extensions} if allowed_extensions else None
    for root, _, files in sorted(os.walk(path, followlinks=True), key=lambda x: x[0]):
        for filename in sorted(files):
            if exts is None or os.path.splitext(filename)[1].lower() in exts:
                yield os.path.join(root, filename)


def listfiles(dirname: str) -> list[str]:
    return [os.path.join(dirname, x) for x in sorted(os.listdir(dirname)) if not x.startswith(".")]

__all__ = [
    "A1111_FLAG_DEFAULTS", "CmdOpts", "OptionHTML", "OptionInfo", "Options", "State", "UpscalerData",
    "cmd_opts", "list_checkpoint_tiles", "list_samplers", "listfiles", "options_section", "opts",
    "refresh_checkpoints", "state", "walk_files"
]
