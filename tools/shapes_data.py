"""The synthetic "coloured shapes" world of the built-in demo model: drawing, captions, held-out split.

Shared by the training script (tools/train_default_model.py), the quality checker
(bench/shape_judge.py, bench/bench_default_model.py) and the tests, so that all of them agree on
what "a red star at the left on a blue background" looks like.  Everything is drawn here with
OpenCV; nothing is downloaded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import product

import cv2
import numpy as np

IMAGE_SIZE = 64
# Saturated, well separated colours (RGB); names are the caption words.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 10),
    "yellow": (245, 220, 30),
    "green": (30, 160, 50),
    "blue": (20, 90, 230),
    "purple": (150, 30, 150),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "star")
# Anchor of each position word, as a fraction of the image side (x, y).
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
}
# Words users may type for a position (both spellings of centre work).
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "center": ("center", "centre", "middle"),
    "left": ("left",), "right": ("right",), "top": ("top",), "bottom": ("bottom",),
}
HELD_OUT_SEED = 20261123
HELD_OUT_COUNT = 28  # of the 8*4*7 = 224 (colour, shape, background) triplets: 12.5 %


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    background: str
    position: str
    dx: float = 0.0  # jitter in pixels (at IMAGE_SIZE)
    dy: float = 0.0
    radius: float = 10.0

    @property
    def triplet(self) -> tuple[str, str, str]:
        return self.color, self.shape, self.background


def all_triplets() -> list[tuple[str, str, str]]:
    return [(c, s, b) for c, s, b in product(COLORS, SHAPES, COLORS) if c != b]


def held_out_triplets() -> frozenset[tuple[str, str, str]]:
    """Combinations never drawn in training (fixed, so every run and checker agrees)."""
    rng = random.Random(HELD_OUT_SEED)
    return frozenset(rng.sample(all_triplets(), HELD_OUT_COUNT))


def seen_triplets() -> list[tuple[str, str, str]]:
    held = held_out_triplets()
    return [t for t in all_triplets() if t not in held]


def random_scene(rng: random.Random, triplets: list[tuple[str, str, str]]) -> Scene:
    c, s, b = rng.choice(triplets)
    return Scene(c, s, b, rng.choice(list(POSITIONS)), dx=rng.uniform(-2.5, 2.5), dy=rng.uniform(-2.5, 2.5),
                 radius=rng.uniform(8.5, 11.5))


def _shape_points(shape: str, cx: float, cy: float, r: float) -> np.ndarray | None:
    if shape == "triangle":  # upright, base 2.1r, height 1.9r, centred on its box
        h = 1.9 * r
        return np.array([[cx, cy - h / 2], [cx - 1.05 * r, cy + h / 2], [cx + 1.05 * r, cy + h / 2]])
    if shape == "star":  # five points, one up
        outer, inner = 1.2 * r, 0.48 * r
        pts = []
        for i in range(10):
            ang = -np.pi / 2 + i * np.pi / 5
            rad = outer if i % 2 == 0 else inner
            pts.append([cx + rad * np.cos(ang), cy + rad * np.sin(ang)])
        return np.array(pts)
    return None


def render(scene: Scene, size: int = IMAGE_SIZE, supersample: int = 4) -> np.ndarray:
    """RGB uint8 image [size, size, 3]; drawn at ``supersample``x and area-downscaled (anti-aliased)."""
    big = size * supersample
    k = big / IMAGE_SIZE
    img = np.empty((big, big, 3), np.uint8)
    img[:] = COLORS[scene.background]
    ax, ay = POSITIONS[scene.position]
    cx, cy = (ax * IMAGE_SIZE + scene.dx) * k, (ay * IMAGE_SIZE + scene.dy) * k
    r = scene.radius * k
    color = tuple(int(v) for v in COLORS[scene.color])
    if scene.shape == "circle":
        cv2.circle(img, (round(cx), round(cy)), round(r), color, -1, cv2.LINE_AA)
    elif scene.shape == "square":
        h = 0.9 * r
        cv2.rectangle(img, (round(cx - h), round(cy - h)), (round(cx + h), round(cy + h)), color, -1)
    else:
        pts = _shape_points(scene.shape, cx, cy, r)
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], color, cv2.LINE_AA)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def caption(scene: Scene, rng: random.Random | None = None, *, with_position: bool = True,
            with_background: bool = True, position_word: str | None = None) -> str:
    """``a red circle at the left on a blue background`` (parts optional)."""
    text = f"a {scene.color} {scene.shape}"
    if with_position:
        words = POSITION_WORDS[scene.position]
        word = position_word or (rng.choice(words) if rng else words[0])
        text += f" at the {word}"
    if with_background:
        text += f" on a {scene.background} background"
    return text


def training_caption(scene: Scene, rng: random.Random) -> str:
    """The caption mix used in training: full captions mostly, shorter ones so short prompts work."""
    u = rng.random()
    if u < 0.6:
        return caption(scene, rng)
    if u < 0.75:
        return caption(scene, rng, with_position=False)
    if u < 0.9:
        return caption(scene, rng, with_background=False)
    return caption(scene, rng, with_position=False, with_background=False)


def edge_map(image: np.ndarray) -> np.ndarray:
    """Canny edges (white on black, RGB uint8) as A1111's ControlNet canny preprocessor gives them.

    Edges are taken per colour channel and merged, so shapes whose colour differs from the
    background only in hue (red on green) still get an outline."""
    edges = np.zeros(image.shape[:2], np.uint8)
    for ch in range(3):
        edges |= cv2.Canny(np.ascontiguousarray(image[:, :, ch]), 100, 200)
    return np.repeat(edges[:, :, None], 3, axis=2)


def evaluation_scenes(n: int, held_out: bool, seed: int = 7) -> list[Scene]:
    """``n`` prompt scenes (no jitter) covering shapes, colours and positions evenly."""
    rng = random.Random(seed + (1 if held_out else 0))
    pool = sorted(held_out_triplets()) if held_out else seen_triplets()
    rng.shuffle(pool)
    positions = list(POSITIONS)
    return [Scene(*pool[i % len(pool)], position=positions[i % len(positions)]) for i in range(n)]
