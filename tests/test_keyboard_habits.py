"""Issue 18 point 3, A1111's keyboard and button habits, in a real headless browser against the real
server (tiny model, 64x64): Ctrl+Up/Down weights and Alt+Left/Right tag moves in the prompt boxes,
"Generate forever" and its cancel, the two-click Interrupt, notification.mp3 and the progress in
the window title."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from conftest import BROWSER_TIMEOUT_MS, Server, open_page, stop_server, tiny_ui_server

# ~3 min of driving a generating page: run with `-m slow`
pytestmark = [pytest.mark.browser, pytest.mark.slow]

PLAIN_TITLE = "Stable Diffusion"
PROGRESS_TITLE = re.compile(r"^\[\d+%( ETA: [\d:]+s?)?\] Stable Diffusion$")


def silent_mp3(frames: int = 20) -> bytes:
    """A valid MP3 of silence: MPEG-1 Layer III frames, 128 kbit/s, 44.1 kHz, mono, all data zero."""
    header = bytes([0xFF, 0xFB, 0x90, 0xC4])
    return (header + bytes(417 - len(header))) * frames


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = tiny_ui_server(tmp_path_factory.mktemp("habits"))
    yield srv
    stop_server(srv)


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    # 2 shared cores: a generating page draws slowly
    with open_page(browser, server.url, timeout_ms=BROWSER_TIMEOUT_MS * 3) as pg:
        yield pg


def set_number(page: Any, elem_id: str, value: Any) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def small_job(page: Any, steps: int, batch_count: int = 1, prompt: str = "a red circle") -> None:
    page.locator("#txt2img_prompt textarea").fill(prompt)
    for elem_id, value in (("txt2img_steps", steps), ("txt2img_width", 64), ("txt2img_height", 64),
                           ("txt2img_batch_count", batch_count)):
        set_number(page, elem_id, value)


def saved_images(server: Server) -> list[Path]:
    return sorted((server.data_dir / "outputs" / "txt2img-images").rglob("*.png"))


def click(page: Any, elem_id: str) -> None:
    """A click on the button itself: the page may draw one frame a second while the CPU generates,
    too slowly for Playwright's wait for a steady element."""
    page.locator(f"#{elem_id}").dispatch_event("click")


def wait_status(page: Any, prefix: str, timeout_ms: float = 300_000) -> str:
    page.wait_for_function("(p) => (document.querySelector('#txt2img_status textarea')?.value || '').startsWith(p)",
                           arg=prefix, timeout=timeout_ms, polling=250)
    return page.locator("#txt2img_status textarea").input_value()


def job_progress(server: Server) -> dict:
    return requests.get(f"{server.url}/internal/job-progress", timeout=10).json()


def press_on(page: Any, elem_id: str, text: str, start: int, end: int, *keys: str) -> tuple[str, list[int]]:
    """Type `text` into a prompt box, select [start, end), press `keys`; the value and the selection."""
    box = page.locator(f"#{elem_id} textarea")
    box.fill(text)
    box.evaluate("(b, r) => { b.focus(); b.setSelectionRange(r[0], r[1]); }", [start, end])
    for key in keys:
        box.press(key)
    return box.input_value(), box.evaluate("b => [b.selectionStart, b.selectionEnd]")


# ---------------------------------------------------------------- prompt editing keys

def test_ctrl_arrows_change_weights_as_a1111(page: Any) -> None:
    # the word under the cursor: (cat:1.1), back to plain cat at 1.0, then (cat:0.9)
    value, sel = press_on(page, "txt2img_prompt", "a cat, dog", 3, 3, "Control+ArrowUp")
    assert (value, sel) == ("a (cat:1.1), dog", [3, 6])
    value, sel = press_on(page, "txt2img_prompt", "a cat, dog", 3, 3, "Control+ArrowUp", "Control+ArrowDown")
    assert (value, sel) == ("a cat, dog", [2, 5])
    value, sel = press_on(page, "txt2img_prompt", "a cat, dog", 3, 3,
                          "Control+ArrowUp", "Control+ArrowDown", "Control+ArrowDown")
    assert (value, sel) == ("a (cat:0.9), dog", [3, 6])
    # a selection of several words; the step follows keyedit_precision_attention (0.1)
    value, sel = press_on(page, "txt2img_prompt", "a big cat, dog", 2, 9, "Control+ArrowUp", "Control+ArrowUp")
    assert (value, sel) == ("a (big cat:1.2), dog", [3, 10])
    # inside an existing weight: that number changes; rounding as A1111 (no 1.2000000000000002)
    value, _ = press_on(page, "txt2img_prompt", "x, (cat:1.3), y", 6, 6, "Control+ArrowDown")
    assert value == "x, (cat:1.2), y"
    # old-style ((cat)) becomes an explicit weight first (1.1 ** 2, to 0.1) and takes the step
    value, _ = press_on(page, "txt2img_prompt", "((cat))", 3, 3, "Control+ArrowUp")
    assert value == "(cat:1.3)"
    # an extra network's multiplier moves by keyedit_precision_extra (0.05) and keeps its brackets at 1
    value, sel = press_on(page, "txt2img_prompt", "<lora:tiny:0.8>, x", 7, 7, "Control+ArrowUp")
    assert (value, sel) == ("<lora:tiny:0.85>, x", [1, 10])
    value, _ = press_on(page, "txt2img_prompt", "<lora:tiny:0.95>", 3, 3, "Control+ArrowUp")
    assert value == "<lora:tiny:1.0>"
    # the other boxes: img2img's negative prompt; a line feed bounds the word (keyedit_delimiters_whitespace)
    page.get_by_role("tab", name="img2img").click()
    value, _ = press_on(page, "img2img_neg_prompt", "blurry\nugly", 2, 2, "Control+ArrowDown")
    assert value == "(blurry:0.9)\nugly"


def test_edited_prompt_reaches_gradio(page: Any) -> None:
    """The input event after an edit: the token counter follows, and a generation uses the new text."""
    small_job(page, steps=1)
    value, _ = press_on(page, "txt2img_prompt", "red, green, blue, yellow, purple, orange", 0, 0,
                        "Control+ArrowUp")
    assert value.startswith("(red:1.1), green")
    click(page, "txt2img_generate")
    wait_status(page, "Time taken")
    assert "(red:1.1), green" in page.inner_text("#txt2img_info")


def test_alt_arrows_move_the_tag_under_the_cursor(page: Any) -> None:
    value, sel = press_on(page, "txt2img_prompt", "red, green, blue", 1, 1, "Alt+ArrowRight")
    assert (value, sel) == (" green,red, blue", [7, 10])  # A1111 moves the tag with its spaces
    box = page.locator("#txt2img_prompt textarea")
    box.press("Alt+ArrowRight")
    assert box.input_value() == " green, blue,red"
    box.press("Alt+ArrowLeft")
    box.press("Alt+ArrowLeft")
    assert box.input_value() == "red, green, blue"
    assert box.evaluate("b => [b.selectionStart, b.selectionEnd]") == [0, 3]
    # the first tag does not move further left; the page stays (Alt+Left is not "back")
    box.press("Alt+ArrowLeft")
    assert box.input_value() == "red, green, blue" and page.url.endswith("/")


# ---------------------------------------------------------------- generate forever

def test_generate_forever_repeats_until_cancelled(page: Any, server: Server) -> None:
    small_job(page, steps=1, prompt="a blue square")
    before = len(saved_images(server))
    page.click("#txt2img_generate", button="right")
    menu = page.locator("#context-menu")
    assert menu.locator("a").all_inner_texts() == ["Generate forever", "Cancel generate forever"]
    menu.get_by_text("Generate forever", exact=True).click()
    assert menu.count() == 0  # the menu closes
    page.click("#txt2img_generate", button="right")  # chosen twice: still one loop
    page.locator("#context-menu").get_by_text("Generate forever", exact=True).click()

    deadline = time.time() + 400
    most_at_once = 0
    while len(saved_images(server)) - before < 3 and time.time() < deadline:
        state = job_progress(server)
        most_at_once = max(most_at_once, int(state["active"]) + state["queued"])
        time.sleep(0.3)
    assert len(saved_images(server)) - before >= 3
    assert most_at_once <= 1  # one job at a time: the loop waits for each generation's end

    # Interrupt only ends the running generation (A1111): the loop goes on
    while not job_progress(server)["active"] and time.time() < deadline:
        time.sleep(0.05)
    done = len(saved_images(server))
    click(page, "txt2img_interrupt")
    deadline = time.time() + 300
    while len(saved_images(server)) <= done and time.time() < deadline:
        time.sleep(0.3)
    assert len(saved_images(server)) > done

    # cancelled from the Interrupt button's menu: the running generation ends and no other starts
    page.click("#txt2img_interrupt", button="right")
    menu = page.locator("#context-menu")
    assert menu.locator("a").all_inner_texts() == ["Cancel generate forever"]
    menu.get_by_text("Cancel generate forever", exact=True).click()
    page.wait_for_function("() => !window.sdPageJobs.running('txt2img')", timeout=300_000, polling=250)
    settled = len(saved_images(server))
    time.sleep(4)  # several times the loop's 0.5 s wait
    assert len(saved_images(server)) == settled
    assert not job_progress(server)["active"]


# ---------------------------------------------------------------- Interrupt twice, title

def _interrupted(server: Server) -> dict:
    return requests.get(server.api("progress?skip_current_image=true"), timeout=10).json()["state"]


def _run_and_interrupt(page: Any, server: Server, clicks: int) -> tuple[int, dict]:
    """Batch count 3; Interrupt clicked `clicks` times during the first image (each click waits until
    the server has it: a generating page answers slowly on 2 shared cores). Returns the number of
    pictures saved and what the page showed."""
    before = len(saved_images(server))
    click(page, "txt2img_generate")
    deadline = time.time() + 300
    while time.time() < deadline:  # inside the first image, after its first step
        state = job_progress(server)
        if state["active"] and state["progress"] > 0:
            break
        time.sleep(0.1)
    shown: dict[str, Any] = {}
    page.evaluate("""() => { const b = document.getElementById('txt2img_interrupt'); window.__labels = [];
      new MutationObserver(() => __labels.push(b.innerText.trim()))
        .observe(b, {subtree: true, characterData: true, childList: true}); }""")
    click(page, "txt2img_interrupt")
    while not _interrupted(server)["interrupted"] and time.time() < deadline:
        time.sleep(0.05)
    shown["first_click_at"] = _interrupted(server)  # job_no 0: still the first image
    if clicks == 2:
        click(page, "txt2img_interrupt")
    else:
        page.wait_for_function("() => document.body.innerText.includes('click again to stop immediately')",
                               polling=250)
        shown["note"] = True
    page.wait_for_function("() => !window.sdPageJobs.running('txt2img')", timeout=300_000, polling=250)
    shown["status"] = page.locator("#txt2img_status textarea").input_value()
    page.wait_for_function("() => document.getElementById('txt2img_interrupt').innerText.trim() === 'Interrupt'",
                           polling=250)
    shown["labels"] = page.evaluate("window.__labels")
    assert shown["labels"][:1] == ["Interrupting..."], shown  # until the generation has ended
    assert shown["first_click_at"]["job_no"] == 0, shown
    return len(saved_images(server)) - before, shown


def test_second_interrupt_stops_at_once(page: Any, server: Server) -> None:
    small_job(page, steps=60, batch_count=3, prompt="a green triangle")
    once, shown = _run_and_interrupt(page, server, clicks=1)
    assert shown.get("note")
    assert once == 1, shown  # the first click let the current picture finish, then stopped
    twice, shown = _run_and_interrupt(page, server, clicks=2)
    assert twice < once, shown  # the second click stopped in the middle of the first picture


def test_title_shows_progress_while_generating(page: Any, server: Server) -> None:
    small_job(page, steps=80, prompt="a yellow star")
    assert page.title() == PLAIN_TITLE
    click(page, "txt2img_generate")
    page.wait_for_function("(re) => new RegExp(re).test(document.title)", arg=PROGRESS_TITLE.pattern,
                           timeout=300_000, polling=200)
    shown = page.title()  # e.g. "[12% ETA: 9s] Stable Diffusion"
    click(page, "txt2img_interrupt")
    page.wait_for_function("() => !window.sdPageJobs.running('txt2img')", timeout=300_000, polling=250)
    page.wait_for_function("(t) => document.title === t", arg=PLAIN_TITLE, timeout=60_000, polling=250)
    assert PROGRESS_TITLE.match(shown), shown


# ---------------------------------------------------------------- notification.mp3

def test_notification_sound_only_when_the_file_is_there(page: Any, server: Server, browser: Any) -> None:
    url = f"{server.url}/notification.mp3"
    sound = server.data_dir / "notification.mp3"
    sound.unlink(missing_ok=True)
    assert requests.get(url, timeout=10).status_code == 404
    assert page.evaluate("window.sdPageSound") is None  # the page knows: it never asks for it
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "notification" in r.url else None)
    small_job(page, steps=1)
    click(page, "txt2img_generate")
    wait_status(page, "Time taken")
    time.sleep(1)
    assert not asked

    data = silent_mp3()
    sound.write_bytes(data)
    got = requests.get(url, timeout=10)
    assert got.status_code == 200 and got.content == data and got.headers["content-type"] == "audio/mpeg"
    assert requests.post(url, timeout=10).status_code >= 400  # GET only
    # an option change rebuilds the head: a reloaded page finds the file and the new volume
    ok = requests.post(f"{server.url}/sdapi/v1/options", json={"notification_volume": 40}, timeout=10)
    assert ok.status_code == 200, ok.text
    page.reload()
    page.wait_for_selector("#txt2img_prompt textarea")
    assert page.evaluate("window.sdPageSound") == "notification.mp3"
    assert page.evaluate("window.sdPageOptions.notification_volume") == 40
    page.evaluate("() => document.addEventListener('play', (e) => { window.__played = "
                  "{src: e.target.src, volume: e.target.volume}; }, true)")
    small_job(page, steps=1)
    click(page, "txt2img_generate")
    wait_status(page, "Time taken")
    page.wait_for_function("() => window.__played", polling=250, timeout=60_000)
    played = page.evaluate("window.__played")
    assert played == {"src": url, "volume": 0.4}
    sound.unlink()
