"""The built-in Image Browser (issue 18 point 4): the service on real folders of real PNGs (pages,
order, date folders, search and its index, thumbnails, trash, refused paths), the API routes on the
real server, and the tab in a real browser (click, infotext, Send to img2img, delete to trash)."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from PIL import Image, PngImagePlugin

from conftest import Server, open_page, start_server, stop_server
from webui.infotext import make_exif
from webui.services.output_browser import OutputBrowser, OutputBrowserError, OutputNotFound

T0 = 1_700_000_000


def png(path: Path, text: str | None, color: tuple[int, int, int] = (200, 40, 40), mtime: float | None = None,
        size: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    Image.new("RGB", size, color).save(path, pnginfo=info)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def infotext(prompt: str, seed: int) -> str:
    return f"{prompt}\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: {seed}, Size: 64x64"


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """80 txt2img images over two date folders (one second apart), a grid, an Extras JPEG with EXIF,
    a 💾 saved one, a .txt-sidecar-only one, and junk the listing must skip."""
    out = tmp_path / "outputs"
    for i in range(80):
        day = "2024-07-26" if i < 50 else "2024-07-27"
        png(out / "txt2img-images" / day / f"{i:05}-{100 + i}.png", infotext(f"a cat number {i}", 100 + i),
            mtime=T0 + i)
    png(out / "txt2img-grids" / "2024-07-27" / "grid-0000.png", infotext("a grid of cats", 1), mtime=T0 + 200)
    jpg = out / "extras-images" / "00000.jpg"
    jpg.parent.mkdir(parents=True)
    Image.new("RGB", (64, 64), (0, 90, 0)).save(jpg, exif=make_exif("an Extras Dragon\nSteps: 5"))
    os.utime(jpg, (T0 + 250, T0 + 250))
    png(tmp_path / "log" / "images" / "00000-7.png", infotext("a saved owl", 7), mtime=T0 + 300)
    side = png(out / "img2img-images" / "2024-07-27" / "00000-9.png", None, mtime=T0 + 5)
    side.with_suffix(".txt").write_text(infotext("a sidecar heron", 9), encoding="utf-8")
    (out / "txt2img-images" / "2024-07-27" / ".tmp-abc.png").write_bytes(b"half")  # a saver's temp file
    (out / "txt2img-images" / "2024-07-27" / "notes.md").write_text("not an image")
    return tmp_path


def browser_for(data: Path, **options: Any) -> OutputBrowser:
    return OutputBrowser(data, data / "outputs", options)


def test_pages_are_newest_first_with_date_folders(data: Path) -> None:
    b = browser_for(data)
    assert b.folders("txt2img") == ["2024-07-27", "2024-07-26"]  # newest date first
    p1 = b.page("txt2img")
    assert (p1.total, p1.pages, len(p1.files)) == (80, 3, 36)
    assert p1.files[0].id == "txt2img/2024-07-27/00079-179.png" and p1.files[0].name == "00079-179.png"
    assert [int(f.name[:5]) for f in p1.files] == list(range(79, 43, -1))
    p3 = b.page("txt2img", page=3)
    assert [int(f.name[:5]) for f in p3.files] == list(range(7, -1, -1))
    assert b.page("txt2img", page=4).files == []  # past the end: an empty page
    day = b.page("txt2img", "2024-07-26")
    assert day.total == 50 and {f.rel.split("/")[0] for f in day.files} == {"2024-07-26"}
    assert [f.id for f in b.page("saved").files] == ["saved/00000-7.png"]
    assert b.page("all").total == 84 and b.page("all").files[0].id == "saved/00000-7.png"
    with pytest.raises(OutputBrowserError, match="page must be 1"):
        b.page("txt2img", page=0)
    with pytest.raises(OutputBrowserError, match="unknown kind"):
        b.page("videos")


def test_outdir_options_move_a_kind(data: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    mine = tmp_path_factory.mktemp("mine")
    png(mine / "x" / "00000-1.png", infotext("elsewhere", 1))
    b = browser_for(data, outdir_txt2img_samples=str(mine), outdir_save="custom-save")
    assert [f.id for f in b.page("txt2img").files] == ["txt2img/x/00000-1.png"]
    assert b.root("saved") == data / "custom-save"  # relative to the data dir, as the 💾 button saves


def test_details_read_png_exif_and_sidecar_infotexts(data: Path) -> None:
    b = browser_for(data)
    d = b.details("txt2img/2024-07-26/00003-103.png")
    assert d["infotext"] == infotext("a cat number 3", 103) and d["name"] == "00003-103.png"
    assert d["size"] == (data / "outputs/txt2img-images/2024-07-26/00003-103.png").stat().st_size
    assert b.details("extras/00000.jpg")["infotext"] == "an Extras Dragon\nSteps: 5"
    assert b.details("img2img/2024-07-27/00000-9.png")["infotext"].startswith("a sidecar heron\n")


def test_search_is_case_insensitive_and_the_index_is_reused(data: Path) -> None:
    b = browser_for(data)
    hits = b.page("txt2img", search="CAT NUMBER 7")
    assert sorted(f.name for f in hits.files) == ["00007-107.png", "00070-170.png", "00071-171.png",
                                                    "00072-172.png", "00073-173.png", "00074-174.png",
                                                    "00075-175.png", "00076-176.png", "00077-177.png",
                                                    "00078-178.png", "00079-179.png"]
    assert [f.id for f in b.page("all", search="dragon").files] == ["extras/00000.jpg"]
    assert [f.id for f in b.page("all", search="HERON").files] == ["img2img/2024-07-27/00000-9.png"]
    db = data / "cache" / "output-browser" / "infotexts.sqlite"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM files").fetchone()[0] == 84

    # the index answers a second search: proof — an entry rewritten in the index is what search sees
    target = data / "outputs/txt2img-images/2024-07-26/00002-102.png"
    with sqlite3.connect(db) as c:
        c.execute("UPDATE files SET infotext = 'from the index' WHERE path = ?", (str(target),))
    assert [f.name for f in b.page("txt2img", search="from the index").files] == ["00002-102.png"]

    # the file changes (new content, new mtime/size): it is read again, the old text is gone
    png(target, infotext("a changed zebra with a longer prompt", 5), mtime=T0 + 2)
    assert b.page("txt2img", search="from the index").total == 0
    assert [f.name for f in b.page("txt2img", search="zebra").files] == ["00002-102.png"]

    # a file gone: a search over every kind drops its row and its thumbnail
    thumb = b.thumbnails(b.page("txt2img", search="zebra").files)[0]
    kept = b.thumbnails(b.page("txt2img").files[:1])[0]
    target.unlink()
    b.page("all", search="zebra")
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM files WHERE path = ?", (str(target),)).fetchone()[0] == 0
    assert not thumb.exists() and kept.exists()


def test_thumbnails_are_made_once_per_file_version(data: Path) -> None:
    b = browser_for(data)
    files = b.page("txt2img").files[:3]
    thumbs = b.thumbnails(files)
    assert all(t is not None and t.is_relative_to(data / "cache") for t in thumbs)
    with Image.open(thumbs[0]) as im:
        assert im.format == "JPEG" and max(im.size) <= 256 and im.getpixel((10, 10))[0] > 150  # the red
    made = thumbs[0].stat().st_mtime_ns
    time.sleep(0.01)
    assert b.thumbnails(files)[0].stat().st_mtime_ns == made  # not made again
    src = files[0].path
    png(src, "x", color=(0, 0, 250), size=(96, 64))  # a new version: a new thumbnail
    again = b.page("txt2img").files[0]
    new = b.thumbnails([again])[0]
    assert new != thumbs[0]
    with Image.open(new) as im:
        assert im.getpixel((10, 10))[2] > 150


def test_trash_moves_the_file_and_its_sidecar(data: Path) -> None:
    b = browser_for(data)
    src = data / "outputs/img2img-images/2024-07-27/00000-9.png"
    dest = b.trash("img2img/2024-07-27/00000-9.png")
    assert dest == data / "trash" / "img2img" / "2024-07-27" / "00000-9.png"
    assert dest.is_file() and dest.with_suffix(".txt").read_text(encoding="utf-8").startswith("a sidecar heron")
    assert not src.exists() and not src.with_suffix(".txt").exists()
    assert b.page("img2img").total == 0
    # the same name deleted again keeps both in the trash
    png(src, infotext("second", 2))
    assert b.trash("img2img/2024-07-27/00000-9.png").name == "00000-9-1.png"
    assert b.page("all").total == 83  # the trash itself is never listed
    with pytest.raises(OutputNotFound):
        b.trash("img2img/2024-07-27/00000-9.png")


@pytest.mark.parametrize("bad", ["txt2img/../../secret.png", "txt2img//etc/passwd", "txt2img/2024-07-26/../../../x.png",
                                 "../outputs/txt2img-images/2024-07-26/00001-101.png", "nokind", "all/x.png",
                                 "txt2img/2024-07-27/notes.md", "txt2img/a\0b.png"])
def test_paths_from_outside_are_checked(data: Path, bad: str) -> None:
    (data / "secret.png").write_bytes((data / "outputs/txt2img-images/2024-07-26/00001-101.png").read_bytes())
    b = browser_for(data)
    with pytest.raises(OutputBrowserError):
        b.resolve(bad)
    with pytest.raises(OutputBrowserError):
        b.trash(bad)
    assert (data / "secret.png").exists()


def test_symlinks_out_of_an_output_folder_are_refused(data: Path) -> None:
    outside = png(data / "private" / "secret.png", "private")
    link = data / "outputs" / "txt2img-images" / "2024-07-27" / "link.png"
    link.symlink_to(outside)
    (data / "outputs" / "txt2img-images" / "escape").symlink_to(data / "private", target_is_directory=True)
    b = browser_for(data)
    for bad in ("txt2img/2024-07-27/link.png", "txt2img/escape/secret.png"):
        with pytest.raises(OutputBrowserError, match="outside"):
            b.resolve(bad)
        with pytest.raises(OutputBrowserError):
            b.trash(bad)
    assert outside.exists()


def test_odd_names_on_disk_and_in_requests_are_handled(data: Path) -> None:
    day = data / "outputs" / "txt2img-images" / "2024-07-27"
    good = (day / "00079-179.png").read_bytes()
    with open(os.fsencode(day) + b"/bad\xff.png", "wb") as f:  # not UTF-8: it could not be named back
        f.write(good)
    os.makedirs(os.fsencode(data / "outputs" / "txt2img-images") + b"/dir\xfe")
    png(data / "outputs" / "txt2img-images" / "\u00e9t\u00e9" / "00000-1.png", infotext("\u00e9t\u00e9", 1), mtime=T0)
    b = browser_for(data)
    assert b.folders("txt2img") == ["2024-07-27", "2024-07-26", "\u00e9t\u00e9"]  # dated first, others after
    assert b.page("txt2img").total == 81
    assert b.details("txt2img/\u00e9t\u00e9/00000-1.png")["infotext"].startswith("\u00e9t\u00e9")
    for bad in ("txt2img/" + "a" * 5000 + ".png", "txt2img/" + "ab/" * 1500 + "x.png"):
        with pytest.raises(OutputNotFound):
            b.resolve(bad)
    with pytest.raises(OutputNotFound):
        b.page("txt2img", "a" * 5000)


# ---------------------------------------------------------------- the real server

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The UI + API server (no model needed: nothing is generated) over a data dir with outputs."""
    data = tmp_path_factory.mktemp("browserdata")
    out = data / "outputs" / "txt2img-images"
    for i in range(40):
        png(out / "2024-07-26" / f"{i:05}-{500 + i}.png", infotext(f"an old lighthouse {i}", 500 + i), mtime=T0 + i)
    png(out / "2024-07-27" / "00000-4242.png", infotext("a blue teapot on a table", 4242),
        color=(30, 60, 220), mtime=T0 + 100)
    (out / "2024-07-27" / "00000-4242.txt").write_text(infotext("a blue teapot on a table", 4242), encoding="utf-8")
    ckpt = data / "models" / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    srv = start_server(data, ckpt, "--skip-load-model-at-start", nowebui=False)
    yield srv
    stop_server(srv)


def test_api_lists_pages_and_searches(server: Server) -> None:
    r = requests.get(f"{server.url}/webui/v1/outputs", params={"kind": "txt2img"}, timeout=30)
    assert r.status_code == 200, r.text
    j = r.json()
    assert (j["total"], j["pages"], j["page"], len(j["items"])) == (41, 2, 1, 36)
    assert j["folders"] == ["2024-07-27", "2024-07-26"]
    top = j["items"][0]
    assert top["path"] == "txt2img/2024-07-27/00000-4242.png" and top["infotext_first_line"] == "a blue teapot on a table"
    assert top["size"] == (server.data_dir / "outputs/txt2img-images/2024-07-27/00000-4242.png").stat().st_size
    assert top["mtime"] == pytest.approx(T0 + 100)
    j2 = requests.get(f"{server.url}/webui/v1/outputs", params={"kind": "txt2img", "page": 2}, timeout=30).json()
    assert [i["name"] for i in j2["items"]] == [f"{i:05}-{500 + i}.png" for i in range(4, -1, -1)]
    day = requests.get(f"{server.url}/webui/v1/outputs", params={"kind": "txt2img", "folder": "2024-07-27"},
                       timeout=30).json()
    assert [i["name"] for i in day["items"]] == ["00000-4242.png"]
    found = requests.get(f"{server.url}/webui/v1/outputs", params={"kind": "all", "search": "LIGHTHOUSE 3"},
                         timeout=30).json()
    assert sorted(i["name"] for i in found["items"]) == ["00003-503.png"] + [f"000{i}-5{i}.png" for i in range(30, 40)]
    assert requests.get(f"{server.url}/webui/v1/outputs", params={"page": 9}, timeout=30).json()["items"] == []


def test_api_serves_files_and_thumbnails(server: Server) -> None:
    path = "txt2img/2024-07-27/00000-4242.png"
    r = requests.get(f"{server.url}/webui/v1/outputs/file", params={"path": path}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (server.data_dir / "outputs/txt2img-images/2024-07-27/00000-4242.png").read_bytes()
    t = requests.get(f"{server.url}/webui/v1/outputs/file", params={"path": path, "thumb": 1}, timeout=30)
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    import io
    with Image.open(io.BytesIO(t.content)) as im:
        r_, g, b = im.convert("RGB").getpixel((5, 5))
        assert im.format == "JPEG" and b > 180 and r_ < 80  # the blue teapot picture


@pytest.mark.parametrize("params,status", [
    ({"kind": "videos"}, 400), ({"page": 0}, 422), ({"page": "x"}, 422), ({"kind": "all", "folder": "x"}, 400),
    ({"kind": "txt2img", "folder": "../.."}, 400), ({"kind": "txt2img", "folder": "nope"}, 404)])
def test_api_listing_refuses_bad_input(server: Server, params: dict, status: int) -> None:
    r = requests.get(f"{server.url}/webui/v1/outputs", params=params, timeout=30)
    assert r.status_code == status and r.json()["detail"], r.text


@pytest.mark.parametrize("path,status", [
    ("txt2img/../../config.json", 400), ("txt2img/%2e%2e/x.png", 404), ("/etc/passwd", 400), ("txt2img", 400),
    ("txt2img/2024-07-27/missing.png", 404), ("txt2img/2024-07-27/00000-4242.txt", 400), ("saved/x.png", 404),
    ("txt2img/" + "a" * 3000 + ".png", 404), ("txt2img/" + "ab/" * 1300 + "x.png", 404), ("x" * 5000, 422),
    ("txt2img/\u00fc\u20ac.png", 404)])
def test_api_file_routes_refuse_bad_paths(server: Server, path: str, status: int) -> None:
    for method in ("GET", "DELETE"):
        r = requests.request(method, f"{server.url}/webui/v1/outputs/file", params={"path": path}, timeout=30)
        assert r.status_code == status and r.json()["detail"], (method, r.text)
    assert (server.data_dir / "outputs/txt2img-images/2024-07-27/00000-4242.txt").exists()


def test_api_delete_moves_to_trash(server: Server) -> None:
    src = png(server.data_dir / "outputs/txt2img-images/2024-07-25/00000-1.png", infotext("doomed", 1), mtime=T0 - 10)
    r = requests.delete(f"{server.url}/webui/v1/outputs/file", params={"path": "txt2img/2024-07-25/00000-1.png"},
                        timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["trash"] == "trash/txt2img/2024-07-25/00000-1.png"
    assert not src.exists() and (server.data_dir / r.json()["trash"]).is_file()


@pytest.mark.browser
@pytest.mark.slow  # 10-30 s in a browser or with servers of its own: the default run stays under 15 min
def test_image_browser_tab_shows_sends_and_deletes(server: Server, browser: Any) -> None:
    src = server.data_dir / "outputs/txt2img-images/2024-07-27/00000-4242.png"
    with open_page(browser, server.url) as page:
        tab = page.locator("#tabs button[role=tab]", has_text="Image Browser")
        assert tab.count() == 1
        tab.click()
        page.wait_for_function("() => document.querySelectorAll('#image_browser_gallery .thumbnail-item img').length === 36")
        assert "Page 1 of 2: 41 images" in page.locator("#image_browser_status").inner_text()
        page.click("#image_browser_next")
        page.wait_for_function("() => document.querySelectorAll('#image_browser_gallery .thumbnail-item img').length === 5")
        page.click("#image_browser_first")
        page.wait_for_function("() => document.querySelectorAll('#image_browser_gallery .thumbnail-item img').length === 36")
        first = page.locator("#image_browser_gallery .thumbnail-item img").first
        page.wait_for_function("() => { const i = document.querySelector('#image_browser_gallery .thumbnail-item img');"
                               " return i && i.complete && i.naturalWidth === 64; }")  # the thumbnail itself loads
        first.click()
        page.wait_for_function("() => document.querySelector('#image_browser_infotext').innerText"
                               ".includes('a blue teapot on a table')")
        assert "00000-4242.png" in page.locator("#image_browser_file_info").inner_text()
        assert "Seed: 4242" in page.locator("#image_browser_infotext").inner_text()
        page.wait_for_function("() => { const i = document.querySelector('#image_browser_image img');"
                               " return i && i.complete && i.naturalWidth === 64; }")

        page.click("#image_browser_send_to_img2img")
        page.wait_for_function("() => { const i = document.querySelector('#img2img_image img');"
                               " return i && i.complete && i.naturalWidth === 64; }")
        assert page.locator("#tab_img2img").is_visible()
        assert page.locator("#img2img_prompt textarea").input_value() == "a blue teapot on a table"
        assert page.locator("#img2img_seed input").input_value() == "4242"
        blue = page.evaluate("""() => { const i = document.querySelector('#img2img_image img');
            const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
            const x = c.getContext('2d'); x.drawImage(i, 0, 0); return Array.from(x.getImageData(8, 8, 1, 1).data); }""")
        assert blue[2] > 180 and blue[0] < 80, blue  # the teapot picture's blue

        tab.click()  # the selection stays: the same file goes to PNG Info (its own metadata) and to Extras
        page.click("#image_browser_send_to_pnginfo")
        page.wait_for_function("() => { const h = document.querySelector('#pnginfo_html');"
                               " return h && h.innerText.includes('Seed: 4242'); }")
        tab.click()
        page.click("#image_browser_send_to_extras")
        page.wait_for_function("() => { const i = document.querySelector('#extras_image img');"
                               " return i && i.complete && i.naturalWidth === 64; }")

        tab.click()
        page.click("#image_browser_delete")  # not confirmed: a warning, and the file stays
        page.wait_for_selector("text=Tick “Confirm delete” first")
        assert src.exists()
        page.locator("#image_browser_confirm_delete input").check()
        page.click("#image_browser_delete")
        page.wait_for_function("() => document.querySelector('#image_browser_status').innerText.includes('40 images')")
        trash = server.data_dir / "trash/txt2img/2024-07-27"
        assert not src.exists() and (trash / "00000-4242.png").is_file() and (trash / "00000-4242.txt").is_file()

        box = page.locator("#image_browser_search textarea, #image_browser_search input").first
        box.fill("LIGHTHOUSE 3")
        box.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#image_browser_gallery .thumbnail-item img').length === 11")
        assert "11 images matching" in page.locator("#image_browser_status").inner_text()
