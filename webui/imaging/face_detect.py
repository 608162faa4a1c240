"""Upright frontal faces found without downloaded weights: OpenCV 4's frontal-face Haar cascade
(``haarcascade_frontalface_default.xml``, bundled gzipped beside this module with its Intel licence,
because OpenCV 5 no longer ships the cascades nor ``CascadeClassifier``), evaluated in numpy exactly as
OpenCV 4's ``detectMultiScale`` does (scale factor 1.1, 3 neighbours). Used by face restoration."""
from __future__ import annotations

import gzip
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]     # x, y, width, height in pixels
DETECT_MAX_SIDE = 1024              # larger pictures are searched at this size (A1111's RetinaFace: 640)
CASCADE_FILE = Path(__file__).with_name("haarcascade_frontalface_default.xml.gz")


# ---------------------------------------------------------------- Haar cascade (OpenCV 4's detector, in numpy)

def _children(el: ET.Element, tag: str) -> list[ET.Element]:
    found = el.find(tag)
    return list(found) if found is not None else []


class HaarCascade:
    """A stump-based Haar cascade in OpenCV's XML format, evaluated as OpenCV 4's CascadeClassifier
    does: an image pyramid (INTER_LINEAR_EXACT, factor ``scale_factor``), windows every 2 pixels
    below scale 2 and every pixel above, variance-normalised features over the inner window, windows
    with a standard deviation of 10 or less skipped, and the window after one rejected by the first
    stage skipped. ``detect`` then groups the raw windows as ``cv::groupRectangles`` does."""

    def __init__(self, path: Path = CASCADE_FILE) -> None:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            root = ET.fromstring(f.read())
        c = root.find("cascade")
        if c is None or c.findtext("featureType") != "HAAR" or c.findtext("stageType") != "BOOST":
            raise ValueError(f"{path}: not a boosted Haar cascade in OpenCV's format")
        self.win_w, self.win_h = int(c.findtext("width") or 0), int(c.findtext("height") or 0)
        feats = []
        for fe in _children(c, "features"):
            rects = [[float(v) for v in (r.text or "").split()] for r in _children(fe, "rects")]
            if fe.findtext("tilted", "0").strip() not in ("", "0"):
                raise ValueError(f"{path}: tilted Haar features are not supported")
            feats.append(rects + [[0, 0, 0, 0, 0.0]] * (3 - len(rects)))
        self.rects = np.array(feats, dtype=np.float64)                      # (features, 3, x y w h weight)
        self.stages: list[tuple[int, int, float]] = []                      # (first, end, threshold)
        wf: list[int] = []
        wt: list[float] = []
        wl: list[float] = []
        wr: list[float] = []
        for st in _children(c, "stages"):
            first = len(wf)
            for wc in _children(st, "weakClassifiers"):
                nodes = (wc.findtext("internalNodes") or "").split()
                leaves = (wc.findtext("leafValues") or "").split()
                if len(nodes) != 4 or len(leaves) != 2:
                    raise ValueError(f"{path}: only stump cascades are supported")
                wf.append(int(nodes[2]))
                wt.append(float(nodes[3]))
                wl.append(float(leaves[0]))
                wr.append(float(leaves[1]))
            # OpenCV subtracts THRESHOLD_EPS = 1e-5 from every stage threshold
            self.stages.append((first, len(wf), float(st.findtext("stageThreshold") or 0) - 1e-5))
        self.weak_feature = np.array(wf, dtype=np.int64)
        self.weak_threshold = np.array(wt, dtype=np.float32).astype(np.float64)
        self.weak_left = np.array(wl, dtype=np.float64)
        self.weak_right = np.array(wr, dtype=np.float64)

    def _windows(self, gray: np.ndarray, step: int) -> list[tuple[int, int]]:
        """Top-left corners of the windows of one pyramid level that pass every stage."""
        h, w = gray.shape
        if h < self.win_h or w < self.win_w:
            return []
        stride = w + 1
        s, sq = cv2.integral2(gray, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
        s, sq = s.ravel(), sq.ravel()
        r = self.rects
        rx, ry, rw, rh = (r[..., i].astype(np.int64) for i in range(4))
        offs = np.stack([ry * stride + rx, ry * stride + rx + rw, (ry + rh) * stride + rx,
                         (ry + rh) * stride + rx + rw], -1)                 # (features, 3, 4)
        ys = np.arange(0, h - self.win_h + 1, step)
        xs = np.arange(0, w - self.win_w + 1, step)
        base = (ys[:, None] * stride + xs[None, :]).ravel()
        # normalisation over the inner window (1, 1, w - 2, h - 2), as HaarEvaluator::setWindow
        a, b = stride + 1, stride + self.win_w - 1
        c, d = (self.win_h - 1) * stride + 1, (self.win_h - 1) * stride + self.win_w - 1
        area = (self.win_w - 2) * (self.win_h - 2)
        vs = s[base + d] - s[base + b] - s[base + c] + s[base + a]
        vq = sq[base + d] - sq[base + b] - sq[base + c] + sq[base + a]
        nf = area * vq - vs * vs
        inv = 1.0 / np.where(nf > 0, np.sqrt(np.maximum(nf, 0.0)), 1.0)
        valid = (nf > 0) & (area * inv < 0.1)
        idx = np.arange(base.size)
        for si, (k_first, k_end, threshold) in enumerate(self.stages):
            if idx.size == 0:
                break
            bi, n = base[idx], idx.size
            total = np.zeros(n)
            chunk = max(1, 2_000_000 // (12 * n))
            for k0 in range(k_first, k_end, chunk):
                k1 = min(k_end, k0 + chunk)
                fi = self.weak_feature[k0:k1]
                v = s[bi[None, None, None, :] + offs[fi][..., None]]          # (k, 3, 4, n)
                sums = v[:, :, 0] - v[:, :, 1] - v[:, :, 2] + v[:, :, 3]
                val = np.einsum("kr,krn->kn", r[fi, :, 4], sums) * inv[idx][None, :]
                total += np.where(val < self.weak_threshold[k0:k1, None], self.weak_left[k0:k1, None],
                                  self.weak_right[k0:k1, None]).sum(0)
            ok = total >= threshold
            if si == 0:
                fail = (~ok & valid).reshape(len(ys), len(xs))
                visited = np.ones_like(fail)
                for j in range(1, len(xs)):   # after a first-stage rejection OpenCV skips one window
                    visited[:, j] = ~(visited[:, j - 1] & fail[:, j - 1])
                ok &= visited.ravel() & valid
            idx = idx[ok]
        yy, xx = np.divmod(base[idx], stride)
        return list(zip(xx.tolist(), yy.tolist()))

    def detect_raw(self, gray: np.ndarray, scale_factor: float = 1.1, min_size: tuple[int, int] = (0, 0),
                   max_size: tuple[int, int] | None = None) -> list[Box]:
        """Every window that passes the cascade, in image coordinates (minNeighbors = 0)."""
        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        h0, w0 = gray.shape
        max_size = max_size or (w0, h0)
        found: list[Box] = []
        factor = 1.0
        while True:
            ww, wh = int(round(self.win_w * factor)), int(round(self.win_h * factor))
            if ww > w0 or wh > h0 or ww > max_size[0] or wh > max_size[1]:
                break
            if ww >= min_size[0] and wh >= min_size[1]:
                size = (int(round(w0 / factor)), int(round(h0 / factor)))
                level = gray if factor == 1.0 else cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR_EXACT)
                for x, y in self._windows(level, 1 if factor >= 2 else 2):
                    found.append((int(round(x * factor)), int(round(y * factor)), ww, wh))
            factor *= scale_factor
        return found

    def detect(self, gray: np.ndarray, scale_factor: float = 1.1, min_neighbors: int = 3,
               min_size: tuple[int, int] = (0, 0), max_size: tuple[int, int] | None = None) -> list[Box]:
        return group_rectangles(self.detect_raw(gray, scale_factor, min_size, max_size), min_neighbors)


def group_rectangles(rects: Sequence[Box], threshold: int, eps: float = 0.2) -> list[Box]:
    """cv::groupRectangles: cluster similar boxes, average each cluster, keep clusters of more than
    ``threshold`` boxes, drop those lying inside a stronger one."""
    if threshold <= 0 or not rects:
        return [tuple(r) for r in rects]  # type: ignore[misc]
    n = len(rects)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        r1 = rects[i]
        for j in range(i + 1, n):
            r2 = rects[j]
            delta = eps * (min(r1[2], r2[2]) + min(r1[3], r2[3])) * 0.5
            if (abs(r1[0] - r2[0]) <= delta and abs(r1[1] - r2[1]) <= delta
                    and abs(r1[0] + r1[2] - r2[0] - r2[2]) <= delta and abs(r1[1] + r1[3] - r2[1] - r2[3]) <= delta):
                parent[root(i)] = root(j)
    clusters: dict[int, list[Sequence[int]]] = {}
    for i in range(n):
        clusters.setdefault(root(i), []).append(rects[i])
    avg = [(tuple(int(round(sum(r[t] for r in g) / len(g))) for t in range(4)), len(g)) for g in clusters.values()]
    out: list[Box] = []
    for i, (r1, n1) in enumerate(avg):
        if n1 <= threshold:
            continue
        inside = False
        for j, (r2, n2) in enumerate(avg):
            if j == i or n2 <= threshold:
                continue
            dx, dy = int(round(r2[2] * eps)), int(round(r2[3] * eps))
            if (r1[0] >= r2[0] - dx and r1[1] >= r2[1] - dy and r1[0] + r1[2] <= r2[0] + r2[2] + dx
                    and r1[1] + r1[3] <= r2[1] + r2[3] + dy and (n2 > max(3, n1) or n1 < 3)):
                inside = True
                break
        if not inside:
            out.append(r1)  # type: ignore[arg-type]
    return out


_cascade: HaarCascade | None = None
_cascade_lock = threading.Lock()


def face_cascade() -> HaarCascade:
    global _cascade
    with _cascade_lock:
        if _cascade is None:
            _cascade = HaarCascade(CASCADE_FILE)
        return _cascade


def detect_faces(img: Image.Image | np.ndarray, *, max_side: int = DETECT_MAX_SIDE,
                 min_neighbors: int = 3) -> list[Box]:
    """Boxes (x, y, w, h) of the upright frontal faces in a picture (PIL or RGB uint8 array), largest
    first. Pictures larger than ``max_side`` are searched at that size."""
    arr = np.asarray(img.convert("RGB")) if isinstance(img, Image.Image) else np.asarray(img)
    gray = cv2.cvtColor(np.ascontiguousarray(arr[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY) \
        if arr.ndim == 3 else arr.astype(np.uint8)
    h, w = gray.shape
    k = min(1.0, max_side / max(h, w))
    if k < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    boxes = face_cascade().detect(gray, 1.1, min_neighbors)
    if k < 1.0:
        boxes = [(int(round(x / k)), int(round(y / k)), int(round(bw / k)), int(round(bh / k)))
                 for x, y, bw, bh in boxes]
    return sorted(boxes, key=lambda b: -b[2] * b[3])
