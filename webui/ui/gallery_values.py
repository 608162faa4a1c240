"""Small readers for the generation tabs: control values as numbers, the infotext and seed of the
gallery item a user selected, the infotext box's HTML, img2img's "Resize by" size."""
from __future__ import annotations

import html
from typing import Any


def infotext_html(text: str | None, warnings: list[str] | None = None) -> str:
    """The infotext under the gallery; warnings (e.g. networks not found) above it, as A1111's comments."""
    out = "".join(f"<div class='gen-warning'>{html.escape(w)}</div>" for w in warnings or [])
    if text:
        out += "<div class='infotext'>" + html.escape(text).replace("\n", "<br>") + "</div>"
    return out


def as_int(v: Any, default: int) -> int:
    try:
        return int(v) if v is not None and v != "" else default
    except (TypeError, ValueError):
        return default


def as_float(v: Any, default: float) -> float:
    try:
        return float(v) if v is not None and v != "" else default
    except (TypeError, ValueError):
        return default


def seed_for_index(info: dict | None, index: int | None) -> int | None:
    if not info:
        return None
    seeds = info.get("all_seeds") or ([info["seed"]] if "seed" in info else [])
    if not seeds:
        return None
    i = (index or 0) - int(info.get("index_of_first_image", 0))
    i = min(max(i, 0), len(seeds) - 1)
    return int(seeds[i])


def infotext_for_index(info: dict | None, index: int | None) -> str:
    if not info:
        return ""
    shown = info.get("shown_infotexts")  # the gallery's own order, grids first
    if shown:
        return shown[min(max(index or 0, 0), len(shown) - 1)]
    texts = info.get("infotexts") or []
    if not texts:
        return ""
    i = (index or 0) - int(info.get("index_of_first_image", 0))
    return texts[min(max(i, 0), len(texts) - 1)]


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """img2img "Resize by": the input size times the scale, in multiples of 8 (A1111)."""
    w, h = size
    return max(64, int(w * scale / 8 + 0.5) * 8), max(64, int(h * scale / 8 + 0.5) * 8)
