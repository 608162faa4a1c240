"""Accounts from A1111's flags, the page's session lookup, cmd-flags redaction and the admin rule,
in-process (the real server with accounts is tests/test_auth_routes.py)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from webui.cli import parse_args
from webui.serving.accounts import (NO_ACCOUNTS, REDACTED, AccountsError, load_accounts, parse_pairs,
                                    redact_flags)
from webui.serving.page_login import PageLogin, is_open_page_path
from webui.ui.admin_gate import admin_refusal


def test_a_password_may_hold_colons_and_a_line_several_pairs() -> None:
    assert parse_pairs("alice:s3cr:et, bob:b0b\n# comment\n\ncarol::x", "t") == {
        "alice": "s3cr:et", "bob": "b0b", "carol": ":x"}
    for bad in ("alice", "alice:", ":pw"):
        with pytest.raises(AccountsError, match="expected user:password"):
            parse_pairs(bad, "--gradio-auth")


def test_flags_files_defaults_and_admins(tmp_path: Path) -> None:
    f = tmp_path / "accounts.txt"
    f.write_text("bob:b0b,carol:c:a:rol\ndave:d4ve\n", encoding="utf-8")
    acc = load_accounts(parse_args(["--gradio-auth", "alice:s3cr:et", "--gradio-auth-path", str(f)]))
    assert acc.names() == ["alice", "bob", "carol", "dave"]
    # only page accounts given: the API takes the same ones; the first account is the admin
    assert acc.check_api("carol", "c:a:rol") and acc.check_ui("dave", "d4ve")
    assert acc.admins == {"alice"} and acc.is_admin("alice") and not acc.is_admin("bob")
    assert not acc.check_ui("carol", "c:a") and not acc.check_ui("nobody", "x") and not acc.check_ui("dave", "")

    acc = load_accounts(parse_args(["--gradio-auth", "alice:pw", "--api-auth", "robot:r0:b0t",
                                    "--admin", "robot"]))
    assert acc.check_api("robot", "r0:b0t") and not acc.check_api("alice", "pw")
    assert not acc.check_ui("robot", "r0:b0t") and acc.admins == {"robot"}
    with pytest.raises(AccountsError, match="--admin names no account: eve"):
        load_accounts(parse_args(["--gradio-auth", "alice:pw", "--admin", "eve"]))
    with pytest.raises(AccountsError, match="No such file"):
        load_accounts(parse_args(["--gradio-auth-path", str(tmp_path / "missing.txt")]))
    assert not load_accounts(parse_args([])).enabled and NO_ACCOUNTS.is_admin(None)


def test_cmd_flags_are_redacted() -> None:
    args = parse_args(["--gradio-auth", "alice:s3cr:et", "--api-auth", "robot:r0:b0t"])
    acc = load_accounts(args)
    flags = {"gradio_auth": args.gradio_auth, "api_auth": args.api_auth, "gradio_auth_path": None,
             "hypernetwork_dir": "r0:b0t", "listen": False, "extra": ["a", "s3cr:et"]}
    out = redact_flags(flags, acc)
    assert out == {"gradio_auth": REDACTED, "api_auth": REDACTED, "gradio_auth_path": None,
                   "hypernetwork_dir": REDACTED, "listen": False, "extra": ["a", REDACTED]}
    assert redact_flags({"gradio_auth": None}, NO_ACCOUNTS) == {"gradio_auth": None}


def test_only_the_log_in_page_and_its_assets_are_open() -> None:
    for path in ("/", "/login", "/assets/index-abc.js", "/static/fonts/x.woff2", "/theme.css", "/favicon.ico"):
        assert is_open_page_path(path), path
    for path in ("/config", "/gradio_api/queue/join", "/gradio_api/upload", "/gradio_api/file=/etc/passwd",
                 "/sdapi/v1/options", "/internal/progress", "/docs", "/openapi.json", "/assets", "/loginx",
                 "/webui/v1/outputs", "/route-ext/hello"):
        assert not is_open_page_path(path), path


def test_the_page_session_is_read_from_gradios_cookie() -> None:
    login = PageLogin(load_accounts(parse_args(["--gradio-auth", "alice:pw"])))
    assert login.check("alice", "pw") and not login.check("alice", "pw2")
    login.cookie_id, login.tokens = "CID", {"tok1": "alice"}

    def scope(cookie: str) -> dict:
        return {"headers": [(b"cookie", cookie.encode())]}

    assert login.user(scope("access-token-unsecure-CID=tok1")) == "alice"
    assert login.user(scope("other=1; access-token-CID=tok1")) == "alice"
    assert login.user(scope("access-token-CID=forged")) is None
    assert login.user(scope("access-token-OTHERAPP=tok1")) is None  # another app's cookie name
    assert login.user({"headers": []}) is None


def test_the_page_refuses_admin_actions_to_others_only_with_accounts() -> None:
    svc = SimpleNamespace(accounts=load_accounts(parse_args(["--gradio-auth", "alice:pw,bob:pw2"])))
    assert admin_refusal(svc, SimpleNamespace(username="alice"), "change settings") is None  # type: ignore[arg-type]
    msg = admin_refusal(svc, SimpleNamespace(username="bob"), "change settings")  # type: ignore[arg-type]
    assert msg == "Only an admin may change settings; bob is not one."
    alone = SimpleNamespace(accounts=NO_ACCOUNTS)  # without accounts everybody may (A1111)
    assert admin_refusal(alone, None, "change settings") is None  # type: ignore[arg-type]


def test_training_names_belong_to_who_claimed_them(tmp_path: Path) -> None:
    from webui.serving.caller import Caller
    from webui.services.training_owners import NotOwnerError, TrainOwners

    owners = TrainOwners(tmp_path / "training-owners.json")
    bob, erin = Caller("bob", False, True), Caller("erin", False, True)
    admin = Caller("alice", True, True)
    owners.claim(bob, "embedding", "bobs", exists=False)
    owners.claim(bob, "embedding", "bobs", exists=True)  # his own, again
    with pytest.raises(NotOwnerError, match="the embedding 'bobs' belongs to bob"):
        owners.claim(erin, "embedding", "bobs", exists=True)
    with pytest.raises(NotOwnerError, match="belongs to the admins"):  # there before anyone claimed it
        owners.claim(erin, "lora", "old", exists=True)
    owners.claim(erin, "lora", "bobs", exists=False)  # another kind, another name
    owners.claim(admin, "embedding", "bobs", exists=True)  # an admin may; bob still owns it
    assert owners.owner("embedding", "bobs") == "bob" and owners.owner("lora", "bobs") == "erin"
    # without accounts nothing is checked or written
    TrainOwners(tmp_path / "none.json").claim(Caller("api", True, False), "embedding", "x", exists=True)
    assert not (tmp_path / "none.json").exists()
    (tmp_path / "training-owners.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(NotOwnerError, match="cannot be read"):
        owners.claim(bob, "embedding", "new", exists=False)
    owners.claim(admin, "embedding", "new", exists=False)  # admins keep working


def test_only_admins_stop_the_server_over_the_api() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.admin import admin_only
    from webui.api.system_routes import build_server_router
    from webui.serving.auth_guard import AuthGuard

    accounts = load_accounts(parse_args(["--api-auth", "robot:r0:b0t,bob:b0b", "--admin", "robot"]))
    stopped: list[bool] = []
    app = FastAPI()
    app.include_router(build_server_router(lambda: stopped.append(True)),
                       dependencies=[admin_only(accounts, "stop or restart the server")])
    app.add_middleware(AuthGuard, accounts=accounts)  # type: ignore[arg-type]
    client = TestClient(app)
    assert client.post("/sdapi/v1/server-stop").status_code == 401
    r = client.post("/sdapi/v1/server-stop", auth=("bob", "b0b"))
    assert r.status_code == 403 and "only an admin may stop or restart the server" in r.json()["detail"]
    assert not stopped
    r = client.post("/sdapi/v1/server-stop", auth=("robot", "r0:b0t"))
    assert r.status_code == 200 and r.text == "Stopping." and stopped == [True]
