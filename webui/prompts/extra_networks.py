"""`<name:arg1:arg2:k=v>` tags (LoRA, hypernetworks, ...), parsed as A1111's `modules/extra_networks.py`.

Tags are cut out of the prompt text (leaving whatever surrounded them, commas and spaces included)
and collected per network name. The parsing is pure; activating networks is someone else's job.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

re_extra_net = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """Arguments of one tag. `items` holds every `:`-separated argument as written; those of the form
    `key=value` (exactly one `=`) also go to `named`, the rest to `positional` (A1111's split)."""

    def __init__(self, items: list[Any] | None = None) -> None:
        self.items: list[Any] = items or []
        self.positional: list[Any] = []
        self.named: dict[str, str] = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other: object) -> bool:
        # A1111 compares the raw items only.
        return isinstance(other, ExtraNetworkParams) and self.items == other.items

    def __repr__(self) -> str:
        return f"ExtraNetworkParams(items={self.items!r})"


def parse_prompt(prompt: str) -> tuple[str, defaultdict[str, list[ExtraNetworkParams]]]:
    """A1111's name: (prompt without tags, {network name: [params per tag, in prompt order]})."""
    found: defaultdict[str, list[ExtraNetworkParams]] = defaultdict(list)

    def take(m: re.Match[str]) -> str:
        found[m.group(1)].append(ExtraNetworkParams(items=m.group(2).split(":")))
        return ""

    return re_extra_net.sub(take, prompt), found


def parse_extra_networks(prompt: str) -> tuple[str, defaultdict[str, list[ExtraNetworkParams]]]:
    """Same as `parse_prompt`, under a name that says what it parses."""
    return parse_prompt(prompt)


def parse_prompts(prompts: list[str]) -> tuple[list[str], defaultdict[str, list[ExtraNetworkParams]]]:
    """Strip tags from every prompt of a batch; the networks are those of the FIRST prompt only.

    A1111 activates networks once per batch, so tags that differ in later prompts are removed from
    their text but not applied. (A1111 returns None for an empty list; here it is an empty mapping.)
    """
    stripped: list[str] = []
    first: defaultdict[str, list[ExtraNetworkParams]] | None = None
    for prompt in prompts:
        text, data = parse_prompt(prompt)
        if first is None:
            first = data
        stripped.append(text)
    return stripped, first if first is not None else defaultdict(list)
