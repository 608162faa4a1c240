"""Where a queued generation runs: the seam between the front (UI, API, queue with owners and ids)
and the machines that denoise.

The front queues a job whose work is `executor.run(spec, state)`. The in-process executor runs the
pipeline here, as always; the Ray executor (`ray_executor.py`) sends the same spec to a Ray Serve
deployment and mirrors its progress onto `state`. Nothing above this seam knows which one runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from webui.processing.errors import GenerationError

if TYPE_CHECKING:
    from webui.processing.context import Processed
    from webui.processing.requests import Txt2ImgRequest
    from webui.services.jobs import JobState

RunFn = Callable[["Txt2ImgRequest", "JobState", bool], "Processed"]


@dataclass
class GenerationSpec:
    """One generation as it crosses the seam (pickled to a worker on another machine)."""
    kind: str  # "txt2img" or "img2img"
    req: "Txt2ImgRequest"
    save: bool
    task_id: str = ""
    checkpoint: str = ""  # the checkpoint's title, "name [sha256 short]": the scale-out routing key
    options: dict[str, Any] = field(default_factory=dict)  # the front's settings when the job was queued


class BackendUnavailable(GenerationError):
    """No worker can take the job (a scale-out cluster with no replica): the API answers 503."""
    status = 503


class Executor(Protocol):
    """Runs generations for the job queue."""
    #: jobs may run side by side (their work runs on other machines); the queue's slots = capacity()
    shared: bool

    def capacity(self) -> int: ...

    def run(self, spec: GenerationSpec, state: "JobState") -> "Processed": ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class InProcessExecutor:
    """Today's path: the pipeline runs in this process, one job at a time."""
    shared = False

    def __init__(self, txt2img: RunFn, img2img: RunFn) -> None:
        self._run = {"txt2img": txt2img, "img2img": img2img}

    def capacity(self) -> int:
        return 1

    def run(self, spec: GenerationSpec, state: "JobState") -> "Processed":
        return self._run[spec.kind](spec.req, state, spec.save)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"backend": "local", "capacity": 1}


def with_fixed_seeds(req: "Txt2ImgRequest") -> "Txt2ImgRequest":
    """The request with its random seeds (-1) drawn now, so a job retried on another worker makes
    the same pictures (A1111 draws them the same way when the job starts)."""
    from webui.processing.prompts_stage import fixed_seed
    return req.model_copy(update={"seed": fixed_seed(req.seed), "subseed": fixed_seed(req.subseed)})


__all__ = ["GenerationSpec", "Executor", "InProcessExecutor", "BackendUnavailable", "with_fixed_seeds"]
