"""A1111's `modules.options`: `OptionInfo` (with its chainable `.info()`, `.needs_reload_ui()`,
`.needs_restart()`, `.link()`), `OptionHTML`, `options_section`, and `Options` — the `shared.opts`
object, which reads and writes the app's live `Settings`.

`opts.add_option(key, OptionInfo(...))` converts A1111's description to ours
(`webui.settings.OptionInfo`: label, section title, component kind, choices, range) and registers
it with `Settings.register_option`, so it appears in Settings under its section, in
`GET /sdapi/v1/options`, and is saved in config.json. The A1111 object is kept too
(`opts.data_labels[key]`), for a UI that wants its gradio component and `component_args`.

`onchange` is wired with `Settings.on_change`. Our listeners run before the new value is stored;
while A1111's `onchange()` (which takes no argument and reads `opts.<key>`) runs, `opts.<key>`
answers the new value. An `onchange` that raises refuses the change, as in A1111.

Reads go to the shared settings: inside a job, `p.opts` holds the job's values (with its
`override_settings`); A1111 extensions that read `shared.opts` there see the shared values.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Callable, Iterator

from webui.extensions.compat import binding
from webui.settings import OptionInfo as NativeOptionInfo
from webui.settings import Settings, SettingsError

log = logging.getLogger(__name__)


class OptionInfo:
    """A1111's option description (`shared.OptionInfo`)."""

    def __init__(self, default: Any = None, label: str = "", component: Any = None,
                 component_args: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 onchange: Callable[[], Any] | None = None, section: tuple[str, ...] | None = None,
                 refresh: Callable[[], Any] | None = None, comment_before: str = "", comment_after: str = "",
                 infotext: str | None = None, restrict_api: bool = False, category_id: str | None = None) -> None:
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label: str, url: str) -> "OptionInfo":
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> "OptionInfo":
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info: str) -> "OptionInfo":
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html: str) -> "OptionInfo":
        self.comment_after += html
        return self

    def needs_restart(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> "OptionInfo":
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self

    def __repr__(self) -> str:
        return f"OptionInfo({self.default!r}, {self.label!r}, section={self.section!r})"


class OptionHTML(OptionInfo):
    """Text shown among the settings; holds no value (not saved, not registered as an option)."""

    def __init__(self, text: str) -> None:
        import gradio as gr
        super().__init__(str(text).strip(), label="",
                         component=lambda **kwargs: gr.HTML(elem_classes="settings-info", **kwargs))
        self.do_not_save = True


def options_section(section_identifier: tuple[str, ...], options_dict: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    """A1111's helper: give every option of the dict this (id, title[, category]) section."""
    for v in options_dict.values():
        if len(section_identifier) == 2:
            v.section = section_identifier
        elif len(section_identifier) == 3:
            v.section = section_identifier[0:2]
            v.category_id = section_identifier[2]
    return options_dict


# ---- A1111 → our OptionInfo ----
_KINDS = {"slider": "slider", "checkbox": "checkbox", "number": "number", "dropdown": "dropdown", "radio": "radio",
          "checkboxgroup": "multiselect", "textbox": "textbox", "colorpicker": "textbox", "code": "textbox"}
_TAG = re.compile(r"<[^>]+>")


def _plain(html: str) -> str:
    return " ".join(_TAG.sub("", html or "").split())


def _component_args(info: OptionInfo) -> tuple[dict[str, Any], bool]:
    """(args, static): a callable `component_args` is evaluated for the range, but its choices may
    change later, so they are not used to validate values."""
    args = info.component_args
    if callable(args):
        try:
            return dict(args() or {}), False
        except Exception:  # noqa: BLE001 - a broken lambda only costs the range
            log.warning("component_args of option %r failed; shown without range", info.label, exc_info=True)
            return {}, False
    return dict(args or {}), True


def _choice_value(c: Any) -> Any:
    return c[1] if isinstance(c, (tuple, list)) and len(c) == 2 else c


def to_native(info: OptionInfo) -> NativeOptionInfo:
    """Our Settings' description of an A1111 option."""
    args, static = _component_args(info)
    name = getattr(info.component, "__name__", "") or type(info.component).__name__
    kind = _KINDS.get(name.lower(), "")
    default = info.default
    if isinstance(default, bool):
        kind = "checkbox"
    elif kind == "dropdown" and (args.get("multiselect") or isinstance(default, (list, tuple))):
        kind = "multiselect"
    elif not kind:
        kind = ("multiselect" if isinstance(default, (list, tuple)) else
                "number" if isinstance(default, (int, float)) else "textbox")
    if isinstance(default, list):
        default = tuple(default)
    step = args.get("step")
    if kind in ("slider", "number") and isinstance(default, int) and not isinstance(default, bool) and (
            any(isinstance(args.get(k), float) and not float(args[k]).is_integer() for k in ("step", "minimum", "maximum"))):
        default = float(default)  # an int default of a fractional slider: keep fractions when set
    choices = None
    if static and kind in ("dropdown", "radio", "multiselect") and args.get("choices") is not None:
        choices = tuple(_choice_value(c) for c in args["choices"])
    label = " ".join(x for x in (info.label, _plain(info.comment_after)) if x)
    section = info.section[1] if info.section and len(info.section) >= 2 else "Other"
    return NativeOptionInfo(default, label, section, kind, choices=choices,
                            minimum=args.get("minimum") if kind in ("slider", "number") else None,
                            maximum=args.get("maximum") if kind in ("slider", "number") else None,
                            step=step if kind in ("slider", "number") else None, infotext=info.infotext)


def _from_native(info: NativeOptionInfo) -> OptionInfo:
    import gradio as gr
    component = {"slider": gr.Slider, "checkbox": gr.Checkbox, "number": gr.Number, "dropdown": gr.Dropdown,
                 "radio": gr.Radio, "multiselect": gr.Dropdown}.get(info.component, gr.Textbox)
    args: dict[str, Any] = {k: v for k, v in (("minimum", info.minimum), ("maximum", info.maximum),
                                               ("step", info.step)) if v is not None}
    if info.choices is not None:
        args["choices"] = list(info.choices)
    if info.component == "multiselect":
        args["multiselect"] = True
    return OptionInfo(info.default, info.label, component, args or None, section=(info.section, info.section),
                      infotext=info.infotext)


# ---- values A1111 extensions read that this app does not make settable ----
def _fixed_options() -> dict[str, Callable[[Settings], Any]]:
    from webui.outputs import JPEG_QUALITY
    return {
        # what our saving does (outputs.py): per-tab folders, a date subfolder, numbered names
        "outdir_samples": lambda s: "",
        "outdir_grids": lambda s: "",
        "save_to_dirs": lambda s: True,
        "grid_save_to_dirs": lambda s: True,
        "directories_filename_pattern": lambda s: "[date]",
        "samples_filename_pattern": lambda s: "",
        "save_images_add_number": lambda s: True,
        "grid_format": lambda s: s.get("samples_format"),
        "jpeg_quality": lambda s: JPEG_QUALITY,
        "save_txt": lambda s: False,
        "n_rows": lambda s: -1,
        "grid_prevent_empty_spots": lambda s: False,
    }


_FIXED = _fixed_options()
_pending = threading.local()  # {key: value} while an onchange runs


@contextlib.contextmanager
def _pending_value(key: str, value: Any) -> Iterator[None]:
    values = getattr(_pending, "values", None)
    if values is None:
        values = _pending.values = {}
    had, old = key in values, values.get(key)
    values[key] = value
    try:
        yield
    finally:
        if had:
            values[key] = old
        else:
            values.pop(key, None)


def _settings() -> Settings:
    return binding.current().settings


def _read(key: str) -> Any:
    pending = getattr(_pending, "values", None)
    if pending and key in pending:
        return pending[key]
    svc = binding.current()
    settings = svc.settings
    if key in ("sd_model_checkpoint", "sd_checkpoint_hash") and svc.models.current is not None:
        info = svc.models.current.info
        return info.title if key == "sd_model_checkpoint" else info.sha256
    if settings.is_known(key):
        return settings.get(key)
    if key in _FIXED:
        return _FIXED[key](settings)
    raise KeyError(key)


class _OptionsData(MutableMapping):
    """`opts.data`: every option's current value; writing sets it (unsaved until `opts.save()`)."""

    def __getitem__(self, key: str) -> Any:
        return _read(key)

    def __setitem__(self, key: str, value: Any) -> None:
        _settings().set(key, value, save=False)

    def __delitem__(self, key: str) -> None:
        _settings().set(key, None, save=False)

    def __iter__(self) -> Iterator[str]:
        return iter(_settings().all())

    def __len__(self) -> int:
        return len(_settings().all())


class Options:
    """A1111's `shared.opts` on the bound `Settings` (attribute and item access)."""

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return _read(key)
        except KeyError:
            raise AttributeError(f"no option {key!r} (an extension's option exists once it called "
                                 f"opts.add_option)") from None

    def __setattr__(self, key: str, value: Any) -> None:
        settings = _settings()
        if settings.is_known(key):
            settings.set(key, value, save=False)
        else:  # A1111 keeps an unknown name as a plain attribute
            object.__setattr__(self, key, value)

    def __getitem__(self, key: str) -> Any:
        return _read(key)

    def __setitem__(self, key: str, value: Any) -> None:
        _settings().set(key, value, save=False)

    def __contains__(self, key: str) -> bool:
        return _settings().is_known(key)

    def __repr__(self) -> str:
        return f"<opts: {len(_settings().options)} options>"

    @property
    def data(self) -> _OptionsData:
        return _OptionsData()

    @property
    def data_labels(self) -> dict[str, OptionInfo]:
        labels = binding.state().option_labels
        return {k: labels.get(k) or _from_native(info) for k, info in _settings().options.items()}

    def add_option(self, key: str, info: OptionInfo) -> None:
        """Register an extension's option (A1111: in an `on_ui_settings` callback)."""
        if not isinstance(info, OptionInfo):
            raise TypeError(f"opts.add_option({key!r}, ...): expected shared.OptionInfo, not {type(info).__name__}")
        st = binding.state()
        st.option_labels[key] = info
        if info.do_not_save:
            return
        settings = _settings()
        settings.register_option(key, to_native(info))
        if info.onchange is not None and key not in st.onchange_keys:
            st.onchange_keys.add(key)
            settings.on_change(key, self._onchange_listener(key, binding.current_extension()))

    @staticmethod
    def _onchange_listener(key: str, extension: str | None, func: Callable[[], Any] | None = None) -> Callable[[Any], None]:
        def listener(value: Any) -> None:
            fn = func
            if fn is None:
                info = binding.state().option_labels.get(key)
                fn = info.onchange if info is not None else None
            if fn is None:
                return
            with _pending_value(key, value):
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - refuse the change, name the extension
                    binding.report_error(extension, f"onchange of option {key} failed")
                    raise SettingsError(f"option {key}: {extension or 'its onchange'} refused {value!r}: "
                                        f"{type(e).__name__}: {e}") from None
        listener._from_extension = True  # type: ignore[attr-defined]  # dropped when extensions reload
        return listener

    def onchange(self, key: str, func: Callable[[], Any], call: bool = True) -> None:
        """Call `func()` whenever option `key` changes (and now, when `call`)."""
        _settings().on_change(key, self._onchange_listener(key, binding.current_extension(), func))
        if call:
            func()

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Set without saving; True when the value changed (A1111's return)."""
        settings = _settings()
        if not settings.is_known(key):
            return False
        info = binding.state().option_labels.get(key)
        if info is not None and (info.do_not_save or (is_api and info.restrict_api)):
            return False
        if settings.get(key) == value:
            return False
        try:
            settings.set(key, value, save=False, notify=run_callbacks)
        except SettingsError as e:
            log.warning("opts.set(%r, %r): %s", key, value, e)
            return False
        return True

    def save(self, filename: str | None = None) -> None:
        settings = _settings()
        if filename is None or Path(filename).resolve() == settings.path.resolve():
            settings.save()
        else:
            Path(filename).write_text(self.dumpjson(), encoding="utf-8")

    def get_default(self, key: str) -> Any:
        info = _settings().options.get(key)
        return info.default if info is not None else None

    def cast_value(self, key: str, value: Any) -> Any:
        return _settings().coerce(key, value)

    def dumpjson(self) -> str:
        return json.dumps({k: v for k, v in _settings().values.items() if v is not None}, indent=4, ensure_ascii=False)

__all__ = [
    "OptionHTML", "OptionInfo", "Options", "options_section", "to_native"
]
