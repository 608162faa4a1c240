"""Refuse request bodies over `--max-upload-mb` with 413, before the app reads them whole.

A declared `Content-Length` over the limit is refused before the app runs; a chunked body is
counted as it streams and cut off at the limit (the app sees the client go away and its answer is
replaced). The rest of the body is read and dropped before the answer, up to a bound: a client
still sending when the server closes would see a connection reset instead of the 413.
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
        state = {"received": 0, "over": False, "started": False}

        async def counted() -> dict:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            if state["over"] and not state["started"]:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self.drain(receive)
            await self.refuse(send)
