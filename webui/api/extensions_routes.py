"""`GET /sdapi/v1/extensions` in A1111's shape: one `{name, remote, branch, commit_hash, version,
commit_date, enabled}` per extension folder (plain folders too, with empty git fields).

Installing, updating and enabling have no API routes, as in A1111: the Extensions tab is the way
(and it refuses them when the server listens beyond localhost)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from webui.extensions import manage


def build_extensions_router(svc: Any) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["extensions"])

    @r.get("/extensions")
    def get_extensions() -> list[dict[str, Any]]:
        manager = getattr(svc, "extensions", None)
        if manager is None:
            return []
        # A1111 re-lists the folder on each call, so an extension installed since start shows up
        return [e.api_entry() for e in manage.refresh(manager)]

    return r
