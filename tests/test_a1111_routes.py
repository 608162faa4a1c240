"""A1111's remaining routes and the README's lists, against the real server (session `api_server`)."""
from __future__ import annotations

import re

import requests

from conftest import ROOT


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README has no '## {title}' section"
    return " ".join(m.group(1).split())


def test_readme_sampler_list_matches_the_samplers_route(api_server) -> None:
    section = _readme_section("Samplers")
    listed = section.split(" (the order of")[0].split(", ")
    served = [s["name"] for s in requests.get(api_server.api("samplers"), timeout=10).json()]
    assert listed == served
    schedules = section.split("schedule types ")[1].split(". ")[0].split(", ")
    served = [s["label"] for s in requests.get(api_server.api("schedulers"), timeout=10).json()]
    assert schedules == served


def test_docs_pages_load_their_assets_from_the_server(api_server) -> None:
    """/docs and /redoc work offline: every script, stylesheet and icon they reference is served here."""
    for page in ("/docs", "/redoc"):
        r = requests.get(api_server.url + page, timeout=10)
        assert r.status_code == 200, page
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
        refs += re.findall(r"""(?:url|spec-url)\s*:\s*["']([^"']+)["']""", r.text)
        assert refs, page
        assert not re.search(r"https?://", r.text.replace("http://www.w3.org", "")), f"{page} links off-site"
        for ref in refs:
            assert ref.startswith("/"), f"{page} references {ref}"
            got = requests.get(api_server.url + ref, timeout=10)
            assert got.status_code == 200 and len(got.content) > 100, ref
        assert any(ref.endswith(".js") for ref in refs), page
    assert requests.get(api_server.url + "/openapi.json", timeout=10).json()["paths"]


def test_sd_modules_face_restorers_ping_and_server_routes_off(api_server) -> None:
    vae_dir = api_server.data_dir / "models" / "VAE"
    modules = requests.get(api_server.api("sd-modules"), timeout=10).json()
    assert isinstance(modules, list)
    listed = {m["filename"] for m in requests.get(api_server.api("sd-vae"), timeout=10).json() if "error" not in m}
    assert {m["filename"] for m in modules} >= listed
    assert all(set(m) == {"model_name", "filename"} for m in modules)
    te = api_server.data_dir / "models" / "text_encoder"
    te.mkdir(parents=True, exist_ok=True)
    (te / "t5-tiny.safetensors").write_bytes(b"x")
    modules = requests.get(api_server.api("sd-modules"), timeout=10).json()
    assert {"model_name": "t5-tiny.safetensors", "filename": str(te / "t5-tiny.safetensors")} in modules
    assert not vae_dir.exists() or all(m["filename"] != str(vae_dir) for m in modules)
    # no face model installed in this data dir: nothing is offered (and nothing downloaded)
    assert requests.get(api_server.api("face-restorers"), timeout=10).json() == []
    assert requests.get(api_server.url + "/internal/ping", timeout=10).json() == {}
    for name in ("server-stop", "server-restart", "server-kill"):  # only with --api-server-stop
        assert requests.post(api_server.api(name), timeout=10).status_code == 404


def test_sysinfo_has_a1111_keys_and_no_secrets(tmp_path, model_dir) -> None:
    import json
    import os

    from conftest import start_server, stop_server

    data = tmp_path / "data"
    data.mkdir()
    (data / "config.json").write_text(json.dumps({"civitai_api_key": "s3cret-key", "jpeg_quality": 91}))
    os.environ["WEBUI_TEST_ENV_MARKER"] = "env-marker-value"
    try:
        server = start_server(data, model_dir, "--api-server-stop")
    finally:
        del os.environ["WEBUI_TEST_ENV_MARKER"]
    try:
        r = requests.get(server.url + "/internal/sysinfo", timeout=60)
        assert r.status_code == 200 and "attachment" not in r.headers.get("content-disposition", "")
        info = r.json()
        for key in ("Platform", "Python", "Version", "Commit", "Script path", "Data path", "Extensions dir",
                    "CPU", "RAM", "Torch env info", "Config", "Commandline"):
            assert key in info, key
        assert info["Data path"] == str(data) and info["Config"]["jpeg_quality"] == 91
        assert info["Config"]["civitai_api_key"] == "<hidden>"
        assert "Environment" not in info
        assert "s3cret-key" not in r.text and "env-marker-value" not in r.text
        assert info["CPU"]["count logical"] >= 1 and info["Torch env info"]["torch_version"]
        d = requests.get(server.url + "/internal/sysinfo-download", timeout=60)
        assert d.status_code == 200 and "attachment" in d.headers["content-disposition"]

        # restart needs a launcher that starts the process again (webui.sh sets SD_WEBUI_RESTART)
        assert requests.post(server.api("server-restart"), timeout=10).status_code == 501
        r = requests.post(server.api("server-stop"), timeout=10)
        assert r.status_code == 200
        assert server.proc.wait(30) == 0  # a clean stop, not a kill
    finally:
        stop_server(server)


def test_server_kill_ends_the_process(tmp_path, model_dir) -> None:
    from conftest import start_server, stop_server

    server = start_server(tmp_path, model_dir, "--api-server-stop", "--skip-load-model-at-start")
    try:
        try:
            requests.post(server.api("server-kill"), timeout=10)
        except requests.ConnectionError:
            pass  # the process may go before the answer is read
        assert server.proc.wait(30) == 0
    finally:
        stop_server(server)


def test_server_restart_leaves_the_restart_file_for_webui_sh(tmp_path, model_dir) -> None:
    import os

    from conftest import start_server, stop_server
    from webui.api.system_routes import RESTART_FILE

    RESTART_FILE.unlink(missing_ok=True)
    os.environ["SD_WEBUI_RESTART"] = "1"  # what webui.sh exports
    try:
        server = start_server(tmp_path, model_dir, "--api-server-stop", "--skip-load-model-at-start")
    finally:
        del os.environ["SD_WEBUI_RESTART"]
    try:
        assert requests.post(server.api("server-restart"), timeout=10).status_code == 200
        assert server.proc.wait(30) == 0 and RESTART_FILE.is_file()
    finally:
        RESTART_FILE.unlink(missing_ok=True)
        stop_server(server)


def test_embeddings_are_listed_before_the_first_load(tmp_path, model_dir) -> None:
    """The list is judged from the files' shapes against the selected checkpoint (tiny SD1: width 32)
    while nothing is loaded, and is the same list once the checkpoint has loaded."""
    import torch
    from safetensors.torch import save_file

    from conftest import start_server, stop_server, wait_for_model

    emb = tmp_path / "models" / "embeddings"
    emb.mkdir(parents=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 32)}, "name": "fits",
                "step": 7}, emb / "fits.pt")
    save_file({"emb_params": torch.randn(3, 48)}, str(emb / "sd2-wide.safetensors"))
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 48)}, str(emb / "xl-pair.safetensors"))
    (emb / "broken.pt").write_bytes(b"not a pickle")
    server = start_server(tmp_path, model_dir, "--skip-load-model-at-start")
    try:
        first = requests.get(server.api("embeddings"), timeout=30).json()
        assert requests.get(server.api("options"), timeout=10).json().get("sd_checkpoint_hash") in (None, "")
        assert first["loaded"] == {"fits": {"step": 7, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                            "shape": 32, "vectors": 2}}
        assert set(first["skipped"]) == {"sd2-wide", "xl-pair", "broken"}
        assert "width 48" in first["skipped"]["sd2-wide"]["reason"]
        assert "SDXL" in first["skipped"]["xl-pair"]["reason"]
        r = requests.post(server.api("options"), timeout=120,
                          json={"sd_model_checkpoint": "tiny-sd1.safetensors"})
        assert r.status_code == 200, r.text
        wait_for_model(server)
        assert requests.get(server.api("embeddings"), timeout=30).json() == first
    finally:
        stop_server(server)
