"""Refuse request bodies over `--max-upload-mb` with 413, before the app reads them whole.

A declared `Content-Length` over the limit is refused before the app runs; a body without one
(chunked) is read here first, counted, and handed to the app whole when it fits. The rest of a
refused body is read and dropped before the answer, up to a bound: a client still sending when the
server closes would see a connection reset instead of the 413.
"""
from __future__ import annotations

import json
from typing import Any

from webui.serving.origin_guard import Receive, Scope, Send

DRAIN_LIMIT = 256 * 1024 * 1024  # beyond this a refused body is not read on; the connection closes


class UploadLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    def message(self) -> str:
        mb = self.max_bytes / (1024 * 1024)
        return (f"the request is larger than {mb:g} MB, the most this server takes "
                "(its owner can raise it with --max-upload-mb)")

    async def refuse(self, send: Send, status: int = 413, text: str | None = None) -> None:
        body = json.dumps({"detail": text or self.message()}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def drain(self, receive: Receive) -> None:
        """Read and drop what the client still sends, at most DRAIN_LIMIT bytes (then it is cut off)."""
        dropped = 0
        while dropped <= DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            dropped += len(message.get("body", b""))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", []) if k.lower() == b"content-length"), None)
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self.refuse(send, 400, "the Content-Length header is not a number")
                return
            if size > self.max_bytes:
                await self.drain(receive)
                await self.refuse(send)
                return
            await self.app(scope, receive, send)  # declared and within the limit
            return
        # No Content-Length (a chunked body): read it here, counting, before the app sees any of it,
        # then hand it over whole. Cutting the app off mid-read instead raced with the app's own
        # readers (a client could wait forever for its 413).
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                if message.get("more_body", False):
                    await self.drain(receive)
                await self.refuse(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        handed = False

        async def replay() -> dict:
            nonlocal handed
            if not handed:
                handed = True
                return whole
            return await receive()  # afterwards: the client's disconnect, as before

        await self.app(scope, replay, send)
