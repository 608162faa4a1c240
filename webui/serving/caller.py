"""Who is asking: the account the auth guard let in (or, without accounts, the browser session),
and whether they may act on other people's jobs and on the server's settings and extensions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webui.serving.accounts import Accounts

# The auth guard stores the signed-in account name here in the ASGI scope (absent: no accounts).
USER_SCOPE_KEY = "webui.user"
# Without accounts, API callers share one owner (A1111: one person on localhost).
API_OWNER = "api"


@dataclass(frozen=True)
class Caller:
    owner: str   # the account name; without accounts the browser session, or API_OWNER
    admin: bool  # may change settings, install extensions, and interrupt or cancel others' jobs
    accounts: bool  # whether the server has accounts at all

    def may_act_on(self, owner: str | None) -> bool:
        return self.admin or owner == self.owner


def caller_from_scope(scope: dict[str, Any], accounts: Accounts, session: str | None = None) -> Caller:
    """The caller of an HTTP request (FastAPI `request.scope`): the account the guard put in the scope."""
    return caller_for_user(scope.get(USER_SCOPE_KEY), accounts, session)


def caller_for_user(username: str | None, accounts: Accounts, session: str | None = None) -> Caller:
    """The caller of a Gradio event handler from `gr.Request.username` / `session_hash`."""
    if accounts.enabled:
        name = str(username or "")
        return Caller(owner=name, admin=accounts.is_admin(name) if name else False, accounts=True)
    return Caller(owner=session or API_OWNER, admin=True, accounts=False)
