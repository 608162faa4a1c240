r"""Prompt editing `[from:to:when]`, alternation `[a|b]` and composable `AND`, as A1111 does them.

Extensions call these by A1111's names (`modules/prompt_parser.py`), so names, signatures and return
forms are A1111's. A1111 parses with a lark Earley grammar:

    start:       (prompt | /[][():]/)*          # stray brackets and colons are literal at the top level
    prompt:      (emphasized | scheduled | alternate | plain | WHITESPACE)*
    emphasized:  "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
    scheduled:   "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
    alternate:   "[" prompt ("|" [prompt])+ "]"
    plain:       /([^\\\[\]():|]|\\.)+/

Here the same language is read by hand. Inside a construct nothing is literal: every bracket must open
a nested construct that closes, so a construct either parses in exactly one way or not at all. At the
top level a `[`/`(` may open a construct or be a literal character; this parser takes the construct
whenever one parses. That is what lark does too, except when the construct is directly followed by a
literal `[`, `]`, `(`, `)` or `:` (e.g. `[b:3]]`): there lark's choice depends on PYTHONHASHSEED, so A1111
itself gives either reading, and ours is one of them. A `|` outside any alternation, or a backslash with
nothing (or a newline) after it, makes the whole prompt unparsable; A1111 then uses the prompt unchanged
for every step, scheduling included. Parsing and rendering use explicit stacks, so deeply nested
brackets cannot exhaust Python's recursion limit.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence, Union

# lark's common.SIGNED_NUMBER, as lark compiles it (ASCII digits; `1e3`, `1.`, `.5`, `-2` are numbers).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, eq=False)
class _Scheduled:
    before: tuple["_Node", ...] | None  # None for `[to:when]`
    after: tuple["_Node", ...]
    when: str  # the NUMBER token as written: a `.` in it makes it a fraction


@dataclass(frozen=True, eq=False)
class _Alternate:
    options: tuple[tuple["_Node", ...], ...]


_Node = Union[str, _Scheduled, _Alternate]
_Seq = tuple[_Node, ...]
_Parsed = Union[tuple[_Seq, int], None]  # (nodes, index after the construct), or None: no construct here


class _ParseError(Exception):
    """The whole prompt is outside the grammar."""


@dataclass
class _Frame:
    """An open `(` or `[`: its text so far, split at `:`/`|` separators."""
    start: int
    kind: str
    parts: list[list[_Node]] = field(default_factory=lambda: [[]])
    seps: list[str] = field(default_factory=list)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        # Construct outcome per start index. A construct parses the same way wherever it is reached,
        # so each start is worked out once and the whole parse stays linear.
        self.memo: dict[int, _Parsed] = {}

    def _escape(self, i: int) -> int:
        # plain's `\\.`: a backslash takes the next character, which may not be a newline.
        if i + 1 >= len(self.text) or self.text[i + 1] == "\n":
            raise _ParseError(f"dangling backslash at {i}")
        return i + 2

    def top(self) -> _Seq:
        out: list[_Node] = []
        text, i = self.text, 0
        while i < len(text):
            ch = text[i]
            if ch in "[(":
                got = self.construct(i)
                if got is not None:
                    out.extend(got[0])
                    i = got[1]
                    continue
                out.append(ch)
                i += 1
            elif ch == "|":
                raise _ParseError(f"'|' outside an alternation at {i}")
            elif ch == "\\":
                j = self._escape(i)
                out.append(text[i:j])
                i = j
            else:
                out.append(ch)
                i += 1
        return tuple(out)

    def _when(self, i: int) -> tuple[str, int] | None:
        """`[WHITESPACE] NUMBER [WHITESPACE] "]"` starting at i: (number text, index after `]`)."""
        m = _WHITESPACE.match(self.text, i)
        num = _NUMBER.match(self.text, m.end() if m else i)
        if not num:
            return None
        m = _WHITESPACE.match(self.text, num.end())
        end = m.end() if m else num.end()
        return (num.group(0), end + 1) if end < len(self.text) and self.text[end] == "]" else None

    @staticmethod
    def _closed(frame: _Frame, closer: str) -> _Seq | None:
        """Nodes for a frame closed by `)`/`]`, or None if that close is not in the grammar."""
        parts = [tuple(p) for p in frame.parts]
        if frame.kind == "(":
            if closer != ")":
                return None
            return ("(", *parts[0], ")") if not frame.seps else ("(", *parts[0], ":", *parts[1], ")")
        if closer != "]" or ":" in frame.seps:
            return None
        return ("[", *parts[0], "]") if not frame.seps else (_Alternate(tuple(parts)),)

    def _fail(self, stack: list[_Frame]) -> None:
        # Every construct still open fails too: each needed the innermost one to close.
        for frame in stack:
            self.memo[frame.start] = None
        return None

    def construct(self, i: int) -> _Parsed:
        if i in self.memo:
            return self.memo[i]
        text = self.text
        stack = [_Frame(i, text[i])]
        j = i + 1
        while stack:
            frame = stack[-1]
            if j >= len(text):
                return self._fail(stack)
            ch = text[j]
            nodes: _Seq | None = None
            if ch in "[(":
                if j in self.memo:
                    known = self.memo[j]
                    if known is None:
                        return self._fail(stack)
                    frame.parts[-1].extend(known[0])
                    j = known[1]
                else:
                    stack.append(_Frame(j, ch))
                    j += 1
                continue
            if ch == "\\":
                k = self._escape(j)
                frame.parts[-1].append(text[j:k])
                j = k
                continue
            if ch in ")]":
                nodes = self._closed(frame, ch)
                if nodes is None:
                    return self._fail(stack)
                j += 1
            elif ch in ":|":
                if frame.kind == "(" and (ch == "|" or frame.seps):
                    return self._fail(stack)  # `(a|b)`, `(a:b:c)`
                if frame.kind == "[" and ch == ":":
                    if "|" in frame.seps:
                        return self._fail(stack)
                    when = self._when(j + 1)
                    if when is not None:  # `[to:when]` or `[from:to:when]`
                        before = tuple(frame.parts[0]) if frame.seps else None
                        nodes = (_Scheduled(before, tuple(frame.parts[-1]), when[0]),)
                        j = when[1]
                    elif frame.seps:
                        return self._fail(stack)  # a second `:` must be followed by the number
                if frame.kind == "[" and ch == "|" and ":" in frame.seps:
                    return self._fail(stack)
                if nodes is None:
                    frame.seps.append(ch)
                    frame.parts.append([])
                    j += 1
                    continue
            else:
                frame.parts[-1].append(ch)
                j += 1
                continue
            done = stack.pop()
            self.memo[done.start] = (nodes, j)
            if stack:
                stack[-1].parts[-1].extend(nodes)
        return self.memo[i]


def _parse(prompt: str) -> _Seq | None:
    try:
        return _Parser(prompt).top()
    except _ParseError:
        return None


def _walk(seq: Sequence[_Node]) -> Iterator[_Node]:
    """Every node, including branches that no step will show (A1111 collects steps from all of them)."""
    pending: list[Sequence[_Node]] = [seq]
    while pending:
        for node in pending.pop():
            yield node
            if isinstance(node, _Scheduled):
                pending.extend((node.before or (), node.after))
            elif isinstance(node, _Alternate):
                pending.extend(node.options)


def _render(seq: Sequence[_Node], step: int, when_of: dict[str, int]) -> str:
    out: list[str] = []
    stack: list[Iterator[_Node]] = [iter(seq)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
        elif isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            stack.append(iter((node.before or ()) if step <= when_of[node.when] else node.after))
        else:
            stack.append(iter(node.options[(step - 1) % len(node.options)]))
    return "".join(out)


def _to_int(v: float, steps: int) -> int:
    # A1111 calls int() here, which raises on `1e400`; an infinite step is just "never"/"always".
    if math.isinf(v):
        return steps if v > 0 else -1
    return int(v)


def get_learned_conditioning_prompt_schedules(prompts: list[str], base_steps: int, hires_steps: int | None = None,
                                              use_old_scheduling: bool = False) -> list[list[list]]:
    """One schedule per prompt: `[[end_at_step, text], ...]`, ascending, the last end being the step count.

    `when` with a `.` is a fraction of the steps, without one an absolute step. For the hires pass
    (`hires_steps` given) the steps are the hires steps and `when` counts on from the first pass:
    integers have `base_steps` subtracted and fractions 1.0, so `1.5` is halfway through hires.
    `use_old_scheduling` (A1111's "Old prompt editing timelines"): no hires offsets, the steps are
    `base_steps`, and any `when` below 1 is a fraction, anything else an absolute step.
    A boundary below 1 adds no entry; `from` is shown while `step <= when`.
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def resolve(raw: str) -> int:
        v = float(raw)
        if use_old_scheduling:
            v = v * steps if v < 1 else v
        elif "." in raw:
            v = (v - flt_offset) * steps
        else:
            v = v - int_offset
        return min(steps, _to_int(v, steps))

    def schedule(prompt: str) -> list[list]:
        tree = _parse(prompt)
        if tree is None:
            return [[steps, prompt]]
        when_of: dict[str, int] = {}
        ends = {steps}
        for node in _walk(tree):
            if isinstance(node, _Scheduled):
                when_of.setdefault(node.when, resolve(node.when))
                if when_of[node.when] >= 1:
                    ends.add(when_of[node.when])
            elif isinstance(node, _Alternate):
                ends.update(range(1, steps + 1))
        return [[end, _render(tree, end, when_of)] for end in sorted(ends)]

    cache = {prompt: schedule(prompt) for prompt in dict.fromkeys(prompts)}
    return [cache[prompt] for prompt in prompts]


# --- composable diffusion (AND) ---------------------------------------------------------------

re_AND = re.compile(r"\bAND\b")
# Text keeps leading whitespace and loses trailing whitespace; an optional `:number` ends the subprompt.
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts: list[str]) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """Split each prompt on `AND`: ([[(flat index, weight), ...] per prompt], flat texts, text -> index).

    Identical subprompt texts (after the weight is cut off) share one flat entry.
    """
    res_indexes: list[list[tuple[int, float]]] = []
    flat: list[str] = []
    index_of: dict[str, int] = {}
    for prompt in prompts:
        indexes: list[tuple[int, float]] = []
        for sub in re_AND.split(prompt):
            m = re_weight.search(sub)
            text, weight = (m.group(1), m.group(2)) if m else (sub, None)
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            indexes.append((index_of[text], float(weight) if weight is not None else 1.0))
        res_indexes.append(indexes)
    return res_indexes, flat, index_of


# --- picking a text during sampling ------------------------------------------------------------

@dataclass(frozen=True)
class ScheduleEntry:
    end_at_step: int
    text: str


@dataclass(frozen=True)
class PromptSchedule:
    """A schedule as our sampling loop uses it; `entries` ascend by `end_at_step`."""
    entries: tuple[ScheduleEntry, ...]

    @classmethod
    def from_list(cls, schedule: Sequence[Sequence]) -> "PromptSchedule":
        return cls(tuple(ScheduleEntry(int(end), str(text)) for end, text in schedule))

    def index_at(self, step: int) -> int:
        return schedule_index_at(self, step)

    def text_at(self, step: int) -> str:
        return self.entries[self.index_at(step)].text

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.entries]


def get_prompt_schedules(prompts: list[str], base_steps: int, hires_steps: int | None = None,
                         use_old_scheduling: bool = False) -> list[PromptSchedule]:
    """`get_learned_conditioning_prompt_schedules`, as PromptSchedule objects."""
    raw = get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps, use_old_scheduling)
    return [PromptSchedule.from_list(s) for s in raw]


def _pairs(schedule: PromptSchedule | Sequence[Sequence]) -> list[tuple[int, str]]:
    if isinstance(schedule, PromptSchedule):
        return [(e.end_at_step, e.text) for e in schedule.entries]
    return [(int(end), text) for end, text in schedule]


def schedule_index_at(schedule: PromptSchedule | Sequence[Sequence], step: int) -> int:
    """Index of the entry used at 0-based sampling step `step` (the denoiser-call counter).

    As A1111's `reconstruct_cond_batch`: the first entry with `step <= end_at_step`; past every end
    it falls back to entry 0, not the last one. So `[[3, 'a '], [10, 'a b']]` shows `'a '` for steps
    0..3 (four calls) and `'a b'` for 4..10.
    """
    for index, (end, _) in enumerate(_pairs(schedule)):
        if step <= end:
            return index
    return 0


def schedule_text_at(schedule: PromptSchedule | Sequence[Sequence], step: int) -> str:
    """Text used at 0-based sampling step `step`; see `schedule_index_at`."""
    return _pairs(schedule)[schedule_index_at(schedule, step)][1]
