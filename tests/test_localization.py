"""UI localization (A1111's localizations/*.json and the `localization` option) and the page's
light/dark mode (`--theme`, the `theme_mode` option): discovery and precedence, a malformed file
skipped, the option's choices, the mapping in the served page (escaped), and in a real browser a
translated page that leaves the user's prompt alone, in the mode the flag asks for."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import requests

from conftest import BROWSER_TIMEOUT_MS, Server, start_server, stop_server
from webui.settings import Settings
from webui.ui import localization as l10n

TIMEOUT_MS = BROWSER_TIMEOUT_MS
EVIL = "</script><img src=x onerror=window.__pwned=1>Weiter"  # a translation that tries to break out


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def fake_services(tmp_path: Path, theme: str | None = None, ext_paths: tuple[Path, ...] = ()) -> Any:
    exts = [SimpleNamespace(path=p) for p in ext_paths]
    return SimpleNamespace(paths=SimpleNamespace(data_dir=tmp_path), settings=Settings.load(tmp_path / "config.json"),
                           args=SimpleNamespace(theme=theme), extensions=SimpleNamespace(enabled=lambda: exts))


def served_config(server: Server) -> dict:
    """The page's config as the browser gets it (the head with the mapping is part of it)."""
    html = requests.get(server.url + "/", timeout=30).text
    m = re.search(r"window\.gradio_config = (\{.*?\});</script>", html, re.S)
    assert m, html[:500]
    return json.loads(m.group(1)) | {"_html": html}


def page_mapping(head: str) -> dict:
    m = re.search(r"window\.localization = (\{.*?\});</script>", head, re.S)
    assert m, head[:500]
    return json.loads(m.group(1))


# ------------------------------------------------------------------ in process
def test_discovery_names_precedence_and_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    builtin, data, ext = tmp_path / "builtin", tmp_path / "data", tmp_path / "ext" / "localizations"
    write(builtin / "de_DE.json", {"Generate": "builtin", "Seed": "Saat"})
    write(data / "de_DE.json", {"Generate": "data", "Width": "Breite"})
    write(ext / "de_DE.json", {"Generate": "ext", "rtl": True, "n": 5, "Height": ""})
    write(ext / "fr_FR (test).json", {"Generate": "Générer"})
    write(data / "broken.json", '{"Generate": "x"')
    write(data / "list.json", [1, 2])
    write(data / "notes.txt", "not a localization")
    with caplog.at_level(logging.WARNING, logger="webui.ui.localization"):
        found = l10n.discover([builtin, data, tmp_path / "missing", ext])
    assert found == {"de_DE": [builtin / "de_DE.json", data / "de_DE.json", ext / "de_DE.json"],
                     "fr_FR_test": [ext / "fr_FR (test).json"]}
    assert "broken.json" in caplog.text and "list.json" in caplog.text
    # A1111 merges a name's files in order: the extension's entry wins, the others stay; non-strings
    # and empty (template) entries are dropped, "rtl": true is kept
    assert l10n.load_mapping(found["de_DE"]) == {"Generate": "ext", "Seed": "Saat", "Width": "Breite", "rtl": True}


def test_head_escapes_and_follows_the_options(tmp_path: Path) -> None:
    text = l10n._script_json({"Skip": EVIL, "a&b": "<!--"})
    assert not set("<>&") & set(text) and json.loads(text) == {"Skip": EVIL, "a&b": "<!--"}

    write(tmp_path / "localizations" / "xx_XX.json", {"Skip": EVIL})
    svc = fake_services(tmp_path)
    assert l10n.register_option(svc) == ["de_DE", "xx_XX"]  # the shipped example and the data dir's file
    assert svc.settings.options["localization"].choices == ("None", "de_DE", "xx_XX")
    head = l10n.head_html(svc)
    assert page_mapping(head) == {} and "window.localization;" not in head and "__theme" not in head
    svc.settings.set("localization", "xx_XX")
    head = l10n.head_html(svc)
    assert page_mapping(head) == {"Skip": EVIL} and "</script><img" not in head and "window.localization;" in head
    assert page_mapping(l10n.head_html(svc, localization="de_DE"))["Generate"] == "Generieren"

    svc.settings.set("theme_mode", "dark")
    assert l10n.theme_mode(svc) == "dark" and 'mode = "dark"' in l10n.head_html(svc)
    flagged = fake_services(tmp_path, theme="light")  # the flag wins over the option
    assert l10n.theme_mode(flagged) == "light" and 'mode = "light"' in l10n.head_html(flagged)

    # a chosen localization whose file is gone stays chosen (English shown), and is still a valid choice
    (tmp_path / "localizations" / "xx_XX.json").unlink()
    assert l10n.register_option(svc) == ["de_DE", "xx_XX"] and page_mapping(l10n.head_html(svc)) == {}


def test_shipped_example_covers_the_main_page() -> None:
    mapping = l10n.load_mapping([l10n.BUILTIN_DIR / "de_DE.json"])
    for english in ("txt2img", "img2img", "Settings", "Generate", "Prompt", "Negative prompt", "Sampling method",
                    "Sampling steps", "Width", "Height", "CFG Scale", "Seed", "Batch count", "Batch size",
                    "Saving images", "Apply settings", "Interrupt", "Skip"):
        assert mapping.get(english), english


# ------------------------------------------------------------------ real server and browser
@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Started with --theme dark and the shipped German chosen; the data dir overrides one entry with
    a hostile string, an extension overrides "Generate" and adds a second localization, a disabled
    extension's file and a malformed file are not offered."""
    data = tmp_path_factory.mktemp("l10n")
    write(data / "localizations" / "de_DE.json", {"Skip": EVIL})
    write(data / "localizations" / "broken.json", '{"Generate": ')
    write(data / "extensions" / "l10n-ext" / "localizations" / "de_DE.json", {"Generate": "Erzeugen"})
    write(data / "extensions" / "l10n-ext" / "localizations" / "fr_FR (test).json", {"Generate": "Générer"})
    write(data / "extensions" / "off-ext" / "localizations" / "es_ES.json", {"Generate": "Generar"})
    write(data / "styles.csv", "name,prompt,negative_prompt\nSeed,a cat,\n")  # a style named like a UI string
    write(data / "config.json", {"localization": "de_DE", "theme_mode": "light",
                                 "disabled_extensions": ["off-ext"]})
    (data / "ckpt").mkdir()
    server = start_server(data, data / "ckpt", "--skip-load-model-at-start", "--theme", "dark", nowebui=False)
    yield server
    stop_server(server)



def open_page(browser: Any, server: Server, scheme: str) -> tuple[Any, Any, list[str]]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme=scheme)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "/")
    pg.wait_for_selector("#txt2img_prompt textarea")
    return ctx, pg, errors


def test_option_choices_and_served_mapping(german: Server) -> None:
    assert "broken.json" in german.log.read_text()  # named in the log; the app serves regardless
    assert requests.get(german.api("options"), timeout=10).json()["localization"] == "de_DE"
    config = served_config(german)
    dropdown = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "setting_localization")
    assert [c[0] for c in dropdown["props"]["choices"]] == ["None", "de_DE", "fr_FR_test"]
    mapping = page_mapping(config["head"])
    assert mapping["Generate"] == "Erzeugen" and mapping["Sampling steps"] == "Sampling-Schritte"
    assert mapping["Skip"] == EVIL and "</script><img" not in config["_html"] and "</script><img" not in config["head"]
    r = requests.post(german.api("options"), json={"localization": "es_ES"}, timeout=10)
    assert r.status_code == 400 and "es_ES" in r.text  # a disabled extension's localization is no choice


@pytest.mark.browser
@pytest.mark.slow  # browser, ~16 s
def test_page_translated_in_dark_mode_then_english(german: Server, browser: Any) -> None:
    ctx, pg, errors = open_page(browser, german, "light")  # the flag, not the browser, decides
    try:
        pg.wait_for_function("() => document.querySelector('#txt2img_generate').innerText.trim() === 'Erzeugen'")
        pg.locator("#txt2img_prompt textarea").fill("Generate Seed")  # user text equal to UI strings
        pg.locator("#txt2img_styles input").click()  # a list of names: its label is translated, its choices not
        pg.get_by_role("option").first.wait_for()
        assert [o.inner_text().replace("✓", "").strip() for o in pg.get_by_role("option").all()] == ["Seed"]
        assert pg.locator("#txt2img_styles [data-testid=block-info]").inner_text().strip() == "Stile"
        assert pg.locator("#setting_sd_model_checkpoint [data-testid=block-info]").inner_text().strip() \
            == "Stable-Diffusion-Checkpoint"
        pg.keyboard.press("Escape")
        pg.get_by_role("tab", name="Einstellungen").click()
        pg.wait_for_selector("#settings_submit")
        pg.get_by_role("tab", name="Text zu Bild").click()
        pg.wait_for_selector("#txt2img_prompt textarea")
        state = pg.evaluate("""() => ({
            steps: document.querySelector('#txt2img_steps [data-testid=block-info]').innerText,
            skip: document.querySelector('#txt2img_skip').innerText.trim(),
            prompt: document.querySelector('#txt2img_prompt textarea').value,
            neg: document.querySelector('#txt2img_neg_prompt textarea').placeholder,
            pwned: window.__pwned === undefined ? null : window.__pwned,
            dark: document.body.classList.contains('dark'), url: location.search})""")
        assert state["steps"].strip() == "Sampling-Schritte" and state["neg"].startswith("Negativer Prompt")
        assert state["prompt"] == "Generate Seed"
        assert state["skip"] == EVIL and state["pwned"] is None  # shown as text, never run
        assert state["dark"] and "__theme=dark" in state["url"]
        assert not errors, errors
    finally:
        ctx.close()

    # "None" again: the next page load is English, without a restart
    assert requests.post(german.api("options"), json={"localization": "None"}, timeout=10).status_code == 200
    assert page_mapping(served_config(german)["head"]) == {}
    ctx, pg, errors = open_page(browser, german, "light")
    try:
        assert pg.locator("#txt2img_generate").inner_text().strip() == "Generate"
        assert pg.get_by_role("tab", name="Settings").is_visible()
    finally:
        ctx.close()


@pytest.mark.browser
@pytest.mark.slow  # a server of its own
def test_theme_light_flag_and_gradio_theme(browser: Any, tmp_path: Path) -> None:
    write(tmp_path / "config.json", {"theme_mode": "dark", "gradio_theme": "Soft"})
    (tmp_path / "ckpt").mkdir()
    server = start_server(tmp_path, tmp_path / "ckpt", "--skip-load-model-at-start", "--theme", "light",
                          nowebui=False)
    try:
        head = served_config(server)["head"]
        assert page_mapping(head) == {} and "window.localization;" not in head
        assert "Montserrat" in requests.get(server.url + "/theme.css", timeout=10).text  # Soft's font
        ctx, pg, errors = open_page(browser, server, "dark")  # the browser prefers dark, the flag says light
        try:
            pg.wait_for_function("() => location.search.includes('__theme=light')")
            assert not pg.evaluate("() => document.body.classList.contains('dark')")
            assert pg.locator("#txt2img_generate").inner_text().strip() == "Generate"
            assert not errors, errors
        finally:
            ctx.close()
    finally:
        stop_server(server)
