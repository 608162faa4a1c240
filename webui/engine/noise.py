"""Seeded noise, reproducing A1111's ImageRNG for each of its random number sources.

A1111's `randn_source` setting ("Random number generator source"):

* "GPU" (A1111's default): a torch.Generator on the CUDA device. Here it needs a CUDA device; without one the
  NV source stands in (it computes the same numbers as CUDA's torch.randn) and `NoiseSource.note` says so.
* "CPU": a CPU torch.Generator, so an image comes out the same whatever device runs the model.
* "NV": `webui.engine.rng_philox`, CUDA's Philox 4x32-10 + curand Box-Muller computed in numpy on any device.

Every image of a batch owns a generator seeded with its seed, so an image comes out the same whatever batch
it is generated in. Its first draw is the initial noise; later draws (ancestral / SDE noise) continue the
same stream, or a fresh one seeded with seed + ENSD when eta_noise_seed_delta is set. Variation seeds and
"resize seed from" draw from freshly seeded generators of the same source.

The SDE samplers use a torchsde Brownian tree per image seeded with the image's seed (A1111's
batch-deterministic DPM++ SDE noise). torchsde draws each node from `torch.Generator(device)` on the device
the tree lives on, whatever `randn_source` says; A1111's tree lives on the model's device, so on an NVIDIA
GPU its Brownian noise is CUDA randn for all three sources. Here: CPU -> trees on the CPU (the result does not
depend on the device; equal to A1111 on a machine without a GPU); GPU on CUDA -> trees on the CUDA device;
NV (and GPU without CUDA) -> trees whose node draws come from the NV source, i.e. what A1111 computes on an
NVIDIA GPU.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Any, Callable, Iterator, Sequence

import torch

from webui.engine import rng_philox

__all__ = ["NoiseSource", "RNG_SOURCES", "slerp", "brownian_noise_sampler", "BrownianNoiseSampler"]

RNG_SOURCES = ("GPU", "CPU", "NV")  # A1111's choices for randn_source, default first


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's variation-seed blend: spherical interpolation along dim 1 (rows of each channel).

    Kept bug-compatible: when the two noises are nearly parallel (mean cosine > 0.9995) A1111 falls
    back to `low * val + high * (1 - val)`, i.e. with the weights swapped.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


# --- one seeded stream per source ---------------------------------------------------------------------------

class _TorchStream:
    """A torch.Generator on `device` (CPU or CUDA); draws stay on that device."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.device = device
        self.gen = torch.Generator(device).manual_seed(int(seed))

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.randn(shape, generator=self.gen)
        return torch.randn(shape, generator=self.gen, device=self.device)

    def get_state(self) -> Any:
        return self.gen.get_state()

    def set_state(self, state: Any) -> None:
        self.gen.set_state(state)


class _PhiloxStream:
    """The NV source: CUDA's randn stream computed in numpy; draws are CPU float32 tensors."""

    device = torch.device("cpu")

    def __init__(self, seed: int) -> None:
        self.gen = rng_philox.Generator(seed)

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(self.gen.randn(shape))

    def get_state(self) -> Any:
        return self.gen.get_state()

    def set_state(self, state: Any) -> None:
        self.gen.set_state(state)


class _Seeds(list):
    """The batch's seeds; also carries where the SDE samplers' Brownian trees draw from, so that callers
    passing `noise.seeds` to brownian_noise_sampler get the trees of the chosen source."""

    brownian: str = "cpu"


class NoiseSource:
    """Initial latent noise and every later draw a sampler makes, per image, from the image's seed.

    rng: A1111's randn_source, "GPU", "CPU" (default here, as before) or "NV".
    device: where "GPU" draws (a CUDA device); None = "cuda" when torch sees one. CPU and NV ignore it.
    After construction: `rng` is the source used, `rng_requested` the one asked for, `note` a sentence for the
    job's warnings when they differ (None otherwise), `infotext_rng` what A1111 writes as "RNG" (None = omit).
    """

    def __init__(self, shape: tuple[int, ...], seeds: list[int], subseeds: list[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0,
                 *, eta_noise_seed_delta: int = 0, rng: str = "CPU", device: torch.device | str | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)  # one image's latent: (C, H, W)
        self.subseeds = None if subseeds is None else [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.eta_noise_seed_delta = int(eta_noise_seed_delta or 0)
        self.rng_requested, self.rng, self._device, self.note = _resolve(rng, device)
        self.seeds = _Seeds(int(s) for s in seeds)
        self.seeds.brownian = {"CPU": "cpu", "NV": "philox"}.get(self.rng, str(self._device))
        self._generators = [self._stream(s) for s in self.seeds]
        self._first: torch.Tensor | None = None

    @property
    def infotext_rng(self) -> str | None:
        """A1111's infotext entry "RNG": written for CPU and NV, left out for GPU (its default, which A1111
        assumes when the key is missing). A GPU request served by NV stays GPU: the numbers are CUDA's."""
        return None if self.rng_requested == "GPU" else self.rng_requested

    def _stream(self, seed: int) -> _TorchStream | _PhiloxStream:
        if self.rng == "NV":
            return _PhiloxStream(seed)
        return _TorchStream(seed, self._device)

    def _randn(self, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The first draw of a freshly seeded generator of this source (A1111 rng.randn(seed, shape))."""
        return self._stream(seed).randn(shape)

    def checkpoint(self) -> Callable[[], None]:
        """A function that puts every generator back where it is now (a pass that is run again
        after an out-of-memory error then draws exactly the same noise)."""
        states = [g.get_state() for g in self._generators]
        gens, first = list(self._generators), self._first

        def restore() -> None:
            self._generators = list(gens)
            for g, st in zip(gens, states):
                g.set_state(st)
            self._first = first
        return restore

    def _noise_shape(self) -> tuple[int, ...]:
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape
        return (self.shape[0], self.seed_resize_from_h // 8, self.seed_resize_from_w // 8)

    def first(self) -> torch.Tensor:
        """[B, *shape] initial noise on the CPU (float32); the first draw of each image's generator (memoised)."""
        if self._first is not None:
            return self._first.clone()
        noise_shape = self._noise_shape()
        xs = []
        for i, (seed, gen) in enumerate(zip(self.seeds, self._generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = self.subseeds[i] if i < len(self.subseeds) else 0
                subnoise = self._randn(subseed, noise_shape)
            if noise_shape != self.shape:
                noise = self._randn(seed, noise_shape)
            else:
                noise = gen.randn(self.shape)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                noise = self._paste_resized(gen.randn(self.shape), noise)
            xs.append(noise.cpu())
        if self.eta_noise_seed_delta:
            # ENSD: the sampler's extra noise comes from seed + delta instead of continuing the seed's stream
            self._generators = [self._stream(s + self.eta_noise_seed_delta) for s in self.seeds]
        self._first = torch.stack(xs)
        return self._first.clone()

    def _paste_resized(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """"Resize seed from": centre the noise generated at the old size inside (or cropped from) the new."""
        nh, nw = noise.shape[1], noise.shape[2]
        dx = (self.shape[2] - nw) // 2
        dy = (self.shape[1] - nh) // 2
        w = nw if dx >= 0 else nw + 2 * dx
        h = nh if dy >= 0 else nh + 2 * dy
        tx, ty = max(dx, 0), max(dy, 0)
        sx, sy = max(-dx, 0), max(-dy, 0)
        x[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
        return x

    def next_like(self, x: torch.Tensor) -> torch.Tensor:
        """The next draw of every image's generator, on x's device and dtype (A1111 rng.next())."""
        if self._first is None:  # A1111: the first next() is the initial noise
            return self.first().to(x.device, x.dtype)
        if tuple(x.shape) != (len(self.seeds), *self.shape):
            raise ValueError(f"noise of shape {(len(self.seeds), *self.shape)} requested for x of shape {tuple(x.shape)}")
        out = torch.stack([g.randn(self.shape) for g in self._generators])
        return out.to(x.device, x.dtype)

    def brownian_sampler(self, x: torch.Tensor, sigmas: torch.Tensor) -> "BrownianNoiseSampler":
        """The SDE samplers' Brownian noise for this batch, from this source (see the module docstring)."""
        return brownian_noise_sampler(x, sigmas, self.seeds)


def _resolve(rng: str, device: torch.device | str | None) -> tuple[str, str, torch.device, str | None]:
    """(requested, used, device of the torch generators, note)."""
    asked = str(rng or "CPU").strip().upper()
    if asked not in RNG_SOURCES:
        raise ValueError(f"unknown random number source {rng!r}; expected one of {', '.join(RNG_SOURCES)}")
    if asked != "GPU":
        return asked, asked, torch.device("cpu"), None
    dev = torch.device(device) if device is not None else None
    if dev is None and torch.cuda.is_available():
        dev = torch.device("cuda")
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        return asked, "GPU", dev, None
    where = "this machine has no CUDA device" if not torch.cuda.is_available() else f"generation runs on {dev}, not on a CUDA device"
    note = (f"RNG: GPU was asked for but {where}; the NV source (equal to torch.randn on NVIDIA GPUs) was used")
    return asked, "NV", torch.device("cpu"), note


# --- Brownian trees for the SDE samplers ---------------------------------------------------------------------

_philox_tree = contextvars.ContextVar("webui_philox_brownian_tree", default=False)
_torchsde_patched = False


def _install_philox_randn() -> None:
    """Route torchsde's node draws (`_randn(size, dtype, device, seed)`: a fresh torch.Generator(device)
    seeded with `seed`, first draw) through the NV source while _philox_tree is set. Outside that context,
    and in other threads/tasks, torchsde's own function runs unchanged."""
    global _torchsde_patched
    if _torchsde_patched:
        return
    from torchsde._brownian import brownian_interval as bi

    original = bi._randn

    def _randn(size, dtype, device, seed):
        if not _philox_tree.get():
            return original(size, dtype, device, seed)
        return torch.from_numpy(rng_philox.randn(int(seed), tuple(size))).to(device=device, dtype=dtype)

    bi._randn = _randn
    _torchsde_patched = True


@contextlib.contextmanager
def _tree_draws(kind: str) -> Iterator[None]:
    if kind != "philox":
        yield
        return
    _install_philox_randn()
    token = _philox_tree.set(True)
    try:
        yield
    finally:
        _philox_tree.reset(token)


class BrownianNoiseSampler:
    """Unit-variance Brownian increments between two sigmas, one torchsde tree per image seed.

    Same construction as k-diffusion's BrownianTreeNoiseSampler fed A1111's per-image seeds. `tree` says where
    the trees draw: "cpu" (default; the result does not depend on the device), a CUDA device ("cuda", "cuda:1":
    torchsde's CUDA generator, as A1111 on an NVIDIA GPU) or "philox" (the NV source: the same numbers as a
    CUDA tree, computed on the CPU).
    """

    def __init__(self, x: torch.Tensor, sigma_min: float, sigma_max: float, seeds: Sequence[int],
                 tree: str | None = None) -> None:
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for a batch of {x.shape[0]}")
        self.t0, self.t1 = sorted((float(sigma_min), float(sigma_max)))
        self.seeds = [int(s) for s in seeds]
        self.tree = str(tree or getattr(seeds, "brownian", "cpu"))
        self.shape = tuple(x.shape[1:])
        self.device, self.dtype = x.device, x.dtype
        self._trees: list | None = None  # built on first use: a 1-step schedule never needs them

    def _build(self) -> list:
        import torchsde

        dev = torch.device(self.tree) if self.tree.startswith("cuda") else torch.device("cpu")
        w0 = torch.zeros(self.shape, dtype=torch.float32, device=dev)
        return [torchsde.BrownianTree(self.t0, w0, self.t1, entropy=s) for s in self.seeds]

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        a, b = float(sigma), float(sigma_next)
        lo, hi, sign = (a, b, 1.0) if a < b else (b, a, -1.0)
        with _tree_draws(self.tree), warnings.catch_warnings():
            if self._trees is None:
                self._trees = self._build()
            # sigma -> log -> sigma round trips land an ulp outside the (rounded) tree ends; torchsde clamps
            # them itself, as under A1111, but warns every step
            warnings.filterwarnings("ignore", message="Should have t[ab]")
            w = torch.stack([tree(lo, hi) for tree in self._trees]) * sign
        return (w / abs(b - a) ** 0.5).to(self.device, self.dtype)


def brownian_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor, seeds: Sequence[int],
                           tree: str | None = None) -> BrownianNoiseSampler:
    """A1111 create_noise_sampler: tree spans [smallest nonzero sigma, largest sigma] of `sigmas`.

    `tree` None = the source NoiseSource.seeds carries (CPU trees for a plain list of seeds)."""
    s = sigmas.detach().float().cpu()
    return BrownianNoiseSampler(x, float(s[s > 0].min()), float(s.max()), seeds, tree)
