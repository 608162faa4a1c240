"""A1111's `modules.infotext_utils` (also importable as `modules.generation_parameters_copypaste`).

`parse_generation_parameters(text, skip_fields=None)` is the app's infotext parser (A1111's
result: "Prompt", "Negative prompt", "Steps", "Size-1", ...). `ParamBinding` and
`register_paste_params_button(binding)` collect an extension's "send to" buttons into
`registered_param_bindings`, and `add_paste_fields(tabname, init_img, fields, ...)` fills
`paste_fields`; the UI reads both from `webui.extensions.compat.binding.state()` (`param_bindings`,
`paste_fields`) when it wires paste buttons. `create_override_settings_dict(text_pairs)` turns
"Key: value" infotext pairs into the options they override.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webui.extensions.compat import binding
from webui.infotext import parse_generation_parameters, quote, unquote  # noqa: F401



@dataclass
class ParamBinding:
    paste_button: Any
    tabname: str
    source_text_component: Any = None
    source_image_component: Any = None
    source_tabname: str | None = None
    override_settings_component: Any = None
    paste_field_names: list[str] = field(default_factory=list)


def register_paste_params_button(param_binding: ParamBinding) -> None:
    binding.state().param_bindings.append(param_binding)


def add_paste_fields(tabname: str, init_img: Any, fields: Any, override_settings_component: Any = None) -> None:
    binding.state().paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                                             "override_settings_component": override_settings_component}


def create_override_settings_dict(text_pairs: list[str]) -> dict[str, Any]:
    """{option key: value} for the "Key: value" pairs whose key is an option's infotext name."""
    params: dict[str, str] = {}
    for pair in text_pairs:
        if ":" in pair:
            k, v = pair.split(":", maxsplit=1)
            params[k.strip()] = v.strip()
    settings = binding.current().settings
    out: dict[str, Any] = {}
    for key, info in settings.options.items():
        if info.infotext and info.infotext in params:
            out[key] = settings.coerce(key, params[info.infotext])
    return out


def __getattr__(name: str) -> Any:
    if name == "paste_fields":
        return binding.state().paste_fields
    if name == "registered_param_bindings":
        return binding.state().param_bindings
    raise AttributeError(f"module 'modules.infotext_utils' has no attribute {name!r}")

__all__ = [
    "ParamBinding", "add_paste_fields", "create_override_settings_dict", "parse_generation_parameters", "quote",
    "register_paste_params_button", "unquote"
]
