"""A1111's `modules.scripts`: the `Script` base extensions subclass, on our native script runner.

`Script` here IS a `webui.processing.scripts.Script`, so an extension's script runs on the same
runner as the built-in ones: the pipeline calls its hooks (`setup`, `before_process`, `process`,
`before_process_batch`, `process_batch`, `postprocess_batch`, `postprocess_batch_list`,
`postprocess_image`, `post_sample`, `postprocess`, `before_hr`, `process_before_every_sampling`,
...) in A1111's order with A1111's arguments, and a selectable script's `run(p, *args)` replaces
the generation. A1111's UI-side names are added: `ui(is_img2img)`, `elem_id`, `before_component`
/ `after_component` (called by the UI for every component), `on_before_component` /
`on_after_component(callback, elem_id=)`, `infotext_fields`, `paste_field_names`, `api_info`,
`section`, `setup_for_ui_only`, `filename`, `describe`.

A native script declares its arguments as `ArgInfo`s; an A1111 script builds gradio components in
`ui()`. `arg_infos(is_img2img)` bridges the two: `ui()` runs once per tab inside a throwaway
`gr.Blocks()`, and each returned component's label, value, minimum, maximum, step and choices
become an `ArgInfo` (what `/sdapi/v1/script-info` lists and what fills missing `script_args`).
The real components are built again by the UI, inside the page.

`basedir()` answers the extension root while the loader imports a script file
(`binding.set_current_extension` / `set_current_basedir`), otherwise the root of the calling file's
extension, otherwise the app folder (A1111's `script_path`).
"""
from __future__ import annotations

import logging
import re
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Callable

from webui.extensions.compat import binding
from webui.processing.scripts import AlwaysVisible, ArgInfo, PostprocessBatchListArgs, PostprocessImageArgs  # noqa: F401
from webui.processing.scripts import PostSampleArgs, ScriptRunner  # noqa: F401
from webui.processing.scripts import Script as NativeScript


log = logging.getLogger(__name__)

ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = binding.ScriptClassData


@dataclass
class OnComponent:
    """What an `on_before_component` / `on_after_component` callback receives."""
    component: Any


class Script(NativeScript):
    """A1111's `scripts.Script` (subclass it; implement `title`, `ui`, `show`, and hooks or `run`)."""

    section: str | None = None
    tabname: str | None = None
    group: Any = None
    create_group = True
    infotext_fields: list[tuple[Any, str]] | None = None
    paste_field_names: list[str] | None = None
    api_info: dict[str, Any] | None = None
    setup_for_ui_only = False
    on_before_component_elem_id: list[tuple[str, Callable[[OnComponent], Any]]] | None = None
    on_after_component_elem_id: list[tuple[str, Callable[[OnComponent], Any]]] | None = None
    controls: list[Any] | None = None
    sorting_priority = 0

    def ui(self, is_img2img: bool) -> Any:
        """The script's gradio components, whose values arrive as `*args` of the hooks."""
        return None

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        """A1111's element id for one of the script's components (`script_txt2img_<title>_<item>`)."""
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"

    def before_component(self, component: Any, **kwargs: Any) -> None:
        """Called by the UI before each component of the page is created."""

    def after_component(self, component: Any, **kwargs: Any) -> None:
        """Called by the UI after each component of the page is created."""

    def on_before_component(self, callback: Callable[[OnComponent], Any], *, elem_id: str) -> None:
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback: Callable[[OnComponent], Any], *, elem_id: str) -> None:
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def arg_infos(self, is_img2img: bool) -> list[ArgInfo]:
        """The arguments `ui(is_img2img)` declares (built once per tab in a throwaway Blocks, cached)."""
        cache: dict[bool, list[ArgInfo]] = self.__dict__.setdefault("_compat_arg_infos", {})
        if is_img2img not in cache:
            cache[is_img2img] = [component_arg_info(c) for c in self._build_ui(is_img2img)]
            self.api_info = {"name": self.title().lower(), "is_img2img": is_img2img,
                             "is_alwayson": self.show(is_img2img) is AlwaysVisible,
                             "args": [a.describe() for a in cache[is_img2img]]}
        return list(cache[is_img2img])

    def _build_ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr
        from gradio import context as gr_context

        saved = (self.is_img2img, self.is_txt2img, self.tabname)
        # a Blocks opened inside the page being built would add its components to the page (and one
        # that fails resets gradio's context): build with no page around, then put the context back
        outer = (gr_context.get_render_context(), gr_context.Context.root_block)
        self.is_img2img, self.is_txt2img = is_img2img, not is_img2img
        self.tabname = "img2img" if is_img2img else "txt2img"
        gr_context.set_render_context(None)
        gr_context.Context.root_block = None
        try:
            with gr.Blocks():
                controls = self.ui(is_img2img)
        finally:
            self.is_img2img, self.is_txt2img, self.tabname = saved
            gr_context.set_render_context(outer[0])
            gr_context.Context.root_block = outer[1]
        return ui_controls(controls)


def ui_controls(controls: Any) -> list[Any]:
    """What `ui()` returned, as the list of components whose values are the script's arguments."""
    if controls is None:
        return []
    if isinstance(controls, dict):
        return list(controls.values())
    if isinstance(controls, (list, tuple)):
        return list(controls)
    return [controls]


def _kind(component: Any) -> str:
    import gradio as gr

    for cls, kind in ((gr.Checkbox, "checkbox"), (gr.Slider, "slider"), (gr.Number, "number"),
                      (gr.Radio, "radio"), (gr.CheckboxGroup, "multiselect"), (gr.Textbox, "textbox"),
                      (gr.File, "file")):
        if isinstance(component, cls):
            return kind
    if isinstance(component, gr.Dropdown):
        return "multiselect" if getattr(component, "multiselect", False) else "dropdown"
    return ""


def component_arg_info(component: Any) -> ArgInfo:
    """An ArgInfo read from a gradio component (A1111's `/script-info` fields)."""
    def num(v: Any) -> float | None:
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    choices = getattr(component, "choices", None)
    if choices is not None:
        choices = [c[0] if isinstance(c, tuple) else c for c in choices]  # gradio's (name, value) pairs: A1111 lists the names
    return ArgInfo(label=getattr(component, "label", None) or "", value=getattr(component, "value", None),
                   minimum=num(getattr(component, "minimum", None)), maximum=num(getattr(component, "maximum", None)),
                   step=num(getattr(component, "step", None)), choices=choices, kind=_kind(component))


def basedir() -> str:
    """The extension root of the script being imported, or of the calling file; else the app folder."""
    found = binding.current_basedir()
    if found is not None:
        return str(found)
    from webui.cli import PROJECT_ROOT
    return str(PROJECT_ROOT)


def set_current_basedir(path: str | None) -> None:
    """For the loader: what `basedir()` answers while a script file imports (see binding.py)."""
    binding.set_current_basedir(path)


def __getattr__(name: str) -> Any:
    if name == "scripts_data":
        return binding.state().scripts_data
    if name == "scripts_txt2img":
        return binding.current().pipeline.scripts.txt2img
    if name == "scripts_img2img":
        return binding.current().pipeline.scripts.img2img
    if name == "current_basedir":
        return basedir()
    raise AttributeError(f"module 'modules.scripts' has no attribute {name!r}")

__all__ = [
    "AlwaysVisible", "ArgInfo", "OnComponent", "PostSampleArgs", "PostprocessBatchListArgs",
    "PostprocessImageArgs", "Script", "ScriptClassData", "ScriptFile", "ScriptRunner", "basedir",
    "component_arg_info", "set_current_basedir", "ui_controls"
]
