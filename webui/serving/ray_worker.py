"""The scale-out worker: a Ray Serve deployment (`GenerationWorker`), one replica per GPU, each with
its own services (model manager, memory manager, extensions' scripts) built from the front's flags.

A request names its checkpoint as the multiplexed model id, so Ray routes it to a replica that holds
that checkpoint already. The replica runs the same pipeline as the in-process path, with saving
deferred: the images to save travel back with the result and the front writes them. Progress and
previews stream back while the job runs; Interrupt / Skip reach the replica through a small control
actor the front owns (the stream itself only flows one way).

Importing this module needs Ray (`pip install .[ray]`); nothing else in the app imports it.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

log = logging.getLogger(__name__)

CONTROL_ACTOR = "webui-job-control"
NAMESPACE = "webui"
# options a replica keeps its own value of: the job names its checkpoint; the replica's checkpoint cache
# is max_models_per_replica (Serve's multiplexer keeps as many)
FRONT_ONLY = {"sd_model_checkpoint", "sd_checkpoints_limit"}
HEARTBEAT_S = 0.5  # an event at least this often, so the front can tell a lost replica from a slow job
TICK_S = 0.05


class CheckpointNotOnNode(RuntimeError):
    """This replica cannot load the job's checkpoint (missing or different on its node): try another."""


@dataclass
class HeldCheckpoint:
    """What `@serve.multiplexed` keeps per checkpoint on a replica (its LRU evicts these)."""
    title: str
    core: "WorkerCore"

    def __del__(self) -> None:  # evicted by the multiplexer: the model service may free it too
        try:
            self.core.release(self.title)
        except Exception:  # never raise from a finaliser
            pass


class WorkerCore:
    """A replica's own services and the one job it runs at a time."""

    def __init__(self, args: argparse.Namespace, max_models: int) -> None:
        from webui.cli import resolve_paths
        from webui.extensions.startup import load_extensions
        from webui.services.container import build_services

        self.svc = build_services(args, resolve_paths(args))
        load_extensions(self.svc)  # the extensions' scripts run here, where the pipeline runs
        self.svc.models.set_cache_limit(max_models)
        self.max_models = max_models
        self.loads = 0  # checkpoints read from disk by this replica
        self.pid = os.getpid()
        self.replica = _replica_name()

    def hold(self, title: str) -> HeldCheckpoint:
        """Load `title` (the front's "name [sha256 short]") unless already held; raises
        CheckpointNotOnNode when this node lacks the file or has a different one."""
        from webui.services.model_service import ModelLoadError
        models = self.svc.models
        try:
            info = models.resolve(title.rsplit(" [", 1)[0] if title.endswith("]") else title)
        except ModelLoadError as e:
            raise CheckpointNotOnNode(f"{self.replica}: {e}") from None
        want = title.rsplit(" [", 1)[1].rstrip("]") if title.endswith("]") else ""
        if want and not self.svc.registry.ensure_hash(info).startswith(want):
            raise CheckpointNotOnNode(f"{self.replica}: {info.name} on this node is a different file "
                                      f"(sha256 {info.sha256[:10] if info.sha256 else '?'}, the job wants {want})")
        if info.name not in models.cached:
            self.loads += 1
        try:
            models.load(info.title)
        except ModelLoadError as e:
            raise CheckpointNotOnNode(f"{self.replica}: {e}") from None
        return HeldCheckpoint(title, self)

    def release(self, title: str) -> None:
        log.info("%s: checkpoint %s evicted from this replica", self.replica, title)

    def apply_options(self, options: dict[str, Any]) -> None:
        """The front's settings for this job (in memory only: nothing is written on the worker)."""
        settings = self.svc.settings
        changes = {k: v for k, v in options.items()
                   if k not in FRONT_ONLY and settings.is_known(k) and settings.get(k) != v}
        if changes:
            settings.update(changes, save=False)

    async def run(self, spec: Any, control: Any) -> AsyncIterator[dict[str, Any]]:
        """Run `spec` in this replica's queue; yield progress events, then the result."""
        from webui.services.jobs import JobState

        self.apply_options(spec.options)
        deferred: list[Any] = []

        def work(state: JobState) -> Any:
            state.deferred_saves = deferred  # the front saves (numbering and names in one place)
            run = self.svc.txt2img.run if spec.kind == "txt2img" else self.svc.img2img_scripts.run
            return run(spec.req, state, save=spec.save)

        job = self.svc.queue.submit(work, label=spec.kind, task_id=spec.task_id or None)
        fut = asyncio.wrap_future(job.future)
        seen_preview = 0
        flags = (0, 0)
        last_sent = 0.0
        try:
            while not fut.done():
                await asyncio.wait({fut}, timeout=TICK_S)
                state = job.state
                if control is not None:
                    try:
                        new = tuple(await control.flags.remote(spec.task_id))
                    except Exception:  # the front's control actor is gone: keep going, the front may retry
                        new = flags
                    for _ in range(max(0, new[0] - flags[0])):
                        state.interrupt()
                    for _ in range(max(0, new[1] - flags[1])):
                        state.skip()
                    flags = new  # type: ignore[assignment]
                preview = None
                if state.current_image is not None and state.preview_id != seen_preview:
                    seen_preview, preview = state.preview_id, state.current_image
                now = time.monotonic()
                if preview is not None or now - last_sent >= HEARTBEAT_S or fut.done():
                    last_sent = now
                    yield {"type": "progress", "job_no": state.job_no, "job_count": state.job_count,
                           "step": state.sampling_step, "steps": state.sampling_steps, "textinfo": state.textinfo,
                           "preview": preview, "preview_step": state.current_image_step}
        except (asyncio.CancelledError, GeneratorExit):
            # the front gave up on this request (a hard stop, a timeout): stop the job, keep the replica usable
            job.state.interrupt()
            job.state.interrupt()
            raise
        processed = fut.result()  # a failure travels to the front as this replica's error
        yield {"type": "result", "processed": processed, "saves": deferred, "replica": self.replica,
               "pid": self.pid}

    def describe(self) -> dict[str, Any]:
        return {"replica": self.replica, "pid": self.pid, "loads": self.loads, "cached": self.svc.models.cached,
                "max_models": self.max_models}


def _replica_name() -> str:
    try:
        from ray import serve
        return str(serve.get_replica_context().replica_tag)
    except Exception:
        return f"pid-{os.getpid()}"


def worker_deployment(max_models: int) -> Any:
    """The deployment class; `max_models` is fixed here because `@serve.multiplexed` takes it at
    definition (the front's `sd_checkpoints_limit`, A1111's "checkpoints to cache in RAM")."""
    from ray import serve

    @serve.deployment(name="GenerationWorker", max_ongoing_requests=1, health_check_period_s=5,
                      health_check_timeout_s=30, graceful_shutdown_timeout_s=5)
    class GenerationWorker:
        def __init__(self, args: argparse.Namespace) -> None:
            self.core = WorkerCore(args, max_models)
            self._control: Any = None

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def checkpoint(self, title: str) -> HeldCheckpoint:
            return await asyncio.to_thread(self.core.hold, title)

        def _control_actor(self) -> Any:
            if self._control is None:
                import ray
                try:
                    self._control = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
                except ValueError:
                    return None
            return self._control

        async def _load(self, title: str) -> None:
            await self.checkpoint(title)
            # a replica the router chose without the model id (--ray-routing any) loads it here
            await asyncio.to_thread(self.core.hold, title)

        async def generate(self, spec: Any) -> AsyncIterator[dict[str, Any]]:
            title = serve.get_multiplexed_model_id() or spec.checkpoint
            yield {"type": "started", "replica": self.core.replica, "pid": self.core.pid}
            loads = self.core.loads
            loading = asyncio.ensure_future(self._load(title))
            while not loading.done():  # a long load still sends word, so the front does not give up on us
                done, _ = await asyncio.wait({loading}, timeout=HEARTBEAT_S)
                if not done:
                    yield {"type": "status", "textinfo": f"Loading {title}"}
            loading.result()  # CheckpointNotOnNode travels to the front, which tries another replica
            yield {"type": "loaded", "loaded": self.core.loads > loads}
            async for event in self.core.run(spec, self._control_actor()):
                yield event

        async def describe(self) -> dict[str, Any]:
            return self.core.describe()

    return GenerationWorker
