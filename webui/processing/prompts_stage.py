"""Stage 1: the per-image lists (A1111's setup_prompts and seeds), filled once before the first batch,
and each batch's slice of them with its extra-network tags taken out.

Every later stage reads the lists from `p`, so a script that changes `p.all_prompts` in `process`
changes what is drawn and what is written.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from webui.prompts.extra_networks import parse_prompts

if TYPE_CHECKING:
    from webui.processing.context import Processing
    from webui.prompts.styles import StyleDatabase


def random_seed() -> int:
    return int(random.randrange(4294967294))


def fixed_seed(seed: Any) -> Any:
    """-1 / None → a random seed (A1111's get_fixed_seed); lists are kept as given."""
    if isinstance(seed, list):
        return [fixed_seed(s) for s in seed]
    if seed in (-1, None, ""):
        return random_seed()
    return int(seed)


def _per_image(value: str | list[str], n: int) -> list[str]:
    return list(value) if isinstance(value, list) else [value] * n


def setup_prompts(p: "Processing", styles: "StyleDatabase | None") -> None:
    """all_prompts / all_negative_prompts / all_hr_* with the selected styles applied (A1111 applies
    them here, so the infotext holds the styled prompt and pasting it back needs no style)."""
    n = p.batch_size * p.n_iter
    prompts = _per_image(p.prompt, n)
    negatives = _per_image(p.negative_prompt, len(prompts))
    if p.styles and styles is not None:
        styles.reload()  # styles.csv edited by hand since the last job counts (it is a small file)
        prompts = [styles.apply_styles_to_prompt(x, p.styles) for x in prompts]
        negatives = [styles.apply_negative_styles_to_prompt(x, p.styles) for x in negatives]
        missing = [s for s in p.styles if s not in styles.styles]
        if missing:
            p.warn(f"Styles not found: {', '.join(missing)}")
    elif p.styles:
        p.warn(f"Styles not found: {', '.join(p.styles)}")
    p.all_prompts, p.all_negative_prompts = prompts, negatives
    hr = p.hr_prompt or None
    hr_neg = p.hr_negative_prompt or None
    if hr and p.styles and styles is not None:
        hr = styles.apply_styles_to_prompt(hr, p.styles) if isinstance(hr, str) else hr
    if hr_neg and p.styles and styles is not None:
        hr_neg = styles.apply_negative_styles_to_prompt(hr_neg, p.styles) if isinstance(hr_neg, str) else hr_neg
    p.all_hr_prompts = _per_image(hr, len(prompts)) if hr else list(prompts)
    p.all_hr_negative_prompts = _per_image(hr_neg, len(prompts)) if hr_neg else list(negatives)


def setup_seeds(p: "Processing") -> None:
    """all_seeds / all_subseeds as A1111: consecutive seeds unless a variation strength is set."""
    n = len(p.all_prompts)
    seed, subseed = fixed_seed(p.seed), fixed_seed(p.subseed)
    p.all_seeds = seed if isinstance(seed, list) else [seed + (i if p.subseed_strength == 0 else 0) for i in range(n)]
    p.all_subseeds = subseed if isinstance(subseed, list) else [subseed + i for i in range(n)]


def batch_slice(p: "Processing", n: int) -> slice:
    return slice(n * p.batch_size, (n + 1) * p.batch_size)


def set_batch(p: "Processing", n: int) -> None:
    """p.prompts / p.seeds / ... for batch ``n`` (A1111's names)."""
    idx = batch_slice(p, n)
    p.iteration = n
    p.prompts = p.all_prompts[idx]
    p.negative_prompts = p.all_negative_prompts[idx]
    p.hr_prompts = p.all_hr_prompts[idx]
    p.hr_negative_prompts = p.all_hr_negative_prompts[idx]
    p.seeds = p.all_seeds[idx]
    p.subseeds = p.all_subseeds[idx]


def parse_extra_networks(p: "Processing") -> tuple[list[str], list[str]]:
    """The batch's prompts with `<lora:name:0.8>`-style tags taken out (what the text encoder sees),
    and `p.extra_network_data` set to the tags of every prompt of the batch (hires prompts too)."""
    cleaned, nets = parse_prompts(p.prompts)  # A1111: the first prompt's tags count for the batch
    hr_cleaned, hr_nets = parse_prompts(p.hr_prompts)
    merged = dict(nets)
    for k, v in hr_nets.items():
        if k not in merged:
            merged[k] = v
    p.extra_network_data = merged
    return cleaned, hr_cleaned
