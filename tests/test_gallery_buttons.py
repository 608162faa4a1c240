"""The gallery buttons' logic without a browser: where 📂 may open a folder, what 💾 and 🗜️ write
(log/images, A1111's log.csv columns, the zip) and which picture Send to takes."""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from webui.ui import gallery_buttons as gb


def fake_svc(tmp_path: Path, **options: Any) -> Any:
    paths = SimpleNamespace(data_dir=tmp_path, outputs_dir=tmp_path / "outputs")
    return SimpleNamespace(paths=paths, args=SimpleNamespace(), options=lambda: dict(options))


def gallery_files(tmp_path: Path, n: int) -> list[tuple[str, None]]:
    """What a gallery hands a handler: (file, caption) pairs of PNGs (the first one a grid)."""
    out = []
    for i in range(n):
        p = tmp_path / f"g{i}.png"
        Image.new("RGB", (32 * (2 if i == 0 else 1), 32), (40 * i, 80, 120)).save(p)
        out.append((str(p), None))
    return out


INFO = {"index_of_first_image": 1, "all_seeds": [11, 12], "seed": 11, "batch_size": 2, "width": 32, "height": 32,
        "sampler_name": "Euler", "cfg_scale": 7.0, "steps": 4, "sd_model_name": "tiny", "sd_model_hash": "abc",
        "prompt": "a cat", "negative_prompt": "dog",
        "shown_infotexts": ["grid text", "a cat\nNegative prompt: dog\nSteps: 4, Sampler: Euler, Seed: 11, Size: 32x32",
                            "a cat\nNegative prompt: dog\nSteps: 4, Sampler: Euler, Seed: 12, Size: 32x32"]}


def test_local_clients_only_are_loopback() -> None:
    assert gb.is_local_client("127.0.0.1") and gb.is_local_client("::1") and gb.is_local_client("localhost")
    assert not gb.is_local_client("192.168.1.20") and not gb.is_local_client(None) and not gb.is_local_client("x")


def test_open_folder_opens_only_for_a_local_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    monkeypatch.setattr(gb, "open_in_file_manager", opened.append)
    monkeypatch.setattr(gb, "can_open_here", lambda: True)
    kind, msg = gb.open_folder_action(tmp_path, "10.0.0.5", hide_dirs=False)
    assert kind == "shown" and str(tmp_path) in msg and not opened  # a remote browser gets the path
    kind, msg = gb.open_folder_action(tmp_path, "127.0.0.1", hide_dirs=False)
    assert kind == "opened" and opened == [tmp_path]
    kind, msg = gb.open_folder_action(tmp_path, "127.0.0.1", hide_dirs=True)
    assert kind == "refused" and str(tmp_path) not in msg and opened == [tmp_path]
    kind, msg = gb.open_folder_action(tmp_path / "nope", "127.0.0.1", hide_dirs=False)
    assert kind == "missing" and "does not exist" in msg
    monkeypatch.setattr(gb, "can_open_here", lambda: False)  # a server without a desktop: the path
    assert gb.open_folder_action(tmp_path, "127.0.0.1", hide_dirs=False)[0] == "shown"


def test_output_folder_is_the_last_results_folder(tmp_path: Path) -> None:
    svc = fake_svc(tmp_path)
    assert gb.output_folder(svc, "txt2img", None) == tmp_path / "outputs" / "txt2img-images"
    saved = tmp_path / "outputs" / "txt2img-images" / "2024-01-02" / "00001-5.png"
    assert gb.output_folder(svc, "txt2img", {"saved_files": [str(saved)]}) == saved.parent
    svc = fake_svc(tmp_path, outdir_img2img_samples=str(tmp_path / "mine"))
    assert gb.output_folder(svc, "img2img", {}) == tmp_path / "mine"


def test_save_selected_image_writes_log_images_and_log_csv(tmp_path: Path) -> None:
    svc = fake_svc(tmp_path, samples_format="png")
    files = gb.save_images(svc, gallery_files(tmp_path, 3), INFO, 2, make_zip=False)
    assert [p.parent for p in files] == [tmp_path / "log" / "images"]  # the selected image only
    with Image.open(files[0]) as im:
        assert im.info["parameters"].endswith("Seed: 12, Size: 32x32") and im.size == (32, 32)
    assert files[0].name.endswith("-12.png")
    rows = list(csv.reader(open(tmp_path / "log" / "images" / "log.csv", encoding="utf-8")))
    assert rows[0] == gb.LOG_FIELDS
    assert rows[1] == ["a cat", "12", "32", "32", "Euler", "7.0", "4", files[0].name, "dog", "tiny", "abc"]
    # the grid selected: every picture (A1111 saves all when no single image is selected)
    files = gb.save_images(svc, gallery_files(tmp_path, 3), INFO, 0, make_zip=False)
    assert len(files) == 3 and files[0].name.startswith("grid-")
    assert len(list(csv.reader(open(tmp_path / "log" / "images" / "log.csv", encoding="utf-8")))) == 3


def test_zip_holds_every_image_of_the_result(tmp_path: Path) -> None:
    svc = fake_svc(tmp_path, outdir_save=str(tmp_path / "elsewhere"))
    files = gb.save_images(svc, gallery_files(tmp_path, 3), INFO, 2, make_zip=True)
    assert files[0].suffix == ".zip" and files[0].parent == tmp_path / "elsewhere"
    assert "_[tiny]_11-12" in files[0].name
    with zipfile.ZipFile(files[0]) as z:
        assert sorted(z.namelist()) == sorted(p.name for p in files[1:]) and len(z.namelist()) == 3
    copies = gb.download_copies(files)
    assert [Path(c).name for c in copies] == [p.name for p in files]
    with pytest.raises(ValueError, match="Nothing to save"):
        gb.save_images(svc, [], INFO, 0, make_zip=False)


def test_send_takes_the_first_image_when_a_grid_is_selected(tmp_path: Path) -> None:
    items = gallery_files(tmp_path, 3)
    img, i = gb.selected_item(items, 0, INFO)
    assert i == 1 and img is not None and img.size == (32, 32)
    assert gb.selected_item(items, 2, INFO)[1] == 2
    assert gb.selected_item([], 0, INFO) == (None, 0)
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "x")
    Image.new("RGB", (8, 8)).save(tmp_path / "m.png", pnginfo=meta)
    assert gb.gallery_image({"image": {"path": str(tmp_path / "m.png")}}).size == (8, 8)


def test_save_options_dated_folder_no_log_all_images(tmp_path: Path) -> None:
    import datetime as dt
    svc = fake_svc(tmp_path, use_save_to_dirs_for_ui=True, save_write_log_csv=False, save_selected_only=False)
    files = gb.save_images(svc, gallery_files(tmp_path, 3), INFO, 2, make_zip=False)
    day = tmp_path / "log" / "images" / dt.date.today().strftime("%Y-%m-%d")
    assert len(files) == 3 and {p.parent for p in files} == {day}  # every picture, in the dated folder
    assert not (tmp_path / "log" / "images" / "log.csv").exists()


def test_open_dir_choice_output_root(tmp_path: Path) -> None:
    saved = tmp_path / "outputs" / "txt2img-images" / "2024-01-02" / "00001-5.png"
    svc = fake_svc(tmp_path, open_dir_button_choice="Output Root")
    assert gb.output_folder(svc, "txt2img", {"saved_files": [str(saved)]}) == tmp_path / "outputs" / "txt2img-images"


def test_save_options_are_served_with_a1111_defaults() -> None:
    from webui.settings import OPTIONS
    assert OPTIONS["outdir_save"].default == "log/images" and OPTIONS["save_selected_only"].default is True
    assert OPTIONS["save_write_log_csv"].default is True and OPTIONS["use_save_to_dirs_for_ui"].default is False
    assert OPTIONS["open_dir_button_choice"].default == "Subdirectory"
