"""A1111's task-progress routes, served with the page (they exist without --api, as in A1111):
`POST /internal/progress` follows one job by its task id, `GET /internal/pending-tasks` lists the
queue and `DELETE /internal/tasks/{id_task}` stops one job (cancels it while it waits, interrupts it
while it runs). They only read job state, so they answer at once whatever the worker is doing.

With accounts, a job's details (progress, live preview, textinfo) go to its owner and admins only;
anyone else learns whether it is queued, active or completed, and nothing more."""
from __future__ import annotations

import base64
import io
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from webui.serving.caller import Caller, caller_from_scope
from webui.services.jobs import Job, JobQueue


class ProgressRequest(BaseModel):
    id_task: str | None = Field(None, max_length=200, description="the task id given when the job was queued")
    id_live_preview: int = Field(-1, description="the id of the preview the client already has")
    live_preview: bool = Field(True, description="send a new live preview if there is one")


class ProgressResponse(BaseModel):
    active: bool = Field(description="the job is running now")
    queued: bool = Field(description="the job waits in the queue")
    completed: bool = Field(description="the job has finished")
    progress: float | None = Field(None, description="0..1")
    eta: float | None = Field(None, description="seconds left, estimated")
    live_preview: str | None = Field(None, description="data URI of the newest preview, when it changed")
    id_live_preview: int = Field(-1, description="the id of the preview sent, or the one the client had")
    textinfo: str | None = Field(None, description='"Waiting...", "In queue: k/N", or what the job does')


def _data_uri(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def job_progress(queue: JobQueue, job: Job | None, id_live_preview: int = -1, live_preview: bool = True,
                 previews_enabled: bool = True) -> ProgressResponse:
    """A1111's answer for one job: queued jobs say their place, a running one its progress and
    (only when it changed since `id_live_preview`) its newest preview."""
    if job is None:
        return ProgressResponse(active=False, queued=False, completed=False, textinfo="Waiting...")
    state = job.state
    done = job.future.done()
    running = queue.is_running(state) and not done
    if not running:
        place, size = queue.place(job)
        if place:
            return ProgressResponse(active=False, queued=True, completed=False, textinfo=f"In queue: {place}/{size}")
        return ProgressResponse(active=False, queued=False, completed=done, progress=1.0 if done else None,
                                textinfo="Done" if done else "Waiting...")
    progress = state.progress
    eta = None
    if state.started and progress > 0:
        elapsed = time.time() - state.started
        eta = elapsed / progress - elapsed
    preview, preview_id = None, id_live_preview
    image = state.current_image
    if live_preview and previews_enabled and image is not None and state.preview_id != id_live_preview:
        preview, preview_id = _data_uri(image), state.preview_id
    return ProgressResponse(active=True, queued=False, completed=False, progress=progress, eta=eta,
                            live_preview=preview, id_live_preview=preview_id, textinfo=state.textinfo or None)


def redacted(answer: ProgressResponse) -> ProgressResponse:
    """What someone else's job shows: its state only (no progress, preview or textinfo)."""
    return ProgressResponse(active=answer.active, queued=answer.queued, completed=answer.completed)


def stop_task(queue: JobQueue, caller: Caller, id_task: str) -> dict[str, Any]:
    """Cancel (queued) or interrupt (running) the job `id_task` for `caller`: 404 when unknown,
    403 when it is someone else's and the caller is no admin."""
    job = queue.get(id_task)
    if job is None:
        raise HTTPException(404, f"no job with task id {id_task} (unknown, or finished long ago)")
    if not caller.may_act_on(job.owner):
        raise HTTPException(403, f"{id_task} is another user's job: only its owner or an admin may stop it")
    return {"id_task": id_task, "result": queue.stop(job)}


def build_progress_router(svc: Any) -> APIRouter:
    r = APIRouter(tags=["internal"])

    @r.post("/internal/progress", response_model=ProgressResponse)
    async def internal_progress(req: ProgressRequest, request: Request) -> ProgressResponse:
        """Answered on the event loop; only a new preview's PNG is encoded in a worker thread."""
        job = svc.queue.get(req.id_task) if req.id_task else None
        caller = caller_from_scope(request.scope, svc.accounts)
        if job is not None and not caller.may_act_on(job.owner):
            return redacted(job_progress(svc.queue, job, live_preview=False))
        enabled = bool(svc.settings.get("live_previews_enable"))
        answer = job_progress(svc.queue, job, req.id_live_preview, False)
        image = job.state.current_image if job is not None and answer.active else None
        if req.live_preview and enabled and image is not None and job.state.preview_id != req.id_live_preview:
            answer.id_live_preview = job.state.preview_id
            answer.live_preview = await run_in_threadpool(_data_uri, image)
        return answer

    @r.get("/internal/pending-tasks")
    async def pending_tasks(request: Request) -> dict[str, Any]:
        """All queued task ids, next first; a user who is no admin sees only their own ids (size
        still counts every queued job)."""
        caller = caller_from_scope(request.scope, svc.accounts)
        jobs = [svc.queue.get(t) for t in svc.queue.pending_ids()]
        tasks = [j.task_id for j in jobs if j is not None and caller.may_act_on(j.owner)]
        return {"size": len(jobs), "tasks": tasks}

    @r.delete("/internal/tasks/{id_task}")
    async def delete_task(id_task: str, request: Request) -> dict[str, Any]:
        """Stop one job: cancelled while queued, interrupted while running ({id_task, result})."""
        return stop_task(svc.queue, caller_from_scope(request.scope, svc.accounts), id_task)

    return r
