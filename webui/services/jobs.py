"""One job queue for the UI and the API: jobs run one at a time, in arrival order.

The running job's `JobState` is what `/sdapi/v1/progress` and the UI's progress bar read;
interrupt and skip are flags on it that the denoising loop checks every step.
"""
from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image


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
    skipped: bool = False
    started: float | None = None
    finished: bool = False

    def interrupt(self) -> None:
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

    def result(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout)


class JobQueue:
    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._pending: list[Job] = []
        self._current: Job | None = None
        self._ids = itertools.count(1)
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name="job-worker", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[JobState], Any], label: str = "job") -> Job:
        with self._cv:
            if self._closed:
                raise RuntimeError("server is shutting down")
            job = Job(state=JobState(job_id=f"task({next(self._ids)})", label=label), fn=fn)
            self._pending.append(job)
            self._cv.notify_all()
            return job

    def position(self, job: Job) -> int:
        """0 = running now, N = N jobs ahead of it (the running one included); -1 = done."""
        with self._cv:
            if job is self._current:
                return 0
            if job in self._pending:
                return self._pending.index(job) + (1 if self._current else 0)
            return -1

    def queued(self) -> int:
        with self._cv:
            return len(self._pending)

    @property
    def current(self) -> JobState | None:
        job = self._current
        return job.state if job else None

    def interrupt(self) -> None:
        job = self._current
        if job:
            job.state.interrupt()

    def skip(self) -> None:
        job = self._current
        if job:
            job.state.skip()

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
            return self._pending[0].state if self._pending else None

    def run_waiting_inline(self, state: JobState, accept: Callable[[JobState], bool] | None = None) -> int:
        """Run the jobs waiting behind the running job (whose state is `state`) right now, in the
        calling worker thread, then make that job current again; returns how many ran.

        A long job (training) calls this between its steps so generations are served meanwhile.
        FIFO holds: jobs are taken from the head only, and the first one `accept` refuses (e.g. a
        checkpoint load) stops the round, so it and everything behind it wait for the long job.
        While an inline job runs it is `current`, so /progress shows it and Interrupt stops it,
        not the long job."""
        ran = 0
        while True:
            with self._cv:
                owner = self._current
                if owner is None or owner.state is not state or not self._pending:
                    return ran
                job = self._pending[0]
                if accept is not None and not accept(job.state):
                    return ran
                self._pending.pop(0)
                self._current = job
            try:
                self._run(job)
            finally:
                with self._cv:
                    self._current = owner
            ran += 1

    def _run(self, job: Job) -> None:
        if job.future.set_running_or_notify_cancel():
            job.state.started = time.time()
            try:
                job.future.set_result(job.fn(job.state))
            except BaseException as e:  # the worker must survive any job failure
                job.future.set_exception(e)
            finally:
                job.state.finished = True

    def _worker(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if self._closed and not self._pending:
                    return
                job = self._pending.pop(0)
                self._current = job
            self._run(job)
            with self._cv:
                self._current = None
