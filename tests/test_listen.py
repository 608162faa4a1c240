"""`--listen` hardening on a real server: folders named by requests confined to the data dir,
extension enabling refused, request bodies limited, Gradio serving the outputs folder only,
foreign-origin and unknown-Host requests refused (always, also on localhost), and HTTPS with a
self-signed pair made here.

The exposed server binds 127.0.0.2 with `--server-name` (reachable only from this machine on Linux,
but any name other than localhost counts as exposed), never 0.0.0.0.
"""
from __future__ import annotations

import base64
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from PIL import Image

from conftest import BROWSER_ARGS, CHROMIUM, ROOT, Server, free_port, open_page, stop_server, wait_for_model
from webui.cli import parse_args
from webui.serving.network import allowed_hosts, exposure_warning
from webui.serving.origin_guard import OriginPolicy
from webui.serving.path_guard import PathRefused, check_server_path

EXPOSED_HOST = "127.0.0.2"


def make_cert(folder: Path, ip: str) -> tuple[Path, Path]:
    """A self-signed key and certificate for `ip` (openssl's command line)."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}"],
                   check=True, capture_output=True)
    return key, cert


def png_bytes(size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), "red").save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ the rules, in-process

def test_path_rule_confines_only_an_exposed_server(tmp_path: Path) -> None:
    data, other = tmp_path / "data", tmp_path / "other"
    (data / "outputs").mkdir(parents=True)
    other.mkdir()
    (data / "link").symlink_to(other)  # a link inside the data dir that leads out of it
    exposed = ("--listen",)
    assert check_server_path(other, data_dir=data) == other.resolve()  # localhost: any folder
    assert check_server_path(data / "outputs" / "x", data_dir=data, exposed=exposed) == data / "outputs" / "x"
    assert check_server_path("outputs", data_dir=data, exposed=exposed, base=data) == data / "outputs"
    for bad in (other, data / ".." / "other", data / "link" / "x", "~"):
        with pytest.raises(PathRefused, match=r"outside the data dir .*--listen.*--allowed-path"):
            check_server_path(bad, data_dir=data, exposed=exposed)
    assert check_server_path(other / "sub", data_dir=data, allowed=[other], exposed=exposed) == other / "sub"


def test_batch_folders_follow_the_rule(tmp_path: Path) -> None:
    """img2img batch (input, output, mask) and Extras batch-from-directory folders, as the page and
    the services check them before queueing."""
    from webui.services.extras import ExtrasError, ExtrasService
    from webui.services.img2img_batch import check_dirs
    from webui.services.jobs import JobQueue
    from webui.services.txt2img import GenerationError
    from webui.serving.path_guard import PathGuard
    from webui.settings import Settings

    data, other = tmp_path / "data", tmp_path / "other"
    for d in (data / "in", other):
        d.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(d / "a.png")
    guard = PathGuard(data, exposed=("--listen",))
    assert check_dirs(str(data / "in"), str(data / "out"), "", guard)[0] == data / "in"
    assert check_dirs(str(other), str(other), str(other), PathGuard(data))[0] == other  # localhost
    for args, what in (((str(other), "", ""), "input directory"), ((str(data / "in"), str(other), ""), "output"),
                       ((str(data / "in"), "", str(other)), "inpaint mask directory")):
        with pytest.raises(GenerationError, match=f"Batch: {what}.*outside the data dir"):
            check_dirs(*args, guard)
    extras = ExtrasService(None, Settings(tmp_path / "config.json"), data / "outputs", JobQueue())  # type: ignore[arg-type]
    extras.path_guard = guard
    assert extras.directory_files(str(data / "in"), str(data / "out")) == [data / "in" / "a.png"]
    for args in ((str(other), ""), (str(data / "in"), str(other))):
        with pytest.raises(ExtrasError, match="outside the data dir"):
            extras.directory_files(*args)


def test_origin_and_host_rules() -> None:
    policy = OriginPolicy(frozenset({"localhost", "127.0.0.1", "sd.example"}))
    own = {"host": "127.0.0.1:7860"}
    assert policy.refusal("POST", own) is None  # no Origin: not a browser's cross-site request
    assert policy.refusal("POST", {**own, "origin": "http://127.0.0.1:7860"}) is None
    for origin in ("http://127.0.0.1:8000", "http://localhost:7860", "null", "https://evil.example"):
        status, text = policy.refusal("POST", {**own, "origin": origin}) or (0, "")
        assert status == 403 and "another site" in text, origin
    assert policy.refusal("GET", {**own, "origin": "http://127.0.0.1:8000"}) is None  # reading is fine
    assert policy.refusal("DELETE", {**own, "sec-fetch-site": "cross-site"})[0] == 403
    assert policy.refusal("POST", {**own, "origin": "http://127.0.0.1:8000"}, websocket=False)[0] == 403
    # Host: IP addresses and known names only (a DNS-rebinding page sends its own name)
    assert policy.refusal("GET", {"host": "evil.example:7860"})[0] == 421
    for host in ("192.168.1.5:7860", "[::1]:7860", "SD.example", "localhost"):
        assert policy.refusal("GET", {"host": host}) is None, host
    # behind a TLS proxy: the default ports are the same origin whatever the scheme seen here
    assert policy.refusal("POST", {"host": "sd.example", "origin": "https://sd.example"}) is None
    cors = OriginPolicy(None, ("http://app.example:3000",), r"https://.*\.trusted\.example")
    assert cors.refusal("POST", {**own, "origin": "http://app.example:3000"}) is None
    assert cors.refusal("POST", {**own, "origin": "https://a.trusted.example"}) is None
    assert cors.refusal("POST", {**own, "origin": "https://trusted.example.evil"})[0] == 403
    assert cors.refusal("GET", {"host": "anything.example"}) is None  # --allowed-host '*'


def test_flags_warning_and_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listen = parse_args(["--listen", "--allowed-host", "sd.example"])
    text = exposure_warning(listen, accounts_enabled=False) or ""
    assert "--listen" in text and "NO accounts" in text and "--gradio-auth" in text
    assert exposure_warning(listen, accounts_enabled=True) is None and exposure_warning(parse_args([]), False) is None
    assert {"sd.example", "localhost", socket.gethostname().lower()} <= set(allowed_hosts(listen) or ())
    assert allowed_hosts(parse_args(["--allowed-host", "*"])) is None
    assert parse_args([]).max_upload_mb == 50
    key, cert = make_cert(tmp_path, "127.0.0.1")
    for argv, message in ((["--tls-keyfile", str(key)], "go together"),
                          (["--tls-keyfile", str(cert), "--tls-certfile", str(cert)], "cannot use this pair"),
                          (["--max-upload-mb", "0"], "at least 1"),
                          (["--cors-allow-origins-regex", "("], "--cors-allow-origins-regex")):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------ an exposed API server (HTTPS)

def launch(data: Path, *extra: str, host: str = EXPOSED_HOST, cert: Path | None = None,
           nowebui: bool = True, ready: str = "/sdapi/v1/sd-models") -> tuple[Server, requests.Session]:
    """The real server bound to `host` (conftest's start_server knows 127.0.0.1 only), once `ready` answers."""
    port = free_port()
    log = data / f"server-{port}.log"
    cmd = [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--data-dir", str(data),
           "--server-name", host, *extra, *(["--nowebui"] if nowebui else [])]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    http = requests.Session()
    http.trust_env = False  # never through a proxy
    if cert is not None:
        http.verify = str(cert)
    server = Server(proc, f"{'https' if cert else 'http'}://{host}:{port}", data, log)
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None or time.time() > deadline:
            stop_server(server)
            raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")
        try:
            if http.get(server.url + ready, timeout=2).status_code == 200:
                return server, http
        except requests.RequestException:
            pass
        time.sleep(0.3)


class Exposed:
    def __init__(self, server: Server, http: requests.Session, allowed: Path, outside: Path) -> None:
        self.server, self.http, self.allowed, self.outside = server, http, allowed, outside

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.http.post(self.server.url + path, json=body, timeout=30, **kw)


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposed]:
    """The API on 127.0.0.2 over HTTPS, no accounts, a 1 MB body limit, one allowed folder."""
    root = tmp_path_factory.mktemp("listen")
    data, allowed, outside = root / "data", root / "allowed", root / "outside"
    for d in (data / "models" / "Stable-diffusion", allowed, outside):
        d.mkdir(parents=True)
    # set by the owner before the server was exposed: kept, and may be posted back unchanged
    (data / "config.json").write_text(json.dumps({"outdir_txt2img_grids": str(outside)}), encoding="utf-8")
    key, cert = make_cert(root, EXPOSED_HOST)
    server, http = launch(data, "--skip-load-model-at-start", "--max-upload-mb", "1", "--allowed-path", str(allowed),
                          "--tls-keyfile", str(key), "--tls-certfile", str(cert),
                          "--cors-allow-origins", "http://app.example:3000", cert=cert)
    try:
        yield Exposed(server, http, allowed, outside)
    finally:
        http.close()
        stop_server(server)


def test_exposed_server_warns_at_start_and_serves_https(exposed: Exposed) -> None:
    log = exposed.server.log.read_text()
    assert f"Running on local URL:  https://{EXPOSED_HOST}:" in log  # TLS: the printed URL says https
    assert "WARNING: the server is reachable from the network (--server-name 127.0.0.2) and has NO accounts" in log
    assert "--gradio-auth user:password" in log
    assert exposed.http.get(exposed.server.url + "/internal/ping", timeout=10).json() == {}  # verified by the cert
    with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust it is told so
        requests.get(exposed.server.url + "/internal/ping", timeout=10)


def test_exposed_server_confines_output_folders_and_refuses_extensions(exposed: Exposed) -> None:
    data = exposed.server.data_dir
    r = exposed.post("/sdapi/v1/options", {"outdir_txt2img_samples": str(exposed.outside)})
    assert r.status_code == 400 and "is outside the data dir" in r.json()["detail"], r.text
    held = exposed.http.get(exposed.server.url + "/sdapi/v1/options", timeout=10).json()["outdir_txt2img_grids"]
    assert held == str(exposed.outside)
    assert exposed.post("/sdapi/v1/options", {"outdir_txt2img_grids": held}).status_code == 200
    r = exposed.post("/sdapi/v1/options", {"outdir_save": "../escape"})  # relative to the data dir
    assert r.status_code == 400 and "outdir_save" in r.json()["detail"], r.text
    for ok in (str(data / "outputs" / "mine"), str(exposed.allowed / "grids")):
        assert exposed.post("/sdapi/v1/options", {"outdir_grids": ok}).status_code == 200
        assert exposed.http.get(exposed.server.url + "/sdapi/v1/options", timeout=10).json()["outdir_grids"] == ok
    # a generation's override_settings follow the same rule, refused before anything is queued
    r = exposed.post("/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                           "override_settings": {"outdir_samples": str(exposed.outside)}})
    assert r.status_code in (400, 422) and "outside the data dir" in r.text, r.text
    assert not any(exposed.outside.iterdir())
    r = exposed.post("/sdapi/v1/options", {"disabled_extensions": []})  # enabling extensions runs their code
    assert r.status_code == 403 and "--enable-insecure-extension-access" in r.json()["detail"], r.text


def test_bodies_over_the_upload_limit_get_413(exposed: Exposed) -> None:
    small = base64.b64encode(png_bytes()).decode()  # a legitimate image under the limit still works
    r = exposed.post("/sdapi/v1/png-info", {"image": "data:image/png;base64," + small})
    assert r.status_code == 200, r.text
    big = {"image": "data:image/png;base64," + "A" * (1024 * 1024 + 100)}
    r = exposed.post("/sdapi/v1/png-info", big)
    assert r.status_code == 413 and "larger than 1 MB" in r.json()["detail"] and "--max-upload-mb" in r.text
    # a chunked body (no Content-Length) is counted as it streams
    r = exposed.http.post(exposed.server.url + "/sdapi/v1/png-info", data=(b"x" * 65536 for _ in range(20)),
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "larger than 1 MB" in r.text


def test_foreign_origins_and_unknown_hosts_are_refused(exposed: Exposed) -> None:
    url = exposed.server.url  # https://127.0.0.2:<port>
    r = exposed.post("/sdapi/v1/options", {}, headers={"Origin": "http://127.0.0.2:8000"})
    assert r.status_code == 403 and "another site" in r.json()["detail"]
    r = exposed.post("/sdapi/v1/options", {}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert exposed.post("/sdapi/v1/options", {}, headers={"Origin": url, "Sec-Fetch-Site": "same-origin"}).ok
    r = exposed.http.get(url + "/sdapi/v1/options", headers={"Host": "rebind.example"}, timeout=10)
    assert r.status_code == 421 and "--allowed-host" in r.json()["detail"]
    r = exposed.http.get(url + "/sdapi/v1/options", headers={"Origin": "http://evil.example"}, timeout=10)
    assert r.status_code == 200 and "access-control-allow-origin" not in {k.lower() for k in r.headers}
    # an origin given with --cors-allow-origins may call it: its preflight and its POST are answered
    app = "http://app.example:3000"
    r = exposed.http.options(url + "/sdapi/v1/options", timeout=10, headers={
        "Origin": app, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 200 and r.headers.get("access-control-allow-origin") == app
    r = exposed.post("/sdapi/v1/options", {}, headers={"Origin": app, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200 and r.headers.get("access-control-allow-origin") == app
    r = exposed.http.options(url + "/sdapi/v1/options", timeout=10, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}


# ------------------------------------------------------------------ a page of another site, in chromium

ATTACK_PAGE = """<!doctype html><html><body><script>
window.attack = async (app) => {
  const body = JSON.stringify({prompt: "stolen", steps: 1, width: 64, height: 64});
  const out = {};
  try {
    const r = await fetch(app + "/sdapi/v1/txt2img", {method: "POST", body, headers: {"Content-Type": "application/json"}});
    out.cors = r.status;
  } catch (e) { out.cors = "blocked"; }
  for (const path of ["/sdapi/v1/txt2img", "/gradio_api/queue/join"]) {  // simple requests: no preflight
    try { await fetch(app + path, {method: "POST", body, mode: "no-cors", headers: {"Content-Type": "text/plain"}}); }
    catch (e) { out[path] = String(e); }
  }
  return out;
};
</script></body></html>"""


class AttackSite(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = ATTACK_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow  # a page server with a model and a browser generation: ~60 s on 2 cores
def test_exposed_page_another_sites_page_and_gradio_files(browser: Any, tmp_path: Path) -> None:
    """On a page server bound to 127.0.0.2: the banner, a page served from another port that tries
    to generate (refused, nothing runs), the own page generating, and what Gradio's /file= serves."""
    from tiny_models import make_tiny_checkpoint

    data = tmp_path / "data"
    ckpt_dir = data / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    make_tiny_checkpoint(ckpt_dir / "tiny-sd1.safetensors", family="sd1")
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AttackSite)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    server, http_ = launch(data, "--api", "--max-upload-mb", "1", nowebui=False)
    outputs = data / "outputs"
    # the session's chromium resolves only localhost and 127.0.0.1; this one reaches 127.0.0.2 too
    args = [a.replace("EXCLUDE 127.0.0.1", f"EXCLUDE 127.0.0.1, EXCLUDE {EXPOSED_HOST}") for a in BROWSER_ARGS]
    assert any(EXPOSED_HOST in a for a in args), BROWSER_ARGS
    browser = browser.browser_type.launch(executable_path=CHROMIUM, args=args, headless=True)
    try:
        wait_for_model(server)
        ctx = browser.new_context()
        try:
            pg = ctx.new_page()
            seen: list[tuple[str, str, int]] = []
            pg.on("response", lambda r: seen.append((r.request.method, r.url, r.status)))
            pg.goto(f"http://127.0.0.1:{site.server_address[1]}/")
            result = pg.evaluate("(app) => window.attack(app)", server.url)
            assert result == {"cors": "blocked"}, result  # its preflight got no CORS headers
            pg.wait_for_timeout(500)  # the response events reach Python after the page's promise
            for path in ("/sdapi/v1/txt2img", "/gradio_api/queue/join"):  # reached the server, refused
                assert ("POST", server.url + path, 403) in seen, seen
        finally:
            ctx.close()
        assert not list(outputs.rglob("*.png")) if outputs.exists() else True  # nothing ran
        assert http_.get(server.url + "/internal/pending-tasks", timeout=10).json()["size"] == 0

        with open_page(browser, server.url) as page:  # the own page: a banner, and it generates
            assert "without accounts" in page.inner_text("#exposure_warning")
            page.locator("#txt2img_prompt textarea").fill("a red circle")
            for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
                box = page.locator(f"#{elem} input[type=number]")
                box.fill(str(value))
                box.press("Enter")
            page.click("#txt2img_generate")
            page.wait_for_function("() => (document.querySelector('#txt2img_info') || {}).innerText"
                                   " && document.querySelector('#txt2img_info').innerText.includes('Steps: 2')")
            # the Settings tab refuses an output folder outside the data dir, with the reason
            page.get_by_role("tab", name="Settings").click()
            box = page.locator("#setting_outdir_txt2img_samples textarea, #setting_outdir_txt2img_samples input")
            box.first.fill(str(tmp_path / "elsewhere"))
            page.click("#settings_submit")
            page.wait_for_function("() => document.querySelector('#settings_result').innerText"
                                   ".includes('outside the data dir')")
        assert http_.get(server.api("options"), timeout=10).json()["outdir_txt2img_samples"] == ""
        made = sorted(outputs.rglob("*.png"))
        assert made, "the own page's generation saved nothing"

        def get(path: Path, **kw: Any) -> requests.Response:
            return http_.get(f"{server.url}/gradio_api/file={path}", timeout=10, **kw)
        r = get(made[0])
        assert r.status_code == 200 and r.content == made[0].read_bytes()
        (data / "config.json").write_text((data / "config.json").read_text() if (data / "config.json").exists()
                                          else "{}")
        for secret in (data / "config.json", ckpt_dir / "tiny-sd1.safetensors", outputs / ".." / "config.json"):
            assert get(secret).status_code == 403, secret
        r = http_.get(server.url + "/config", headers={"Origin": "http://127.0.0.1:8000"}, timeout=10)
        assert r.ok and "access-control-allow-origin" not in {k.lower() for k in r.headers}  # Gradio's CORS dropped
        r = http_.post(server.url + "/gradio_api/upload", timeout=30,
                       files={"files": ("big.png", b"\0" * (1024 * 1024 + 10), "image/png")})
        assert r.status_code == 413
    finally:
        browser.close()
        http_.close()
        stop_server(server)
        site.shutdown()
