"""The Script dropdown of the txt2img and img2img tabs and each selectable script's controls,
built from the scripts' argument descriptions (the same ones `/sdapi/v1/script-info` lists), so a
script added to the pipeline's catalog shows up here without UI code. X/Y/Z plot gets A1111's
axis rows (type, values, value picker) and swap buttons."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.processing.scripts import ArgInfo, Script
from webui.scripts.xyz_plot import XYZPlot, axes_for, find_axis

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@dataclass
class ScriptControls:
    dropdown: Any
    controls: dict[str, list[Any]] = field(default_factory=dict)  # title → one entry per argument (None = info)
    alwayson: dict[str, list[Any]] = field(default_factory=dict)  # always-on scripts with controls (not ControlNet)
    # (component, infotext key or fn(params) -> value) that scripts declare: pasting fills them
    infotext_fields: list[tuple[Any, Any]] = field(default_factory=list)

    def components(self) -> set[Any]:
        out = {self.dropdown}
        for ctrls in [*self.controls.values(), *self.alwayson.values()]:
            out.update(c for c in ctrls if c is not None)
        return out

    def fields(self, d: dict) -> dict[str, Any]:
        """script_name / script_args for the request (A1111's positional order), and the always-on
        scripts' values as `alwayson_scripts` entries."""
        out: dict[str, Any] = {}
        if self.alwayson:
            out["alwayson_scripts"] = {t: {"args": [("" if c is None else d.get(c)) for c in ctrls]}
                                       for t, ctrls in self.alwayson.items()}
        name = d.get(self.dropdown)
        if not name or name == "None":
            return out
        args = [("" if c is None else d.get(c)) for c in self.controls.get(name, [])]
        return {**out, "script_name": name, "script_args": args}


def _component(arg: ArgInfo, elem_id: str) -> Any:
    kind = arg.kind or ("checkbox" if isinstance(arg.value, bool) else
                        "dropdown" if arg.choices else
                        "slider" if arg.minimum is not None and arg.maximum is not None else
                        "number" if isinstance(arg.value, (int, float)) else "textbox")
    if kind == "info":
        if arg.note:
            gr.Markdown(arg.note, elem_id=elem_id)
        return None
    if kind == "checkbox":
        return gr.Checkbox(value=bool(arg.value), label=arg.label, elem_id=elem_id)
    if kind == "slider":
        return gr.Slider(arg.minimum, arg.maximum, value=arg.value, step=arg.step or 1, label=arg.label,
                         elem_id=elem_id)
    if kind == "number":
        return gr.Number(value=arg.value, label=arg.label, elem_id=elem_id)
    if kind == "radio":
        return gr.Radio(list(arg.choices or []), value=arg.value, label=arg.label, elem_id=elem_id)
    if kind == "multiselect":
        return gr.CheckboxGroup(list(arg.choices or []), value=list(arg.value or []), label=arg.label, elem_id=elem_id)
    if kind == "dropdown":
        return gr.Dropdown(list(arg.choices or []), value=arg.value, label=arg.label, elem_id=elem_id)
    return gr.Textbox(value=arg.value or "", label=arg.label, lines=4 if "List" in arg.label else 1, elem_id=elem_id)


def _generic(script: Script, mode: str, is_img2img: bool) -> list[Any]:
    base = f"{mode}_{slug(script.title())}"
    ctrls = [_component(a, f"{base}_{slug(a.label)}") for a in script.arg_infos(is_img2img)]
    if script.title() == "Prompts from file or textbox":
        upload = gr.File(label="Upload prompt inputs", file_types=[".txt"], type="binary",
                         elem_id=f"{base}_file")
        box = ctrls[-1]
        upload.change(lambda b: (b or b"").decode("utf8", errors="replace") if b else gr.update(), upload, box,
                      show_progress="hidden", api_visibility="private")
    return ctrls


def _xyz(script: XYZPlot, svc: "Services", mode: str, is_img2img: bool) -> list[Any]:
    options = axes_for(is_img2img)
    labels = [a.label for a in options]
    pipeline = svc.pipeline
    rows = []
    for axis, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
        with gr.Row():
            kind = gr.Dropdown(labels, value=default, label=f"{axis.upper()} type", elem_id=f"{mode}_xyz_{axis}_type",
                               scale=1)
            text = gr.Textbox(label=f"{axis.upper()} values", lines=1, elem_id=f"{mode}_xyz_{axis}_values", scale=3)
            pick = gr.Dropdown([], value=[], multiselect=True, label=f"{axis.upper()} values", visible=False,
                               elem_id=f"{mode}_xyz_{axis}_values_dropdown", scale=3)
        rows.append((kind, text, pick))
    with gr.Row():
        legend = gr.Checkbox(True, label="Draw legend", elem_id=f"{mode}_xyz_draw_legend")
        lone = gr.Checkbox(False, label="Include Sub Images", elem_id=f"{mode}_xyz_include_lone_images")
        subgrids = gr.Checkbox(False, label="Include Sub Grids", elem_id=f"{mode}_xyz_include_sub_grids")
        csv_mode = gr.Checkbox(False, label="Use text inputs instead of dropdowns", elem_id=f"{mode}_xyz_csv_mode")
    with gr.Row():
        keep = gr.Checkbox(False, label="Keep -1 for seeds", elem_id=f"{mode}_xyz_no_fixed_seeds")
        vary = [gr.Checkbox(False, label=f"Vary seeds for {a}", elem_id=f"{mode}_xyz_vary_seeds_{a.lower()}")
                for a in "XYZ"]
    margin = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)", elem_id=f"{mode}_xyz_margin_size")
    with gr.Row():
        swap_xy = gr.Button("Swap X/Y axes", elem_id=f"{mode}_xyz_swap_xy")
        swap_yz = gr.Button("Swap Y/Z axes", elem_id=f"{mode}_xyz_swap_yz")
        swap_xz = gr.Button("Swap X/Z axes", elem_id=f"{mode}_xyz_swap_xz")

    def on_type(t: str, csv: bool) -> tuple[Any, Any]:
        opt = find_axis(options, t)
        has = opt.choices is not None and not csv
        choices = opt.choices(pipeline) if opt.choices is not None else []
        return gr.update(visible=not has), gr.update(choices=choices, value=[], visible=has)

    for kind, text, pick in rows:
        kind.change(on_type, [kind, csv_mode], [text, pick], show_progress="hidden", api_visibility="private")
        csv_mode.change(on_type, [kind, csv_mode], [text, pick], show_progress="hidden", api_visibility="private")

    def swap(a: int, b: int) -> None:
        ra, rb = rows[a], rows[b]
        outs = list(ra) + list(rb)

        def do(ka: Any, ta: Any, pa: Any, kb: Any, tb: Any, pb: Any) -> list[Any]:
            return [kb, tb, gr.update(value=pb), ka, ta, gr.update(value=pa)]
        return outs, do

    for button, (a, b) in ((swap_xy, (0, 1)), (swap_yz, (1, 2)), (swap_xz, (0, 2))):
        outs, do = swap(a, b)
        # the value pickers get their choices from the type change the swap triggers, then their values
        button.click(do, outs, outs, show_progress="hidden", api_visibility="private")

    (xk, xt, xp), (yk, yt, yp), (zk, zt, zp) = rows
    return [xk, xt, xp, yk, yt, yp, zk, zt, zp, legend, lone, subgrids, keep, *vary, margin, csv_mode]


def _own_ui(script: Script, is_img2img: bool) -> list[Any]:
    """An A1111-style script builds its own components (`ui(is_img2img)`); their values are its args."""
    made = script.ui(is_img2img)  # type: ignore[attr-defined]
    if made is None:
        return []
    if isinstance(made, dict):
        made = list(made.values())
    return [c for c in made if c is not None]


def _alwayson(runner: Any, mode: str, is_img2img: bool) -> dict[str, list[Any]]:
    """Always-on scripts' controls, above the Script dropdown as in A1111 (ControlNet has its accordion)."""
    out: dict[str, list[Any]] = {}
    for script in runner.alwayson:
        title = script.title()
        if title == "ControlNet":
            continue
        try:
            if callable(getattr(script, "ui", None)):
                out[title] = _own_ui(script, is_img2img)
            elif script.arg_infos(is_img2img):
                with gr.Accordion(title, open=False, elem_id=f"{mode}_script_{slug(title)}"):
                    out[title] = _generic(script, mode, is_img2img)
        except Exception as e:  # noqa: BLE001 - an extension's broken ui() must not break the page
            log.error("script %r: ui() failed: %s", title, e, exc_info=True)
            gr.Markdown(f"⚠️ {title}: its controls could not be built ({type(e).__name__}: {e})")
    return out


def create_script_controls(svc: "Services", mode: str) -> ScriptControls:
    """Always-on scripts' controls, the Script dropdown (None + this tab's selectable scripts) and a
    hidden group per selectable script."""
    is_img2img = mode == "img2img"
    runner = svc.pipeline.scripts.runner(is_img2img)
    alwayson = _alwayson(runner, mode, is_img2img)
    dropdown = gr.Dropdown(["None"] + runner.titles(), value="None", label="Script", elem_id=f"{mode}_script")
    groups: dict[str, Any] = {}
    controls: dict[str, list[Any]] = {}
    for script in runner.selectable:
        title = script.title()
        with gr.Group(visible=False, elem_id=f"{mode}_script_{slug(title)}") as g:
            try:
                if isinstance(script, XYZPlot):
                    controls[title] = _xyz(script, svc, mode, is_img2img)
                elif callable(getattr(script, "ui", None)):
                    controls[title] = _own_ui(script, is_img2img)
                else:
                    controls[title] = _generic(script, mode, is_img2img)
            except Exception as e:  # noqa: BLE001 - an extension's broken ui() must not break the page
                log.error("script %r: ui() failed: %s", title, e, exc_info=True)
                gr.Markdown(f"⚠️ {title}: its controls could not be built ({type(e).__name__}: {e})")
                controls[title] = []
        groups[title] = g
    names = list(groups)
    dropdown.change(lambda v: [gr.update(visible=v == n) for n in names], dropdown, [groups[n] for n in names],
                    show_progress="hidden", api_visibility="private", queue=False)
    from webui.ui.ui_config import mark_script_controls
    for script in runner.scripts:  # ui-config.json keys a script's controls by its file, as A1111 does
        mark_script_controls(script, controls.get(script.title()) or alwayson.get(script.title()) or [])
    fields: list[tuple[Any, Any]] = []
    for script in runner.scripts:
        for item in getattr(script, "infotext_fields", None) or []:
            try:
                comp, key = item
            except (TypeError, ValueError):
                continue
            if comp is not None:
                fields.append((comp, key))
    return ScriptControls(dropdown, controls, alwayson, fields)
