"""Accounts from A1111's flags: `--gradio-auth user:pass[,user2:pass2]`, `--gradio-auth-path FILE`,
`--api-auth`, `--api-auth-path`, and who among them is an admin (`--admin`, else the first account).

A pair splits on its first `:` only, so a password may contain `:` (A1111 splits on every `:` and
fails to start). Passwords are compared in constant time.
"""
from __future__ import annotations

import argparse
import hmac
from dataclasses import dataclass, field
from pathlib import Path


class AccountsError(ValueError):
    """A credentials flag or file that cannot be used (the server refuses to start with it)."""


def parse_pairs(text: str, where: str) -> dict[str, str]:
    """`user:pass` pairs separated by commas and/or new lines; blank lines and `#` lines skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for pair in line.split(","):
            pair = pair.strip()
            if not pair:
                continue
            name, sep, password = pair.partition(":")
            name = name.strip()
            if not sep or not name or not password:
                raise AccountsError(f"{where}: expected user:password, got {name or pair[:1] + '…'!r}")
            out[name] = password
    return out


def _read(path: Path | str | None, where: str) -> dict[str, str]:
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise AccountsError(f"{where} {path}: {e.strerror or e}") from e
    return parse_pairs(text, f"{where} {path}")


@dataclass(frozen=True)
class Accounts:
    """The page's accounts, the API's accounts and the admins. Empty: no authentication at all
    (one person on localhost, A1111's behaviour)."""
    ui: dict[str, str] = field(repr=False)  # never in a log line or a traceback
    api: dict[str, str] = field(repr=False)
    admins: frozenset[str]

    @property
    def enabled(self) -> bool:
        return bool(self.ui or self.api)

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.ui, *self.api]))

    def check_ui(self, name: str, password: str) -> bool:
        return _check(self.ui, name, password)

    def check_api(self, name: str, password: str) -> bool:
        return _check(self.api, name, password)

    def is_admin(self, name: str | None) -> bool:
        """Without accounts everybody is (A1111 behaviour unchanged for one user)."""
        if not self.enabled:
            return True
        return name is not None and name in self.admins

    def secrets(self) -> list[str]:
        """Every password, so that no route or log shows one."""
        return [p for p in {*self.ui.values(), *self.api.values()} if p]


def _check(table: dict[str, str], name: str, password: str) -> bool:
    # compare against a stand-in for unknown names so the time taken does not tell which names exist
    expected = table.get(name)
    ok = hmac.compare_digest((expected or "\0" * 32).encode(), str(password).encode())
    return expected is not None and ok


NO_ACCOUNTS = Accounts(ui={}, api={}, admins=frozenset())


def load_accounts(args: argparse.Namespace | None) -> Accounts:
    """The accounts the flags name. `--api-auth` defaults to the page's accounts when only those
    are given (and the page's to the API's), so one set of credentials guards every route."""
    if args is None:
        return NO_ACCOUNTS
    ui = parse_pairs(getattr(args, "gradio_auth", None) or "", "--gradio-auth")
    ui.update(_read(getattr(args, "gradio_auth_path", None), "--gradio-auth-path"))
    api = parse_pairs(getattr(args, "api_auth", None) or "", "--api-auth")
    api.update(_read(getattr(args, "api_auth_path", None), "--api-auth-path"))
    if ui and not api:
        api = dict(ui)
    elif api and not ui:
        ui = dict(api)
    names = list(dict.fromkeys([*ui, *api]))
    wanted = [n.strip() for n in (getattr(args, "admin", None) or "").split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise AccountsError(f"--admin names no account: {', '.join(unknown)}")
    admins = frozenset(wanted or names[:1])
    return Accounts(ui=ui, api=api, admins=admins)


# The flags whose values are credentials; GET /sdapi/v1/cmd-flags shows them as REDACTED (A1111
# returns them as given). The *_path flags name a file, not its content, and stay visible.
CREDENTIAL_FLAGS = ("gradio_auth", "api_auth")
REDACTED = "<redacted>"


def redact_flags(flags: dict[str, object], accounts: Accounts) -> dict[str, object]:
    """`flags` without a credential: the credential flags hidden, and any other value that is a
    password (a stray copy in some other flag) hidden too."""
    secrets = set(accounts.secrets())

    def clean(value: object) -> object:
        if isinstance(value, str) and value in secrets:
            return REDACTED
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return {k: (REDACTED if k in CREDENTIAL_FLAGS and v else clean(v)) for k, v in flags.items()}
