"""`GET /webui/v1/backend`: where generations run (in-process or Ray Serve workers) and, with scale-out,
how the workers are doing — replicas running, jobs, checkpoint loads, the affinity hit rate, retries.
Which replica runs which task is shown to admins only (task ids are their owners')."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from webui.serving.caller import caller_from_scope


def build_backend_router(svc: Any) -> APIRouter:
    router = APIRouter(tags=["scale-out"])

    @router.get("/webui/v1/backend")
    def backend(request: Request) -> dict[str, Any]:
        out = svc.executor.describe()
        caller = caller_from_scope(request.scope, svc.accounts)
        if "running" in out and not caller.admin:
            out["running"] = {t: r for t, r in out["running"].items()
                              if (job := svc.queue.get(t)) is not None and caller.may_act_on(job.owner)}
        return out

    return router
