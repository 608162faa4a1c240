"""Issue 19 points 2 and 3 over HTTP, on a real `--nowebui` server with three API accounts (bob and
alice, and root the admin) and a tiny real checkpoint: jobs have owners; bob cannot interrupt, skip,
cancel or see the progress and preview of alice's job, root can; the fair queue takes bob's single job
right after alice's running one although she queued three before it; the per-user queue limit and
the request-size limits answer 429/422 naming the limit. Per-user params.txt files."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from conftest import Server, start_server, stop_server, wait_for_model

ALICE, BOB, ROOT_ = ("alice", "a:pw"), ("bob", "b-pw"), ("root", "r-pw")
BODY = {"prompt": "a red circle", "seed": 5, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler",
        "save_images": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tiny_models import make_tiny_checkpoint
    data = tmp_path_factory.mktemp("owners")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    make_tiny_checkpoint(ckpts / "tiny-sd1.safetensors", family="sd1")
    accounts = ",".join(f"{n}:{p}" for n, p in (ALICE, BOB, ROOT_))
    srv = start_server(data, ckpts, "--api-auth", accounts, "--admin", "root", auth=ROOT_)
    assert wait_for_model(srv, timeout=180).get("sd_checkpoint_hash"), "the model did not load"
    yield srv
    stop_server(srv)


def post(server: Server, path: str, who: tuple[str, str], body: Any = None) -> requests.Response:
    url = server.api(path) if not path.startswith("/") else server.url + path
    return requests.post(url, json=body, auth=who, timeout=30)


def progress(server: Server, who: tuple[str, str], task: str) -> dict:
    r = post(server, "/internal/progress", who, {"id_task": task, "live_preview": True})
    assert r.status_code == 200, r.text
    return r.json()


class Background:
    """txt2img requests sent from threads; `done` records the order their answers came back."""

    def __init__(self, server: Server) -> None:
        self.server, self.threads, self.out, self.done = server, [], {}, []
        self.lock = threading.Lock()

    def send(self, who: tuple[str, str], task: str, **kw: Any) -> None:
        def run() -> None:
            r = requests.post(self.server.api("txt2img"), json={**BODY, "force_task_id": task, **kw}, auth=who,
                              timeout=600)
            with self.lock:
                self.out[task] = r
                self.done.append(task)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self) -> None:
        for t in self.threads:
            t.join(600)


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_owner_isolation_and_fair_order(server: Server) -> None:
    bg = Background(server)
    long_id = "task(txt2img-ALICELONG)"
    bg.send(ALICE, long_id, steps=500)  # the longest allowed: root stops it
    wait_for("alice's job to sample", lambda: (progress(server, ALICE, long_id)["active"]
             and requests.get(server.api("progress"), auth=ALICE, timeout=10).json()["state"]["sampling_step"] >= 2))

    # alice sees her job's progress and (soon) its live preview; bob sees that it runs, nothing more
    mine = wait_for("a live preview", lambda: (lambda p: p if p["live_preview"] else None)(
        progress(server, ALICE, long_id)))
    assert mine["active"] and 0 < mine["progress"] < 1 and mine["live_preview"].startswith("data:image/png;base64,")
    theirs = progress(server, BOB, long_id)
    assert theirs == {"active": True, "queued": False, "completed": False, "progress": None, "eta": None,
                      "live_preview": None, "id_live_preview": -1, "textinfo": None}
    assert requests.get(server.api("progress"), auth=ALICE, timeout=10).json()["state"]["job"] == "txt2img (api)"
    bobs_view = requests.get(server.api("progress"), auth=BOB, timeout=10).json()
    assert bobs_view["state"]["job"] == "" and bobs_view["current_image"] is None and bobs_view["progress"] == 0
    roots_view = requests.get(server.api("progress"), auth=ROOT_, timeout=10).json()
    assert roots_view["state"]["job"] == "txt2img (api)" and roots_view["state"]["sampling_step"] >= 2

    # bob cannot stop it: A1111's bodiless interrupt/skip act on his own running job (none), by id: 403
    assert post(server, "interrupt", BOB).status_code == 200 and post(server, "skip", BOB).status_code == 200
    for path, body in (("interrupt", {"id_task": long_id}), ("skip", {"id_task": long_id})):
        r = post(server, path, BOB, body)
        assert r.status_code == 403 and "another user's job" in r.json()["detail"], r.text
    r = requests.delete(f"{server.url}/internal/tasks/{long_id}", auth=BOB, timeout=10)
    assert r.status_code == 403
    assert post(server, "interrupt", BOB, {"id_task": "task(txt2img-NOSUCHJOB)"}).status_code == 404
    assert requests.get(server.api("progress"), auth=ALICE, timeout=10).json()["state"]["interrupted"] is False

    # the fair queue: alice queues three more, then bob one; bob's goes first (alice just started one)
    for i in range(3):
        bg.send(ALICE, f"task(txt2img-ALICE{i})", seed=10 + i)
        wait_for(f"ALICE{i} queued", lambda i=i: progress(server, ALICE, f"task(txt2img-ALICE{i})")["queued"])
    bg.send(BOB, "task(txt2img-BOB0)", seed=20, prompt="a blue square")
    wait_for("BOB0 queued", lambda: progress(server, BOB, "task(txt2img-BOB0)")["queued"])
    pending = requests.get(f"{server.url}/internal/pending-tasks", auth=ROOT_, timeout=10).json()
    assert pending == {"size": 4, "tasks": ["task(txt2img-BOB0)", "task(txt2img-ALICE0)", "task(txt2img-ALICE1)",
                                            "task(txt2img-ALICE2)"]}
    assert progress(server, BOB, "task(txt2img-BOB0)")["textinfo"] == "In queue: 1/4"
    assert progress(server, ALICE, "task(txt2img-ALICE1)")["textinfo"] == "In queue: 3/4"
    assert progress(server, BOB, "task(txt2img-ALICE1)")["textinfo"] is None  # not his: no details
    bobs = requests.get(f"{server.url}/internal/pending-tasks", auth=BOB, timeout=10).json()
    assert bobs == {"size": 4, "tasks": ["task(txt2img-BOB0)"]}

    # limits: queued jobs per user (429), images and megapixels per request (422), each named
    limits = {"queue_max_jobs_per_user": 1, "max_images_per_request": 2, "generation_max_pixels": 10000}
    assert post(server, "options", ROOT_, limits).status_code == 200
    try:
        r = post(server, "txt2img", BOB, {**BODY, "seed": 21})
        assert r.status_code == 429 and "queued jobs per user is 1" in r.json()["detail"], r.text
        r = post(server, "txt2img", ROOT_, {**BODY, "batch_size": 3})
        assert r.status_code == 422 and "limit of 2 images per request" in r.json()["detail"], r.text
        r = post(server, "txt2img", ROOT_, {**BODY, "width": 128, "height": 128})
        assert r.status_code == 422 and "generation_max_pixels allows 10000" in r.json()["detail"], r.text
    finally:
        reset = {"queue_max_jobs_per_user": 0, "max_images_per_request": 0, "generation_max_pixels": 64 * 1024 * 1024}
        assert post(server, "options", ROOT_, reset).status_code == 200

    # bob cannot cancel alice's queued job; she can; root (admin) can cancel hers and stop the running one
    r = requests.delete(f"{server.url}/internal/tasks/task(txt2img-ALICE2)", auth=BOB, timeout=10)
    assert r.status_code == 403
    r = requests.delete(f"{server.url}/internal/tasks/task(txt2img-ALICE2)", auth=ALICE, timeout=10)
    assert r.status_code == 200 and r.json() == {"id_task": "task(txt2img-ALICE2)", "result": "cancelled"}
    r = post(server, "interrupt", ROOT_, {"id_task": "task(txt2img-ALICE1)"})
    assert r.status_code == 200 and r.json()["result"] == "cancelled"
    assert post(server, "interrupt", ROOT_).status_code == 200  # A1111's bodiless call: the running job, anyone's
    bg.join()

    assert bg.out[long_id].status_code == 200
    for cancelled in ("task(txt2img-ALICE1)", "task(txt2img-ALICE2)"):
        assert bg.out[cancelled].status_code == 409 and "cancelled" in bg.out[cancelled].json()["detail"]
    # the order they ran in: the long job, then bob's single job, then alice's next
    ran = [t for t in bg.done if bg.out[t].status_code == 200]
    assert ran == [long_id, "task(txt2img-BOB0)", "task(txt2img-ALICE0)"], ran
    assert '"prompt": "a blue square"' in bg.out["task(txt2img-BOB0)"].json()["info"]
    assert progress(server, BOB, "task(txt2img-BOB0)")["completed"]


def test_params_txt_is_per_account(tmp_path: Path) -> None:
    """↙️'s params.txt: one file per account with accounts; A1111's single file without."""
    from webui.serving.accounts import NO_ACCOUNTS, Accounts
    from webui.serving.caller import caller_for_user
    from webui.ui.params_file import load_params, params_path, save_params

    accounts = Accounts(ui={"alice": "a", "bob": "b", "../evil": "c"}, api={}, admins=frozenset({"alice"}))
    alice, bob = caller_for_user("alice", accounts), caller_for_user("bob", accounts)
    save_params(tmp_path, alice, "alice's prompt\nSteps: 20")
    assert load_params(tmp_path, alice) == "alice's prompt\nSteps: 20" and load_params(tmp_path, bob) == ""
    save_params(tmp_path, bob, "bob's prompt")
    assert load_params(tmp_path, alice).startswith("alice's") and load_params(tmp_path, bob) == "bob's prompt"
    evil = params_path(tmp_path, caller_for_user("../evil", accounts))
    assert evil.parent == tmp_path / "params" and ".." not in evil.name
    single = caller_for_user(None, NO_ACCOUNTS, "session-1")
    assert params_path(tmp_path, single) == tmp_path / "params.txt"
    save_params(tmp_path, single, "one user")
    assert (tmp_path / "params.txt").read_text(encoding="utf-8") == "one user"
