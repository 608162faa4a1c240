"""One job queue for the UI and the API: jobs run one at a time, fairly across their owners.

The running job's `JobState` is what `/sdapi/v1/progress` and the UI's progress bar read;
interrupt and skip are flags on it that the denoising loop checks every step.

Every job has A1111's task id (`task(<kind>-<7 random A-Z0-9>)`, or the caller's own through
`force_task_id`); queued, running and the last `KEEP_FINISHED` finished jobs can be looked up by it,
so `/internal/progress` answers for them and a reloaded page reattaches to its job or shows its result.

Every job has an owner (the account, the browser session without accounts, or SERVER_OWNER for the
server's own work). The next job is chosen round-robin across owners (webui/serving/fair_queue.py),
and a queue place shown anywhere is the place in that order.

Jobs run one at a time, except "shared" jobs (generations sent to a scale-out backend, which run on
other machines): up to `slots` of those run side by side. A local job (a checkpoint load, a merge,
training) still runs alone, and the fair order is kept: a job that cannot start yet holds the line.
"""
from __future__ import annotations

import random
import re
import string
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

from webui.serving.fair_queue import fair_order, pick_next
from webui.services.limits import LimitError

SERVER_OWNER = "server"  # the server's own jobs (the start-up checkpoint load): never limited


class Interrupted(Exception):
    """Raised inside the loop when the user presses Interrupt."""


class Skipped(Exception):
    """Raised inside the loop when the user presses Skip (the current image is dropped)."""


@dataclass
class JobState:
    job_id: str
    label: str
    job_timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    job_count: int = 1
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    textinfo: str = ""
    current_image: Image.Image | None = None
    current_image_step: int = -1
    interrupted: bool = False
    stop_now: bool = False  # a second Interrupt: stop at once even between images (A1111 #14659)
    skipped: bool = False
    started: float | None = None
    ended: float | None = None
    finished: bool = False
    preview_id: int = 0  # grows with each new live preview (A1111's id_live_preview)
    # a scale-out worker's job: images to save are collected here (output_stage.SaveOrder) for the front
    deferred_saves: list | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "current_image" and value is not None:  # every new preview gets a new id
            object.__setattr__(self, "preview_id", self.__dict__.get("preview_id", 0) + 1)
        object.__setattr__(self, name, value)

    def interrupt(self) -> None:
        """The first call asks to stop (after the current image when `interrupt_after_current`
        applies); a second call on the same job stops it at once."""
        if self.interrupted:
            self.stop_now = True
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def check(self) -> None:
        """Called by the loop each step; raising unwinds sampling cleanly."""
        if self.interrupted:
            raise Interrupted()
        if self.skipped:
            self.skipped = False
            raise Skipped()

    @property
    def progress(self) -> float:
        if self.finished:
            return 1.0
        if self.job_count <= 0:
            return 0.0
        step = self.sampling_step / self.sampling_steps if self.sampling_steps else 0.0
        return min(1.0, (self.job_no + step) / self.job_count)

    def eta(self) -> float:
        if not self.started:
            return 0.0
        elapsed = time.time() - self.started
        p = self.progress
        return elapsed / p - elapsed if p > 0.01 else 0.0


@dataclass
class Job:
    state: JobState
    fn: Callable[[JobState], Any]
    future: Future = field(default_factory=Future)
    watchers: int = 0  # pages following this job now (a queued job nobody follows any more is dropped)
    workers: list[threading.Thread] = field(default_factory=list, repr=False)  # the queue's worker threads
    owner: str = SERVER_OWNER  # who queued it: only they (or an admin) may stop it or see its previews
    shared: bool = False  # may run beside other shared jobs (its work runs elsewhere: a scale-out backend)

    def result(self, timeout: float | None = None) -> Any:
        if threading.current_thread() in self.workers and not self.future.done():
            # waiting here would wait forever: this thread is the one that would run the job
            raise JobInJobError(f"{self.state.label}: a running job waited for a job queued behind it; "
                                "run the work in place (JobQueue.call) instead")
        return self.future.result(timeout)

    @property
    def task_id(self) -> str:
        return self.state.job_id


KEEP_FINISHED = 16  # finished jobs kept for restore-after-reload and progress lookups (results hold images)
TASK_ID_MAX = 200


class JobInJobError(RuntimeError):
    """Code running inside a job submitted another job and waited for it (a deadlock, refused)."""


class TaskIdError(ValueError):
    """A forced task id that is unusable (empty, too long, or naming a job that is still queued or running)."""


def new_task_id(kind: str) -> str:
    """A1111's form: `task(<kind>-<7 random A-Z0-9>)`."""
    tail = "".join(random.choices(string.ascii_uppercase + string.digits, k=7))
    kind = re.sub(r"[^A-Za-z0-9_]+", "_", kind.split("(")[0].strip()).strip("_")  # "txt2img (api)" -> txt2img
    return f"task({kind or 'job'}-{tail})"


class JobQueue:
    def __init__(self, slots: int = 1) -> None:
        self._cv = threading.Condition()
        self._pending: list[Job] = []  # arrival order; the fair policy picks from it
        self._running: list[Job] = []  # in start order; more than one only for shared jobs
        self._by_thread: dict[threading.Thread, Job] = {}  # worker thread -> the job it runs now
        self._known: OrderedDict[str, Job] = OrderedDict()  # task id -> job: queued, running, recent finished
        self._last_start: dict[str, int] = {}  # owner -> sequence number of their newest started job
        self._starts = 0
        self._closed = False
        self.max_queued_per_owner = 0  # the "queued jobs per user" limit (0 = none); set from the settings
        self.slots = 0
        self._threads: list[threading.Thread] = []
        self.set_slots(slots)

    def set_slots(self, slots: int) -> None:
        """How many shared jobs may run at once (the scale-out backend's replicas); never below 1."""
        with self._cv:
            self.slots = max(1, int(slots))
            while len(self._threads) < self.slots:
                name = f"job-worker-{len(self._threads)}" if self._threads else "job-worker"
                t = threading.Thread(target=self._worker, name=name, daemon=True)
                self._threads.append(t)
                t.start()
            self._cv.notify_all()

    def submit(self, fn: Callable[[JobState], Any], label: str = "job", task_id: str | None = None,
               owner: str = SERVER_OWNER, shared: bool = False) -> Job:
        """Queue `fn` for `owner`; `task_id` is the caller's id (A1111's `force_task_id`), else a new one.
        Raises LimitError (429) when the owner already has `max_queued_per_owner` jobs waiting."""
        with self._cv:
            if self._closed:
                raise RuntimeError("server is shutting down")
            limit = int(self.max_queued_per_owner or 0)
            if limit and owner != SERVER_OWNER and self._waiting_of(owner) >= limit:
                raise LimitError(f"you already have {limit} jobs waiting in the queue: the server's limit of "
                                 f"queued jobs per user is {limit} (queue_max_jobs_per_user)", 429)
            if task_id is not None:
                task_id = str(task_id).strip()
                if not task_id or len(task_id) > TASK_ID_MAX:
                    raise TaskIdError(f"task id must be 1 to {TASK_ID_MAX} characters")
                old = self._known.get(task_id)
                if old is not None and not old.future.done():
                    raise TaskIdError(f"task id {task_id} is already queued or running")
                if old is not None and old.owner != owner:  # its owner may still restore its result
                    raise TaskIdError(f"task id {task_id} is another user's recent job")
            else:
                task_id = new_task_id(label)
                while task_id in self._known:
                    task_id = new_task_id(label)
            job = Job(state=JobState(job_id=task_id, label=label), fn=fn, workers=self._threads, owner=str(owner),
                      shared=bool(shared))
            self._known.pop(task_id, None)
            self._known[task_id] = job
            self._pending.append(job)
            self._cv.notify_all()
            return job

    def on_worker(self) -> bool:
        """True inside a running job (in a worker thread)."""
        return threading.current_thread() in self._threads

    def call(self, fn: Callable[[JobState], Any], label: str = "job", owner: str = SERVER_OWNER) -> Any:
        """Run ``fn`` as a job and return its result.  Called from inside a running job (a script
        switching the checkpoint, a listener fired by a job), it runs at once in place, under the
        running job's state: nothing else runs meanwhile, and queueing it would wait forever."""
        if self.on_worker():
            job = self._by_thread.get(threading.current_thread())
            return fn(job.state if job is not None else JobState(job_id=new_task_id(label), label=label))
        return self.submit(fn, label, owner=owner).result()

    def get(self, task_id: str) -> Job | None:
        """The queued, running or recently finished job with this task id."""
        with self._cv:
            return self._known.get(task_id)

    def _waiting(self) -> list[Job]:
        """Queued jobs in the order they will start (call with the lock held)."""
        live = [j for j in self._pending if not j.future.cancelled()]
        return fair_order(live, _owner_of, self._last_start)

    def _waiting_of(self, owner: str) -> int:
        return sum(1 for j in self._pending if j.owner == owner and not j.future.cancelled())

    def pending_ids(self) -> list[str]:
        """Task ids of the queued jobs, the next one first."""
        with self._cv:
            return [j.task_id for j in self._waiting()]

    def place(self, job: Job) -> tuple[int, int]:
        """(k, N): the job is k-th of the N queued jobs in the order they will start; (0, N) when it is
        not queued (running or done)."""
        with self._cv:
            order = self._waiting()
            return (order.index(job) + 1 if job in order else 0), len(order)

    def watch(self, job: Job) -> None:
        with self._cv:
            job.watchers += 1

    def unwatch(self, job: Job, grace: float) -> None:
        """A page stopped following `job` (reload, closed tab). A queued job nobody follows again
        within `grace` seconds is dropped, so a reload can reattach while a closed tab frees the queue."""
        with self._cv:
            job.watchers = max(0, job.watchers - 1)
            if job.watchers or job not in self._pending:
                return

        def drop_if_unwatched() -> None:
            with self._cv:
                if job.watchers:
                    return
            self.cancel(job)

        timer = threading.Timer(grace, drop_if_unwatched)
        timer.daemon = True
        timer.start()

    def position(self, job: Job) -> int:
        """0 = running now, N = N jobs ahead of it (the running one included); -1 = done."""
        with self._cv:
            if job in self._running:
                return 0
            order = self._waiting()
            if job in order:
                return order.index(job) + (1 if self._running else 0)
            return -1

    def queued(self, owner: str | None = None) -> int:
        """How many jobs wait (only `owner`'s when given)."""
        with self._cv:
            if owner is not None:
                return self._waiting_of(owner)
            return sum(1 for j in self._pending if not j.future.cancelled())

    def count_unfinished(self, label_prefix: str) -> int:
        """Queued and running jobs whose label starts with `label_prefix` (e.g. training runs)."""
        with self._cv:
            jobs = [j for j in self._known.values() if not j.future.done()]
            return sum(1 for j in jobs if j.state.label.startswith(label_prefix))

    @property
    def current(self) -> JobState | None:
        job = self.current_job
        return job.state if job else None

    @property
    def current_job(self) -> Job | None:
        """The running job, the longest-running one when several shared jobs run (while a training run
        serves a generation between its steps: that one)."""
        running = self._running
        return running[0] if running else None

    def running_jobs(self) -> list[Job]:
        """Every running job, in start order."""
        with self._cv:
            return list(self._running)

    def is_running(self, state: JobState) -> bool:
        return any(j.state is state for j in self._running)

    def interrupt(self) -> None:
        for job in self.running_jobs():
            job.state.interrupt()

    def skip(self) -> None:
        for job in self.running_jobs():
            job.state.skip()

    def stop(self, job: Job) -> str:
        """Cancel `job` when it waits, interrupt it when it runs: "cancelled", "interrupted" or
        "finished" (nothing left to stop)."""
        if self.cancel(job):
            return "cancelled"
        if job.future.done():
            return "finished"
        job.state.interrupt()
        return "interrupted"

    def cancel(self, job: Job) -> bool:
        """Remove a job that has not started (the UI calls this when its browser tab goes away)."""
        with self._cv:
            if job in self._pending:
                self._pending.remove(job)
                job.future.cancel()
                return True
        return False

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def head(self) -> JobState | None:
        """The state of the job that runs next (None when nothing waits)."""
        with self._cv:
            job = self._next()
            return job.state if job else None

    def _next(self) -> Job | None:
        """The job the fair policy starts next (lock held); cancelled ones are dropped on the way."""
        self._pending = [j for j in self._pending if not j.future.cancelled()]
        return pick_next(self._pending, _owner_of, self._last_start)

    def _startable(self) -> Job | None:
        """The next job if it may start now (lock held): anything when nothing runs; a shared job beside
        other shared jobs while a slot is free. Otherwise it holds the line (the fair order is kept)."""
        job = self._next()
        if job is None or not self._running:
            return job
        if job.shared and len(self._running) < self.slots and all(j.shared for j in self._running):
            return job
        return None

    def _take(self, job: Job) -> None:
        """Make `job` running in this thread (lock held) and note when its owner last started one."""
        self._pending.remove(job)
        self._starts += 1
        self._last_start[job.owner] = self._starts
        self._running.append(job)
        self._by_thread[threading.current_thread()] = job

    def _release(self, job: Job) -> None:
        """`job` ended (lock held): free its slot and wake the workers."""
        if job in self._running:
            self._running.remove(job)
        if self._by_thread.get(threading.current_thread()) is job:
            del self._by_thread[threading.current_thread()]
        self._cv.notify_all()

    def run_waiting_inline(self, state: JobState, accept: Callable[[JobState], bool] | None = None) -> int:
        """Run the jobs waiting behind the running job (whose state is `state`) right now, in the
        calling worker thread, then make that job current again; returns how many ran.

        A long job (training) calls this between its steps so generations are served meanwhile.
        The fair order holds: jobs are taken in the order the worker would take them, and the first
        one `accept` refuses (e.g. a checkpoint load) stops the round, so it and everything behind it
        wait for the long job. While an inline job runs it is `current`, so /progress shows it and
        Interrupt stops it, not the long job."""
        ran = 0
        me = threading.current_thread()
        while True:
            with self._cv:
                owner = self._by_thread.get(me)
                if owner is None or owner.state is not state or self._running != [owner]:
                    return ran
                job = self._next()
                if job is None or (accept is not None and not accept(job.state)):
                    return ran
                self._running.remove(owner)  # the inline job is the running one meanwhile
                self._take(job)
            try:
                self._run(job)
            finally:
                with self._cv:
                    self._release(job)
                    self._running.insert(0, owner)
                    self._by_thread[me] = owner
            ran += 1

    def _run(self, job: Job) -> None:
        if job.future.set_running_or_notify_cancel():
            job.state.started = time.time()
            try:
                job.future.set_result(job.fn(job.state))
            except BaseException as e:  # the worker must survive any job failure
                job.future.set_exception(e)
            finally:
                job.state.ended = time.time()
                job.state.finished = True
        self._forget_old()

    def _forget_old(self) -> None:
        with self._cv:
            done = [k for k, j in self._known.items() if j.future.done()]
            for k in done[:max(0, len(done) - KEEP_FINISHED)]:
                del self._known[k]

    def _worker(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cv:
                job = self._startable() if self._threads.index(me) < self.slots else None
                while job is None and not self._closed:
                    self._cv.wait()
                    job = self._startable() if self._threads.index(me) < self.slots else None
                if job is None:
                    return
                self._take(job)
                if job.shared:
                    self._cv.notify_all()  # another free worker may start the next shared job beside it
            try:
                self._run(job)
            finally:
                with self._cv:
                    self._release(job)


def _owner_of(job: Job) -> str:
    return job.owner
