"""Styles found again in a pasted prompt (A1111's `infotext_styles` option): the reverse of applying them.

A style whose text holds `{prompt}` matches a prompt that starts with the text before `{prompt}` and ends
with the text after it; any other style matches a prompt that ends with its text (a ", " left in front
is dropped). A style counts only when its prompt and its negative prompt both match. Styles are peeled
off one at a time, the last applied first, so the names come back in the order they were applied.
"""
from __future__ import annotations

from typing import Iterable

from webui.prompts.styles import PromptStyle


def _strip_style_text(style_text: str, prompt: str) -> tuple[bool, str]:
    """(matched, the prompt without the style's text)."""
    text, style = prompt.strip(), style_text.strip()
    if "{prompt}" in style:
        before, _, after = style.partition("{prompt}")
        if text.startswith(before) and text.endswith(after) and len(text) >= len(before) + len(after):
            return True, text[len(before):len(text) - len(after)]
        return False, prompt
    if text.endswith(style):
        rest = text[:len(text) - len(style)]
        return True, rest[:-2] if rest.endswith(", ") else rest
    return False, prompt


def _strip_style(style: PromptStyle, prompt: str, negative: str) -> tuple[bool, str, str]:
    if not style.prompt and not style.negative_prompt:
        return False, prompt, negative  # an empty style would match everything
    ok, new_prompt = _strip_style_text(style.prompt, prompt)
    if not ok:
        return False, prompt, negative
    ok, new_negative = _strip_style_text(style.negative_prompt, negative)
    if not ok:
        return False, prompt, negative
    return True, new_prompt, new_negative


def extract_styles(styles: Iterable[PromptStyle], prompt: str, negative: str) -> tuple[list[str], str, str]:
    """(names of the styles found, in the order they were applied; prompt and negative prompt without them)."""
    candidates = list(styles)
    found: list[str] = []
    while True:
        for style in candidates:
            ok, new_prompt, new_negative = _strip_style(style, prompt, negative)
            if ok:
                prompt, negative = new_prompt, new_negative
                candidates.remove(style)
                found.append(style.name)
                break
        else:
            return list(reversed(found)), prompt, negative
