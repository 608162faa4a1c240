"""Two small routes the page's scripts use (webui/ui/js/page_jobs.js), mounted with or without --api:

* `GET /notification.mp3`: the data dir's notification.mp3 (A1111 plays the file of that name from
  its install folder), and only that file; 404 while it is absent. Gradio's file access is not
  opened to the data dir for it.
* `GET /internal/job-progress`: the running job's progress and ETA, for the progress in the window
  title while one of the page's generations runs (with accounts: only when it is the caller's job;
  `queued` counts the caller's own waiting jobs unless they are an admin).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from webui.serving.caller import caller_from_scope
from webui.ui.page_habits import SOUND_FILE, sound_path


def build_page_router(svc: Any) -> APIRouter:
    r = APIRouter(tags=["internal"])

    @r.get(f"/{SOUND_FILE}", include_in_schema=False)
    def notification_sound() -> FileResponse:
        path = sound_path(svc)
        if not path.is_file():
            raise HTTPException(404, f"no {SOUND_FILE} in the data dir ({path.parent})")
        # no-cache: a replaced file is played at once (the browser revalidates with the ETag)
        return FileResponse(path, media_type="audio/mpeg", headers={"Cache-Control": "no-cache"})

    @r.get("/internal/job-progress")
    async def job_progress(request: Request) -> dict[str, Any]:
        """{active, queued, progress 0..1, eta seconds or None, textinfo} of the running job."""
        caller = caller_from_scope(request.scope, svc.accounts)
        mine = [j for j in svc.queue.running_jobs() if caller.may_act_on(j.owner)]  # several with scale-out
        state = mine[0].state if mine else None
        queued = svc.queue.queued() if caller.admin else svc.queue.queued(caller.owner)
        if state is None:
            return {"active": False, "queued": queued, "progress": 0.0, "eta": None, "textinfo": None}
        eta = state.eta()
        return {"active": True, "queued": queued, "progress": round(state.progress, 4),
                "eta": round(eta, 1) if eta > 0 else None, "textinfo": state.textinfo or None}

    return r
