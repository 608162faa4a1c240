"""A1111's `modules.script_callbacks`: `on_*(callback, *, name=None)` registration.

Callbacks the generation fires (cfg_denoiser, cfg_denoised, cfg_after_cfg, before_image_saved,
image_saved, image_grid, model_loaded, infotext_pasted, extra_noise) go into the app's `Pipeline.callbacks`;
the others (app_started, ui_tabs, ui_train_tabs, ui_settings, before_component, after_component,
script_unloaded, before_ui, before_reload, before_token_counter) are kept by
`webui.extensions.compat.binding`, which the loader and the UI fire (`binding.fire(kind, ...)`).
Each registration records the extension and the file that made it, so a failing callback is
reported with the extension's name, and `remove_current_script_callbacks()` removes the calling
file's callbacks.

The parameter objects are A1111's: `ImageSaveParams`, `CFGDenoiserParams`, `CFGDenoisedParams`,
`AfterCFGCallbackParams`, `ImageGridLoopParams` (those the pipeline builds), and
`ExtraNoiseParams`, `BeforeTokenCounterParams`, `UiTrainTabParams`.

`ui_train_tabs` is fired inside the Train tab with `UiTrainTabParams`. Not supported:
`on_list_optimizers` / `on_list_unets` (LDM attention optimizers and UNet replacements) raise
NotImplementedError.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from webui.extensions.compat import binding
from webui.processing.callbacks import (AfterCFGCallbackParams, BeforeTokenCounterParams,  # noqa: F401
                                        CFGDenoisedParams, CFGDenoiserParams, ExtraNoiseParams,
                                        ImageGridLoopParams, ImageSaveParams)


Callback = Callable[..., Any]


@dataclass
class UiTrainTabParams:
    txt2img_preview_params: Any


def _add(kind: str, callback: Callback, name: str | None, adapter: Callback | None = None) -> None:
    binding.add_callback(kind, callback, name, adapter)


# ---- fired outside a job (binding.fire) ----
def on_app_started(callback: Callback, *, name: str | None = None) -> None:
    """`callback(demo, app)` once the gradio Blocks and the FastAPI app exist (add routes here)."""
    _add("app_started", callback, name)


def on_before_reload(callback: Callback, *, name: str | None = None) -> None:
    _add("before_reload", callback, name)


def on_ui_tabs(callback: Callback, *, name: str | None = None) -> None:
    """`callback()` → list of `(gr.Blocks, title, elem_id)`: tabs added to the page."""
    _add("ui_tabs", callback, name)


def on_ui_train_tabs(callback: Callback, *, name: str | None = None) -> None:
    """`callback(UiTrainTabParams)`; this app has no Train tab, so it is never called."""
    _add("ui_train_tabs", callback, name)


def on_ui_settings(callback: Callback, *, name: str | None = None) -> None:
    """`callback()`: add options with `shared.opts.add_option(...)`."""
    _add("ui_settings", callback, name)


def on_before_component(callback: Callback, *, name: str | None = None) -> None:
    """`callback(component, **kwargs)` before each component of the page is created."""
    _add("before_component", callback, name)


def on_after_component(callback: Callback, *, name: str | None = None) -> None:
    """`callback(component, **kwargs)` after each component of the page is created."""
    _add("after_component", callback, name)


def on_script_unloaded(callback: Callback, *, name: str | None = None) -> None:
    _add("script_unloaded", callback, name)


def on_before_ui(callback: Callback, *, name: str | None = None) -> None:
    _add("before_ui", callback, name)


def on_extra_noise(callback: Callback, *, name: str | None = None) -> None:
    """`callback(ExtraNoiseParams)` when img2img or hires fix adds extra noise (option
    `img2img_extra_noise` above 0); replacing `params.noise` changes what is added."""
    _add("extra_noise", callback, name)


def on_before_token_counter(callback: Callback, *, name: str | None = None) -> None:
    """`callback(BeforeTokenCounterParams)` before the UI counts a prompt's tokens."""
    _add("before_token_counter", callback, name)


# ---- fired by the pipeline (Pipeline.callbacks) ----
def on_model_loaded(callback: Callback, *, name: str | None = None) -> None:
    """`callback(sd_model)` after a checkpoint is loaded (the model as `shared.sd_model` wraps it)."""
    from .sd_models import wrap_model

    _add("model_loaded", callback, name, lambda loaded: callback(wrap_model(loaded)))


def on_before_image_saved(callback: Callback, *, name: str | None = None) -> None:
    """`callback(ImageSaveParams)` before an image is saved: change `image`, `filename`, `pnginfo`."""
    _add("before_image_saved", callback, name)


def on_image_saved(callback: Callback, *, name: str | None = None) -> None:
    """`callback(ImageSaveParams)` after an image is saved (`filename` is its path)."""
    _add("image_saved", callback, name)


def on_cfg_denoiser(callback: Callback, *, name: str | None = None) -> None:
    """`callback(CFGDenoiserParams)` before the model call of each step (replace `x`, `sigma`, conds)."""
    _add("cfg_denoiser", callback, name)


def on_cfg_denoised(callback: Callback, *, name: str | None = None) -> None:
    """`callback(CFGDenoisedParams)` after the model call, before CFG combines the predictions."""
    _add("cfg_denoised", callback, name)


def on_cfg_after_cfg(callback: Callback, *, name: str | None = None) -> None:
    """`callback(AfterCFGCallbackParams)` after CFG; replace `x` to change the step's result."""
    _add("cfg_after_cfg", callback, name)


def on_image_grid(callback: Callback, *, name: str | None = None) -> None:
    """`callback(ImageGridLoopParams)` before a grid is drawn (change `imgs`, `cols`, `rows`)."""
    _add("image_grid", callback, name)


def _pasted(callback: Callback) -> Callback:
    def adapter(params: Any) -> Any:
        if isinstance(params, tuple):
            return callback(*params)
        return callback(params.infotext, params.params)
    return adapter


def on_infotext_pasted(callback: Callback, *, name: str | None = None) -> None:
    """`callback(infotext, params)` when parameters are pasted (edit `params` to add fields)."""
    _add("infotext_pasted", callback, name, _pasted(callback))


def on_list_optimizers(callback: Callback, *, name: str | None = None) -> None:
    raise NotImplementedError("script_callbacks.on_list_optimizers is not supported: attention here is chosen by "
                              "the app's flags (--opt-sdp-attention, --xformers), not by LDM optimizers")


def on_list_unets(callback: Callback, *, name: str | None = None) -> None:
    raise NotImplementedError("script_callbacks.on_list_unets is not supported: there is no LDM UNet to replace")


# ---- removal ----
def remove_current_script_callbacks() -> None:
    """Remove every callback the calling file registered."""
    script = binding.caller_file()
    binding.remove_callbacks(lambda e: e.script == script)


def remove_callbacks_for_function(callback_func: Callback) -> None:
    binding.remove_callbacks(lambda e: e.fn is callback_func)


# ---- A1111's firing functions (for extensions that call them) ----
def app_started_callback(demo: Any, app: Any) -> None:
    binding.fire("app_started", demo, app)


def ui_tabs_callback() -> list[Any]:
    return [tab for _, result in binding.fire("ui_tabs") for tab in (result or [])]


def ui_settings_callback() -> None:
    binding.fire("ui_settings")


def before_ui_callback() -> None:
    binding.fire("before_ui")


def script_unloaded_callback() -> None:
    binding.fire("script_unloaded")


def before_component_callback(component: Any, **kwargs: Any) -> None:
    binding.fire("before_component", component, **kwargs)


def after_component_callback(component: Any, **kwargs: Any) -> None:
    binding.fire("after_component", component, **kwargs)


def before_token_counter_callback(params: BeforeTokenCounterParams) -> None:
    binding.fire("before_token_counter", params)


def image_grid_callback(params: ImageGridLoopParams) -> None:
    binding.current().pipeline.callbacks.run("image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    binding.current().pipeline.callbacks.run("infotext_pasted", binding.InfotextPastedParams(infotext, params))

__all__ = [
    "AfterCFGCallbackParams", "BeforeTokenCounterParams", "CFGDenoisedParams", "CFGDenoiserParams",
    "ExtraNoiseParams", "ImageGridLoopParams", "ImageSaveParams", "UiTrainTabParams", "after_component_callback",
    "app_started_callback", "before_component_callback", "before_token_counter_callback", "before_ui_callback",
    "image_grid_callback", "infotext_pasted_callback", "on_after_component", "on_app_started",
    "on_before_component", "on_before_image_saved", "on_before_reload", "on_before_token_counter", "on_before_ui",
    "on_cfg_after_cfg", "on_cfg_denoised", "on_cfg_denoiser", "on_extra_noise", "on_image_grid", "on_image_saved",
    "on_infotext_pasted", "on_list_optimizers", "on_list_unets", "on_model_loaded", "on_script_unloaded",
    "on_ui_settings", "on_ui_tabs", "on_ui_train_tabs", "remove_callbacks_for_function",
    "remove_current_script_callbacks", "script_unloaded_callback", "ui_settings_callback", "ui_tabs_callback"
]
