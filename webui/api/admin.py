"""Admin-only routes: with accounts, only an admin (`--admin`, else the first account) may change
settings, load or unload the shared checkpoint, or stop the server; others get 403 with a message.
Without accounts everybody may (A1111)."""
from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Request

from webui.serving.accounts import Accounts
from webui.serving.caller import caller_from_scope

def require_admin(request: Request, accounts: Accounts, what: str) -> None:
    """403 unless the caller may `what` (e.g. "change settings")."""
    caller = caller_from_scope(request.scope, accounts)
    if not caller.admin:
        raise HTTPException(403, f"only an admin may {what}; {caller.owner or 'this account'} is not one "
                                 "(admins: --admin, else the first account)")


def admin_only(accounts: Accounts, what: str) -> Any:
    """A route dependency (`dependencies=[admin_only(...)]`) doing `require_admin`."""
    def check(request: Request) -> None:
        require_admin(request, accounts, what)
    return Depends(check)
