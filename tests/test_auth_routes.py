"""Accounts on every route: a real server with page and API accounts (`--gradio-auth`,
`--gradio-auth-path`, `--api-auth`, `--admin`) and an extension that adds a route of its own.

The route matrix walks every route the server's app has (built by tests/route_listing.py exactly as
the server builds it: our API, the page's own routes, Gradio's mounted routes, the extension's) and
asks each without credentials (401, except the explicit allow-list of the log-in page and its
assets) and with them (anything but 401)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from conftest import ROOT, Server, open_page, stop_server, tiny_ui_server

# a page server with a model (~25 s to start on 2 cores), the route listing (~15 s) and two browser
# log-ins: the whole module is in the slow group (tests/test_accounts.py has the fast checks)
pytestmark = pytest.mark.slow

ALICE = ("alice", "s3cr:et")   # page only (--gradio-auth), an admin (--admin); her password has ':'
BOB = ("bob", "b0b-pw")        # page (from the file) and API, not an admin
CAROL = ("carol", "c:a:rol")   # page only, from the file, on the same line as bob
DAVE = ("dave", "d4ve")        # page only, the file's second line
ROBOT = ("robot", "r0:b0t")    # API only (--api-auth), an admin
ERIN = ("erin", "e-pw")        # API only, not an admin
PASSWORDS = [p for _, p in (ALICE, BOB, CAROL, DAVE, ROBOT, ERIN)]

# What answers without an account: the page (it shows Gradio's log-in form), the log-in route and
# Gradio's static assets. Everything else must be 401.
ALLOWED_WITHOUT_ACCOUNT = {"/", "/login", "/login/", "/favicon.ico", "/theme.css", "/gradio_api/theme.css",
                           "/manifest.json", "/robots.txt", "/pwa_icon", "/pwa_icon/{size}",
                           "/assets/{path:path}", "/static/{path:path}", "/svelte/{path:path}"}

EXTENSION = '''
from modules import script_callbacks


def on_app_started(demo, app):
    @app.get("/route-ext/hello")
    def hello():
        return {"hello": "from an extension"}


script_callbacks.on_app_started(on_app_started)
'''


def _flags(data: Path) -> list[str]:
    pages = data / "page-accounts.txt"
    # several pairs on one line, a comment, a pair on a line of its own
    pages.write_text(f"{':'.join(BOB)}, {':'.join(CAROL)}\n# the night shift\n{':'.join(DAVE)}\n", encoding="utf-8")
    return ["--api", "--gradio-auth", ":".join(ALICE), "--gradio-auth-path", str(pages),
            "--api-auth", ",".join(":".join(a) for a in (ROBOT, BOB, ERIN)), "--admin", "alice,robot"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("auth")
    ext = data / "extensions" / "route-ext" / "scripts"
    ext.mkdir(parents=True)
    (ext / "route_ext.py").write_text(textwrap.dedent(EXTENSION), encoding="utf-8")
    s = tiny_ui_server(data, *_flags(data), auth=ROBOT)
    yield s
    stop_server(s)


def page_session(server: Server, account: tuple[str, str]) -> requests.Session:
    """A session signed in through the page's log-in route (what the log-in form posts)."""
    s = requests.Session()
    r = s.post(f"{server.url}/login", data={"username": account[0], "password": account[1]}, timeout=10)
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    return s


def test_basic_auth_uses_the_api_accounts(server: Server) -> None:
    url = server.api("sd-models")
    assert requests.get(url, timeout=10).status_code == 401
    r = requests.get(url, auth=("robot", "r0"), timeout=10)  # the password cut at its ':'
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert requests.get(url, auth=("nobody", "r0:b0t"), timeout=10).status_code == 401
    assert requests.get(url, auth=ROBOT, timeout=10).status_code == 200
    assert requests.get(url, auth=BOB, timeout=10).status_code == 200
    # --api-auth was given: the page's accounts are not API accounts
    assert requests.get(url, auth=ALICE, timeout=10).status_code == 401


def test_page_login_uses_the_page_accounts(server: Server) -> None:
    for account in (ALICE, BOB, CAROL, DAVE):  # --gradio-auth and every pair of the file
        s = page_session(server, account)
        assert s.get(server.api("sd-models"), timeout=10).status_code == 200  # the cookie alone
    for name, password in (ROBOT, ("alice", "s3cr"), ("carol", "wrong")):
        r = requests.post(f"{server.url}/login", data={"username": name, "password": password}, timeout=10)
        assert r.status_code == 400 and "Incorrect credentials" in r.text
    # without a session the page is Gradio's log-in form, not the UI
    html = requests.get(server.url + "/", timeout=10).text
    assert '"auth_required":true' in html.replace(" ", "") and "txt2img_prompt" not in html


def test_cmd_flags_never_show_a_credential(server: Server) -> None:
    r = requests.get(server.api("cmd-flags"), auth=ROBOT, timeout=10)
    assert r.status_code == 200
    flags = r.json()
    assert flags["gradio_auth"] == "<redacted>" and flags["api_auth"] == "<redacted>"
    assert flags["gradio_auth_path"].endswith("page-accounts.txt")  # a file name is not a secret
    assert flags["admin"] == "alice,robot"
    for password in PASSWORDS:
        assert password not in r.text


def test_only_admins_change_settings(server: Server) -> None:
    opts = requests.get(server.api("options"), auth=BOB, timeout=10).json()
    r = requests.post(server.api("options"), json={"samples_format": "jpg"}, auth=BOB, timeout=10)
    assert r.status_code == 403 and "only an admin may change settings" in r.json()["detail"]
    r = requests.post(server.api("unload-checkpoint"), auth=BOB, timeout=10)
    assert r.status_code == 403 and "unload the checkpoint" in r.json()["detail"]
    # the page's cookie counts the same: bob signed in on the page is still not an admin
    r = page_session(server, BOB).post(server.api("options"), json={"samples_format": "jpg"}, timeout=10)
    assert r.status_code == 403
    assert requests.get(server.api("options"), auth=BOB, timeout=10).json()["samples_format"] == opts["samples_format"]
    # an admin may, over Basic and over the page's cookie
    r = requests.post(server.api("options"), json={"samples_format": "jpg"}, auth=ROBOT, timeout=10)
    assert r.status_code == 200
    r = page_session(server, ALICE).post(server.api("options"), json={"samples_format": "png"}, timeout=10)
    assert r.status_code == 200
    assert requests.get(server.api("options"), auth=BOB, timeout=10).json()["samples_format"] == "png"


def test_non_admins_train_only_under_their_own_names(server: Server) -> None:
    create = server.api("create/embedding")
    r = requests.post(create, json={"name": "bobs-emb"}, auth=BOB, timeout=60)
    assert r.status_code == 200 and "bobs-emb" in r.json()["info"]
    r = requests.post(create, json={"name": "bobs-emb", "overwrite_old": True}, auth=ERIN, timeout=60)
    assert r.status_code == 403 and "the embedding 'bobs-emb' belongs to bob" in r.json()["detail"]
    images = server.data_dir / "bob-dataset"
    images.mkdir(exist_ok=True)
    from PIL import Image
    Image.new("RGB", (64, 64), "red").save(images / "red.png")
    train = {"embedding_name": "bobs-emb", "data_root": str(images), "steps": 1, "training_width": 64,
             "training_height": 64, "create_image_every": 0, "save_embedding_every": 0}
    r = requests.post(server.api("train/embedding"), json=train, auth=ERIN, timeout=60)
    assert r.status_code == 403 and "belongs to bob" in r.json()["detail"], r.text
    # bob may overwrite his own, an admin anybody's; bob stays the owner
    for account in (BOB, ROBOT):
        r = requests.post(create, json={"name": "bobs-emb", "overwrite_old": True}, auth=account, timeout=60)
        assert r.status_code == 200, r.text
    ledger = json.loads((server.data_dir / "training-owners.json").read_text(encoding="utf-8"))
    assert ledger == {"embedding": {"bobs-emb": "bob"}}


def test_an_a1111_client_with_basic_auth(server: Server) -> None:
    webuiapi = pytest.importorskip("webuiapi")
    host, port = server.url.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler", steps=2)
    api.set_auth(*ROBOT)
    result = api.txt2img(prompt="a red circle", width=64, height=64, seed=3)
    assert result.image.size == (64, 64)
    assert "Steps: 2" in result.info["infotexts"][0]


def test_only_admins_delete_outputs(server: Server) -> None:
    """Outputs have no owners: with accounts, one user must not trash another's pictures."""
    r = requests.post(server.api("txt2img"), json={"prompt": "kept", "steps": 2, "width": 64, "height": 64,
                                                  "seed": 11, "save_images": True}, auth=ERIN, timeout=300)
    assert r.status_code == 200, r.text
    listing = requests.get(f"{server.url}/webui/v1/outputs", params={"kind": "txt2img"}, auth=ERIN, timeout=30).json()
    name = listing["items"][0]["path"]
    url = f"{server.url}/webui/v1/outputs/file"
    r = requests.delete(url, params={"path": name}, auth=ERIN, timeout=30)
    assert r.status_code == 403 and "only an admin may delete images" in r.json()["detail"]
    assert requests.get(url, params={"path": name}, auth=ERIN, timeout=30).status_code == 200  # still there
    r = requests.delete(url, params={"path": name}, auth=ROBOT, timeout=30)
    assert r.status_code == 200 and r.json()["trash"].startswith("trash/")


def test_log_in_on_the_page_and_generate(server: Server, browser: Any) -> None:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    answers: list[tuple[int, str]] = []
    errors: list[str] = []
    pg.on("response", lambda r: answers.append((r.status, r.url)))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(server.url + "/")
        pg.fill("input[type=text]", ALICE[0])
        pg.fill("input[type=password]", ALICE[1])
        pg.get_by_role("button", name="Login").click()
        pg.wait_for_selector("#txt2img_prompt textarea")
        pg.locator("#txt2img_prompt textarea").fill("a red circle")
        for elem_id, value in (("txt2img_steps", 3), ("txt2img_width", 64), ("txt2img_height", 64)):
            box = pg.locator(f"#{elem_id} input[type=number]")
            box.fill(str(value))
            box.press("Enter")
        pg.click("#txt2img_generate")
        pg.wait_for_function("() => (document.querySelector('#txt2img_info')?.innerText || '').includes('Steps: 3')")
        pg.locator("#txt2img_gallery img").first.wait_for()
    finally:
        ctx.close()
    assert not errors, errors
    refused = [a for a in answers if a[0] in (401, 403)]
    assert not refused, refused
    # the page's own calls to our routes went through with the log-in cookie alone
    ours = {re.sub(r"\?.*", "", url.removeprefix(server.url)) for status, url in answers if status == 200}
    assert ours & {"/internal/progress", "/internal/job-progress"}, sorted(ours)


def test_a_non_admin_is_refused_on_the_page(server: Server, browser: Any) -> None:
    with open_page(browser, server.url, ready="input[type=password]") as pg:
        pg.fill("input[type=text]", BOB[0])
        pg.fill("input[type=password]", BOB[1])
        pg.get_by_role("button", name="Login").click()
        pg.wait_for_selector("#txt2img_prompt textarea")
        pg.get_by_role("tab", name="Settings").click()
        pg.click("#settings_reload_ui")
        pg.wait_for_function("() => document.querySelector('#settings_result').innerText.includes('Only an admin')")
        assert "bob is not one" in pg.inner_text("#settings_result")


def test_page_sessions_outlive_a_reload_of_the_ui(tmp_path: Path) -> None:
    """Reload UI builds a new app (a new Gradio app) from the same services: whoever was signed in
    stays signed in."""
    from webui.app import build_app
    from webui.cli import parse_args, resolve_paths
    from webui.services.container import build_services
    from webui.serving.page_login import mounted_gradio_app

    args = parse_args(["--data-dir", str(tmp_path), "--gradio-auth", ":".join(ALICE), "--skip-load-model-at-start"])
    svc = build_services(args, resolve_paths(args))
    before = mounted_gradio_app(build_app(svc, args))
    before.tokens["tok"] = "alice"  # what Gradio's log-in route records
    after = mounted_gradio_app(build_app(svc, args))
    assert after is not before and after.cookie_id == before.cookie_id and after.tokens["tok"] == "alice"
    cookie = f"access-token-unsecure-{after.cookie_id}=tok".encode()
    assert svc.page_login.user({"headers": [(b"cookie", cookie)]}) == "alice"


# ---------------------------------------------------------------- the route matrix (last: it presses
# every route once, interrupt and log-out included)

def _all_routes(server: Server) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "route_listing.py"), "--data-dir",
                          str(server.data_dir), "--ckpt-dir", str(server.data_dir / "models" / "Stable-diffusion"),
                          *_flags(server.data_dir)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _sample(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _ask(session: requests.Session, method: str, url: str, **kw: Any) -> int:
    # stream: event streams and the dev-reload route answer their status at once, then stay open
    with session.request(method, url, allow_redirects=False, stream=True, timeout=30, **kw) as r:
        return r.status_code


def test_every_route_needs_an_account(server: Server) -> None:
    routes = _all_routes(server)
    paths = {r["path"] for r in routes}
    # the listing really holds every kind of route
    assert {"/sdapi/v1/txt2img", "/controlnet/version", "/internal/progress", "/internal/pending-tasks",
            "/docs", "/openapi.json", "/route-ext/hello", "/webui/v1/outputs", "/notification.mp3",
            "/gradio_api/queue/join", "/gradio_api/upload", "/gradio_api/file={path_or_url:path}",
            "/config", "/login"} <= paths, sorted(paths)
    assert ALLOWED_WITHOUT_ACCOUNT <= paths  # the allow-list names no route that does not exist

    anonymous = requests.Session()
    api_user = requests.Session()
    api_user.auth = BOB  # a non-admin: admin-only routes answer 403 (let in, then refused)
    page_user = page_session(server, BOB)
    logout = [r for r in routes if r["path"] == "/logout"]
    open_wrong: list[str] = []
    closed_wrong: list[str] = []
    for route in [r for r in routes if r["path"] != "/logout"] + logout:  # log-out last: it ends the session
        url = server.url + _sample(route["path"])
        for method in route["methods"]:
            label = f"{method} {route['path']}"
            status = _ask(anonymous, method, url)
            if route["path"] in ALLOWED_WITHOUT_ACCOUNT:
                if status == 401:
                    open_wrong.append(f"{label}: 401 without an account")
            elif status != 401:
                closed_wrong.append(f"{label}: {status} without an account")
            # with an account: Basic for the API's routes, the page's cookie for every route. A GET
            # that needs no parameters answers 200; anything else (a POST without its body, a made-up
            # file name) must only not be 401: a 4xx from the route itself means it let us in.
            plain_get = method in ("GET", "HEAD") and "{" not in route["path"] and not route["required_query"]
            askers = [("cookie", page_user)] + ([] if _gradio(route) else [("basic", api_user)])
            for how, session in askers:
                status = _ask(session, method, url)
                if status == 401 or (plain_get and status not in OK_PLAIN_GET.get(route["path"], (200,))):
                    closed_wrong.append(f"{label} with {how}: {status}")
    assert not open_wrong, open_wrong
    assert not closed_wrong, "\n".join(closed_wrong)


# Plain GETs that answer something else than 200 with an account, and why
OK_PLAIN_GET: dict[str, tuple[int, ...]] = {
    "/logout": (302,),                 # Gradio's log-out: back to the log-in page
    "/gradio_api/runs": (404,),        # run history is off (run_history=False)
    "/gradio_api/runs/": (404,),
    "/monitoring": (403,),             # Gradio's monitoring dashboard is off
    "/gradio_api/vibe-code": (403,),   # Gradio's vibe-coding editor is off
    "/gradio_api/vibe-code/": (403,),
    "/notification.mp3": (404,),       # served only when the data folder has one (A1111)
    "/pwa_icon": (404,),               # the page is no PWA
}


def _gradio(route: dict[str, Any]) -> bool:
    """Routes Gradio serves: its own log-in decides there (HTTP Basic is for our API)."""
    ours = ("/sdapi/", "/controlnet/", "/internal/", "/webui/", "/docs", "/redoc", "/openapi.json",
            "/notification.mp3", "/route-ext/")
    return not route["path"].startswith(ours)
