"""Learning-rate schedules: A1111's ``"rate:step, rate:step, rate"`` syntax, a linear warm-up
wrapper for it, and the warm-up + cosine curve the built-in model's recipe uses.

The syntax (A1111's Train tab, also used for the gradient-clipping value): comma-separated entries,
each ``rate:step`` (the rate applies until optimizer step ``step``) or a bare ``rate`` / ``rate:-1``
(applies to the end).  ``"0.005:100, 1e-3:1000, 1e-5"`` trains at 0.005 for steps 0-99, 1e-3 for
100-999 and 1e-5 from 1000 to the last step.  Entries whose step is at or below the step training
starts from are skipped (resuming at step 500 starts at 1e-3); steps beyond ``max_steps`` are
clamped to it, and the run ends where the last entry ends.

Stricter than A1111, which accepts some texts and then misbehaves: steps must increase (A1111
jumps past a smaller step at once and stops training a step later) and nothing may follow an entry
that runs to the end (A1111 ignores it silently); these raise ``ValueError`` naming the entry.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleEntry:
    rate: float
    step: int  # optimizer step the rate applies until (exclusive); -1: to the end
    text: str  # the entry as written, for messages


def parse_schedule(text: str | float, what: str = "learning rate") -> list[ScheduleEntry]:
    """Parse and check a schedule text; ``what`` names the field in error messages."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"{what} schedule must be text like '0.005:100, 1e-5', not {type(text).__name__}")
    raw = str(text)
    # empty entries (a trailing comma) are tolerated; an all-empty text is not
    parts = [p.strip() for p in raw.split(",")]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError(f"{what} is empty: give a rate such as 0.005, or a schedule such as '0.005:100, 1e-5'")
    entries: list[ScheduleEntry] = []
    for part in parts:
        if entries and entries[-1].step == -1:
            raise ValueError(f"{what} schedule '{raw}': '{part}' follows '{entries[-1].text}', which already "
                             "runs to the last step (only the last entry may omit its step or use -1)")
        fields = part.split(":")
        if len(fields) > 2:
            raise ValueError(f"{what} schedule '{raw}': '{part}' has more than one ':' (write rate:step)")
        rate = _parse_rate(fields[0].strip(), part, raw, what)
        step = _parse_step(fields[1].strip(), part, raw, what) if len(fields) == 2 else -1
        if entries and step != -1 and step <= entries[-1].step:
            raise ValueError(f"{what} schedule '{raw}': step {step} in '{part}' is not after step "
                             f"{entries[-1].step} of '{entries[-1].text}' (steps must increase)")
        entries.append(ScheduleEntry(rate, step, part))
    return entries


def _parse_rate(s: str, part: str, raw: str, what: str) -> float:
    try:
        rate = float(s)
    except ValueError:
        raise ValueError(f"{what} schedule '{raw}': '{s}' in '{part}' is not a number") from None
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"{what} schedule '{raw}': rate '{s}' in '{part}' must be a finite number >= 0")
    return rate


def _parse_step(s: str, part: str, raw: str, what: str) -> int:
    try:
        step = int(s)
    except ValueError:
        raise ValueError(f"{what} schedule '{raw}': step '{s}' in '{part}' is not a whole number") from None
    if step < 1 and step != -1:
        raise ValueError(f"{what} schedule '{raw}': step {step} in '{part}' must be positive (or -1: to the end)")
    return step


class Schedule:
    """What a trainer asks of a schedule; ``apply`` sets an optimizer's rate for a step."""

    end_step: int

    def rate_at(self, step: int) -> float:
        raise NotImplementedError

    def finished(self, step: int) -> bool:
        return step >= self.end_step

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        rate = self.rate_at(step)
        for group in optimizer.param_groups:
            group["lr"] = rate
        return rate


class LearnRateSchedule(Schedule):
    """A parsed schedule for one run: optimizer steps ``cur_step`` up to ``end_step`` (exclusive).

    ``rate_at(step)`` is the rate for the update that takes the model from ``step`` to ``step + 1``;
    ``end_step`` is ``max_steps`` unless the last entry ends earlier (A1111 stops there too).
    A run that resumes at or past the end has no segments and is ``finished`` at once."""

    def __init__(self, text: str | float, max_steps: int, cur_step: int = 0, what: str = "learning rate") -> None:
        if max_steps < 1:
            raise ValueError(f"max steps must be positive, not {max_steps}")
        if cur_step < 0:
            raise ValueError(f"the current step must be >= 0, not {cur_step}")
        self.text = str(text)
        self.entries = parse_schedule(text, what)
        self.max_steps, self.start_step = max_steps, cur_step
        segments: list[tuple[float, int]] = []
        for e in self.entries:
            end = max_steps if e.step == -1 else min(e.step, max_steps)
            if end > cur_step:
                segments.append((e.rate, end))
            if end >= max_steps:
                break  # what follows a clamped entry can never run
        self.segments: tuple[tuple[float, int], ...] = tuple(segments)
        self.end_step = segments[-1][1] if segments else cur_step

    def rate_at(self, step: int) -> float:
        for rate, end in self.segments:
            if step < end:
                return rate
        raise ValueError(f"step {step} is past the end of the schedule '{self.text}' (step {self.end_step})")

    def describe(self) -> str:
        """One line for the log: the segments this run will go through."""
        if not self.segments:
            return f"nothing left to train after step {self.start_step}"
        return ", ".join(f"{rate:g} until step {end}" for rate, end in self.segments)


class WarmupSchedule(Schedule):
    """``base`` scaled by a linear ramp over the first ``warmup_steps`` optimizer steps (counted from
    step 0, so a run resumed during the warm-up gets the rates an uninterrupted run would)."""

    def __init__(self, base: Schedule, warmup_steps: int) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warm-up steps must be >= 0, not {warmup_steps}")
        self.base, self.warmup_steps = base, warmup_steps
        self.end_step = base.end_step

    def rate_at(self, step: int) -> float:
        rate = self.base.rate_at(step)
        if step < self.warmup_steps:
            rate *= (step + 1) / self.warmup_steps
        return rate


def warmup_cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then a cosine decay to 10 % of it at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
