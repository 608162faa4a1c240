"""A1111's img2img colour correction (option `img2img_color_correction`): the result's colours are
matched to the input picture's, its lightness kept.

How: the result's LAB channels get the input's histograms (cumulative-distribution matching, as
skimage's match_histograms), and the generated picture's luminosity is put back on that (the W3C
"luminosity" blend mode that A1111 uses through the blendmodes package).
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def correction_target(image: Image.Image) -> np.ndarray:
    """What a result is corrected towards: the input picture in LAB."""
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB)


def _match_channel(src: np.ndarray, template: np.ndarray) -> np.ndarray:
    s_vals, s_idx, s_counts = np.unique(src.ravel(), return_inverse=True, return_counts=True)
    t_vals, t_counts = np.unique(template.ravel(), return_counts=True)
    s_q = np.cumsum(s_counts) / src.size
    t_q = np.cumsum(t_counts) / template.size
    return np.interp(s_q, t_q, t_vals)[s_idx].reshape(src.shape)


def _lum(c: np.ndarray) -> np.ndarray:
    return c[..., 0:1] * 0.3 + c[..., 1:2] * 0.59 + c[..., 2:3] * 0.11


def _clip_color(c: np.ndarray) -> np.ndarray:
    lum = _lum(c)
    lo = c.min(axis=-1, keepdims=True)
    hi = c.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(lo < 0, lum + (c - lum) * lum / np.maximum(lum - lo, 1e-12), c)
        c = np.where(hi > 1, lum + (c - lum) * (1 - lum) / np.maximum(hi - lum, 1e-12), c)
    return c


def luminosity_blend(base: np.ndarray, top: np.ndarray) -> np.ndarray:
    """W3C luminosity: base's hue and saturation with top's luminosity (floats in 0..1, [..., 3])."""
    return _clip_color(base + (_lum(top) - _lum(base)))


def apply_color_correction(target: np.ndarray, image: Image.Image) -> Image.Image:
    rgb = image.convert("RGB")
    lab = cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2LAB)
    matched = np.stack([_match_channel(lab[..., i], target[..., i]) for i in range(3)], axis=-1)
    matched = np.clip(np.rint(matched), 0, 255).astype(np.uint8)
    corrected = cv2.cvtColor(matched, cv2.COLOR_LAB2RGB).astype(np.float64) / 255.0
    out = luminosity_blend(corrected, np.asarray(rgb, np.float64) / 255.0)
    result = Image.fromarray(np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8))
    return result.convert(image.mode) if image.mode != "RGB" else result
