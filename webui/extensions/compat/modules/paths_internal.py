"""A1111's `modules.paths_internal` (and `modules.paths`): the app's folders, as strings.

`models_path` (the models folder), `data_path` (the data dir: config.json, outputs, extensions),
`script_path` (the app's install folder), `extensions_dir`, `extensions_builtin_dir` (none ship,
the folder may not exist), `default_output_dir`, `modules_path` (this package).

Before the app is bound (an extension's `preload.py` runs before the flags are parsed) the folders
come from the command line as far as it is known then (`--data-dir`, `--models-dir`,
COMMANDLINE_ARGS), as in A1111.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Any

from webui.extensions.compat import binding

NAMES = ("models_path", "data_path", "script_path", "extensions_dir", "extensions_builtin_dir", "default_output_dir")
modules_path = os.path.dirname(os.path.realpath(__file__))


def app_paths() -> dict[str, str]:
    """Every name of NAMES → its folder for the bound app."""
    from webui.cli import PROJECT_ROOT, build_parser, resolve_paths

    mgr = binding.manager()
    if binding.is_bound():
        paths = binding.current().paths
    else:  # preload.py: the flags are not parsed yet
        argv = [a for a in shlex.split(os.environ.get("COMMANDLINE_ARGS", "")) + sys.argv[1:] if a not in ("-h", "--help")]
        parser = build_parser()

        def quiet_error(message: str) -> Any:
            raise ValueError(message)  # the real parse reports it

        parser.error = quiet_error  # type: ignore[method-assign]
        try:
            args, _ = parser.parse_known_args(argv)
        except ValueError:
            args, _ = parser.parse_known_args([])
        paths = resolve_paths(args)
    return {"models_path": str(paths.models_dir), "data_path": str(paths.data_dir),
            "script_path": str(PROJECT_ROOT),
            "extensions_dir": str(mgr.extensions_dir if mgr is not None else paths.data_dir / "extensions"),
            "extensions_builtin_dir": str(PROJECT_ROOT / "extensions-builtin"),
            "default_output_dir": str(paths.outputs_dir)}


def __getattr__(name: str) -> Any:
    if name in NAMES:
        return app_paths()[name]
    raise AttributeError(f"module 'modules.paths_internal' has no attribute {name!r}")

__all__ = [
    "NAMES", "app_paths", "modules_path"
]
