"""The extension loader on small extensions written here in A1111's layout (native script API):
preload flags, install.py once and again when it changes, scripts importing their own package and
`scripts.helper`, always-on and selectable scripts through the pipeline and the HTTP API, a broken
extension beside working ones, Requires and disabled state, JS/CSS in the served page."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import requests

from conftest import Server, start_server, stop_server, wait_for_model
from webui.cli import parse_args
from webui.extensions.discovery import discover
from webui.extensions.loader import load_all, run_install, script_files
from webui.processing.scripts import ScriptCatalog, ScriptRunner


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


ALWAYSON = """
    from webui.processing.scripts import AlwaysVisible, ArgInfo, Script
    from mypackage.words import EXTRA              # the extension's own package
    from scripts.helper import suffix              # a sibling file under scripts/

    class Decorate(Script):
        args = [ArgInfo("Enabled", True)]

        def title(self):
            return "Decorate"

        def show(self, is_img2img):
            return AlwaysVisible

        def process(self, p, enabled):
            if enabled:
                p.all_prompts = [x + EXTRA + suffix() for x in p.all_prompts]
                p.extra_generation_params["Decorated"] = "yes"
"""

SELECTABLE = """
    from webui.processing.scripts import ArgInfo, Script
    from webui.processing.pipeline import process_images

    class Twice(Script):
        args = [ArgInfo("Second seed offset", 100, 0, 1000, 1)]

        def title(self):
            return "Twice"

        def run(self, p, offset):
            first = process_images(p)
            p.seed = first.seed + int(offset)
            second = process_images(p)
            first.images += second.images
            first.infotexts += second.infotexts
            return first
"""


def make_extensions(ext_dir: Path) -> None:
    write(ext_dir / "decorate", {
        "scripts/decorate.py": ALWAYSON,
        "scripts/helper.py": "def suffix():\n    return ', sharp'\n",
        "mypackage/__init__.py": "",
        "mypackage/words.py": "EXTRA = ', on a purple background'\n",
        "preload.py": "def preload(parser):\n    parser.add_argument('--decorate-strength', type=float, default=0.5)\n",
        "install.py": "import pathlib\np = pathlib.Path('installed.txt')\np.write_text(p.read_text() + 'x' if p.exists() else 'x')\n",
        "javascript/decorate.js": "window.decorateLoaded = 'yes';\n",
        "style.css": "#decorate-marker { color: rgb(1, 2, 3); }\n",
    })
    write(ext_dir / "twice", {"scripts/twice.py": SELECTABLE})
    write(ext_dir / "broken", {"scripts/broken.py": "import no_such_module_here\n",
                               "install.py": "raise SystemExit('cannot install')\n"})
    write(ext_dir / "needs-other", {"metadata.ini": "[Extension]\nName=needs-other\nRequires=missing-one|also-missing\n",
                                    "scripts/x.py": "raise RuntimeError('must not be imported')\n"})


def test_discovery_install_and_loading_in_process(tmp_path: Path) -> None:
    ext_dir = tmp_path / "extensions"
    make_extensions(ext_dir)
    exts = discover(ext_dir, disabled=["twice"])
    assert [e.name for e in exts] == ["broken", "decorate", "needs-other", "twice"]
    by = {e.name: e for e in exts}
    assert not by["twice"].enabled and not by["needs-other"].enabled
    assert "missing-one|also-missing" in by["needs-other"].errors[0]
    cat = ScriptCatalog(ScriptRunner(False), ScriptRunner(True))
    stamps = tmp_path / "stamps.json"
    load_all(exts, cat, skip_install=False, stamps_file=stamps)
    assert [s.title() for s in cat.txt2img.alwayson] == ["Decorate"]
    assert (ext_dir / "decorate" / "installed.txt").read_text() == "x"
    assert any("install.py failed" in e and "cannot install" in e for e in by["broken"].errors)
    assert any("no_such_module_here" in e for e in by["broken"].errors)
    assert by["decorate"].errors == [] and by["decorate"].load_seconds > 0
    assert [p.name for p in by["decorate"].javascript] == ["decorate.js"]
    # install.py runs again only when it changes
    assert run_install(by["decorate"], stamps) is None
    assert (ext_dir / "decorate" / "installed.txt").read_text() == "x"
    (ext_dir / "decorate" / "install.py").write_text("import pathlib\npathlib.Path('installed.txt').write_text('y')\n")
    assert run_install(by["decorate"], stamps) is None
    assert (ext_dir / "decorate" / "installed.txt").read_text() == "y"


def test_metadata_orders_script_files(tmp_path: Path) -> None:
    root = write(tmp_path / "extensions" / "ordered", {
        "scripts/a.py": "", "scripts/b.py": "", "scripts/c.py": "",
        "metadata.ini": "[scripts/a.py]\nAfter=c.py\n"})
    ext = discover(root.parent)[0]
    assert [p.name for p in script_files(ext)] == ["b.py", "c.py", "a.py"]


def test_preload_flag_is_accepted_at_launch(tmp_path: Path) -> None:
    make_extensions(tmp_path / "extensions")
    args = parse_args(["--data-dir", str(tmp_path), "--decorate-strength", "0.9"])
    assert args.decorate_strength == 0.9
    with pytest.raises(SystemExit):  # disabled: its flag is unknown again
        parse_args(["--data-dir", str(tmp_path), "--disable-all-extensions", "--decorate-strength", "0.9"])


@pytest.fixture(scope="module")
def ext_server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Server:
    data = tmp_path_factory.mktemp("extdata")
    make_extensions(data / "extensions")
    server = start_server(data, model_dir, "--ckpt", str(model_dir / "tiny-sd1.safetensors"), nowebui=False)
    wait_for_model(server)
    yield server
    stop_server(server)


BASE = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 5}


def test_extension_scripts_over_the_api(ext_server: Server) -> None:
    scripts = requests.get(ext_server.api("scripts"), timeout=10).json()
    assert "twice" in scripts["txt2img"] and "twice" in scripts["img2img"]
    info = requests.get(ext_server.api("script-info"), timeout=10).json()
    assert any(s["name"] == "decorate" and s["is_alwayson"] for s in info)
    r = requests.post(ext_server.api("txt2img"), json=BASE, timeout=120)
    assert r.status_code == 200
    first = json.loads(r.json()["info"])["infotexts"][0]
    assert first.startswith("a red circle, on a purple background, sharp\n") and "Decorated: yes" in first
    off = requests.post(ext_server.api("txt2img"), json={**BASE, "alwayson_scripts": {"Decorate": {"args": [False]}}},
                        timeout=120)
    assert json.loads(off.json()["info"])["infotexts"][0].startswith("a red circle\n")
    two = requests.post(ext_server.api("txt2img"), json={**BASE, "script_name": "Twice", "script_args": [7]},
                        timeout=120).json()
    texts = json.loads(two["info"])["infotexts"]
    assert len(texts) == 2 and "Seed: 5" in texts[0] and "Seed: 12" in texts[1]
    flags = requests.get(ext_server.api("cmd-flags"), timeout=10).json()
    assert flags["decorate_strength"] == 0.5 and not any(k.startswith("_") for k in flags)


def test_extension_js_and_css_are_in_the_page(ext_server: Server) -> None:
    """Gradio puts the page's head and stylesheet in /config; its front end adds them to the page
    (checked in a browser: window.decorateLoaded is set and the style applies)."""
    config = requests.get(ext_server.url + "/config", timeout=30).json()
    assert "window.decorateLoaded = 'yes';" in config["head"] and "window.gradioApp" in config["head"]
    assert 'data-extension="decorate"' in config["head"]
    assert "#decorate-marker { color: rgb(1, 2, 3); }" in config["css"]
