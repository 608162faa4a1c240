"""The log-in guard in front of every route when the server has accounts.

An ASGI middleware: a request with valid HTTP Basic credentials (the API's accounts; A1111 clients
send these) goes on with the account name in the scope (`USER_SCOPE_KEY`); requests for the page's
own routes are left to the page's log-in (`page_user` tells who is signed in there); anything else
is a 401 that asks for Basic credentials.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Awaitable, Callable

from webui.serving.accounts import Accounts
from webui.serving.caller import USER_SCOPE_KEY

ASGIApp = Callable[[dict, Any, Any], Awaitable[None]]


def basic_credentials(scope: dict) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic …` header, None when absent or malformed."""
    for key, value in scope.get("headers") or []:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                raw = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = raw.partition(":")
            return (user, password) if sep else None
    return None


class AuthGuard:
    """`page_user(scope)` returns the page's signed-in account (or None); `page_route(path)` says
    whether a path is served by the page, whose own log-in answers for it."""

    def __init__(self, app: ASGIApp, accounts: Accounts,
                 page_user: Callable[[dict], str | None] | None = None,
                 page_route: Callable[[str], bool] | None = None) -> None:
        self.app, self.accounts = app, accounts
        self.page_user, self.page_route = page_user, page_route

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or not self.accounts.enabled:
            await self.app(scope, receive, send)
            return
        creds = basic_credentials(scope)
        if creds is not None and self.accounts.check_api(*creds):
            await self.app({**scope, USER_SCOPE_KEY: creds[0]}, receive, send)
            return
        user = self.page_user(scope) if self.page_user is not None else None
        if user:
            await self.app({**scope, USER_SCOPE_KEY: user}, receive, send)
            return
        if creds is None and self.page_route is not None and self.page_route(scope.get("path", "")):
            await self.app(scope, receive, send)  # the page's own log-in decides
            return
        await _unauthorized(scope, send)


async def _unauthorized(scope: dict, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error": "Unauthorized", "detail": "log in: this server has accounts "
                       "(HTTP Basic for the API, the log-in page for the UI)"}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"www-authenticate", b'Basic realm="Stable Diffusion web UI"')]})
    await send({"type": "http.response.body", "body": body})
