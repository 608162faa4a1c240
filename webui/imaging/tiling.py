"""Run an image model over overlapping tiles so a large picture fits in memory.

Tiles of `tile` input pixels overlap by `overlap` pixels. Near a tile's inner edges the model saw
zero padding instead of the neighbouring pixels, so each tile's output is weighted by a feather:
weight 0 in the outer 3/8 of the overlap, a linear ramp across its middle quarter, 1 inside (edges on
the image border keep weight 1: there the untiled run sees the same padding). With a model whose
receptive field reaches at most 3/8 of the overlap (3 px at A1111's default of 8), the tiled result
therefore equals the untiled one; with larger fields the ramp hides the seams.

Memory: only one row of tiles is held as floats; finished output rows go straight into a uint8
array, so the peak is about the 8-bit output plus two tile rows.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

Model = Callable[[torch.Tensor], torch.Tensor]  # (1, C, h, w) in 0..1 → (1, C, h*s, w*s)
OnTile = Callable[[int, int], None]             # (tiles done, tiles in all); may raise to stop


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis; the last tile ends at the image edge (A1111's tiled_upscale_2)."""
    if tile >= length:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    if not starts or starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def feather(size_out: int, scale: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """Per-pixel weights along one axis of a tile's output (see the module docstring)."""
    w = torch.ones(size_out, dtype=torch.float32)
    if overlap <= 0:
        return w
    margin, ramp = overlap * 3 / 8, overlap / 4
    # distance of each output pixel's centre from the tile edge, in input pixels
    d = (torch.arange(size_out, dtype=torch.float32) + 0.5) / scale
    if ramp_start:
        w = torch.minimum(w, ((d - margin) / ramp).clamp(0.0, 1.0))
    if ramp_end:
        w = torch.minimum(w, ((size_out / scale - d - margin) / ramp).clamp(0.0, 1.0))
    return w


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) floats in 0..1 → (H, W, C) uint8, rounded as A1111's torch_bgr_to_pil_image."""
    return x.float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu()


def _run(model: Model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)[0].float().cpu()


def upscale_tiled(model: Model, image: torch.Tensor, *, tile: int, overlap: int, multiple_of: int = 1,
                  on_tile: OnTile | None = None) -> np.ndarray:
    """(C, H, W) float image in 0..1 → (H*s, W*s, C) uint8 array; `tile` <= 0 runs it in one piece.

    `multiple_of`: tiles are kept a multiple of this (window-attention models need it).
    """
    c, h, w = image.shape
    if tile <= 0 or (tile >= h and tile >= w):
        out = to_uint8(_run(model, image.unsqueeze(0)))
        if on_tile:
            on_tile(1, 1)
        return out.numpy()
    if multiple_of > 1:
        tile = max(multiple_of, tile // multiple_of * multiple_of)
    overlap = max(0, min(overlap, tile // 2))
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    total, done = len(ys) * len(xs), 0
    result: np.ndarray | None = None
    scale = 0
    # rows [acc_top, acc_top + acc.shape[1]) of the output, blended so far
    acc: torch.Tensor | None = None
    acc_w: torch.Tensor | None = None
    acc_top = 0
    col_w: torch.Tensor | None = None  # sum of the horizontal weights per output column
    for yi, y0 in enumerate(ys):
        row: torch.Tensor | None = None
        for xi, x0 in enumerate(xs):
            out = _run(model, image[:, y0:y0 + th, x0:x0 + tw].unsqueeze(0))
            if result is None:
                scale = out.shape[-1] // tw
                if scale < 1 or out.shape[-2] != th * scale or out.shape[-1] != tw * scale:
                    raise RuntimeError(f"the model turned a {tw}x{th} tile into {out.shape[-1]}x{out.shape[-2]}: "
                                       "not a whole-number upscale")
                result = np.empty((h * scale, w * scale, out.shape[0]), dtype=np.uint8)
                col_w = torch.zeros(w * scale)
                for x in xs:
                    col_w[x * scale:(x + tw) * scale] += feather(tw * scale, scale, overlap, x > 0, x + tw < w)
            if row is None:
                row = torch.zeros(out.shape[0], th * scale, w * scale)
            wx = feather(tw * scale, scale, overlap, x0 > 0, x0 + tw < w)
            row[:, :, x0 * scale:(x0 + tw) * scale] += out * wx
            done += 1
            if on_tile:
                on_tile(done, total)
        assert row is not None and col_w is not None and result is not None
        row /= col_w.clamp_min(1e-12)
        wy = feather(th * scale, scale, overlap, y0 > 0, y0 + th < h)
        top, bottom = y0 * scale, (y0 + th) * scale
        if acc is None:
            acc, acc_w, acc_top = torch.zeros_like(row), torch.zeros(th * scale), top
        else:  # rows above this tile row are final: write them out, keep the overlapping part
            assert acc_w is not None
            final = top - acc_top
            result[acc_top:top] = to_uint8(acc[:, :final] / acc_w[:final, None].clamp_min(1e-12)).numpy()
            keep = acc.shape[1] - final
            new_acc = torch.zeros_like(row)
            new_w = torch.zeros(th * scale)
            new_acc[:, :keep], new_w[:keep] = acc[:, final:], acc_w[final:]
            acc, acc_w, acc_top = new_acc, new_w, top
        acc += row * wy[:, None]
        acc_w += wy
        if yi == len(ys) - 1:
            result[acc_top:bottom] = to_uint8(acc / acc_w[:, None].clamp_min(1e-12)).numpy()
    assert result is not None
    return result
