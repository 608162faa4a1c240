"""Admin-only actions on the page: with accounts, only an admin (`--admin`, else the first account)
may change settings, save UI defaults, reload the UI or manage extensions. Without accounts
everybody may (A1111)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webui.serving.accounts import NO_ACCOUNTS
from webui.serving.caller import caller_for_user

if TYPE_CHECKING:
    from webui.services.container import Services


def admin_refusal(svc: "Services", request: Any, what: str) -> str | None:
    """None when the page's signed-in account may `what` (e.g. "change settings"), else the message
    to show. `request` is the handler's `gr.Request` (its `username` is the signed-in account)."""
    accounts = getattr(svc, "accounts", NO_ACCOUNTS)  # an app put together without accounts (tools, tests)
    caller = caller_for_user(getattr(request, "username", None), accounts)
    if caller.admin:
        return None
    return f"Only an admin may {what}; {caller.owner or 'this account'} is not one."
