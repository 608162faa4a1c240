"""Refuse browser requests that another site's page makes, and names the server does not answer to.

Any web page a user visits can make their browser POST to http://127.0.0.1:7860 (a form or a
`fetch` without CORS still reaches the server; only the answer is hidden). So, on every server:

- a state-changing request (POST, PUT, PATCH, DELETE; a websocket) whose `Origin` is not the
  server's own (scheme aside, host and port as in `Host`), or that the browser marks
  `Sec-Fetch-Site: cross-site`, is refused with 403 unless the origin is allowed by
  `--cors-allow-origins` / `--cors-allow-origins-regex`;
- a request whose `Host` is not a name the server answers to is refused with 421: a DNS-rebinding
  page (a name of the attacker's that resolves to 127.0.0.1) sends its own name there. IP addresses
  are always fine (a rebinding page cannot use one), and so are localhost, the machine's host name,
  `--server-name` and `--allowed-host` names;
- Gradio's own CORS headers (it echoes local origins, and any origin for a non-local Host) are
  dropped for origins that are not the server's own or allowed.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = frozenset({80, 443})


def split_host(value: str) -> tuple[str, int | None]:
    """`host[:port]` (or `[v6]:port`) → (lowercase host without brackets, explicit non-default port)."""
    try:
        parts = urlsplit("//" + value.strip())
        name, port = (parts.hostname or "").lower(), parts.port
    except ValueError:  # a port that is no number
        return value.strip().lower(), None
    return name, None if port in DEFAULT_PORTS else port


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class OriginPolicy:
    """Which `Host` names the server answers to (None: any) and which foreign origins may call it."""

    def __init__(self, hosts: frozenset[str] | None, cors_origins: tuple[str, ...] = (),
                 cors_regex: str | None = None) -> None:
        self.hosts = None if hosts is None else frozenset(h.lower().strip("[]") for h in hosts)
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)
        self.cors_regex = re.compile(cors_regex) if cors_regex else None

    def host_allowed(self, host: str) -> bool:
        if self.hosts is None or not host:
            return True
        name, _ = split_host(host)
        return is_ip(name) or name in self.hosts

    def cors_allowed(self, origin: str) -> bool:
        origin = origin.rstrip("/")
        return origin in self.cors_origins or bool(self.cors_regex and self.cors_regex.fullmatch(origin))

    @staticmethod
    def same_origin(origin: str, host: str) -> bool:
        try:
            parts = urlsplit(origin)
            o_name, o_port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            return False
        if not o_name or parts.scheme not in ("http", "https"):
            return False  # "null" (a sandboxed or file: page) is nobody's origin
        return (o_name, None if o_port in DEFAULT_PORTS else o_port) == split_host(host)

    def refusal(self, method: str, headers: dict[str, str], websocket: bool = False) -> tuple[int, str] | None:
        """(status, message) when the request must be refused, else None."""
        host = headers.get("host", "")
        if not self.host_allowed(host):
            return 421, (f"this server does not answer to the name {host!r} (a DNS-rebinding page would use "
                         "such a name); start it with --allowed-host NAME to allow it")
        if not (websocket or method in UNSAFE_METHODS):
            return None
        origin = headers.get("origin")
        if origin is not None and not self.same_origin(origin, host) and not self.cors_allowed(origin):
            return 403, (f"refused a {method} from a page of another site ({origin}): only the server's own page "
                         "may change things (--cors-allow-origins allows other origins)")
        if headers.get("sec-fetch-site") == "cross-site" and not (origin and self.cors_allowed(origin)):
            return 403, "refused a request the browser marks as coming from another site (Sec-Fetch-Site: cross-site)"
        return None

    def keeps_cors_headers(self, headers: dict[str, str]) -> bool:
        origin = headers.get("origin")
        return origin is None or self.same_origin(origin, headers.get("host", "")) or self.cors_allowed(origin)


class OriginGuard:
    """ASGI middleware applying an `OriginPolicy` to every HTTP request and websocket."""

    def __init__(self, app: Any, policy: OriginPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        websocket = scope["type"] == "websocket"
        refused = self.policy.refusal(scope.get("method", "GET"), headers, websocket)
        if refused is not None:
            if websocket:
                await send({"type": "websocket.close", "code": 1008, "reason": refused[1][:120]})
                return
            body = json.dumps({"detail": refused[1]}).encode()
            await send({"type": "http.response.start", "status": refused[0],
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if websocket or self.policy.keeps_cors_headers(headers):
            await self.app(scope, receive, send)
            return

        async def without_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[(k, v) for k, v in message.get("headers", [])
                                                 if not k.lower().startswith(b"access-control-")])
            await send(message)

        await self.app(scope, receive, without_cors)
