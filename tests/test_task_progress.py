"""Issue 18 point 6 (and the task-id part of issue 19 point 2): jobs have A1111's task ids,
`/internal/progress` and `/internal/pending-tasks` follow them, a reloaded page reattaches to its
running job and shows the last result and prompt; a second Interrupt stops at once; a skipped
picture is labelled as skipped, not interrupted. Real server, tiny real checkpoint, real browser."""
from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
import requests

from conftest import Server
from test_ui_browser import page, ui_server

__all__ = ["page", "ui_server"]  # fixtures used by name

BODY = {"prompt": "a red circle", "seed": 5, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler"}


def _progress(server: Server, task_id: str | None, **kw: Any) -> dict:
    r = requests.post(f"{server.url}/internal/progress", json={"id_task": task_id, **kw}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _in_background(server: Server, **kw: Any) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        r = requests.post(server.api("txt2img"), json={**BODY, **kw}, timeout=600)
        out["status"], out["json"] = r.status_code, r.json()
    t = threading.Thread(target=run)
    t.start()
    return t, out


def _wait_step(server: Server, task_id: str, step: int = 2, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = _progress(server, task_id)
        if p["active"] and requests.get(server.api("progress"), timeout=10).json()["state"]["sampling_step"] >= step:
            return p
        time.sleep(0.05)
    raise AssertionError(f"{task_id} never reached step {step}")


def test_task_ids_and_internal_progress(ui_server: Server) -> None:
    unknown = _progress(ui_server, "task(nothing-here)")
    assert unknown == {"active": False, "queued": False, "completed": False, "progress": None, "eta": None,
                       "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting..."}
    assert requests.get(f"{ui_server.url}/internal/pending-tasks", timeout=10).json() == {"size": 0, "tasks": []}

    long_run, long_out = _in_background(ui_server, steps=300, force_task_id="task(txt2img-LONGRUN)")
    running = _wait_step(ui_server, "task(txt2img-LONGRUN)")
    assert running["active"] and not running["queued"] and 0 < running["progress"] < 1
    # a second job with the running job's id is refused; one with its own id waits in the queue
    dup = requests.post(ui_server.api("txt2img"), json={**BODY, "force_task_id": "task(txt2img-LONGRUN)"}, timeout=60)
    assert dup.status_code == 409 and "already queued or running" in dup.json()["detail"]
    queued_run, queued_out = _in_background(ui_server, seed=6, force_task_id="task(txt2img-SECOND)")
    deadline = time.time() + 30
    while "task(txt2img-SECOND)" not in requests.get(f"{ui_server.url}/internal/pending-tasks", timeout=10).json()["tasks"]:
        assert time.time() < deadline
        time.sleep(0.05)
    waiting = _progress(ui_server, "task(txt2img-SECOND)")
    assert waiting["queued"] and not waiting["active"] and waiting["textinfo"] == "In queue: 1/1"

    # live previews: sent once per new preview id, as a PNG data URI
    p = _progress(ui_server, "task(txt2img-LONGRUN)", live_preview=True)
    deadline = time.time() + 30
    while p["live_preview"] is None:
        assert time.time() < deadline
        time.sleep(0.1)
        p = _progress(ui_server, "task(txt2img-LONGRUN)", live_preview=True)
    assert p["live_preview"].startswith("data:image/png;base64,") and p["id_live_preview"] > 0
    same = _progress(ui_server, "task(txt2img-LONGRUN)", id_live_preview=p["id_live_preview"] + 10 ** 6)
    assert same["active"]
    none = _progress(ui_server, "task(txt2img-LONGRUN)", live_preview=False)
    assert none["live_preview"] is None

    requests.post(ui_server.api("interrupt"), timeout=10)
    long_run.join(120)
    queued_run.join(120)
    assert long_out["status"] == 200 and queued_out["status"] == 200
    assert json.loads(queued_out["json"]["info"])["task_id"] == "task(txt2img-SECOND)"
    done = _progress(ui_server, "task(txt2img-SECOND)")
    assert done["completed"] and not done["active"] and not done["queued"]
    # ids made by the server have A1111's form
    r = requests.post(ui_server.api("txt2img"), json=BODY, timeout=120).json()
    assert re.fullmatch(r"task\(txt2img-[A-Z0-9]{7}\)", json.loads(r["info"])["task_id"])
    # malformed bodies are 4xx
    assert requests.post(f"{ui_server.url}/internal/progress", json={"id_task": "x" * 500}, timeout=10).status_code == 422
    assert requests.post(f"{ui_server.url}/internal/progress", data="nope", timeout=10).status_code == 422


def test_second_interrupt_stops_at_once_and_skip_is_labelled(ui_server: Server) -> None:
    def run_with_interrupts(clicks: int, seed: int) -> list[str]:
        t, out = _in_background(ui_server, steps=60, n_iter=3, seed=seed, force_task_id=f"task(txt2img-INT{seed})")
        _wait_step(ui_server, f"task(txt2img-INT{seed})", step=3)
        for _ in range(clicks):
            assert requests.post(ui_server.api("interrupt"), timeout=10).status_code == 200
        t.join(300)
        assert out["status"] == 200, out
        return json.loads(out["json"]["info"])["infotexts"]

    once = run_with_interrupts(1, 31)  # interrupt_after_current: the current picture is finished first
    assert len(once) == 1 and "Interrupted" not in once[0], once
    twice = run_with_interrupts(2, 32)  # the second click stops in the middle of it
    assert len(twice) == 1 and "Interrupted: at step " in twice[0] and "of 60" in twice[0], twice

    t, out = _in_background(ui_server, steps=60, n_iter=2, seed=33, force_task_id="task(txt2img-SKIP)")
    _wait_step(ui_server, "task(txt2img-SKIP)", step=3)
    assert requests.post(ui_server.api("skip"), timeout=10).status_code == 200
    t.join(300)
    texts = json.loads(out["json"]["info"])["infotexts"]
    assert "Skipped: at step " in texts[0] and "Interrupted" not in texts[0], texts
    assert "Skipped" not in texts[1] and len(texts) == 2  # the next picture runs whole


@pytest.mark.browser
@pytest.mark.slow  # ~60 s of page reloads: the default run keeps to its time budget
def test_reload_reattaches_to_its_job_and_keeps_the_last_result(page: Any, ui_server: Server) -> None:
    # an API job holds the worker (long enough for a slow machine: it is interrupted below), so the
    # page's job is certainly still queued when the page reloads
    blocker, blocker_out = _in_background(ui_server, steps=500, width=256, height=256,
                                          force_task_id="task(txt2img-BLOCKER)")
    _wait_step(ui_server, "task(txt2img-BLOCKER)", step=1, timeout=120)
    page.fill("#txt2img_prompt textarea", "a blue square kept after reload")
    for key, value in (("steps", "12"), ("width", "64"), ("height", "64")):
        page.fill(f"#txt2img_{key} input[type=number]", value)
        page.press(f"#txt2img_{key} input[type=number]", "Enter")
    page.click("#txt2img_generate")
    # the page keeps the job's task id (encrypted, as Gradio's BrowserState stores it)
    page.wait_for_function("() => !!localStorage.getItem('txt2img_task_id')")
    pending = requests.get(f"{ui_server.url}/internal/pending-tasks", timeout=10).json()
    assert pending["size"] == 1 and pending["tasks"][0].startswith("task(txt2img-"), pending
    page.reload()
    page.wait_for_selector("#txt2img_prompt textarea")
    # reattached to the queued job (it was not dropped when the old page went away)
    page.wait_for_function("() => { const s = document.querySelector('#txt2img_status');"
                           " return s && s.innerText.includes('In queue: 1/1'); }", timeout=120_000)
    assert requests.get(f"{ui_server.url}/internal/pending-tasks", timeout=10).json() == pending
    assert page.input_value("#txt2img_prompt textarea") == "a blue square kept after reload"
    requests.post(ui_server.api("interrupt"), timeout=10)  # the blocker stops; the page's job runs
    blocker.join(300)
    assert blocker_out["status"] == 200
    page.wait_for_function("() => { const st = document.querySelector('#txt2img_status textarea');"
                           " return st && st.value.startsWith('Time taken'); }", timeout=600_000)
    info = page.inner_text("#txt2img_info")
    assert "a blue square kept after reload" in info and "Steps: 12" in info, info
    assert _progress(ui_server, pending["tasks"][0])["completed"]

    # a reload after the job ended shows the same result and prompt again
    page.reload()
    page.wait_for_function("() => { const i = document.querySelector('#txt2img_info');"
                           " return i && i.innerText.includes('Steps: 12'); }", timeout=120_000)
    page.wait_for_function("() => { const i = document.querySelector('#txt2img_gallery img');"
                           " return i && i.complete && i.naturalWidth === 64; }")
    assert page.input_value("#txt2img_prompt textarea") == "a blue square kept after reload"
