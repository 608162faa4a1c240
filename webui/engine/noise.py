"""Seeded noise, reproducing A1111's ImageRNG with the "CPU" random number source.

Every image of a batch owns a CPU torch.Generator seeded with its seed, so an image comes out the
same whatever batch it is generated in and whatever device runs the model. The SDE samplers use a
Brownian tree per image seeded the same way (A1111's batch-deterministic DPM++ SDE noise).
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch

__all__ = ["NoiseSource", "slerp", "brownian_noise_sampler", "BrownianNoiseSampler"]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed))


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


class NoiseSource:
    """Initial latent noise and every later draw a sampler makes, per image, from the image's seed."""

    def __init__(self, shape: tuple[int, ...], seeds: list[int], subseeds: list[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0,
                 *, eta_noise_seed_delta: int = 0) -> None:
        self.shape = tuple(int(s) for s in shape)  # one image's latent: (C, H, W)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = None if subseeds is None else [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.eta_noise_seed_delta = int(eta_noise_seed_delta or 0)
        self._generators = [_generator(s) for s in self.seeds]
        self._first: torch.Tensor | None = None

    def checkpoint(self) -> Callable[[], None]:
        """A function that puts every generator back where it is now (a pass that is run again
        after an out-of-memory error then draws exactly the same noise)."""
        states = [g.get_state() for g in self._generators]
        gens, first = list(self._generators), self._first

        def restore() -> None:
            self._generators = gens
            for g, st in zip(gens, states):
                g.set_state(st)
            self._first = first
        return restore

    def _noise_shape(self) -> tuple[int, ...]:
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape
        return (self.shape[0], self.seed_resize_from_h // 8, self.seed_resize_from_w // 8)

    def first(self) -> torch.Tensor:
        """[B, *shape] initial noise; the first draw of each image's generator (memoised)."""
        if self._first is not None:
            return self._first.clone()
        noise_shape = self._noise_shape()
        xs = []
        for i, (seed, gen) in enumerate(zip(self.seeds, self._generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = self.subseeds[i] if i < len(self.subseeds) else 0
                subnoise = torch.randn(noise_shape, generator=_generator(subseed))
            if noise_shape != self.shape:
                noise = torch.randn(noise_shape, generator=_generator(seed))
            else:
                noise = torch.randn(self.shape, generator=gen)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                noise = self._paste_resized(torch.randn(self.shape, generator=gen), noise)
            xs.append(noise)
        if self.eta_noise_seed_delta:
            # ENSD: the sampler's extra noise comes from seed + delta instead of continuing the seed's stream
            self._generators = [_generator(s + self.eta_noise_seed_delta) for s in self.seeds]
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
        out = torch.stack([torch.randn(self.shape, generator=g) for g in self._generators])
        return out.to(x.device, x.dtype)


class BrownianNoiseSampler:
    """Unit-variance Brownian increments between two sigmas, one torchsde tree per image seed.

    Same construction as k-diffusion's BrownianTreeNoiseSampler fed A1111's per-image seeds, with the
    trees kept on the CPU so the result does not depend on the device.
    """

    def __init__(self, x: torch.Tensor, sigma_min: float, sigma_max: float, seeds: Sequence[int]) -> None:
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for a batch of {x.shape[0]}")
        self.t0, self.t1 = sorted((float(sigma_min), float(sigma_max)))
        self.seeds = [int(s) for s in seeds]
        self.shape = tuple(x.shape[1:])
        self.device, self.dtype = x.device, x.dtype
        self._trees: list | None = None  # built on first use: a 1-step schedule never needs them

    def _build(self) -> list:
        import torchsde

        w0 = torch.zeros(self.shape, dtype=torch.float32)
        return [torchsde.BrownianTree(self.t0, w0, self.t1, entropy=s) for s in self.seeds]

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        if self._trees is None:
            self._trees = self._build()
        a, b = float(sigma), float(sigma_next)
        lo, hi, sign = (a, b, 1.0) if a < b else (b, a, -1.0)
        with warnings.catch_warnings():
            # sigma -> log -> sigma round trips land an ulp outside the (rounded) tree ends; torchsde clamps
            # them itself, as under A1111, but warns every step
            warnings.filterwarnings("ignore", message="Should have t[ab]")
            w = torch.stack([tree(lo, hi) for tree in self._trees]) * sign
        return (w / abs(b - a) ** 0.5).to(self.device, self.dtype)


def brownian_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor, seeds: Sequence[int]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A1111 create_noise_sampler: tree spans [smallest nonzero sigma, largest sigma] of `sigmas`."""
    s = sigmas.detach().float().cpu()
    return BrownianNoiseSampler(x, float(s[s > 0].min()), float(s.max()), seeds)
