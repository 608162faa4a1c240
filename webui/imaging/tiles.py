"""Split an image into overlapping tiles and join processed tiles back, blending each overlap with
a linear ramp (A1111's images.split_grid / combine_grid, used by SD upscale)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Tile:
    x: int
    y: int
    image: Image.Image


@dataclass
class TileGrid:
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int
    rows: list[list[Tile]] = field(default_factory=list)

    def tiles(self) -> list[Tile]:
        return [t for row in self.rows for t in row]

    def replace(self, images: list[Image.Image]) -> None:
        """Put processed tiles back, in `tiles()` order."""
        for t, im in zip(self.tiles(), images):
            t.image = im if im.size == (self.tile_w, self.tile_h) else im.resize((self.tile_w, self.tile_h))


def _starts(total: int, tile: int, overlap: int) -> list[int]:
    count = max(1, math.ceil((total - overlap) / (tile - overlap))) if total > tile else 1
    step = (total - tile) / (count - 1) if count > 1 else 0
    return [min(int(i * step), total - tile) for i in range(count)]


def split_grid(image: Image.Image, tile_w: int, tile_h: int, overlap: int) -> TileGrid:
    """Tiles of tile_w×tile_h covering the image, spaced evenly with at least ``overlap`` px shared.
    The image must be at least one tile in each direction (see `pad_to`)."""
    if image.width < tile_w or image.height < tile_h:
        raise ValueError(f"image {image.width}x{image.height} is smaller than a tile {tile_w}x{tile_h}")
    overlap = max(0, min(overlap, tile_w - 8, tile_h - 8))
    grid = TileGrid(tile_w, tile_h, image.width, image.height, overlap)
    for y in _starts(image.height, tile_h, overlap):
        grid.rows.append([Tile(x, y, image.crop((x, y, x + tile_w, y + tile_h)))
                          for x in _starts(image.width, tile_w, overlap)])
    return grid


def combine_grid(grid: TileGrid) -> Image.Image:
    """Join the tiles; where two overlap, the later one fades in over ``overlap`` px."""
    out = Image.new("RGB", (grid.image_w, grid.image_h))
    ov = grid.overlap
    ramp = np.arange(ov, dtype=np.float32) * 255 / max(ov, 1)
    mask_w = Image.fromarray(np.repeat(ramp[None, :], grid.tile_h, 0).astype(np.uint8), "L")
    mask_h = Image.fromarray(np.repeat(ramp[:, None], grid.image_w, 1).astype(np.uint8), "L")
    prev_y = None
    for row in grid.rows:
        y = row[0].y
        line = Image.new("RGB", (grid.image_w, grid.tile_h))
        prev_x = None
        for t in row:
            if prev_x is None or ov == 0:
                line.paste(t.image, (t.x, 0))
            else:
                line.paste(t.image.crop((0, 0, ov, grid.tile_h)), (t.x, 0), mask=mask_w)
                line.paste(t.image.crop((ov, 0, grid.tile_w, grid.tile_h)), (t.x + ov, 0))
            prev_x = t.x
        if prev_y is None or ov == 0:
            out.paste(line, (0, y))
        else:
            out.paste(line.crop((0, 0, grid.image_w, ov)), (0, y), mask=mask_h)
            out.paste(line.crop((0, ov, grid.image_w, grid.tile_h)), (0, y + ov))
        prev_y = y
    return out


def pad_to(image: Image.Image, w: int, h: int) -> Image.Image:
    """Grow the canvas to at least w×h by repeating the edge pixels (cropped off again afterwards)."""
    if image.width >= w and image.height >= h:
        return image
    arr = np.asarray(image.convert("RGB"))
    arr = np.pad(arr, ((0, max(0, h - arr.shape[0])), (0, max(0, w - arr.shape[1])), (0, 0)), mode="edge")
    return Image.fromarray(arr)
