"""Saving generated images A1111-style: `outputs/<kind>/<date>/00012-<seed>.png`.

Numbering = 1 + the highest leading integer among the folder's files (first
file is 00000). Writes are atomic and safe against concurrent savers: the image
is encoded into a hidden temp file, then published under the final name with
an exclusive operation (hard link, or O_EXCL placeholder + os.replace), while a
per-folder lock (threads + flock on the directory for processes) serialises
the short "pick number, publish" step.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image, PngImagePlugin

from webui.filename_patterns import file_stem
from webui.infotext import make_exif
from webui.fsutil import normal_mode

try:  # POSIX only; Windows falls back to the in-process lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "gif": "GIF"}
JPEG_QUALITY = 80  # A1111 default `jpeg_quality`


_dir_locks: dict[str, threading.Lock] = {}
_dir_locks_guard = threading.Lock()


def dated_dir(root: Path, kind: str, date: _dt.date | None = None) -> Path:
    """`root/kind/YYYY-MM-DD` (A1111 `[date]` directory pattern), created."""
    d = Path(root) / kind / (date or _dt.date.today()).strftime("%Y-%m-%d")
    d.mkdir(parents=True, exist_ok=True)
    return d


def next_sequence_number(directory: Path, basename: str = "") -> int:
    """1 + highest leading integer of files (after `basename-`), 0 when none."""
    prefix = f"{basename}-" if basename else ""
    result = -1
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.startswith(prefix):
            continue
        first = os.path.splitext(name[len(prefix):])[0].split("-")[0]
        if first.isascii() and first.isdigit():
            result = max(result, int(first))
    return result + 1


@contextmanager
def _folder_lock(directory: Path) -> Iterator[None]:
    key = str(directory.resolve())
    with _dir_locks_guard:
        lock = _dir_locks.setdefault(key, threading.Lock())
    with lock:
        fd = None
        if fcntl is not None:
            try:
                fd = os.open(key, os.O_RDONLY)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # e.g. filesystems without flock: thread lock still holds
                if fd is not None:
                    os.close(fd)
                fd = None
        try:
            yield
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def _publish(tmp: Path, final: Path) -> bool:
    """Make `tmp` visible as `final` only if `final` does not exist yet."""
    try:
        os.link(tmp, final)  # atomic and exclusive: readers never see a partial file
        return True
    except FileExistsError:
        return False
    except OSError:
        pass  # no hard links here (FAT, some network shares)
    try:
        os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    os.replace(tmp, final)
    return True


def _encode(image: Image.Image, path: Path, pil_format: str, infotext: str | None,
            extra_pnginfo: dict[str, str] | None, quality: int = JPEG_QUALITY, lossless: bool = False) -> None:
    if pil_format == "PNG":
        info = PngImagePlugin.PngInfo()
        for k, v in (extra_pnginfo or {}).items():
            info.add_text(k, v)  # PIL picks tEXt, or iTXt when not latin-1
        if infotext is not None:
            info.add_text("parameters", infotext)
        image.save(path, format="PNG", pnginfo=info)
        return
    kwargs: dict[str, object] = {}
    if infotext is not None and pil_format in ("JPEG", "WEBP", "AVIF"):
        kwargs["exif"] = make_exif(infotext)
    if pil_format in ("WEBP", "AVIF"):
        kwargs["quality"] = quality  # A1111's jpeg_quality also sets these (lossy) encoders
    if pil_format == "WEBP" and lossless:
        kwargs["lossless"] = True  # A1111's webp_lossless
    if pil_format == "JPEG":
        kwargs["quality"] = quality
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")  # JPEG has no alpha
    elif pil_format == "GIF" and infotext is not None:
        kwargs["comment"] = infotext
    image.save(path, format=pil_format, **kwargs)


def save_image(image: Image.Image, directory: Path, *, seed: int | None, infotext: str | None,
               basename: str = "", grid: bool = False, fmt: str = "png",
               extra_pnginfo: dict[str, str] | None = None, suffix: str = "", quality: int = JPEG_QUALITY,
               decoration: str | None = None, add_number: bool = True, replace: bool = False,
               lossless: bool = False) -> Path:
    """Save like A1111: `00012-<seed>.png`, `grid-0003.png`, `<basename>-0004-<seed>.png`.

    `decoration` is the filled file-name pattern (webui.filename_patterns; None: the seed, or nothing
    for grids); `suffix` is appended to it (e.g. "-before-highres-fix"). Without `add_number`
    (A1111's `save_images_add_number` off) the name is the decoration alone, and an existing file
    of that name is replaced when `replace` is set (A1111's "Replace"), else `-1`, `-2`, ... are
    added. `lossless` saves WEBP losslessly (`webp_lossless`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ext = fmt.lower().lstrip(".")
    pil_format = FORMATS.get(ext)
    if pil_format is None:
        raise ValueError(f"unsupported image format: {fmt!r}")
    if grid and not basename:
        basename = "grid"
    if decoration is None:
        decoration = "" if grid or seed is None else str(seed)
    room = _max_stem_bytes(directory, ext) - 12 - len(suffix.encode("utf-8"))  # 12: number and "-N"
    decoration = file_stem(decoration, room)
    suffix = file_stem(suffix, 64)
    if not decoration and not suffix:
        add_number = True  # A1111: a name needs at least its number
    if not add_number:
        return _write_new(image, directory, ext, pil_format, infotext, extra_pnginfo,
                          _suffixed_names(directory, decoration + suffix, ext), quality, replace=replace,
                          lossless=lossless)
    tail = (f"-{decoration}" if decoration else "") + suffix

    def names() -> Iterator[Path]:
        n = next_sequence_number(directory, basename)
        for _ in range(10000):
            stem = f"{n:05}" if not basename else f"{basename}-{n:04}"
            yield directory / f"{stem}{tail}.{ext}"
            n += 1

    return _write_new(image, directory, ext, pil_format, infotext, extra_pnginfo, names, quality, lossless=lossless)


def _max_stem_bytes(directory: Path, ext: str) -> int:
    """The longest file name the folder's file system takes, less the extension."""
    try:
        limit = os.statvfs(directory).f_namemax
    except (AttributeError, OSError):  # Windows has no statvfs; NTFS takes 255 characters
        limit = 255
    return max(16, min(limit, 255) - len(ext) - 1)


def _suffixed_names(directory: Path, stem: str, ext: str) -> Callable[[], Iterator[Path]]:
    """`<stem>.<ext>`, then A1111's "Add number suffix" names `<stem>-1.<ext>`, `<stem>-2.<ext>`, ..."""
    def names() -> Iterator[Path]:
        for i in range(10000):
            yield directory / (f"{stem}.{ext}" if i == 0 else f"{stem}-{i}.{ext}")
    return names


def _write_new(image: Image.Image, directory: Path, ext: str, pil_format: str, infotext: str | None,
               extra_pnginfo: dict[str, str] | None, names: Callable[[], Iterator[Path]],
               quality: int = JPEG_QUALITY, *, replace: bool = False, lossless: bool = False) -> Path:
    """Encode to a temporary file (the slow part, outside the lock), then publish it under the first
    free name ``names()`` offers while holding the folder lock; an existing file is never replaced,
    except the first name when `replace` is set (A1111's "Replace" for names without a number)."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=f".{ext}")
    os.close(fd)
    tmp = Path(tmp_name)
    normal_mode(tmp)  # mkstemp's 0600 would hide images from other users
    try:
        _encode(image, tmp, pil_format, infotext, extra_pnginfo, quality, lossless)
        with _folder_lock(directory):
            for final in names():
                if replace and not final.is_dir():
                    os.replace(tmp, final)  # atomic: readers see the old picture or the new one
                    return final
                if _publish(tmp, final):
                    return final
        raise FileExistsError(f"no free file name in {directory}")
    finally:
        tmp.unlink(missing_ok=True)


def save_image_named(image: Image.Image, directory: Path, stem: str, *, infotext: str | None, fmt: str = "png",
                     extra_pnginfo: dict[str, str] | None = None, quality: int = JPEG_QUALITY,
                     replace: bool = False, lossless: bool = False) -> Path:
    """Save as `<stem>.<ext>` (A1111's original-name saving in Extras batches). A name already taken
    is replaced when `replace` is set (A1111's `save_images_replace_action` "Replace"), otherwise
    `<stem>-1.<ext>`, `<stem>-2.<ext>`, ... are tried instead."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ext = fmt.lower().lstrip(".")
    pil_format = FORMATS.get(ext)
    if pil_format is None:
        raise ValueError(f"unsupported image format: {fmt!r}")
    stem = file_stem(stem.strip(), _max_stem_bytes(directory, ext) - 6, strict=False) or "image"
    return _write_new(image, directory, ext, pil_format, infotext, extra_pnginfo,
                      _suffixed_names(directory, stem, ext), quality, replace=replace, lossless=lossless)


def make_grid(images: list[Image.Image], rows: int | None = None, *, n_rows: int = -1,
              batch_size: int = 1, prevent_empty_spots: bool = False) -> Image.Image:
    """Paste images into a grid, A1111 `image_grid` rules for the row count.

    rows=None: `n_rows` > 0 fixes it, 0 means one row per batch (rows =
    batch_size), -1 (default) means round(sqrt(n)), or with
    `prevent_empty_spots` the largest divisor of n not above sqrt(n).
    """
    from webui.imaging.grid_annotations import grid_rows
    if not images:
        raise ValueError("make_grid needs at least one image")
    n = len(images)
    if rows is None:
        rows = grid_rows(n, batch_size, n_rows, prevent_empty_spots)
    rows = max(1, min(rows, n))
    cols = math.ceil(n / rows)
    w, h = images[0].size
    grid = Image.new("RGB", size=(cols * w, rows * h), color="black")
    for i, img in enumerate(images):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid
