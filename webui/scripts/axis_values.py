"""X/Y/Z plot axis values, parsed the way A1111 1.10's ``scripts/xyz_grid.py`` reads them.

Text is one CSV row (several lines are several rows, chained): ``a, "b, c", d`` is three items
because the reader skips the space after a comma before looking for a quote (A1111 PR #15832,
in 1.10). Every item is stripped; empty items are dropped (A1111 keeps them, and then fails to
convert ``''`` on number axes). Number axes also take ranges:

- ``1-5`` -> 1, 2, 3, 4, 5 (every integer, end included)
- ``1-5 (+2)`` -> 1, 3, 5 and ``10-5 (-3)`` -> 10, 7 (``range(start, end + 1, step)``)
- ``1-10 [5]`` -> 1, 3, 5, 7, 10 (5 values from ``numpy.linspace``, truncated by ``int``)
- float axes: ``1-3 (+0.5)`` -> 1, 1.5, 2, 2.5, 3 (``numpy.arange(start, end + step, step)``)
  and ``0.0-1.0 [6]`` -> 0.0, 0.2, 0.4, 0.6, 0.8, 1.0 (``numpy.linspace``)

A step needs its sign (``(+2)``, not ``(2)``), as in A1111. Ranges and single values mix freely in
one list. The quirks of A1111's arithmetic are kept on purpose, so a grid made here has the cells
an A1111 user expects: ``5-1 (-2)`` is ``5, 3`` (the end is ``1 + 1``), ``5-1`` is empty, and a
float step range may overshoot by one value when the step does not divide the span exactly in
binary (``0.1-0.3 (+0.1)`` gives four values, like ``numpy.arange``).

Also here: Prompt S/R and Prompt order (A1111's ``apply_prompt`` / ``apply_order``), the seed
rules (``-1`` on a Seed axis becomes a random seed unless "Keep -1 for seeds"; "Vary seeds for
X/Y/Z" offsets each cell's seed), and the order in which A1111 walks the cells (the axis with the
highest ``cost``, e.g. checkpoints, outermost, so each model loads once).
"""
from __future__ import annotations

import csv
import itertools
import logging
import random
import re
from io import StringIO
from typing import Callable, Iterator, Literal, Sequence

import numpy as np

log = logging.getLogger(__name__)

AxisKind = Literal["int", "float", "str"]
AxisName = Literal["x", "y", "z"]

# A1111 draws random seeds from [0, 4294967294)
SEED_UPPER = 4294967294
SEED_AXIS_LABELS = ("Seed", "Var. seed")

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
# "<start>-<end>" optionally followed by "(<signed step>)"; the step form also covers a bare range
_INT_STEP_RANGE = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*([+-]\d+)\s*\))?\s*")
_INT_COUNT_RANGE = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
_FLOAT_STEP_RANGE = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*([+-]\d+(?:\.\d*)?)\s*\))?\s*")
_FLOAT_COUNT_RANGE = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")


def _num(text: str) -> str:
    # A1111's pattern allows "- 5" (a space after the sign) but then int("- 5") fails; accept it
    return re.sub(r"\s+", "", text)


def parse_list_values(text: str) -> list[str]:
    """Split axis text as one CSV row per line: quoted items may hold commas; items stripped, empties dropped."""
    if not text:
        return []
    rows = csv.reader(StringIO(text), skipinitialspace=True)
    return [item.strip() for item in itertools.chain.from_iterable(rows) if item.strip()]


def _expand_int(item: str) -> list[int]:
    m = _INT_STEP_RANGE.fullmatch(item)
    if m:
        start, end = int(_num(m.group(1))), int(_num(m.group(2)))
        step = int(m.group(3)) if m.group(3) is not None else 1
        if step == 0:
            raise ValueError(f"X/Y/Z value {item!r}: a range step must not be 0")
        values = list(range(start, end + 1, step))
        if not values:
            log.warning("X/Y/Z range %r gives no values (A1111 counts up by 1 unless a step says otherwise)", item)
        return values
    m = _INT_COUNT_RANGE.fullmatch(item)
    if m:
        start, end, count = int(_num(m.group(1))), int(_num(m.group(2))), int(m.group(3))
        return [int(v) for v in np.linspace(start, end, count).tolist()]
    try:
        return [int(item)]
    except ValueError:
        raise ValueError(
            f"X/Y/Z value {item!r} is neither a whole number nor a range like 1-5, 1-5 (+2) or 1-10 [5]"
        ) from None


def _expand_float(item: str) -> list[float]:
    m = _FLOAT_STEP_RANGE.fullmatch(item)
    if m:
        start, end = float(_num(m.group(1))), float(_num(m.group(2)))
        step = float(m.group(3)) if m.group(3) is not None else 1.0
        if step == 0:
            raise ValueError(f"X/Y/Z value {item!r}: a range step must not be 0")
        values = [float(v) for v in np.arange(start, end + step, step).tolist()]
        if not values:
            log.warning("X/Y/Z range %r gives no values (A1111 counts up by 1 unless a step says otherwise)", item)
        return values
    m = _FLOAT_COUNT_RANGE.fullmatch(item)
    if m:
        start, end, count = float(_num(m.group(1))), float(_num(m.group(2))), int(m.group(3))
        return [float(v) for v in np.linspace(start, end, count).tolist()]
    try:
        return [float(item)]
    except ValueError:
        raise ValueError(
            f"X/Y/Z value {item!r} is neither a number nor a range like 0.5-1.5 (+0.25) or 1-2 [5]"
        ) from None


def parse_int_values(text: str) -> list[int]:
    """Values of an int axis (Seed, Steps, Clip skip ...): numbers and int ranges, in the order written."""
    out: list[int] = []
    for item in parse_list_values(text):
        out += _expand_int(item)
    return out


def parse_float_values(text: str) -> list[float]:
    """Values of a float axis (CFG Scale, Denoising ...): numbers and float ranges, in the order written."""
    out: list[float] = []
    for item in parse_list_values(text):
        out += _expand_float(item)
    return out


def parse_axis(text: str, kind: AxisKind) -> list[int] | list[float] | list[str]:
    """Parse axis text for an axis of the given value kind ("int", "float" or "str")."""
    if kind == "int":
        return parse_int_values(text)
    if kind == "float":
        return parse_float_values(text)
    if kind == "str":
        return parse_list_values(text)
    raise ValueError(f"unknown axis kind {kind!r}; expected 'int', 'float' or 'str'")


def prompt_order_values(text: str) -> list[tuple[str, ...]]:
    """The values of a "Prompt order" axis: every permutation of the listed tokens (A1111's str_permutations)."""
    return list(itertools.permutations(parse_list_values(text)))


# ---------------------------------------------------------------- prompt axes


def prompt_sr(prompt: str, negative: str, search: str, replace: str) -> tuple[str, str]:
    """Prompt S/R: replace every ``search`` with ``replace`` in both prompts.

    ``search`` is the axis' first value. Like A1111 it is an error when it occurs in neither
    prompt (a typo would otherwise give a grid of identical images).
    """
    if search not in prompt and search not in negative:
        raise ValueError(f"Prompt S/R did not find {search} in prompt or negative prompt.")
    return prompt.replace(search, replace), negative.replace(search, replace)


def prompt_order(prompt: str, tokens_in_order: Sequence[str]) -> str:
    """Prompt order: put ``tokens_in_order`` into the slots where those tokens stand in ``prompt``.

    The slot that comes first in the prompt gets ``tokens_in_order[0]``, the next one the second
    token, and so on; the text between the slots is kept (A1111's ``apply_order``).
    """
    missing = [t for t in tokens_in_order if t not in prompt]
    if missing:
        # A1111 does not check and splices at position -1, garbling the prompt
        raise ValueError(f"Prompt order: {missing[0]!r} is not in the prompt")
    slots = sorted(tokens_in_order, key=lambda t: (prompt.find(t), t))  # A1111 sorts (position, token) pairs
    rest, parts = prompt, []
    for token in slots:
        n = rest.find(token)
        parts.append(rest[:n])
        rest = rest[n + len(token):]
    return "".join(part + token for part, token in zip(parts, tokens_in_order)) + rest


# ---------------------------------------------------------------- seeds


def fix_axis_seeds(values: Sequence[int | str | None], randrange: Callable[[int], int] = random.randrange) -> list:
    """A Seed / Var. seed axis with "Keep -1 for seeds" off: -1 (and blanks) become one fixed random seed each,
    so the same seed is used for the whole row/column and written into the infotext."""
    return [int(randrange(SEED_UPPER)) if v is None or v == "" or v == -1 else v for v in values]


def cell_seed(seed: int, ix: int, iy: int, iz: int, nx: int, ny: int,
              vary_x: bool = False, vary_y: bool = False, vary_z: bool = False) -> int:
    """A cell's seed with "Vary seeds for X/Y/Z": an offset that numbers the cells along the varied axes."""
    xdim = nx if vary_x else 1
    ydim = ny if vary_y else 1
    if vary_x:
        seed += ix
    if vary_y:
        seed += iy * xdim
    if vary_z:
        seed += iz * xdim * ydim
    return seed


# ---------------------------------------------------------------- cell order


def processing_order(x_cost: float, y_cost: float, z_cost: float) -> tuple[AxisName, AxisName]:
    """(outer axis, middle axis) for walking the cells: the strictly most expensive axis outermost;
    ties keep A1111's default z, then y."""
    first, second = "z", "y"
    if x_cost > y_cost and x_cost > z_cost:
        first, second = "x", ("y" if y_cost > z_cost else "z")
    elif y_cost > x_cost and y_cost > z_cost:
        first, second = "y", ("x" if x_cost > z_cost else "z")
    elif z_cost > x_cost and z_cost > y_cost:
        first, second = "z", ("x" if x_cost > y_cost else "y")
    return first, second  # type: ignore[return-value]


def iter_cells(nx: int, ny: int, nz: int, first: AxisName = "z",
               second: AxisName = "y") -> Iterator[tuple[int, int, int]]:
    """Yield (ix, iy, iz) in processing order: ``first`` outermost, ``second`` next, the third innermost."""
    if first == second or {first, second} - {"x", "y", "z"}:
        raise ValueError(f"bad axis order {first!r}, {second!r}")
    third = ({"x", "y", "z"} - {first, second}).pop()
    sizes = {"x": nx, "y": ny, "z": nz}
    for a in range(sizes[first]):
        for b in range(sizes[second]):
            for c in range(sizes[third]):
                idx = {first: a, second: b, third: c}
                yield idx["x"], idx["y"], idx["z"]


def cell_index(ix: int, iy: int, iz: int, nx: int, ny: int) -> int:
    """Position of a cell in the flat list that draw_xyz_grid takes (x fastest, then y, then z)."""
    return ix + iy * nx + iz * nx * ny
