"""A1111's old name of `modules.infotext_utils` (same functions, same registries)."""
from __future__ import annotations

from typing import Any

from . import infotext_utils as _iu
from .infotext_utils import (ParamBinding, add_paste_fields, create_override_settings_dict,  # noqa: F401
                             parse_generation_parameters, quote, register_paste_params_button, unquote)



def __getattr__(name: str) -> Any:
    return _iu.__getattr__(name)

__all__ = [
    "ParamBinding", "add_paste_fields", "create_override_settings_dict", "parse_generation_parameters", "quote",
    "register_paste_params_button", "unquote"
]
