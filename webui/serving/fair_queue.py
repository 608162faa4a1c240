"""The order queued jobs run in when several people share the server: round-robin across owners.

The owner whose last job started longest ago goes next (an owner who never ran one goes first);
within one owner, jobs keep their arrival order. So one user's 50 queued jobs hold another user's
single job back by at most one of theirs. Pure functions over the waiting jobs, so the worker's
pick and the place shown to a waiting page ("In queue: k/N") always agree.
"""
from __future__ import annotations

from typing import Callable, Hashable, Mapping, Sequence, TypeVar

T = TypeVar("T")


def fair_order(waiting: Sequence[T], owner_of: Callable[[T], Hashable],
               last_start: Mapping[Hashable, int]) -> list[T]:
    """`waiting` (arrival order) in the order the jobs will start. `last_start` maps an owner to the
    sequence number of their newest started job (higher = later); owners absent from it never ran one."""
    lanes: dict[Hashable, list[T]] = {}
    for item in waiting:  # one lane per owner, each in arrival order; dicts keep first-arrival order
        lanes.setdefault(owner_of(item), []).append(item)
    if len(lanes) <= 1:
        return list(waiting)
    first_arrival = {owner: i for i, owner in enumerate(lanes)}
    clock = {owner: last_start.get(owner, -1) for owner in lanes}
    heads = {owner: 0 for owner in lanes}
    tick = max([*clock.values(), 0]) + 1
    out: list[T] = []
    while lanes:
        # oldest start goes next; a tie (owners who never ran) goes to whoever queued first
        owner = min(lanes, key=lambda o: (clock[o], first_arrival[o]))
        lane = lanes[owner]
        out.append(lane[heads[owner]])
        heads[owner] += 1
        clock[owner] = tick
        tick += 1
        if heads[owner] >= len(lane):
            del lanes[owner]
    return out


def pick_next(waiting: Sequence[T], owner_of: Callable[[T], Hashable],
              last_start: Mapping[Hashable, int]) -> T | None:
    """The job that starts next (the first of `fair_order`, without ordering the rest)."""
    if not waiting:
        return None
    best: T | None = None
    best_key: tuple[int, int] | None = None
    seen: set[Hashable] = set()
    for i, item in enumerate(waiting):
        owner = owner_of(item)
        if owner in seen:  # only each owner's oldest job competes
            continue
        seen.add(owner)
        key = (last_start.get(owner, -1), i)
        if best_key is None or key < best_key:
            best, best_key = item, key
    return best
