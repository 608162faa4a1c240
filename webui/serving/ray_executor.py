"""The front's side of scale-out: each queued generation goes to the `GenerationWorker` deployment
through a Ray Serve handle, routed by its checkpoint (multiplexed model id), and its progress,
previews and result stream back onto the job's state.

Faults: a replica that dies mid-job, cannot load the checkpoint, or goes silent is given up and the
job runs once more on another replica (seeds are fixed before the first try, so the pictures are
the same). Images are written here, by the front, from the save orders the worker sends.
"""
from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from webui.processing.errors import GenerationError
from webui.serving.executor import BackendUnavailable, GenerationSpec

log = logging.getLogger(__name__)

_END = object()


class ReplicaLost(Exception):
    """The replica running a job died, could not load its checkpoint, or stopped answering."""

    def __init__(self, message: str, died: bool = True) -> None:
        super().__init__(message)
        self.died = died


@dataclass
class RoutingStats:
    """What the front saw of the replicas (the affinity test and the benchmark read these)."""
    jobs: int = 0
    loads: int = 0  # jobs whose replica had to read the checkpoint from disk first
    retries: int = 0
    by_replica: dict[str, int] = field(default_factory=dict)
    checkpoint_replicas: dict[str, set[str]] = field(default_factory=dict)

    def hit_rate(self) -> float:
        return 1.0 - self.loads / self.jobs if self.jobs else 0.0


class JobControl:
    """A tiny Ray actor the front owns: Interrupt / Skip counts per task id, polled by the replica
    running that task (a Serve stream carries data one way only)."""

    def __init__(self) -> None:
        self._flags: dict[str, tuple[int, int]] = {}

    def set(self, task_id: str, interrupts: int, skips: int) -> None:
        self._flags[task_id] = (interrupts, skips)

    def flags(self, task_id: str) -> tuple[int, int]:
        return self._flags.get(task_id, (0, 0))

    def forget(self, task_id: str) -> None:
        self._flags.pop(task_id, None)


class RayExecutor:
    """Executor on a Ray Serve deployment; `connect()` (in a background thread) makes it ready."""
    shared = True

    def __init__(self, outputs_dir: Path, replicas: int, *, min_replicas: int = 1, affinity: bool = True,
                 event_timeout_s: float = 60.0, ready_timeout_s: float = 120.0, replica_wait_s: float = 60.0,
                 hard_stop_after_s: float = 15.0) -> None:
        self.outputs_dir = outputs_dir
        self.replicas = max(1, int(replicas))
        self.min_replicas = int(min_replicas)
        self.affinity = affinity
        self.event_timeout_s = event_timeout_s  # silence longer than this = a lost replica
        self.ready_timeout_s = ready_timeout_s  # for the cluster to start and the deployment to register
        self.replica_wait_s = replica_wait_s  # for a first replica to run (else 503)
        self.hard_stop_after_s = hard_stop_after_s  # after a second Interrupt, cancel the request if still running
        self.stats = RoutingStats()
        self.handle: Any = None
        self.control: Any = None
        self.failure: str = ""
        self._running_replicas: Callable[[], int] | None = None  # replicas running now (serve.status)
        self._why: Callable[[], str] = lambda: ""  # Serve's message on the deployment
        self.on_close: Callable[[], None] | None = None  # set by the backend: take the deployment down
        self.running_jobs: dict[str, dict[str, Any]] = {}  # task id -> the replica (and its pid) running it
        self._ready = threading.Event()
        self._lock = threading.Lock()

    # ---- readiness ----
    def connected(self, handle: Any, control: Any, running_replicas: Callable[[], int],
                  why: Callable[[], str] = lambda: "") -> None:
        self.handle, self.control, self._running_replicas, self._why = handle, control, running_replicas, why
        self._ready.set()

    def running(self) -> int:
        """Replicas running now (0 before the cluster is up)."""
        return self._running_replicas() if self._running_replicas is not None else 0

    def failed(self, reason: str) -> None:
        self.failure = reason
        self._ready.set()

    def capacity(self) -> int:
        return self.replicas

    def describe(self) -> dict[str, Any]:
        with self._lock:
            s = self.stats
            return {"backend": "ray", "capacity": self.replicas, "ready": self._ready.is_set() and not self.failure,
                    "failure": self.failure or None, "replicas_running": self.running() if self.handle else 0,
                    "routing": "affinity" if self.affinity else "any", "jobs": s.jobs, "loads": s.loads,
                    "hit_rate": round(s.hit_rate(), 4), "retries": s.retries, "jobs_by_replica": dict(s.by_replica),
                    "replicas_by_checkpoint": {k: sorted(v) for k, v in s.checkpoint_replicas.items()},
                    "running": dict(self.running_jobs)}

    def close(self) -> None:
        if self.on_close is not None:
            try:
                self.on_close()
            except Exception as e:  # stopping anyway
                log.warning("the Ray backend did not shut down cleanly: %s", e)

    def _wait_ready(self) -> None:
        if not self._ready.wait(self.ready_timeout_s):
            raise BackendUnavailable("the Ray backend is still starting its workers; try again shortly")
        if self.failure:
            raise BackendUnavailable(f"the Ray backend could not start: {self.failure}")
        if self.min_replicas > 0:  # (scaled to zero, the request itself makes Serve start one)
            deadline = time.monotonic() + self.replica_wait_s
            while self.running() == 0:
                if time.monotonic() > deadline:
                    why = self._why()
                    raise BackendUnavailable("no GenerationWorker replica is running in the Ray cluster" +
                                             (f": {why}" if why else "") + " (see `ray status` and `serve status`: "
                                             "a replica needs a node with what its ray_actor_options ask for)")
                time.sleep(0.5)

    # ---- one job ----
    def run(self, spec: GenerationSpec, state: Any) -> Any:
        self._wait_ready()
        lost: list[ReplicaLost] = []
        try:
            while True:
                try:
                    return self._attempt(spec, state)
                except ReplicaLost as e:
                    lost.append(e)
                    if state.interrupted:
                        raise GenerationError(f"the job was stopped and its worker was lost ({e})") from None
                    # a died replica: once; a node without the checkpoint: as many times as there are replicas
                    if len(lost) > max(1, self.replicas - 1) or sum(x.died for x in lost) > 1:
                        raise GenerationError("the job failed on every worker tried: " +
                                              "; ".join(map(str, lost))) from None
                log.warning("%s: %s; running it again on another replica", spec.task_id, lost[-1])
                with self._lock:
                    self.stats.retries += 1
                state.textinfo = "Retrying on another worker"
                state.job_no = state.sampling_step = 0
        finally:
            with self._lock:
                self.running_jobs.pop(spec.task_id, None)
            try:
                self.control.forget.remote(spec.task_id)
            except Exception:
                pass

    def _attempt(self, spec: GenerationSpec, state: Any) -> Any:
        options: dict[str, Any] = {"stream": True}
        if self.affinity:
            options["multiplexed_model_id"] = spec.checkpoint
        self.control.set.remote(spec.task_id, 0, 0)  # a retry starts with no Interrupt / Skip pending
        gen = self.handle.options(**options).generate.remote(spec)
        events: queue_mod.Queue = queue_mod.Queue()

        def consume() -> None:
            try:
                for ev in gen:
                    events.put(ev)
                events.put(_END)
            except BaseException as e:  # handed to the job thread, which decides
                events.put(e)
        threading.Thread(target=consume, name=f"ray-stream-{spec.task_id}", daemon=True).start()

        sent = (0, 0)
        skips = 0
        hard_stop_at: float | None = None
        replica = ""
        last_seen = time.monotonic()
        while True:
            if state.skipped:  # the front's Skip: counted and sent; the replica skips its current picture
                state.skipped = False
                skips += 1
            want = (2 if state.stop_now else 1 if state.interrupted else 0, skips)
            if want != sent:
                self.control.set.remote(spec.task_id, *want)
                sent = want
            if state.stop_now and hard_stop_at is None:
                hard_stop_at = time.monotonic() + self.hard_stop_after_s
            if hard_stop_at is not None and time.monotonic() > hard_stop_at:
                gen.cancel()  # the replica did not stop in time: cancel the request (it stops its job)
                raise GenerationError("interrupted: the worker did not stop in time and its request was cancelled")
            try:
                ev = events.get(timeout=min(0.2, self.event_timeout_s))
            except queue_mod.Empty:
                silent = time.monotonic() - last_seen
                if not replica and silent > self.replica_wait_s + self.event_timeout_s:
                    # never taken: every replica busy or none placed (autoscaling waits for nodes): not a retry
                    gen.cancel()
                    raise BackendUnavailable(f"no worker took the job within {silent:.0f} s (all busy or none "
                                             "running: see `serve status`)")
                if replica and silent > self.event_timeout_s:
                    gen.cancel()
                    raise ReplicaLost(f"no word from worker {replica} for {self.event_timeout_s:.0f} s")
                continue
            last_seen = time.monotonic()
            if ev is _END:
                raise ReplicaLost(f"worker {replica or '?'} ended the job without a result")
            if isinstance(ev, BaseException):
                self._raise_remote(ev, replica)
            kind = ev.get("type")
            if kind == "started":
                replica = ev["replica"]
                with self._lock:
                    self.running_jobs[spec.task_id] = {"replica": replica, "pid": ev.get("pid"),
                                                       "checkpoint": spec.checkpoint}
                state.textinfo = f"Running on {replica}"
            elif kind == "status":
                state.textinfo = ev.get("textinfo") or state.textinfo
            elif kind == "loaded":
                self._note_start(spec.checkpoint, replica, bool(ev.get("loaded")))
            elif kind == "progress":
                state.job_count = max(1, int(ev["job_count"]))
                state.job_no = int(ev["job_no"])
                state.sampling_step, state.sampling_steps = int(ev["step"]), int(ev["steps"])
                state.textinfo = ev.get("textinfo") or state.textinfo
                if ev.get("preview") is not None:
                    state.current_image = ev["preview"]
                    state.current_image_step = int(ev.get("preview_step") or 0)
            elif kind == "result":
                return self._finish(ev)

    def _note_start(self, checkpoint: str, replica: str, loaded: bool) -> None:
        with self._lock:
            s = self.stats
            s.jobs += 1
            s.loads += int(loaded)
            s.by_replica[replica] = s.by_replica.get(replica, 0) + 1
            s.checkpoint_replicas.setdefault(checkpoint, set()).add(replica)

    def _raise_remote(self, e: BaseException, replica: str) -> None:
        """A failure from the stream: a lost replica is retried; the job's own error (a bad request,
        an unusable file) is the user's, as in-process."""
        from ray import exceptions as rex
        from webui.serving.ray_worker import CheckpointNotOnNode
        lost = tuple(t for t in (getattr(rex, "ActorDiedError", None), getattr(rex, "RayActorError", None),
                                 getattr(rex, "ActorUnavailableError", None), getattr(rex, "WorkerCrashedError", None),
                                 getattr(rex, "NodeDiedError", None)) if t is not None)
        cause = e.as_instanceof_cause() if isinstance(e, rex.RayTaskError) else e
        if isinstance(cause, CheckpointNotOnNode):
            raise ReplicaLost(str(cause).splitlines()[-1], died=False) from None
        if isinstance(cause, lost) or isinstance(e, lost):
            raise ReplicaLost(f"worker {replica or '?'} died ({type(e).__name__})") from None
        if isinstance(cause, GenerationError):
            raise GenerationError(_last_line(str(cause))) from None
        if type(e).__name__ in ("RequestCancelledError", "TaskCancelledError"):
            raise GenerationError("the request to the worker was cancelled") from None
        raise e

    def _finish(self, ev: dict[str, Any]) -> Any:
        """The worker's result: its save orders written here, the paths put where the pipeline's were."""
        processed = ev["processed"]
        paths: list[Path] = []
        grid_path = None
        for order in ev.get("saves") or []:
            try:
                path = order.write(self.outputs_dir)
            except OSError as e:
                raise GenerationError(f"cannot save the {'grid' if order.grid else 'image'} into "
                                      f"{order.directory}: {e.strerror or e}") from None
            if order.grid:
                grid_path = path
            else:
                paths.append(path)
        processed.paths = paths
        processed.grid_path = grid_path
        processed.info["worker"] = ev.get("replica")
        return processed


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else text
    for prefix in ("GenerationError: ", "webui.processing.errors.GenerationError: "):
        if prefix in line:
            line = line.split(prefix, 1)[1]
    return line
