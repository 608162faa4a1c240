"""Following a generation job from the page, and finding it again after a reload.

The Generate event and the page-load restore both stream the same thing: the place in the queue,
the progress bar, live previews, then the result. The job's task id is kept in the browser
(`gr.BrowserState`, A1111 keeps it in localStorage too), so a reloaded page reattaches to a job that
is still queued or running, or shows the result of the last one while the server still has it.
"""
from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, Iterator

import gradio as gr

from webui.ui.gallery_values import infotext_for_index, infotext_html

if TYPE_CHECKING:
    from webui.serving.caller import Caller
    from webui.services.container import Services
    from webui.services.jobs import Job
    from webui.ui.txt2img import Txt2ImgTab

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# a queued job whose page went away is dropped unless a reloaded page picks it up within this time
REATTACH_GRACE_SECONDS = 30.0
# BrowserState values are encrypted with this; one per process, so a UI rebuilt by "Reload UI" still
# reads what the page stored (a restarted server has no jobs to restore anyway)
_BROWSER_SECRET = secrets.token_hex(16)


def create_task_state(mode: str) -> gr.BrowserState:
    """Where the page keeps the task id of its newest job (localStorage `<mode>_task_id`)."""
    return gr.BrowserState("", storage_key=f"{mode}_task_id", secret=_BROWSER_SECRET)


def page_job(svc: "Services", caller: "Caller", task_id: str | None) -> "Job | None":
    """The job a page's Interrupt / Skip acts on: the running job for an admin (everyone without
    accounts: A1111's global buttons), otherwise the page's own job (its task id) when the caller owns it."""
    job = svc.queue.get(task_id) if isinstance(task_id, str) and task_id else None
    if caller.admin:  # the page's own job when it runs (several run at once with scale-out), else the running one
        return job if job is not None and svc.queue.is_running(job.state) else svc.queue.current_job
    return job if job is not None and job.owner == caller.owner and not job.future.done() else None


def may_restore(caller: "Caller", job: "Job") -> bool:
    """A reloaded page shows only its own user's job. Without accounts the browser session changes
    with each reload, so every job may come back, as in A1111."""
    return not caller.accounts or job.owner == caller.owner


def fail(tab: "Txt2ImgTab", message: str) -> dict:
    gr.Warning(message, title="Generation failed")
    return {tab.status: f"Error: {message}"}


def follow(svc: "Services", job: "Job", tab: "Txt2ImgTab", progress: Any) -> Iterator[dict]:
    """Stream the job's queue place, progress and previews until it is done."""
    last_place: tuple[int, int] | None = None
    running = False
    last_preview = -1
    svc.queue.watch(job)
    try:
        while not job.future.done():
            place, size = svc.queue.place(job)  # k of N in the order the fair queue will take them
            if place:
                if (place, size) != last_place:
                    last_place = (place, size)
                    yield {tab.status: f"In queue: {place}/{size}"}  # A1111's words
                progress(0.0, desc=f"In queue: {place}/{size}")
            elif svc.queue.position(job) == 0:
                st = job.state
                # yield first, then report progress: a yield hides the bar until the next progress update
                if not running:
                    running = True
                    yield {tab.status: "Sampling…"}
                img = st.current_image
                if img is not None and st.preview_id != last_preview:
                    last_preview = st.preview_id
                    yield {tab.gallery: [img]}
                if st.sampling_steps:
                    what = "Hires fix" if st.textinfo == "Hires fix" else "Sampling"
                    desc = f"{what}: {st.sampling_step}/{st.sampling_steps} steps"
                    if st.job_count > 1:
                        desc += f" (job {min(st.job_no + 1, st.job_count)}/{st.job_count})"
                    eta = st.eta()
                    if eta > 0.5:
                        desc += f", ETA {eta:.0f}s"
                    progress(st.progress, desc=desc)
                else:
                    loading = getattr(svc.models, "loading", None)
                    progress(0.0, desc=f"Loading {loading}…" if loading else "Preparing…")
            time.sleep(POLL_SECONDS)
    finally:
        # the page went away (reload, closed tab) or the job ended: a queued job with no page left
        # is dropped after the grace time, so a closed tab frees the queue but a reload keeps it
        svc.queue.unwatch(job, REATTACH_GRACE_SECONDS)


def result_outputs(svc: "Services", job: "Job", tab: "Txt2ImgTab") -> dict:
    """The finished job's gallery, infotext and status (or its error)."""
    from webui.services.container import GenerationError
    try:
        result = job.result()
    except GenerationError as e:
        return fail(tab, str(e))
    except Exception as e:  # the page must keep working whatever the job raised  # noqa: BLE001
        if job.future.cancelled():
            return {tab.status: "Cancelled: the job was dropped from the queue"}
        return fail(tab, f"{type(e).__name__}: {e}")
    st = job.state
    dt = (st.ended or time.time()) - (st.started or st.ended or time.time())
    shown, texts = result.shown()  # grids first (A1111's gallery)
    for img, text in zip(shown, texts):
        img.info["parameters"] = text  # gradio copies text chunks into the gallery PNGs
    info_dict = result.info_for()
    info_dict["shown_infotexts"] = texts
    info_dict["saved_files"] = [str(p) for p in result.paths]  # 📂 opens their folder
    first = infotext_for_index(info_dict, 0)
    msg = f"Time taken: {dt:.1f} s" + (f" · {result.memory}" if result.memory else "")
    if not shown:
        msg = f"Interrupted: no image ({dt:.1f} s)"
    elif result.paths:
        msg += f" · saved {result.paths[0].name}" + (f" (+{len(result.paths) - 1})" if len(result.paths) > 1
                                                      else "")
    return {tab.gallery: gr.Gallery(value=shown, selected_index=0),
            tab.info: infotext_html(first, info_dict.get("warnings")),
            tab.status: msg, tab.gen_info: info_dict, tab.selected: 0}


def connect_restore(svc: "Services", demo: gr.Blocks, tab: "Txt2ImgTab") -> None:
    """On page load: reattach to the tab's newest job (queued or running: progress, preview, then
    the result) or show its result when it has finished; the prompts typed last come back too."""
    if tab.task_state is None:
        return
    mode = "img2img" if tab.img2img is not None else "txt2img"
    outputs = [tab.gallery, tab.info, tab.status, tab.gen_info, tab.selected, tab.prompt, tab.neg_prompt]

    def restore(task_id: str | None, prompt: str | None, negative: str | None, request: gr.Request,
                progress: gr.Progress = gr.Progress()) -> Iterator[dict]:
        from webui.ui.page_caller import page_caller
        kept = {tab.prompt: prompt if prompt else gr.update(), tab.neg_prompt: negative if negative else gr.update()}
        job = svc.queue.get(task_id) if isinstance(task_id, str) and task_id else None
        if job is not None and not may_restore(page_caller(svc, request), job):
            job = None  # another user's job (a shared browser): never shown here
        if job is None:  # nothing to restore (first visit, or the server no longer has the job)
            yield kept
            return
        if not job.future.done():
            yield kept | {tab.status: "Reattached to the running job…"}
            yield from follow(svc, job, tab, progress)
        else:
            yield kept
        yield result_outputs(svc, job, tab)

    # the prompts are kept in localStorage by the page itself (no request per keystroke)
    for box, key in ((tab.prompt, f"{mode}_last_prompt"), (tab.neg_prompt, f"{mode}_last_negative_prompt")):
        box.change(None, box, None, js=f"(v) => {{ try {{ localStorage.setItem('{key}', v ?? ''); }} catch (e) {{}} }}")
    read = (f"(id, p, n) => {{ const get = (k) => {{ try {{ return localStorage.getItem(k); }} catch (e) "
            f"{{ return null; }} }}; return [id, get('{mode}_last_prompt') ?? '', "
            f"get('{mode}_last_negative_prompt') ?? '']; }}")
    demo.load(restore, [tab.task_state, tab.prompt, tab.neg_prompt], outputs, js=read, show_progress="minimal",
              show_progress_on=[tab.status], api_visibility="private")
