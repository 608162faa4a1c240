"""How fast the Image Browser is on a big output folder.

Makes N (default 10,000) real small PNGs with an infotext each in a temp data dir
(`outputs/txt2img-images/<date>/NNNNN-seed.png`, spread over 5 date folders), then times, with the
same service the tab and the API use:

  list      stat every file of the kind (os.scandir, no decoding) and sort newest first
  page 1    first page cold (its 36 thumbnails made) and warm (already made)
  page N/2  a later page, cold and warm
  search    a prompt word over every infotext, cold (each file's header read once, index filled)
            and warm (the index answers; only the directory scan again)

"Cold" means our caches are empty (thumbnails, infotext index); the OS's file cache is warm either
way. Each round starts from empty caches; the quickest of `--repeat` rounds is shown per step, since
other processes on a shared machine only ever add time.

    .venv/bin/python bench/bench_output_browser.py [--files 10000] [--repeat 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, PngImagePlugin  # noqa: E402

from webui.services.output_browser import OutputBrowser  # noqa: E402

log = logging.getLogger("bench_output_browser")
WORDS = ["fox", "castle", "robot", "forest", "ocean", "city", "dragon", "garden", "mountain", "portrait"]


def make_files(outputs: Path, n: int) -> None:
    """n 64x64 PNGs (a little noise so they do not compress to nothing) with A1111-style infotexts."""
    noise = Image.effect_noise((64, 64), 40).convert("RGB")
    per_day = max(1, n // 5)
    t0 = time.time() - n
    for i in range(n):
        day = f"2026-01-{1 + i // per_day:02d}"
        d = outputs / "txt2img-images" / day
        d.mkdir(parents=True, exist_ok=True)
        word = WORDS[i % len(WORDS)]
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"a photo of a {word}, number {i}, detailed\nNegative prompt: blurry\n"
                                    f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: {i}, Size: 64x64")
        img = Image.blend(noise, Image.new("RGB", (64, 64), (i % 256, (i * 7) % 256, (i * 13) % 256)), 0.5)
        p = d / f"{i:05}-{i}.png"
        img.save(p, pnginfo=info, compress_level=1)
        os.utime(p, (t0 + i, t0 + i))  # one second apart, in file order


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(data: Path, outputs: Path) -> list[tuple[str, float, float | None]]:
    """One round from cold caches: (step, cold seconds, warm seconds or None)."""
    shutil.rmtree(data / "cache", ignore_errors=True)
    b = OutputBrowser(data, outputs, {})
    rows: list[tuple[str, float, float | None]] = []

    t_list, files = timed(lambda: b.scan("txt2img"))
    rows.append((f"list {len(files)} files (scan + sort)", t_list, None))

    def page_with_thumbs(n: int) -> Any:
        p = b.page("txt2img", "", n)
        b.thumbnails(p.files)
        b.infotexts(p.files)
        return p

    cold1, p1 = timed(lambda: page_with_thumbs(1))
    warm1, _ = timed(lambda: page_with_thumbs(1))
    rows.append(("page 1: list + 36 thumbnails + infotexts", cold1, warm1))
    mid = max(1, p1.pages // 2)
    coldn, _ = timed(lambda: page_with_thumbs(mid))
    warmn, _ = timed(lambda: page_with_thumbs(mid))
    rows.append((f"page {mid} of {p1.pages}", coldn, warmn))

    cold_s, found = timed(lambda: b.page("txt2img", "", 1, "DRAGON"))
    warm_s, found2 = timed(lambda: b.page("txt2img", "", 1, "DRAGON"))
    assert found.total == found2.total
    rows.append((f"search 'DRAGON' over {len(files)} infotexts ({found.total} hits)", cold_s, warm_s))
    warm_all, _ = timed(lambda: b.page("all", "", 1, "castle"))
    rows.append(("search 'castle', all kinds (index warm)", warm_all, None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--keep", type=Path, help="use (and keep) this data dir instead of a temp one")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, each from cold caches; the quickest is shown")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = args.keep or Path(tempfile.mkdtemp(prefix="bench-outputs-"))
    try:
        outputs = data / "outputs"
        if not (outputs / "txt2img-images").is_dir():
            t, _ = timed(lambda: make_files(outputs, args.files))
            log.info("made %d PNGs in %.1fs", args.files, t)
        runs = [measure(data, outputs) for _ in range(max(1, args.repeat))]
        rows = [(name, min(r[i][1] for r in runs),
                 None if warm is None else min(r[i][2] for r in runs))  # type: ignore[type-var]
                for i, (name, _, warm) in enumerate(runs[0])]
        b = OutputBrowser(data, outputs, {})
        width = max(len(r[0]) for r in rows)
        print(f"{'step':<{width}}  {'cold':>9}  {'warm':>9}")
        for name, cold, warm in rows:
            w = f"{warm * 1000:7.0f}ms" if warm is not None else f"{'':>9}"
            print(f"{name:<{width}}  {cold * 1000:7.0f}ms  {w}")
        print(f"({os.cpu_count()} CPUs, best of {len(runs)} rounds, thumbnails {sum(1 for _ in b.thumbs.folder.rglob('*.jpg'))} made)")
    finally:
        if args.keep is None:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
