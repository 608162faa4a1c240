"""The page's log-in for the auth guard: Gradio's own log-in form checks our accounts, and the
session it signs in (a cookie) lets the page's JavaScript reach our routes too.

Gradio keeps a signed-in session as a random token in the cookie `access-token-<cookie_id>` (and
`access-token-unsecure-<cookie_id>`, the one a browser keeps over plain http), mapped to the account
name in its app's `tokens`. `PageLogin.user(scope)` reads the same cookie, so `/internal/progress`,
`/webui/v1/outputs…` and the rest work after the log-in with the cookie alone.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from starlette.requests import cookie_parser

from webui.serving.accounts import Accounts

log = logging.getLogger(__name__)

# What Gradio serves without a log-in and what its log-in page needs; everything else needs an
# account. The page itself ("/") shows Gradio's log-in form until one signs in.
OPEN_PATHS = frozenset({"/", "/login", "/login/", "/favicon.ico", "/theme.css", "/gradio_api/theme.css",
                        "/manifest.json", "/robots.txt", "/pwa_icon"})
# Gradio's built JavaScript, CSS and fonts (the same files for everybody; no user content)
OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon/")

_COOKIE = re.compile(r"access-token-(?:unsecure-)?(?P<cookie_id>.+)")


def is_open_page_path(path: str) -> bool:
    """Whether a request for `path` goes to the page's log-in rather than being refused."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class PageLogin:
    """The signed-in page sessions of one server. Kept across "Reload UI" (a new Gradio app takes
    over this one's cookie name and sessions), so a reload does not sign everybody out."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.cookie_id: str | None = None
        self.tokens: dict[str, str] | None = None

    def check(self, username: str, password: str) -> bool:
        """Gradio's `auth=` callable: the page's accounts, compared in constant time."""
        ok = self.accounts.check_ui(username, password)
        if not ok:
            log.warning("page log-in refused for %r", username[:64])
        return ok

    def attach(self, app: Any) -> None:
        """Find the Gradio app mounted in `app` and share its session store (first time), or hand
        it the one from before a reload."""
        gradio_app = mounted_gradio_app(app)
        if gradio_app is None:
            raise RuntimeError("no Gradio app mounted: the page's log-in cannot be wired")
        if self.tokens is None:
            self.cookie_id, self.tokens = gradio_app.cookie_id, gradio_app.tokens
        else:
            gradio_app.cookie_id, gradio_app.tokens = self.cookie_id, self.tokens

    def user(self, scope: dict) -> str | None:
        """The account signed in on the page that sent this request (None: nobody)."""
        if not self.tokens or not self.cookie_id:
            return None
        for key, value in scope.get("headers") or []:
            if key != b"cookie":
                continue
            for name, token in cookie_parser(value.decode("latin-1")).items():
                m = _COOKIE.fullmatch(name)
                if m and m.group("cookie_id") == self.cookie_id:
                    user = self.tokens.get(token)
                    if user:
                        return user
        return None


def mounted_gradio_app(app: Any) -> Any:
    from gradio.routes import App
    from starlette.routing import Mount
    for route in app.routes:
        if isinstance(route, Mount) and isinstance(route.app, App):
            return route.app
    return None
