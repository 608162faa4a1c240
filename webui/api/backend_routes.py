"""`GET /webui/v1/backend`: where generations run (in-process or Ray Serve workers) and, with scale-out,
how the workers are doing — replicas running, jobs, checkpoint loads, the affinity hit rate, retries."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter


def build_backend_router(svc: Any) -> APIRouter:
    router = APIRouter(tags=["scale-out"])

    @router.get("/webui/v1/backend")
    def backend() -> dict[str, Any]:
        return svc.executor.describe()

    return router
