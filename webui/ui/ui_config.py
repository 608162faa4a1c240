"""Saved UI defaults: A1111's `ui-config.json` (flag `--ui-config-file`, default in the data dir).

After the page is built, every control with a label inside the txt2img / img2img / Extras / PNG Info /
Checkpoint Merger / Train tabs and extensions' tabs is registered under A1111's key
`<tab id>/<label>/<field>` (`customscript/<script file>/<tab id>/<label>/<field>` for a script's
controls; `<tab id>/Tabs@<elem_id>/selected` for inner tab rows, `webui/Tabs@tabs/selected` for the
main one). Which fields, as A1111: `value` for sliders, radios, checkboxes, textboxes, numbers and
dropdowns, `minimum`/`maximum`/`step` for sliders, `visible` for those and buttons created visible.
The page starts from the file's values; keys the file lacks are added with the built defaults (keys
it has are never changed by a start). A value that does not fit its control is logged and ignored;
a file that cannot be read is left as it is.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import gradio as gr

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)

FILE_NAME = "ui-config.json"
NOT_SAVED_TABS = frozenset({"settings", "extensions"})  # A1111 keeps these two out of the file
# the file names A1111's built-in scripts have, so their keys in an A1111 ui-config.json apply here
A1111_SCRIPT_FILES = {
    "X/Y/Z plot": "xyz_grid.py", "Prompts from file or textbox": "prompts_from_file.py",
    "Prompt matrix": "prompt_matrix.py", "Loopback": "loopback.py", "Outpainting mk2": "outpainting_mk_2.py",
    "Poor man's outpainting": "poor_mans_outpainting.py", "SD upscale": "sd_upscale.py",
    "img2img alternative test": "img2imgalt.py",
}
SCRIPT_SOURCE_ATTR = "custom_script_source"  # A1111's attribute naming the script file a control belongs to
# built-in parts that are scripts in A1111 (the ControlNet extension, the Extras tab's postprocessing
# scripts): the elem_id of their container or control → that script's file
BUILTIN_SCRIPT_BLOCKS = {
    "txt2img_controlnet": "controlnet.py", "img2img_controlnet": "controlnet.py",
    "extras_upscale": "postprocessing_upscale.py", "extras_gfpgan_visibility": "postprocessing_gfpgan.py",
    "extras_codeformer_visibility": "postprocessing_codeformer.py",
    "extras_codeformer_weight": "postprocessing_codeformer.py",
}


def config_path(svc: "Services") -> Path:
    given = getattr(svc.args, "ui_config_file", None)
    return Path(given).resolve() if given else svc.paths.data_dir / FILE_NAME


def script_file(script: Any) -> str:
    """The file name a script's controls are saved under: its own file, else A1111's name for the
    built-in script of that title, else its module's file."""
    filename = str(getattr(script, "filename", "") or "")
    if filename:
        return os.path.basename(filename)
    try:
        title = str(script.title())
    except Exception:  # noqa: BLE001 - a broken title() only loses the prefix
        title = ""
    return A1111_SCRIPT_FILES.get(title) or f"{type(script).__module__.rsplit('.', 1)[-1]}.py"


def mark_script_controls(script: Any, controls: list[Any]) -> None:
    """Tag the controls a script's UI returned (A1111 does this in its script runner)."""
    name = script_file(script)
    for c in controls:
        if c is not None and getattr(c, SCRIPT_SOURCE_ATTR, None) is None:
            try:
                setattr(c, SCRIPT_SOURCE_ATTR, name)
            except AttributeError:
                pass


def _choices(comp: Any) -> list[Any]:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in getattr(comp, "choices", None) or []]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is(comp: Any, *classes: type) -> bool:
    return type(comp) in classes  # A1111 matches exact types: subclasses (compat widgets) stay out


def _named(comp: Any, name: str) -> bool:
    return type(comp).__name__ == name


class UiDefaults:
    """The file's values, the page's registered controls and the Defaults page's two actions."""

    def __init__(self, path: Path, model_sized: dict[str, Any] | None = None) -> None:
        self.path = path
        # controls whose built value is the model's native size: the file gets A1111's constant default
        # for them, and that value leaves the page following the model (a size of one's own is kept)
        self.model_sized = dict(model_sized or {})
        self.built: dict[str, Any] = {}  # key → the built value of the first control registered for it
        self.from_file: dict[str, Any] = {}
        self.values: dict[str, Any] = {}  # the file's content plus the defaults of keys it lacked
        self.error_loading = False
        self.mapping: dict[str, Any] = {}  # key → the first control registered for it (its value is compared)
        self.controls: dict[str, list[tuple[Any, str]]] = {}  # key → every (block, attribute) it sets
        if path.exists():
            try:
                self.from_file = self.read()
            except (OSError, ValueError) as e:
                self.error_loading = True
                log.error("%s not read (%s): the page uses its built defaults and the file is left as it is",
                          path, e)
        self.values = dict(self.from_file)

    def read(self) -> dict[str, Any]:
        data = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        return data

    def write(self, data: dict[str, Any]) -> None:
        """Written next to the file and moved over it, so a failed write leaves the old file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ui-config-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=4, ensure_ascii=False, default=str)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def dump_defaults(self) -> bool:
        """Add the keys the file lacked (A1111 writes only when something is new, never over a file it
        could not read). Returns whether the file was written."""
        if self.values == self.from_file or (self.error_loading and self.path.exists()):
            return False
        try:
            self.write(self.values)
        except OSError as e:
            log.error("%s not written: %s", self.path, e)
            return False
        self.from_file = dict(self.values)
        return True

    # ------------------------------------------------------------ registration (A1111's add_block)

    def add_block(self, block: Any, path: str, source: str | None = None) -> None:
        children = getattr(block, "children", None)
        elem_id = str(getattr(block, "elem_id", None) or "")
        source = source or BUILTIN_SCRIPT_BLOCKS.get(elem_id)
        if children is not None:
            if isinstance(block, gr.Tabs) and elem_id:
                self.add_component(f"{path}/Tabs@{elem_id}", block)
            for child in list(children):
                self.add_block(child, path, source)
        elif getattr(block, "label", None):
            self.add_component(f"{path}/{block.label}", block, source)
        elif isinstance(block, gr.Button) and isinstance(block.value, str) and block.value:
            self.add_component(f"{path}/{block.value}", block)  # A1111 tags a script's returned controls only

    def add_component(self, path: str, comp: Any, source: str | None = None) -> None:
        if getattr(comp, "do_not_save_to_config", False):
            return
        source = getattr(comp, SCRIPT_SOURCE_ATTR, None) or source
        prefix = f"customscript/{source}/" if source else ""
        key = f"{prefix}{path}/"
        if (_is(comp, gr.Slider, gr.Radio, gr.Checkbox, gr.Textbox, gr.Number, gr.Dropdown, gr.Button)
                or _named(comp, "ToolButton")) and comp.visible is True:
            self._field(key + "visible", comp, "visible", lambda v: isinstance(v, bool))
        if _is(comp, gr.Slider):
            self._slider(key, comp)
        elif _is(comp, gr.Radio):
            self._field(key + "value", comp, "value", lambda v: v in _choices(comp))
        elif _is(comp, gr.Checkbox):
            self._field(key + "value", comp, "value", lambda v: isinstance(v, bool))
        elif _is(comp, gr.Textbox):
            self._field(key + "value", comp, "value", lambda v: isinstance(v, (str, int, float))
                        and not isinstance(v, bool), convert=str)
        elif _is(comp, gr.Number):
            self._field(key + "value", comp, "value", lambda v: _number(v) and self._in_range(comp, v))
        elif _is(comp, gr.Dropdown):
            self._field(key + "value", comp, "value", lambda v: self._dropdown_ok(comp, v))
        elif _named(comp, "InputAccordion") and hasattr(comp, "accordion"):
            if comp.accordion.visible is True:
                self._field(key + "visible", comp.accordion, "visible", lambda v: isinstance(v, bool))
            self._field(key + "value", comp, "value", lambda v: isinstance(v, bool))
            self._field(key + "value", comp.accordion, "open", lambda v: isinstance(v, bool))
        elif isinstance(comp, gr.Tabs):
            self._field(key + "selected", comp, "selected", lambda v: self._tab_ok(comp, v))

    @staticmethod
    def _in_range(comp: Any, v: float) -> bool:
        lo, hi = getattr(comp, "minimum", None), getattr(comp, "maximum", None)
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    @staticmethod
    def _dropdown_ok(comp: Any, v: Any) -> bool:
        choices = _choices(comp)
        if getattr(comp, "multiselect", False):
            return isinstance(v, list) and all(x in choices for x in v)
        return not isinstance(v, (list, dict)) and v in choices

    @staticmethod
    def _tab_ok(tabs: Any, v: Any) -> bool:
        items = [c for c in tabs.children if isinstance(c, gr.Tab)]
        if isinstance(v, str):
            return v in [t.id for t in items]
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(items)

    def _slider(self, key: str, comp: Any) -> None:
        """Range and step first, so the value is checked against the range the page will have."""
        lo = self._saved(key + "minimum", _number)
        hi = self._saved(key + "maximum", _number)
        step = self._saved(key + "step", lambda v: _number(v) and v > 0)
        lo = comp.minimum if lo is None else lo
        hi = comp.maximum if hi is None else hi
        if lo >= hi:
            log.warning("%s: minimum %s is not below maximum %s; the built range is kept", key, lo, hi)
            lo, hi = comp.minimum, comp.maximum
        checks: dict[str, Callable[[Any], bool]] = {
            "value": lambda v: _number(v) and lo <= v <= hi,
            "minimum": lambda v: v == lo, "maximum": lambda v: v == hi,
            "step": lambda v: _number(v) and v > 0}
        for field in ("value", "minimum", "maximum", "step"):
            self._field(key + field, comp, field, checks[field])

    def _saved(self, key: str, ok: Callable[[Any], bool]) -> Any:
        v = self.from_file.get(key)
        return v if v is not None and ok(v) else None

    def _field(self, key: str, obj: Any, attr: str, ok: Callable[[Any], bool],
               convert: Callable[[Any], Any] | None = None) -> None:
        saved = self.from_file.get(key)
        self.built.setdefault(key, getattr(obj, attr, None))
        if saved is None:  # a new key: the built default goes into the file
            default = self.model_sized.get(key, getattr(obj, attr, None))
            if default is None and attr == "value" and _is(obj, gr.Textbox):
                default = ""  # an empty box, as A1111 writes it
            self.values.setdefault(key, _plain(default))
        elif key in self.model_sized and saved == self.model_sized[key]:
            pass  # the constant default: the page keeps the model's size
        elif not ok(saved):
            # a second control of the same label (a hidden twin) may take another type; lists of files
            # (checkpoints, upscalers) change between starts, so a vanished choice is no alarm
            level = logging.DEBUG if key in self.controls else \
                logging.INFO if _is(obj, gr.Dropdown, gr.Radio) and attr == "value" else logging.WARNING
            log.log(level, "%s: saved value %r does not fit this control; the built default is used", key, saved)
        else:
            self._set(obj, attr, convert(saved) if convert else saved, key)
        self.controls.setdefault(key, []).append((obj, attr))
        if attr == "value":
            self.mapping.setdefault(key, obj)

    @staticmethod
    def _set(obj: Any, attr: str, value: Any, key: str) -> bool:
        try:
            if attr == "value" and isinstance(obj, gr.components.Component):
                value = obj.postprocess(value)
            setattr(obj, attr, value)
            return True
        except Exception as e:  # noqa: BLE001 - a value the control refuses leaves the default
            log.warning("%s: saved value %r not applied (%s)", key, value, e)
            return False

    # ------------------------------------------------------------ the Defaults page (A1111's ui_view / ui_apply)

    def changes(self, saved: dict[str, Any], values: tuple[Any, ...]) -> Iterator[tuple[str, Any, Any]]:
        """(key, saved value, value on the page) for each control whose value differs from the file."""
        for (key, comp), new in zip(self.mapping.items(), values):
            old = saved.get(key)
            if key in self.model_sized and old in (None, self.model_sized[key]) and new == self.built.get(key):
                continue  # the page shows the model's size, which the constant default stands for
            choices = _choices(comp)
            if isinstance(new, int) and not isinstance(new, bool) and choices and getattr(comp, "type", "") == "index":
                if not 0 <= new < len(choices):
                    continue
                new = choices[new]
            if _number(new) and _number(old):
                if float(new) == float(old):
                    continue
                if isinstance(old, int) and float(new).is_integer():
                    new = int(new)
            if new == old or (old in ("", None) and new in ("", [], None)):  # an empty box is an empty box
                continue
            if isinstance(new, float) and new.is_integer() and isinstance(getattr(comp, "step", None), int):
                new = int(new)
            yield key, old, _plain(new)

    def apply(self, values: tuple[Any, ...], live_config: dict | None = None) -> int:
        """Write the page's changed values into the file; the served page config follows them, so a new
        page starts from them. Returns how many were written."""
        current = self.read() if self.path.exists() else {}
        changed = list(self.changes(current, values))
        if not changed:
            return 0
        for key, _, new in changed:
            current[key] = new
        self.write(current)
        self.from_file = current
        self.values.update(current)
        props = _props_by_id(live_config)
        for key, _, new in changed:
            for obj, attr in self.controls.get(key, []):
                if self._set(obj, attr, new, key) and getattr(obj, "_id", None) in props:
                    props[obj._id][attr] = getattr(obj, attr)
        return len(changed)


def _plain(v: Any) -> Any:
    """A JSON-friendly copy (tuples as lists)."""
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _props_by_id(config: dict | None) -> dict[int, dict]:
    if not isinstance(config, dict):
        return {}
    return {c["id"]: c.setdefault("props", {}) for c in config.get("components", [])
            if isinstance(c, dict) and "id" in c}


def register_page(defaults: UiDefaults, tabs: gr.Tabs) -> None:
    """Register every control of the main tabs (settings and extensions left out, as A1111 does)
    and the main tab row itself."""
    for tab in tabs.children:
        if isinstance(tab, gr.Tab) and tab.id is not None and str(tab.id) not in NOT_SAVED_TABS:
            defaults.add_block(tab, str(tab.id))
    if tabs.elem_id:
        defaults.add_component(f"webui/Tabs@{tabs.elem_id}", tabs)
