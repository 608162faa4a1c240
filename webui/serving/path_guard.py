"""One rule for every folder a request names on a server reachable from the network.

On localhost a request may name any folder of the machine (A1111's behaviour: the user is the
machine's owner). Once the server listens beyond localhost (`cli.network_exposure`), output
folders, img2img/extras batch folders and training dataset/log folders may only lie inside the data
directory or a folder given with `--allowed-path`, for every caller, admins included: an account
on the page is not an account on the machine.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

# Options whose value is a folder the server writes into (A1111's "Paths for saving").
PATH_OPTION_PREFIX = "outdir_"
# The one among them that is read relative to the data dir (the others relative to the working dir,
# as the savers open them)
DATA_DIR_RELATIVE_OPTIONS = frozenset({"outdir_save"})


class PathRefused(ValueError):
    """A folder a request named lies outside the folders an exposed server may touch."""


def check_server_path(path: str | Path, *, data_dir: Path, allowed: Iterable[Path] = (),
                      exposed: Iterable[str] = (), what: str = "folder", base: Path | None = None) -> Path:
    """`path` made absolute (relative to `base`, default the working dir, as the code that opens it
    would) with `..` and symbolic links resolved. When `exposed` names flags, the result must lie
    inside `data_dir` or one of `allowed`; else PathRefused says why and what to do."""
    given = Path(str(path)).expanduser()
    full = (given if given.is_absolute() else (base or Path.cwd()) / given).resolve()
    reasons = list(exposed)
    if not reasons:
        return full
    roots = [Path(data_dir).resolve(), *(Path(a).expanduser().resolve() for a in allowed)]
    if any(full.is_relative_to(root) for root in roots):
        return full
    where = f"the data dir {roots[0]}" + (" or an --allowed-path folder" if len(roots) > 1 else "")
    raise PathRefused(f"{what} {str(path)!r} is outside {where}: the server is reachable from the network "
                      f"({', '.join(reasons)}), so folders named by a request must lie inside it "
                      "(start the server with --allowed-path DIR to allow another folder)")


@dataclass(frozen=True)
class PathGuard:
    """`check_server_path` with the server's data dir, allow-list and exposure bound."""
    data_dir: Path
    allowed: tuple[Path, ...] = ()
    exposed: tuple[str, ...] = ()

    def check(self, path: str | Path, what: str = "folder", base: Path | None = None) -> Path:
        return check_server_path(path, data_dir=self.data_dir, allowed=self.allowed, exposed=self.exposed,
                                 what=what, base=base)

    def check_option(self, key: str, value: Any) -> None:
        """Settings' value check: an `outdir_*` option set to a folder outside the allowed ones is
        refused (the empty value means the default folder inside outputs/)."""
        if not key.startswith(PATH_OPTION_PREFIX) or not isinstance(value, str) or not value.strip():
            return
        base = self.data_dir if key in DATA_DIR_RELATIVE_OPTIONS else None
        self.check(value.strip(), f"option {key}:", base)


def guard_from_args(args: argparse.Namespace | None, data_dir: Path) -> PathGuard:
    """The guard for a server started with `args` (no args: localhost, nothing confined)."""
    from webui.cli import network_exposure
    allowed = tuple(Path(p) for p in (getattr(args, "allowed_path", None) or []))
    return PathGuard(Path(data_dir), allowed, tuple(network_exposure(args)))
