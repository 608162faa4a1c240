"""Prompts from file or textbox, and Prompt matrix: the pure parts of A1111 1.10's
``scripts/prompts_from_file.py`` and ``scripts/prompt_matrix.py``.

A line of the prompts box is either a plain prompt or, when it contains ``--``, command-line-like
options split with ``shlex`` (so quotes group words)::

    --prompt "a red circle" --negative_prompt blurry --steps 10 --seed 5 --width 64

``--prompt`` and ``--negative_prompt`` take every following word up to the next ``--option``
(joined with single spaces); every other option takes exactly one value (quote values with
spaces: ``--sampler_name "Euler a"``). Values are converted as A1111's ``prompt_tags`` table says;
booleans are true only for the exact word ``true``.

A1111 itself never rejects a line: when a ``--`` line fails to parse it logs the error and uses
the whole line as the prompt. ``parse_line`` raises a ValueError instead (so an API can say what
is wrong); ``parse_prompt_lines(..., strict=False)`` keeps A1111's fallback.
"""
from __future__ import annotations

import logging
import random
import shlex
from typing import Callable, Literal, Optional

log = logging.getLogger(__name__)

TagKind = Literal["str", "int", "float", "bool", "model"]

# A1111 1.10's prompt_tags, in its order: option name -> value kind ("model" = a checkpoint name,
# which A1111 resolves to a known checkpoint and sets as the sd_model_checkpoint override)
PROMPT_TAGS: dict[str, TagKind] = {
    "sd_model": "model",
    "outpath_samples": "str",
    "outpath_grids": "str",
    "prompt_for_display": "str",
    "prompt": "str",
    "negative_prompt": "str",
    "styles": "str",
    "seed": "int",
    "subseed_strength": "float",
    "subseed": "int",
    "seed_resize_from_h": "int",
    "seed_resize_from_w": "int",
    "sampler_index": "int",
    "sampler_name": "str",
    "batch_size": "int",
    "n_iter": "int",
    "steps": "int",
    "cfg_scale": "float",
    "width": "int",
    "height": "int",
    "restore_faces": "bool",
    "tiling": "bool",
    "do_not_save_samples": "bool",
    "do_not_save_grid": "bool",
}

_GREEDY_TAGS = ("prompt", "negative_prompt")

# name -> canonical name, or None when unknown (A1111 maps sampler names through samplers_map)
Resolver = Callable[[str], Optional[str]]


def _convert(tag: str, kind: TagKind, value: str, sampler_resolver: Resolver | None,
             model_resolver: Resolver | None) -> object:
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"--{tag} needs a whole number, got {value!r}") from None
    if kind == "float":
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"--{tag} needs a number, got {value!r}") from None
    if kind == "bool":
        return value == "true"  # A1111: anything but the exact word "true" is False
    if kind == "model" and model_resolver is not None:
        resolved = model_resolver(value)
        if resolved is None:
            raise ValueError(f"Unknown checkpoint: {value}")
        return resolved
    if tag == "sampler_name" and sampler_resolver is not None:
        resolved = sampler_resolver(value)
        if resolved is None:
            # A1111 silently stores None here, and the job then runs with no sampler set
            raise ValueError(f"--sampler_name: unknown sampler {value!r}")
        return resolved
    return value


def parse_line(line: str, *, sampler_resolver: Resolver | None = None,
               model_resolver: Resolver | None = None) -> dict[str, object]:
    """Parse one line of the prompts box into the job fields it sets.

    A line without ``--`` is ``{"prompt": line}``. Otherwise the options are parsed strictly:
    ValueError for an unknown option, a word outside an option, a missing value, a value of the
    wrong type, unbalanced quotes, or (when a resolver is given) an unknown sampler/checkpoint.
    A repeated option keeps its last value.
    """
    line = line.strip()
    if "--" not in line:
        return {"prompt": line}
    try:
        args = shlex.split(line)
    except ValueError as e:
        raise ValueError(f"cannot split {line!r}: {e}") from None

    res: dict[str, object] = {}
    pos = 0
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--"):
            raise ValueError(f'must start with "--": {arg!r} (quote values that contain spaces)')
        if pos + 1 >= len(args):
            raise ValueError(f"missing argument for command line option {arg}")
        tag = arg[2:]
        if tag in _GREEDY_TAGS:
            words = [args[pos + 1]]
            pos += 2
            while pos < len(args) and not args[pos].startswith("--"):
                words.append(args[pos])
                pos += 1
            res[tag] = " ".join(words)
            continue
        kind = PROMPT_TAGS.get(tag)
        if kind is None:
            raise ValueError(f"unknown commandline option: {arg}; known: {', '.join('--' + t for t in PROMPT_TAGS)}")
        res[tag] = _convert(tag, kind, args[pos + 1], sampler_resolver, model_resolver)
        pos += 2
    return res


def parse_prompt_lines(text: str, *, strict: bool = False, sampler_resolver: Resolver | None = None,
                       model_resolver: Resolver | None = None) -> list[dict[str, object]]:
    """One job dict per non-blank line of the prompts box (lines are stripped).

    ``strict=False`` is A1111's behaviour: a ``--`` line that does not parse is logged and used
    whole as the prompt. ``strict=True`` raises the ValueError, prefixed with the line number.
    """
    jobs = []
    lines = [x for x in (raw.strip() for raw in text.splitlines()) if x]
    for number, line in enumerate(lines, 1):
        try:
            jobs.append(parse_line(line, sampler_resolver=sampler_resolver, model_resolver=model_resolver))
        except ValueError as e:
            if strict:
                raise ValueError(f"line {number}: {e}") from None
            log.warning("Error parsing line %r as commandline (%s); using it as the prompt", line, e)
            jobs.append({"prompt": line})
    return jobs


def combine_prompt(base: str, line_prompt: str | None, position: Literal["start", "end"] = "end") -> str:
    """The prompt a line's job runs with (A1111 1.10's "Insert prompts at the" start/end option).

    No ``--prompt`` on the line: the UI prompt. Both non-empty: joined with a space, the line's
    part first for "start". Otherwise the line's prompt replaces the UI prompt. The same rule
    applies to negative prompts.
    """
    if line_prompt is None:
        return base
    if line_prompt and base:
        return f"{line_prompt} {base}" if position == "start" else f"{base} {line_prompt}"
    return line_prompt


def line_seeds(seed: int, line_count: int, iterate_every_line: bool = False, same_seed_for_all: bool = False,
               batch_size: int = 1, n_iter: int = 1,
               randrange: Callable[[int], int] = random.randrange) -> list[int]:
    """The seed each line's job starts from, before a line's own ``--seed``.

    With either checkbox a -1 seed is first fixed to one random seed. "Iterate seed every line"
    then advances it by ``batch_size * n_iter`` (the UI values, not a line's overrides) per line.
    With neither, -1 stays -1 and every job draws its own.
    """
    if (iterate_every_line or same_seed_for_all) and seed == -1:
        seed = int(randrange(4294967294))
    seeds = []
    for _ in range(line_count):
        seeds.append(seed)
        if iterate_every_line:
            seed += batch_size * n_iter
    return seeds


# ---------------------------------------------------------------- prompt matrix

_JOINERS = {"comma": ", ", "space": " "}


def prompt_matrix_combinations(prompt: str, variations_at_start: bool = False, joiner: str = "comma") -> list[str]:
    """Every prompt of A1111's Prompt matrix for ``prompt`` split on ``|``.

    The first part is always there (unchanged, not stripped, as in A1111); combination ``k`` adds
    the variable parts whose bit ``n`` is set in ``k`` (part 1 is bit 0), each stripped of spaces
    and commas, after the fixed part - or before it with ``variations_at_start``. ``joiner`` is
    "comma" (", "), "space" (" ") or a literal separator. Gives 2**(parts - 1) prompts.
    """
    sep = _JOINERS.get(joiner, joiner)
    parts = prompt.split("|")
    fixed, variable = parts[0], parts[1:]
    out = []
    for k in range(2 ** len(variable)):
        chosen = [text.strip().strip(",") for n, text in enumerate(variable) if k & (1 << n)]
        out.append(sep.join(chosen + [fixed] if variations_at_start else [fixed] + chosen))
    return out


def prompt_matrix_grid_rows(prompt: str) -> int:
    """Rows of the prompt-matrix grid: 2**(variable parts // 2); the columns take the other, larger half."""
    return 1 << ((len(prompt.split("|")) - 1) // 2)


def prompt_matrix_seeds(seed: int, count: int, different_seeds: bool = False) -> list[int]:
    """Seeds of the matrix images: all the (already fixed) seed, or seed, seed+1, ... with "Random seeds"."""
    return [int(seed + (i if different_seeds else 0)) for i in range(count)]

