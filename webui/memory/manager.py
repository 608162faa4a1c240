"""The memory manager: where every model part lives, decided in one place.

Every model part (text encoders, UNet, VAE, ControlNets, upscaler models) is *registered* here
once, in CPU RAM, and from then on nobody else moves it: a stage says what it is about to run,
``with memory.use(unet, *controlnets, activations=bytes):``, and the manager makes those parts
ready on the compute device.

Policy (mode "auto", the default):
- room = free device memory (`torch.cuda.mem_get_info` free plus what torch's cache holds but no
  tensor uses; or the simulated card of `--vram-budget-mb`) minus the stage's activation reserve
  (webui.memory.estimates: grows with batch size and resolution) minus a fixed CUDA margin, and
  capped by the "GPU weights (MB)" setting;
- parts already resident stay (a cache: the next generation moves nothing);
- if the stage's parts do not fit, least-recently-used parts that the stage does not need are
  moved back to CPU RAM first;
- if they still do not fit, the biggest part is *streamed*: as many of its blocks as fit stay
  resident, the others go through the device block by block (webui.memory.streaming), so a
  model larger than the card still runs.
Other modes, in A1111's spelling: "medvram" (only one of text encoder / UNet / VAE on the device
at a time), "medvram-sdxl" (that, for SDXL models only), "lowvram" (medvram, and the UNet always
streamed block by block), "highvram"/"gpu-only" (everything resident from load on, never moved),
"cpu" (no device).

A forward pre-hook on each part checks, each time the part runs, that it was made ready (a
caller that forgot `use` still gets a correct, if unplanned, load) and is where tests inject
out-of-memory errors.  Planned device bytes never exceed the room: with a simulated budget, a
load that would is refused with an out-of-memory error, exactly like a real card.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from webui.memory.estimates import CUDA_BASE_RESERVE, MB
from webui.memory.oom import InjectedOutOfMemory
from webui.memory.streaming import Unit, start_streaming, stop_streaming, tensor_bytes, units_of

MODES = ("auto", "medvram", "medvram-sdxl", "lowvram", "highvram", "gpu-only", "cpu")
# The parts that medvram keeps one at a time (A1111's lowvram.py: cond stage, UNet, first stage).
_SWAPPED_KINDS = ("text_encoder", "unet", "vae", "controlnet", "upscaler")
_STREAMED_IN_LOWVRAM = ("unet", "controlnet")


@dataclass(eq=False)
class Part:
    name: str
    kind: str                       # text_encoder | unet | vae | controlnet | upscaler | ...
    module: torch.nn.Module
    family: str = ""                # sd1, sd2, sdxl, ... (medvram-sdxl looks at it)
    nbytes: int = 0
    state: str = "offloaded"        # offloaded | resident | streamed
    device_bytes: int = 0           # bytes this part holds on the device (streamed: resident blocks + prefetch)
    last_used: int = 0
    locks: int = 0
    streamed_units: list[Unit] = field(default_factory=list)
    hooks: list[Any] = field(default_factory=list)

    @property
    def streamed_bytes(self) -> int:
        return sum(u.nbytes for u in self.streamed_units)


@dataclass(frozen=True)
class Event:
    tick: int
    action: str        # load | evict | stream | run | oom
    part: str
    nbytes: int = 0
    detail: str = ""


class MemoryManager:
    def __init__(self, device: torch.device, mode: str = "auto", *, budget_mb: float | None = None,
                 gpu_weights_mb: int | None = None, offload_device: torch.device | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown memory mode {mode!r} (one of {', '.join(MODES)})")
        self.device = torch.device(device)
        self.offload_device = offload_device or torch.device("cpu")
        self.mode = "cpu" if self.device.type == "cpu" and budget_mb is None else mode
        self.budget = None if budget_mb is None else int(budget_mb * MB)
        self.gpu_weights = None if not gpu_weights_mb else int(gpu_weights_mb) * MB
        self.parts: list[Part] = []
        self.events: deque[Event] = deque(maxlen=4000)
        self.oom_count = 0
        self.retry_count = 0
        self._tick = 0
        self._lock = threading.RLock()
        self._inject: dict[str, int] = {}
        self._notes: list[str] = []

    # ------------------------------------------------------------------ registration
    @property
    def placing(self) -> bool:
        """False on a plain CPU run: there is no device to place anything on."""
        return self.mode != "cpu"

    def register(self, module: torch.nn.Module, name: str, kind: str, family: str = "") -> Part:
        """Take charge of ``module`` (which must sit in CPU RAM, in its final dtype)."""
        part = Part(name, kind, module, family, tensor_bytes(module))
        stages = [(module, kind)]
        if kind == "vae":  # AutoencoderKL runs through .encode/.decode, not forward
            stages = [(m, s) for m, s in ((getattr(module, "encoder", None), "vae_encode"),
                                          (getattr(module, "decoder", None), "vae_decode")) if m is not None]
        for m, stage in stages:
            part.hooks.append(m.register_forward_pre_hook(self._before_run(part, stage)))
        with self._lock:
            self.parts.append(part)
            if not self.placing:
                part.state, part.device_bytes = "resident", 0
            elif self.mode in ("highvram", "gpu-only"):
                try:
                    self._load(part)
                except BaseException:
                    self.forget(part)
                    raise
        return part

    def forget(self, part: Part) -> None:
        """Stop managing ``part``: hooks off, tensors back in CPU RAM, no reference kept."""
        with self._lock:
            for h in part.hooks:
                h.remove()
            part.hooks.clear()
            if self.placing and part.state != "offloaded":
                self._evict(part, record=False)
            if part in self.parts:
                self.parts.remove(part)

    def retype(self, part: Part, dtype: torch.dtype) -> None:
        """Change a part's dtype (the NaN-VAE fallback to fp32); it is re-planned on its next use."""
        with self._lock:
            if self.placing and part.state != "offloaded":
                self._evict(part)
            part.module.to(dtype)
            part.nbytes = tensor_bytes(part.module)

    def settle(self, parts: list[Part]) -> None:
        """Before weights are changed in place: streamed parts go back to CPU RAM whole (diffusers'
        streaming hooks hold their own copies of the weights, which the change would miss)."""
        with self._lock:
            for p in parts:
                if p.state == "streamed" and p.locks == 0:
                    self._evict(p)

    def set_gpu_weights_mb(self, mb: int | None) -> None:
        self.gpu_weights = None if not mb else int(mb) * MB

    # ------------------------------------------------------------------ use
    @contextlib.contextmanager
    def use(self, *parts: Part | None, activations: int = 0) -> Iterator[None]:
        """Make ``parts`` ready on the device for the duration of the block (they are locked:
        nothing evicts them meanwhile), keeping ``activations`` bytes free for the stage."""
        wanted = [p for p in parts if p is not None]
        with self._lock:
            self._tick += 1
            for p in wanted:
                p.locks += 1
            try:
                if self.placing:
                    self._prepare(wanted, activations)
            except BaseException:
                for p in wanted:
                    p.locks -= 1
                raise
        try:
            yield
        finally:
            with self._lock:
                for p in wanted:
                    p.locks -= 1
                    p.last_used = self._tick

    def offload_all(self, keep: tuple[Part, ...] = ()) -> int:
        """Move every unlocked part not in ``keep`` back to CPU RAM; returns the bytes freed."""
        freed = 0
        with self._lock:
            if not self.placing:
                return 0
            for p in list(self.parts):
                if p not in keep and p.locks == 0 and p.state != "offloaded":
                    freed += p.device_bytes
                    self._evict(p)
        empty_device_cache()
        return freed

    def inject_oom(self, stage: str, times: int = 1) -> None:
        """Tests: the next ``times`` runs of a part at ``stage`` (a part kind, "vae_decode",
        "vae_encode", "load", "lora") raise an out-of-memory error."""
        self._inject[stage] = self._inject.get(stage, 0) + times

    def checkpoint(self, stage: str) -> None:
        """Code paths that run no registered module (weight patching, loading) call this so an
        injected out-of-memory error can hit them too."""
        if self._inject.get(stage, 0) > 0:
            self._inject[stage] -= 1
            self.oom_count += 1
            self._event("oom", stage, detail="injected")
            raise InjectedOutOfMemory(f"CUDA out of memory (injected at {stage})")

    def part_of(self, module: torch.nn.Module | None) -> Part | None:
        """The registered part that is ``module`` (None when it is not managed)."""
        if module is None:
            return None
        return next((p for p in self.parts if p.module is module), None)

    def note(self, text: str) -> None:
        """Something the user should hear about (a fallback taken); the job collects it."""
        self._notes.append(text)

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def note_oom(self, stage: str, retried: bool) -> None:
        self.oom_count += 1
        if retried:
            self.retry_count += 1
        self._event("oom", stage, detail="retried" if retried else "")

    # ------------------------------------------------------------------ accounting
    def device_bytes(self) -> int:
        """Bytes our parts hold on the device (resident ones whole, streamed ones their resident share)."""
        return sum(p.device_bytes for p in self.parts)

    def free_bytes(self) -> int:
        """Free device memory as the planner sees it."""
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            allocated = torch.cuda.memory_allocated(self.device)
            real = free + torch.cuda.memory_reserved(self.device) - allocated
            return max(0, min(real, self.budget - allocated)) if self.budget is not None else real
        if self.budget is not None:  # simulated card on a CPU: it holds only our parts
            return max(0, self.budget - self.device_bytes())
        return 1 << 62

    def _room(self, activations: int) -> int:
        room = self.free_bytes() - activations - (CUDA_BASE_RESERVE if self.device.type == "cuda" else 0)
        if self.gpu_weights is not None:
            room = min(room, self.gpu_weights - self.device_bytes())
        return room

    def training_room(self, activations: int, resident: int) -> tuple[bool, int]:
        """Whether a training run fits: `activations` for its steps plus `resident` weight bytes
        that must stay on the device (0 when they stream, as under lowvram). Our parts can all
        be offloaded first, so what they hold counts as room. Returns (fits, room in bytes)."""
        if not self.placing:
            return True, self.free_bytes()
        room = self.free_bytes() + self.device_bytes()
        if self.device.type == "cuda":
            room -= CUDA_BASE_RESERVE
        return room >= activations + resident, room

    def describe(self) -> list[dict[str, Any]]:
        """Each part with its placement (GET /sdapi/v1/memory's `parts`, the bench)."""
        return [{"name": p.name, "kind": p.kind, "state": p.state, "mb": round(p.nbytes / MB, 1),
                 "device_mb": round(p.device_bytes / MB, 1),
                 "streamed_blocks": [u.name or "(layers)" for u in p.streamed_units]} for p in self.parts]

    # ------------------------------------------------------------------ planning
    def _effective_mode(self, parts: list[Part]) -> str:
        if self.mode == "medvram-sdxl":
            return "medvram" if any(p.family == "sdxl" for p in parts) else "auto"
        return self.mode

    def _prepare(self, parts: list[Part], activations: int) -> None:
        mode = self._effective_mode(parts)
        if mode in ("highvram", "gpu-only"):
            for p in parts:
                if p.state != "resident":
                    self._load(p)
            return
        if mode in ("medvram", "lowvram"):
            # A1111's rule: whatever ran before leaves the device when another part runs
            for p in list(self.parts):
                if p not in parts and p.locks == 0 and p.state != "offloaded" and p.kind in _SWAPPED_KINDS:
                    self._evict(p)
            for p in sorted(parts, key=lambda q: q.nbytes):
                if mode == "lowvram" and p.kind in _STREAMED_IN_LOWVRAM:
                    self._stream(p, 0)
                elif p.state != "resident":
                    self._fit(p, parts, activations)
            return
        self._fit_all(parts, activations)

    def _missing(self, parts: list[Part]) -> int:
        return sum(p.nbytes - p.device_bytes for p in parts if p.state != "resident")

    def _evict_lru(self, parts: list[Part], needed: int, activations: int) -> None:
        candidates = sorted((p for p in self.parts if p not in parts and p.locks == 0 and p.state != "offloaded"),
                            key=lambda p: p.last_used)
        for p in candidates:
            if self._room(activations) >= needed:
                return
            self._evict(p)

    def _fit_all(self, parts: list[Part], activations: int) -> None:
        needed = self._missing(parts)
        if needed <= 0:
            return
        self._evict_lru(parts, needed, activations)
        # smallest first: the text encoder or the VAE whole, the biggest part streamed if need be
        for p in sorted(parts, key=lambda q: q.nbytes):
            if p.state != "resident":
                self._fit(p, parts, activations)

    def _fit(self, part: Part, parts: list[Part], activations: int) -> None:
        """Make ``part`` resident if it fits whole (after evicting least-recently-used parts the
        stage does not need), else stream it with the room there is.  Callers go smallest part
        first, so a stage's small parts are whole and its biggest is the one streamed."""
        if part.nbytes <= self._room(activations) + part.device_bytes:
            self._load(part)
            return
        self._evict_lru(parts, part.nbytes - part.device_bytes, activations)
        room = self._room(activations) + part.device_bytes
        if part.nbytes <= room:
            self._load(part)
        else:
            self._stream(part, max(0, room))

    # ------------------------------------------------------------------ moves
    def _load(self, part: Part) -> None:
        if part.state == "resident":
            return
        if part.state == "streamed":
            self._unstream(part)
        self.checkpoint("load")
        if self.budget is not None and self.device_bytes() + part.nbytes > self.budget:
            raise torch.OutOfMemoryError(
                f"out of memory: {part.name} needs {part.nbytes / MB:.0f} MB, "
                f"{(self.budget - self.device_bytes()) / MB:.0f} MB free of the {self.budget / MB:.0f} MB budget")
        t0 = time.perf_counter()
        try:
            part.module.to(self.device)
        except BaseException:
            part.module.to(self.offload_device)  # never leave a part half on the device
            raise
        part.state, part.device_bytes = "resident", part.nbytes
        self._event("load", part.name, part.nbytes, f"{time.perf_counter() - t0:.3f}s")

    def _evict(self, part: Part, record: bool = True) -> None:
        if part.state == "streamed":
            self._unstream(part)
        else:
            part.module.to(self.offload_device)
        part.state, part.device_bytes = "offloaded", 0
        if record:
            self._event("evict", part.name, part.nbytes)

    def _unstream(self, part: Part) -> None:
        for u in part.streamed_units:
            stop_streaming(u, self.offload_device)
        part.module.to(self.offload_device)
        part.streamed_units = []
        part.state, part.device_bytes = "offloaded", 0

    def _stream(self, part: Part, room: int) -> None:
        """Keep the biggest blocks that fit in ``room`` resident, stream the others."""
        units, rest = units_of(part.module)
        keep: list[Unit] = []
        streamed = sorted(units, key=lambda u: u.nbytes, reverse=True)
        # two groups of the streamed blocks are on the device at once (the current one and the prefetch)
        def need(kept: list[Unit], left: list[Unit]) -> int:
            return rest + sum(u.nbytes for u in kept) + 2 * max((u.group_bytes for u in left), default=0)
        for u in list(streamed):
            trial_keep, trial_left = keep + [u], [x for x in streamed if x is not u]
            if trial_left and need(trial_keep, trial_left) <= room:
                keep, streamed = trial_keep, trial_left
        plan = {u.name for u in streamed}
        if part.state == "streamed" and {u.name for u in part.streamed_units} == plan:
            return  # same plan as before: nothing moves
        if part.state != "offloaded":
            self._evict(part, record=False)
        self.checkpoint("load")
        device_bytes = need(keep, streamed)
        if self.budget is not None and self.device_bytes() + device_bytes > self.budget:
            raise torch.OutOfMemoryError(
                f"out of memory: streaming {part.name} needs {device_bytes / MB:.0f} MB on the device, "
                f"{(self.budget - self.device_bytes()) / MB:.0f} MB free of the {self.budget / MB:.0f} MB budget")
        if all(u.name for u in streamed):  # a whole-module (layer by layer) stream leaves nothing resident
            _move_except(part.module, self.device, tuple(f"{u.name}." for u in streamed))
        for u in streamed:
            start_streaming(u, self.device, self.offload_device)
        part.streamed_units = streamed
        part.state, part.device_bytes = "streamed", device_bytes
        self._event("stream", part.name, device_bytes,
                    f"{len(streamed)} of {len(units)} blocks streamed ({part.streamed_bytes / MB:.0f} MB)")

    # ------------------------------------------------------------------ hooks
    def _before_run(self, part: Part, stage: str):
        def hook(_module: torch.nn.Module, _args: Any) -> None:
            self.checkpoint(stage)
            if self.placing and part.state == "offloaded":
                with self._lock:  # run without `use`: load it now rather than compute on the wrong device
                    self._prepare([part], 0)
            self._event("run", part.name, detail=stage)
        return hook

    def _event(self, action: str, part: str, nbytes: int = 0, detail: str = "") -> None:
        self.events.append(Event(self._tick, action, part, nbytes, detail))


def _move_except(module: torch.nn.Module, device: torch.device, skip: tuple[str, ...]) -> None:
    """``module.to(device)`` for every tensor whose qualified name does not start with ``skip``."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not (skip and name.startswith(skip)):
                p.data = p.data.to(device)
        for name, b in module.named_buffers():
            if not (skip and name.startswith(skip)):
                b.data = b.data.to(device)


def empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
