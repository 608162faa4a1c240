"""Judge a generated image against its shapes prompt, on pixels, with OpenCV.

Background colour: median of a border ring. Shape: pixels far (in Lab) from that background,
largest connected blob. Shape colour: median inside the eroded blob. Shape class: from solidity
(stars are concave) and how much of the bounding box the blob fills (square > circle > triangle).
Position: the blob's centroid, nearest position anchor.  Colours snap to the nearest palette
entry in Lab space.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.shapes_data import COLORS, POSITIONS, Scene  # noqa: E402

_PALETTE_NAMES = list(COLORS)
_PALETTE_LAB = cv2.cvtColor(np.array([list(COLORS.values())], np.uint8), cv2.COLOR_RGB2LAB)[0].astype(np.float32)


@dataclass
class Verdict:
    background: str | None
    color: str | None
    shape: str | None
    position: str | None
    blob_fraction: float  # share of the image covered by the blob

    def score(self, scene: Scene) -> dict[str, bool]:
        bg, fg, sh = self.background == scene.background, self.color == scene.color, self.shape == scene.shape
        return {"background": bg, "color": fg, "shape": sh, "all_three": bg and fg and sh,
                "position": self.position == scene.position}


def nearest_color(rgb: np.ndarray) -> str:
    lab = cv2.cvtColor(np.asarray(rgb, np.uint8).reshape(1, 1, 3), cv2.COLOR_RGB2LAB)[0, 0].astype(np.float32)
    return _PALETTE_NAMES[int(np.argmin(((_PALETTE_LAB - lab) ** 2).sum(1)))]


def classify_contour(contour: np.ndarray, pixels: int) -> str:
    """``pixels``: the blob's pixel count (contour areas run through pixel centres, which
    under-counts small blobs by half a pixel all round)."""
    area = cv2.contourArea(contour)
    hull = cv2.contourArea(cv2.convexHull(contour))
    x, y, w, h = cv2.boundingRect(contour)
    solidity = area / hull if hull > 0 else 0.0
    extent = pixels / float(w * h) if w * h > 0 else 0.0
    if solidity < 0.8:
        return "star"
    if extent > 0.88:
        return "square"
    if extent > 0.66:
        return "circle"
    return "triangle"


def judge(image: np.ndarray | object) -> Verdict:
    """``image``: RGB uint8 array or PIL image (any size; judged at its own size)."""
    img = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, np.uint8)
    h, w = img.shape[:2]
    ring = max(2, round(min(h, w) * 0.04))
    border = np.concatenate([img[:ring].reshape(-1, 3), img[-ring:].reshape(-1, 3),
                             img[:, :ring].reshape(-1, 3), img[:, -ring:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    background = nearest_color(bg_rgb)

    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    bg_lab = cv2.cvtColor(bg_rgb.astype(np.uint8).reshape(1, 1, 3), cv2.COLOR_RGB2LAB)[0, 0].astype(np.float32)
    mask = (np.sqrt(((lab - bg_lab) ** 2).sum(2)) > 30).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return Verdict(background, None, None, None, 0.0)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = (labels == best).astype(np.uint8)
    fraction = float(blob.sum()) / (h * w)
    if blob.sum() < 0.01 * h * w:
        return Verdict(background, None, None, None, fraction)
    inner = cv2.erode(blob, np.ones((3, 3), np.uint8))
    pixels = img[inner.astype(bool)] if inner.sum() >= 4 else img[blob.astype(bool)]
    color = nearest_color(np.median(pixels, axis=0))
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    shape = classify_contour(max(contours, key=cv2.contourArea), int(blob.sum()))
    cx, cy = centroids[best][0] / w, centroids[best][1] / h
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    return Verdict(background, color, shape, position, fraction)
