"""Saving images A1111-style: numbering, grid names, embedded infotext, atomicity, concurrency."""
from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from webui.infotext import read_info_from_image
from webui.outputs import dated_dir, make_grid, next_sequence_number, save_image

TEXT = ("a cat, (fluffy:1.2)\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, "
        "CFG scale: 7, Seed: 123, Size: 8x8, Lora hashes: \"a: 0123456789ab, b: ba9876543210\", Version: v1.10.1")


def _img(color: str = "red", size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_first_image_is_00000_and_numbering_continues(tmp_path: Path) -> None:
    p0 = save_image(_img(), tmp_path, seed=123, infotext=TEXT)
    assert p0.name == "00000-123.png"
    p1 = save_image(_img(), tmp_path, seed=7, infotext=None)
    assert p1.name == "00001-7.png"
    # unrelated files and a higher existing number
    (tmp_path / "00041-999.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "abc-00077.png").write_bytes(b"x")  # leading part is not a number
    (tmp_path / "grid-0500.png").write_bytes(b"x")
    assert save_image(_img(), tmp_path, seed=5, infotext=None).name == "00042-5.png"
    assert save_image(_img(), tmp_path, seed=None, infotext=None).name == "00043.png"
    assert next_sequence_number(tmp_path / "missing") == 0


def test_grid_naming(tmp_path: Path) -> None:
    (tmp_path / "00010-1.png").write_bytes(b"x")  # sample numbers do not count for grids
    g0 = save_image(_img(), tmp_path, seed=1, infotext=TEXT, grid=True)
    g1 = save_image(_img(), tmp_path, seed=1, infotext=TEXT, grid=True)
    assert (g0.name, g1.name) == ("grid-0000.png", "grid-0001.png")
    b = save_image(_img(), tmp_path, seed=3, infotext=None, basename="extra")
    assert b.name == "extra-0000-3.png"
    # samples still continue from the highest leading integer
    assert save_image(_img(), tmp_path, seed=2, infotext=None).name == "00011-2.png"


def test_png_carries_exact_infotext(tmp_path: Path) -> None:
    path = save_image(_img(), tmp_path, seed=123, infotext=TEXT, extra_pnginfo={"note": "ünïcode ✓"})
    with Image.open(path) as img:
        geninfo, items = read_info_from_image(img)
        assert img.size == (8, 8)
    assert geninfo == TEXT
    assert items == {"note": "ünïcode ✓"}
    assert b"tEXtparameters" in path.read_bytes()  # latin-1 text -> tEXt like A1111


def test_non_latin_infotext_png_and_jpeg_webp(tmp_path: Path) -> None:
    text = "夜の街\nSteps: 5, Sampler: Euler, Seed: 1"
    png = save_image(_img(), tmp_path, seed=1, infotext=text)
    assert b"iTXtparameters" in png.read_bytes()
    for fmt in ("png", "jpg", "webp"):
        path = save_image(Image.new("RGBA", (8, 8)), tmp_path, seed=1, infotext=text, fmt=fmt)
        assert path.suffix == f".{fmt}"
        with Image.open(path) as img:
            assert read_info_from_image(img)[0] == text


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    for i in range(3):
        save_image(_img(), tmp_path, seed=i, infotext=TEXT)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["00000-0.png", "00001-1.png", "00002-2.png"]
    # a failing encode must leave neither a temp file nor a final name
    with pytest.raises(ValueError):
        save_image(Image.new("RGB", (0, 0)), tmp_path, seed=9, infotext=TEXT)
    with pytest.raises(ValueError):
        save_image(Image.new("RGB", (20000, 1)), tmp_path, seed=9, infotext=TEXT, fmt="webp")
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    if sys.platform != "win32":  # normal file permissions, not mkstemp's private 0600
        umask = os.umask(0)
        os.umask(umask)
        assert (tmp_path / names[0]).stat().st_mode & 0o777 == 0o666 & ~umask


def test_concurrent_saves_get_unique_numbers(tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(k: int) -> None:
        try:
            start.wait()
            for j in range(5):
                p = save_image(_img(size=(32, 32)), tmp_path, seed=k * 100 + j, infotext=f"t{k}-{j}")
                with lock:
                    results.append(p)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    numbers = sorted(int(p.name.split("-")[0]) for p in results)
    assert numbers == list(range(40))  # unique and gap-free
    assert len({p.name for p in results}) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in results)
    for p in results:  # every file is complete and carries its own text
        with Image.open(p) as img:
            seed = int(p.stem.split("-")[1])
            assert read_info_from_image(img)[0] == f"t{seed // 100}-{seed % 100}"


def test_dated_dir(tmp_path: Path) -> None:
    d = dated_dir(tmp_path, "txt2img-images", dt.date(2024, 7, 27))
    assert d == tmp_path / "txt2img-images" / "2024-07-27" and d.is_dir()
    today = dated_dir(tmp_path, "txt2img-grids")
    assert today.name == dt.date.today().strftime("%Y-%m-%d")


def test_make_grid_rows() -> None:
    imgs = [_img(c) for c in ("red", "green", "blue", "white", "black")]
    g = make_grid(imgs)  # round(sqrt(5)) = 2 rows, 3 columns
    assert g.size == (24, 16)
    assert g.getpixel((0, 0)) == (255, 0, 0) and g.getpixel((8, 0)) == (0, 128, 0)
    assert g.getpixel((0, 8)) == (255, 255, 255) and g.getpixel((23, 15)) == (0, 0, 0)  # empty spot black
    assert make_grid(imgs[:4]).size == (16, 16)
    assert make_grid(imgs[:3], rows=1).size == (24, 8)
    assert make_grid(imgs[:4], n_rows=0, batch_size=1).size == (32, 8)  # one row per batch
    assert make_grid(imgs[:3], rows=10).size == (8, 24)  # rows capped at n
    assert make_grid(imgs, prevent_empty_spots=True).size == (40, 8)


def _save_many(directory: str, k: int) -> list[str]:
    return [save_image(_img(), Path(directory), seed=k * 100 + j, infotext=None).name for j in range(10)]


@pytest.mark.skipif(sys.platform == "win32", reason="cross-process lock uses flock")
def test_concurrent_saves_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no shared in-process lock
    with ctx.Pool(3) as pool:
        names = [n for batch in pool.starmap(_save_many, [(str(tmp_path), k) for k in range(3)]) for n in batch]
    assert sorted(int(n.split("-")[0]) for n in names) == list(range(30))
