"""A1111's `modules.prompt_parser`: our parser of A1111's prompt syntax under A1111's names.

`get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None,
use_old_scheduling=False)` (prompt editing and alternation), `get_multicond_prompt_list(prompts)`
(AND), `parse_prompt_attention(text)` ((emphasis:1.2), [less]). The functions that encode with an
LDM model (`get_learned_conditioning`, `get_multicond_learned_conditioning`) are not offered:
conditioning is built by the pipeline.
"""
from __future__ import annotations

from webui.prompts.attention import parse_prompt_attention  # noqa: F401
from webui.prompts.scheduling import get_learned_conditioning_prompt_schedules, get_multicond_prompt_list  # noqa: F401

__all__ = [
    "get_learned_conditioning_prompt_schedules", "get_multicond_prompt_list", "parse_prompt_attention"
]
