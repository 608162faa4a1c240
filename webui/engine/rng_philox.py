"""A1111's "NV" random number source: torch.randn as an NVIDIA GPU computes it, in numpy, on any device.

PyTorch's CUDA generator is Philox 4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel Random Numbers: As
Easy as 1, 2, 3", SC 2011) driven through curand: thread `i` of a randn kernel calls
`curand_init(seed, subsequence=i, offset)` and `curand_normal4`, i.e. it encrypts the 128-bit counter
(offset / 4, 0, i, 0) under the 64-bit key `seed` and turns the first two output words into a normal
number with curand's Box-Muller transform (`sqrt(-2 ln u) * sin(v)`, u and v the words mapped into (0, 1)
and (0, 2 pi)). Element i of a tensor is that thread's first value, and every later randn call of the
same generator moves the counter's low word on by one.

This module reproduces A1111's `modules/rng_philox.py` (its `randn_source = "NV"`) number for number: the
same counter/key layout, the same per-call offset step and the same Box-Muller arithmetic (A1111's numpy
code evaluates it in float64 from float32 constants and rounds the result to float32, which lands within
about one float32 ulp of curand's float32 arithmetic on the GPU).

Where it is equal to CUDA's torch.randn: for float32 tensors whose element count is at most the kernel's
thread count (256 threads x min(ceil(n / 256), SMs x maxThreadsPerSM / 256) blocks: 270 336 on an H100,
43 008 on an RTX 3060). Beyond that PyTorch hands each thread several elements (the y/z/w outputs of
curand_normal4) and the two diverge; A1111's NV source diverges the same way, which is what this module
copies.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["philox4x32", "box_muller", "Generator", "randn"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # Philox 4x32 multipliers
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)  # Weyl key increments (golden ratio, sqrt(3) - 1)
_LO32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)

# curand's CURAND_2POW32_INV and CURAND_2POW32_INV_2PI, as A1111 rounds them to float32; the arithmetic
# that uses them below is float64 (numpy promotes uint32 x float32 to float64), as in A1111
_INV32 = np.float64(np.float32(2.3283064e-10))
_INV32_2PI = np.float64(np.float32(2.3283064e-10 * 6.2831855))


def philox4x32(counter: Sequence[np.ndarray], key: Sequence[np.ndarray], rounds: int = 10) -> list[np.ndarray]:
    """Philox 4x{32}-R block function, vectorised: counter = 4 uint32 arrays, key = 2 uint32 arrays
    (broadcastable); returns the 4 output words as uint32 arrays."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in counter)
    k0, k1 = (np.asarray(k, dtype=np.uint32) for k in key)
    with np.errstate(over="ignore"):
        for r in range(rounds):
            if r:
                k0 = k0 + _W0
                k1 = k1 + _W1
            p0 = c0.astype(np.uint64) * _M0
            p1 = c2.astype(np.uint64) * _M1
            hi0, lo0 = (p0 >> _SHIFT32).astype(np.uint32), (p0 & _LO32).astype(np.uint32)
            hi1, lo1 = (p1 >> _SHIFT32).astype(np.uint32), (p1 & _LO32).astype(np.uint32)
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


def box_muller(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """curand's Box-Muller, first output only: sqrt(-2 ln u) * sin(v), as float32."""
    u = x.astype(np.float64) * _INV32 + _INV32 / 2
    v = y.astype(np.float64) * _INV32_2PI + _INV32_2PI / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


def _key(seed: int) -> tuple[np.uint32, np.uint32]:
    s = int(seed) & 0xFFFFFFFFFFFFFFFF  # torch.manual_seed maps negative seeds the same way (mod 2**64)
    return np.uint32(s & 0xFFFFFFFF), np.uint32(s >> 32)


def _draw(seed: int, offset: int, shape: Sequence[int]) -> np.ndarray:
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n >= 2 ** 32:
        raise ValueError(f"{n} numbers in one draw: the NV source counts elements in 32 bits")
    k0, k1 = _key(seed)
    idx = np.arange(n, dtype=np.uint32)
    zero = np.zeros(n, dtype=np.uint32)
    c0 = np.full(n, offset & 0xFFFFFFFF, dtype=np.uint32)
    g = philox4x32((c0, zero, idx, zero), (k0, k1))
    return box_muller(g[0], g[1]).reshape(shape)


class Generator:
    """One seeded stream: each randn() call is the next CUDA randn call of a generator seeded with `seed`."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.offset = 0  # randn calls made so far (the counter's low word)

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        out = _draw(self.seed, self.offset, shape)
        self.offset += 1
        return out

    def get_state(self) -> tuple[int, int]:
        return self.seed, self.offset

    def set_state(self, state: tuple[int, int]) -> None:
        self.seed, self.offset = int(state[0]), int(state[1])


def randn(seed: int, shape: Sequence[int], offset: int = 0) -> np.ndarray:
    """float32 normals equal to the first draw (offset 0, or the offset-th call) of a CUDA generator
    seeded with `seed`: torch.randn(shape, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))."""
    return _draw(seed, int(offset), shape)
