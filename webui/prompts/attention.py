"""Emphasis `(word)`, `[word]`, `(word:1.3)` and BREAK, as A1111's `parse_prompt_attention`.

The result is `[[text, weight], ...]` with neighbours of equal weight merged. Brackets are read as a
token stream with two stacks, which is why unbalanced input never fails: an open bracket left at the
end applies its multiplier to everything after it, a closer with nothing open is literal text.
Weights are multiplied in the same order as A1111 (each closer multiplies the span it closes) so the
floats come out bit-identical, e.g. `((a))` is 1.2100000000000002.

Emphasis modes (A1111 option `emphasis`, infotext `Emphasis`) decide what happens to the weights:
"Original" multiplies the CLIP output by them and restores the mean, "No norm" multiplies only,
"Ignore" parses (brackets are removed) but applies nothing, and "None" does not parse at all:
brackets, weights and BREAK stay literal text (`parse_prompt_attention_for_mode`).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only for apply_emphasis; the parser stays importable without it
    import torch

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

EMPHASIS_MODES: tuple[str, ...] = ("Original", "No norm", "Ignore", "None")
DEFAULT_EMPHASIS = "Original"

# `:number)` closes the innermost `(` with that weight; `[.\d]+` as A1111 (so `1.2.3` is caught too).
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_SPECIAL = "\\()[]:"
_ESCAPABLE = "()[]\\"


def _plain_run(text: str, i: int) -> int:
    j = i
    while j < len(text) and text[j] not in _SPECIAL:
        j += 1
    return j


def parse_prompt_attention(text: str) -> list[list]:
    """`[[text, weight], ...]`; `BREAK` in plain text becomes its own `['BREAK', -1]` element.

    >>> parse_prompt_attention('an (important) word')
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    >>> parse_prompt_attention('(a:1.5) [b] \\\\(c\\\\)')
    [['a', 1.5], [' ', 1.0], ['b', 0.9090909090909091], [' (c)', 1.0]]
    """
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for item in res[start:]:
            item[1] *= multiplier

    def add_plain(chunk: str) -> None:
        # BREAK is only recognised in plain text; inside brackets its -1 gets multiplied like any
        # weight, and the tokenizer then no longer treats it as a break (A1111 does the same).
        for n, part in enumerate(_BREAK.split(chunk)):
            if n:
                res.append(["BREAK", -1])
            res.append([part, 1.0])

    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            # `\(` `\)` `\[` `\]` `\\` are the character itself; a lone backslash is dropped.
            if i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
                res.append([text[i + 1], 1.0])
                i += 2
            else:
                res.append(["", 1.0])
                i += 1
        elif ch == "(":
            round_open.append(len(res))
            i += 1
        elif ch == "[":
            square_open.append(len(res))
            i += 1
        elif ch == ":":
            m = _WEIGHT_CLOSE.match(text, i)
            if m is None:
                add_plain(":")
                i += 1
                continue
            weight = _to_float(m.group(1))
            if round_open and weight is not None:
                multiply_from(round_open.pop(), weight)
            else:
                add_plain(m.group(0))
            i = m.end()
        elif ch == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
            i += 1
        elif ch == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
            i += 1
        elif ch in ")]":
            add_plain(ch)
            i += 1
        else:
            j = _plain_run(text, i)
            add_plain(text[i:j])
            i = j

    for start in round_open:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    if not res:
        return [["", 1.0]]

    merged: list[list] = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged


def _to_float(s: str) -> float | None:
    # A1111 raises ValueError on `(a:1.2.3)`; here such a token is kept as literal text instead.
    try:
        return float(s)
    except ValueError:
        return None


def parse_prompt_attention_for_mode(text: str, mode: str) -> list[list]:
    """Parse as the emphasis mode wants: "None" bypasses the parser (brackets and BREAK stay text)."""
    if mode == "None":
        return [[text, 1.0]]
    return parse_prompt_attention(text)


def apply_emphasis(z: "torch.Tensor", multipliers: "torch.Tensor", mode: str) -> "torch.Tensor":
    """Apply per-token weights to CLIP output z [B, T, D] with multipliers [B, T]; returns a new tensor.

    "Original": z * m, then scaled by mean(z) / mean(z * m) where both means are over the whole
    tensor (A1111's `z.mean()`: all batch items of the chunk together, not per item).
    "No norm": z * m. "Ignore" and "None": z unchanged. An unknown mode falls back to "Original",
    as A1111's `sd_emphasis.get_current_option` does.
    """
    if mode in ("Ignore", "None"):
        return z
    weighted = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    if mode == "No norm":
        return weighted
    return weighted * (z.mean() / weighted.mean())
