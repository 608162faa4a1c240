"""Per-step conditioning for a batch: prompt editing / alternation schedules and AND parts.

`build_conditioning` turns the batch's prompts into, for every sampling step, the tensors the CFG
step needs — A1111's `get_multicond_learned_conditioning` + `reconstruct_multicond_batch`:
each positive prompt is split on `AND` into weighted parts, each part (and each negative prompt)
gets its `[[end_at_step, text], ...]` schedule, and every distinct text is encoded once.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from webui.prompts.chunking import EmbeddingLookup
from webui.prompts.encoder import (Conditioning, EncodedText, EncodeOptions, PromptEncoder, count_tokens,
                                  stack_conds)
from webui.prompts.extra_networks import parse_prompt
from webui.prompts.scheduling import get_learned_conditioning_prompt_schedules, get_multicond_prompt_list


@dataclass
class ScheduledText:
    """One prompt's schedule: entry i is used while step <= end_at_step[i]."""
    entries: list[tuple[int, str, EncodedText]]

    def index_at(self, step: int) -> int:
        for i, (end, _, _) in enumerate(self.entries):
            if step <= end:
                return i
        return 0  # past the end A1111 falls back to the first entry

    def at(self, step: int) -> EncodedText:
        return self.entries[self.index_at(step)][2]

    def text_at(self, step: int) -> str:
        return self.entries[self.index_at(step)][1]


@dataclass
class StepConds:
    """What one CFG step needs: every positive part stacked, which rows belong to which image
    (with their AND weights), and the negative conditioning per image."""
    cond: Conditioning
    parts: list[list[tuple[int, float]]]
    uncond: Conditioning

    @property
    def simple(self) -> bool:
        """One part of weight 1 per image: plain CFG (the common case)."""
        return all(len(p) == 1 and p[0][1] == 1.0 for p in self.parts)


@dataclass
class PromptConditioning:
    positive: list[list[tuple[ScheduledText, float]]]  # per image: AND parts with weights
    negative: list[ScheduledText]                      # per image

    def at(self, step: int) -> StepConds:
        tensors: list[EncodedText] = []
        parts: list[list[tuple[int, float]]] = []
        for item in self.positive:
            row = []
            for sched, weight in item:
                row.append((len(tensors), weight))
                tensors.append(sched.at(step))
            parts.append(row)
        cond = _stack(tensors)
        uncond = _stack([s.at(step) for s in self.negative])
        return StepConds(cond, parts, uncond)

    def texts_at(self, step: int) -> list[list[str]]:
        return [[s.text_at(step) for s, _ in item] for item in self.positive]

    @property
    def embeddings_used(self) -> list:
        seen: dict[str, object] = {}
        for item in self.positive:
            for sched, _ in item:
                for _, _, enc in sched.entries:
                    for e in enc.embeddings:
                        seen.setdefault(e.name, e)
        for sched in self.negative:
            for _, _, enc in sched.entries:
                for e in enc.embeddings:
                    seen.setdefault(e.name, e)
        return list(seen.values())


@dataclass
class StaticConditioning:
    """The same cond/uncond at every step (one part of weight 1 per image)."""
    cond: Conditioning
    uncond: Conditioning

    def at(self, step: int) -> StepConds:
        return StepConds(self.cond, [[(i, 1.0)] for i in range(self.cond.cross_attn.shape[0])], self.uncond)


def _stack(encoded: list[EncodedText]) -> Conditioning:
    cross = stack_conds([e.cross_attn for e in encoded])
    pooled = [e.pooled for e in encoded]
    return Conditioning(cross, torch.stack(pooled) if all(p is not None for p in pooled) else None)  # type: ignore[arg-type]


@lru_cache(maxsize=512)
def _schedule(text: str, steps: int, hires_steps: int | None, old: bool) -> tuple[tuple[int, str], ...]:
    return tuple((int(end), t) for end, t in get_learned_conditioning_prompt_schedules([text], steps, hires_steps, old)[0])


def schedule_steps(steps: int, second_order: bool) -> int:
    """How many denoiser calls a pass of ``steps`` counts for prompt schedules (A1111: ×2 for
    second-order samplers, whose schedule advances once per model call)."""
    return steps * 2 if second_order else steps


def build_conditioning(encoder: PromptEncoder, prompts: list[str], negative_prompts: list[str], steps: int, *,
                       hires_steps: int | None = None, opts: EncodeOptions = EncodeOptions(),
                       use_old_scheduling: bool = False) -> PromptConditioning:
    """``steps``: the pass's schedule length (`schedule_steps`); ``hires_steps``: the hires pass's
    length, with ``steps`` the first pass's (A1111's hires numbering)."""
    def scheduled(text: str) -> ScheduledText:
        entries = [(end, t, encoder.encode_text(t, opts))
                   for end, t in _schedule(text, steps, hires_steps, use_old_scheduling)]
        return ScheduledText(entries)

    res_indexes, flat, _ = get_multicond_prompt_list(list(prompts))
    flat_scheduled = [scheduled(t) for t in flat]
    positive = [[(flat_scheduled[i], float(w)) for i, w in item] for item in res_indexes]
    negative = [scheduled(t) for t in negative_prompts]
    return PromptConditioning(positive, negative)


def count_prompt_tokens(tokenizer: object, text: str, steps: int = 20, *, is_positive: bool = True,
                        embeddings: EmbeddingLookup | None = None) -> tuple[int, int]:
    """A1111's prompt-box counter: extra-network tags removed, AND parts and every scheduled
    variant counted, the longest shown as (tokens, capacity)."""
    text, _ = parse_prompt(text)
    flat = get_multicond_prompt_list([text])[1] if is_positive else [text]
    try:
        variants = [t for p in flat for _, t in _schedule(p, max(1, steps), None, False)]
    except Exception:  # a counter must never fail while the user types
        variants = [text]
    return max((count_tokens(tokenizer, v, embeddings) for v in variants or [""]), key=lambda c: c[0])
