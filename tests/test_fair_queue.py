"""Issue 19 point 3 in-process: the real JobQueue takes jobs round-robin across owners (the owner whose
last job started longest ago goes next, arrival order within an owner), the queue places it reports
are the order it really takes, the per-user limit refuses with 429, and stopping a job by id works.
Real queue and worker thread with small python functions as jobs (no model needed)."""
from __future__ import annotations

import threading
import time

import pytest

from webui.serving.fair_queue import fair_order, pick_next
from webui.services.jobs import JobQueue, JobState, TaskIdError
from webui.services.limits import LimitError, check_request_size


class Recorder:
    """Jobs that note when they start; the first one holds the worker until `release`."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gate = threading.Event()
        self.lock = threading.Lock()

    def job(self, name: str, hold: bool = False):
        def run(state: JobState) -> str:
            with self.lock:
                self.started.append(name)
            if hold:
                assert self.gate.wait(30), "the test never released the gate"
            return name
        return run


def wait_running(queue: JobQueue, task_id: str) -> None:
    deadline = time.time() + 10
    while queue.current is None or queue.current.job_id != task_id:
        assert time.time() < deadline, f"{task_id} never started"
        time.sleep(0.005)


@pytest.fixture
def queue():
    q = JobQueue()
    yield q
    q.close()


def test_fair_order_is_round_robin_by_last_start() -> None:
    jobs = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("b", 2)]
    order = fair_order(jobs, lambda j: j[0], {})
    # nobody ran yet: owners take turns in the order they first queued
    assert order == [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2), ("a", 3)]
    # b started a job most recently, a before it, c never: c, a, b, then round-robin
    order = fair_order(jobs, lambda j: j[0], {"a": 5, "b": 9})
    assert order == [("c", 1), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
    assert pick_next(jobs, lambda j: j[0], {"a": 5, "b": 9}) == ("c", 1)
    assert pick_next([], lambda j: j[0], {}) is None
    assert fair_order(jobs[:3], lambda j: j[0], {"a": 1}) == jobs[:3]  # one owner: arrival order


def test_one_users_many_jobs_do_not_starve_anothers_single_job(queue: JobQueue) -> None:
    rec = Recorder()
    gate = queue.submit(rec.job("gate", hold=True), label="gate", owner="alice")
    wait_running(queue, gate.task_id)
    alice = [queue.submit(rec.job(f"a{i}"), label="txt2img", owner="alice") for i in range(50)]
    bob = queue.submit(rec.job("b0"), label="txt2img", owner="bob")
    # the order shown is the order it will take: alice just started one, so bob's single job is next
    ids = queue.pending_ids()
    assert ids[0] == bob.task_id and ids[1:] == [j.task_id for j in alice]
    assert queue.place(bob) == (1, 51) and queue.place(alice[0]) == (2, 51)
    assert queue.position(bob) == 1 and queue.position(alice[0]) == 2 and queue.position(gate) == 0
    rec.gate.set()
    assert bob.result(30) == "b0" and alice[-1].result(30) == "a49"
    assert rec.started[:3] == ["gate", "b0", "a0"], rec.started[:5]
    assert rec.started[3:] == [f"a{i}" for i in range(1, 50)]
    assert queue.position(bob) == -1 and queue.place(bob) == (0, 0)


def test_second_user_waits_for_at_most_one_of_the_first_users_jobs(queue: JobQueue) -> None:
    """Both users queue while a third user's job runs: whoever queued first goes first, then they alternate."""
    rec = Recorder()
    gate = queue.submit(rec.job("gate", hold=True), label="gate", owner="carol")
    wait_running(queue, gate.task_id)
    for i in range(3):
        queue.submit(rec.job(f"a{i}"), owner="alice")
    last = queue.submit(rec.job("b0"), owner="bob")
    queue.submit(rec.job("b1"), owner="bob")
    ahead = queue.pending_ids()
    assert len(ahead) == 5
    rec.gate.set()
    last.result(30)
    queue.get(ahead[-1]).result(30)
    assert rec.started == ["gate", "a0", "b0", "a1", "b1", "a2"]


def test_limits_and_stopping_one_job(queue: JobQueue) -> None:
    rec = Recorder()
    gate = queue.submit(rec.job("gate", hold=True), owner="alice")
    wait_running(queue, gate.task_id)
    queue.max_queued_per_owner = 2
    first = queue.submit(rec.job("a0"), owner="alice")
    queue.submit(rec.job("a1"), owner="alice")
    with pytest.raises(LimitError) as e:
        queue.submit(rec.job("a2"), owner="alice")
    assert e.value.status == 429 and "queued jobs per user is 2" in str(e.value)
    queue.submit(rec.job("b0"), owner="bob")  # the limit is per user
    queue.submit(rec.job("boot"), owner="server")  # the server's own jobs are never limited
    # stopping a queued job cancels it and frees a place; the running one is interrupted
    assert queue.stop(first) == "cancelled" and first.future.cancelled()
    assert first.task_id not in queue.pending_ids() and queue.queued("alice") == 1
    queue.submit(rec.job("a3"), owner="alice")
    assert queue.stop(gate) == "interrupted" and gate.state.interrupted
    rec.gate.set()
    gate.result(30)
    assert queue.stop(gate) == "finished"
    # a finished job's id stays its owner's (a reloaded page restores it); the owner may reuse it
    with pytest.raises(TaskIdError, match="another user's recent job"):
        queue.submit(rec.job("x"), task_id=gate.task_id, owner="bob")
    deadline = time.time() + 10
    while queue.queued() or queue.current is not None:
        assert time.time() < deadline
        time.sleep(0.01)
    assert "a0" not in rec.started and sorted(rec.started) == ["a1", "a3", "b0", "boot", "gate"]


def test_request_size_limits(tmp_path) -> None:
    from webui.settings import Settings
    settings = Settings.load(tmp_path / "config.json")
    check_request_size(settings, 8, 8)  # 0 = no limit (the default)
    settings.update({"max_images_per_request": 4})
    check_request_size(settings, 2, 2)
    with pytest.raises(LimitError) as e:
        check_request_size(settings, 5, 1)
    assert e.value.status == 422 and "5 images requested" in str(e.value) and "limit of 4 images" in str(e.value)
