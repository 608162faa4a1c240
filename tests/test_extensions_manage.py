"""Extensions tab actions (webui.extensions.manage / git): install from a git URL, enable state,
updates, backup/restore, the index of available extensions, the --listen refusal, and
GET /sdapi/v1/extensions over a real server. No network: the "remote" is a local bare repository."""
from __future__ import annotations

import functools
import json
import subprocess
import types
from pathlib import Path

import pytest
import requests

from conftest import start_server, stop_server
from webui.cli import build_parser
from webui.extensions import git, manage
from webui.extensions.manager import ExtensionManager
from webui.settings import OptionInfo, Settings


def run_git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


class Remote:
    """A bare repository (the URL extensions are installed from) and a work clone that pushes to it."""

    def __init__(self, root: Path, name: str, marker: Path, install_ok: bool = True) -> None:
        self.bare = root / "remotes" / f"{name}.git"
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        run_git("init", "--bare", "-q", "-b", "main", str(self.bare))
        self.work = root / "work" / name
        run_git("init", "-q", "-b", "main", str(self.work))
        (self.work / "scripts").mkdir()
        (self.work / "scripts" / "x.py").write_text("VALUE = 1\n")
        body = f"open({str(marker)!r}, 'a').write('ran\\n')\n"
        if not install_ok:
            body += "raise SystemExit('install.py of the broken extension fails on purpose')\n"
        (self.work / "install.py").write_text(body)
        run_git("add", "-A", cwd=self.work)
        run_git("commit", "-qm", "first", cwd=self.work)
        run_git("remote", "add", "origin", str(self.bare), cwd=self.work)
        run_git("push", "-q", "origin", "main", cwd=self.work)

    def commit(self, text: str) -> str:
        (self.work / "scripts" / "x.py").write_text(text)
        run_git("commit", "-qam", text, cwd=self.work)
        run_git("push", "-q", "origin", "main", cwd=self.work)
        return self.head()

    def head(self) -> str:
        return run_git("rev-parse", "main", cwd=self.bare)


def make_manager(data: Path, *flags: str) -> ExtensionManager:
    args = build_parser().parse_args(["--data-dir", str(data), *flags])
    return ExtensionManager(data / "extensions", Settings.load(data / "config.json"), args)


@pytest.fixture
def setup(tmp_path: Path) -> types.SimpleNamespace:
    data = tmp_path / "data"
    data.mkdir()
    marker = tmp_path / "install-marker.txt"
    return types.SimpleNamespace(tmp=tmp_path, data=data, marker=marker,
                                 remote=Remote(tmp_path, "myext", marker), manager=make_manager(data))


# ---------------------------------------------------------------- install

def test_install_from_a_local_bare_repository(setup: types.SimpleNamespace) -> None:
    m = setup.manager
    ext = manage.install(m, str(setup.remote.bare))
    folder = setup.data / "extensions" / "myext"  # the folder name comes from the URL, without .git
    assert Path(ext.path) == folder.resolve() and (folder / "scripts" / "x.py").is_file()
    assert ext.commit_hash == setup.remote.head() and ext.version == ext.commit_hash[:8]
    assert ext.remote == str(setup.remote.bare) and ext.branch == "main" and ext.commit_date > 0
    assert setup.marker.read_text() == "ran\n"  # install.py ran once, in its own process
    assert ext.errors == [] and ext.enabled and m.get("myext") is ext
    assert manage.describe_install(m, ext) == "install.py ran."
    # the clone went through a hidden temporary folder that is gone now
    assert sorted(p.name for p in (setup.data / "extensions").iterdir()) == ["myext"]
    # the loader's record: at the next start install.py does not run again
    stamps = json.loads((setup.data / "cache" / "extensions-installed.json").read_text())
    assert str(folder.resolve()) in stamps
    assert [e.api_entry() for e in m.extensions] == [{
        "name": "myext", "remote": str(setup.remote.bare), "branch": "main", "commit_hash": setup.remote.head(),
        "version": setup.remote.head()[:8], "commit_date": ext.commit_date, "enabled": True}]


def test_install_with_branch_and_folder_name_and_a_failing_install_py(setup: types.SimpleNamespace) -> None:
    r = setup.remote
    run_git("checkout", "-qb", "dev", cwd=r.work)
    (r.work / "scripts" / "x.py").write_text("VALUE = 'dev'\n")
    run_git("commit", "-qam", "dev", cwd=r.work)
    run_git("push", "-q", "origin", "dev", cwd=r.work)
    dev = run_git("rev-parse", "dev", cwd=r.bare)
    ext = manage.install(setup.manager, str(r.bare), "dev", "my-dev-copy")
    assert ext.name == "my-dev-copy" and ext.branch == "dev" and ext.commit_hash == dev

    broken = Remote(setup.tmp, "broken", setup.tmp / "broken-marker.txt", install_ok=False)
    ext = manage.install(setup.manager, "file://" + str(broken.bare))
    assert ext.name == "broken" and (Path(ext.path) / "scripts" / "x.py").is_file()  # it stays installed
    assert ext.errors and ext.errors[0].startswith("install.py failed (exit code 1)")
    assert "fails on purpose" in ext.errors[0]
    assert manage.describe_install(setup.manager, ext).startswith("install.py failed")

    skip = make_manager(setup.data, "--skip-install")
    skip.refresh()
    third = Remote(setup.tmp, "third", setup.tmp / "third-marker.txt")
    ext = manage.install(skip, str(third.bare))
    assert not (setup.tmp / "third-marker.txt").exists()
    assert manage.describe_install(skip, ext) == "install.py was not run (--skip-install)."


@pytest.mark.parametrize("url", ["", "   ", "-oProxyCommand=touch /tmp/pwned", "--upload-pack=touch /tmp/pwned",
                                 "ext::sh -c touch% /tmp/pwned", "fd::17", "ftp://example.com/x.git",
                                 "just-words"])
def test_bad_urls_are_refused(setup: types.SimpleNamespace, url: str) -> None:
    with pytest.raises(manage.ExtensionActionError):
        manage.install(setup.manager, url)
    assert not (setup.data / "extensions").exists() or not any((setup.data / "extensions").iterdir())
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("dirname", ["..", ".", "../evil", "a/b", "/abs/path", ".hidden", "a\\b", "x\0y"])
def test_bad_folder_names_are_refused(setup: types.SimpleNamespace, dirname: str) -> None:
    with pytest.raises(manage.ExtensionActionError, match="folder name"):
        manage.install(setup.manager, str(setup.remote.bare), None, dirname)
    assert not (setup.data / "extensions").exists() or not any((setup.data / "extensions").iterdir())
    assert not (setup.data / "evil").exists()


def test_bad_branch_existing_folder_and_same_url_are_refused(setup: types.SimpleNamespace) -> None:
    m = setup.manager
    with pytest.raises(manage.ExtensionActionError, match="branch"):
        manage.install(m, str(setup.remote.bare), "--orphan")
    with pytest.raises(manage.ExtensionActionError, match="git clone failed"):
        manage.install(m, str(setup.remote.bare), "no-such-branch")
    with pytest.raises(manage.ExtensionActionError, match="git clone failed"):
        manage.install(m, str(setup.tmp / "nothing-here.git"))
    assert not (setup.data / "extensions" / "myext").exists()
    manage.install(m, str(setup.remote.bare))
    with pytest.raises(manage.ExtensionActionError, match="already installed: myext"):
        manage.install(m, str(setup.remote.bare) + "/", None, "second-copy")
    other = Remote(setup.tmp, "other", setup.tmp / "other-marker.txt")
    with pytest.raises(manage.ExtensionActionError, match="already exists"):
        manage.install(m, str(other.bare), None, "myext")
    assert run_git("rev-parse", "HEAD", cwd=setup.data / "extensions" / "myext") == setup.remote.head()


def test_folder_name_from_url() -> None:
    assert git.dirname_from_url("https://github.com/user/sd-webui-foo.git") == "sd-webui-foo"
    assert git.dirname_from_url("https://github.com/user/sd-webui-foo/") == "sd-webui-foo"
    assert git.dirname_from_url("git@github.com:user/bar.git") == "bar"
    assert git.dirname_from_url("/srv/git/baz.git") == "baz"


# ---------------------------------------------------------------- enable state, updates, backup

def test_enable_state_is_saved_in_config_json(setup: types.SimpleNamespace) -> None:
    m = setup.manager
    manage.install(m, str(setup.remote.bare))
    Remote(setup.tmp, "second", setup.tmp / "m2")
    manage.install(m, str(setup.tmp / "remotes" / "second.git"))
    msg = manage.set_enabled(m, ["second"], "none")
    assert msg.startswith("Saved: 1 enabled, 1 disabled")
    config = json.loads((setup.data / "config.json").read_text())
    assert config["disabled_extensions"] == ["myext"] and config["disable_all_extensions"] == "none"
    assert {e.name: e.enabled for e in m.extensions} == {"myext": False, "second": True}
    fresh = make_manager(setup.data)  # as the next start reads it
    fresh.refresh()
    assert {e.name: e.enabled for e in fresh.extensions} == {"myext": False, "second": True}
    manage.set_enabled(m, ["myext", "second"], "all")  # "all": every one off, the per-extension list kept
    assert {e.name: e.enabled for e in m.extensions} == {"myext": False, "second": False}
    assert all(manage.user_enabled(m, e) for e in m.extensions)
    with pytest.raises(manage.ExtensionActionError, match="no installed extension named nope"):
        manage.set_enabled(m, ["nope"])
    with pytest.raises(manage.ExtensionActionError):
        manage.set_enabled(m, [], "everything")


def test_check_for_updates_and_update(setup: types.SimpleNamespace) -> None:
    m = setup.manager
    ext = manage.install(m, str(setup.remote.bare))
    first = ext.commit_hash
    assert manage.check_updates(m) == {"myext": "latest"}
    new = setup.remote.commit("VALUE = 2\n")
    assert manage.check_updates(m) == {"myext": "behind"}
    assert run_git("rev-parse", "HEAD", cwd=Path(ext.path)) == first  # checking changed nothing
    assert manage.update(m) == {"myext": f"myext: updated {first[:8]} → {new[:8]}"}
    ext = m.get("myext")
    assert ext.commit_hash == new and (Path(ext.path) / "scripts" / "x.py").read_text() == "VALUE = 2\n"
    assert manage.check_updates(m) == {"myext": "latest"}
    # a plain folder has no update status; an unreachable remote is an error text, not an exception
    (setup.data / "extensions" / "plain").mkdir()
    manage.refresh(m)
    run_git("remote", "set-url", "origin", str(setup.tmp / "gone.git"), cwd=Path(ext.path))
    found = manage.check_updates(m)
    assert found["plain"] == "unknown" and found["myext"].startswith("error: git ls-remote failed")
    assert m.get("plain").api_entry()["remote"] == "" and m.get("plain").commit_hash is None


def test_backup_and_restore(setup: types.SimpleNamespace) -> None:
    m = setup.manager
    first = manage.install(m, str(setup.remote.bare)).commit_hash
    (setup.data / "extensions" / "plain").mkdir()
    manage.refresh(m)
    state = manage.backup(m)
    json.dumps(state)  # a JSON file as it is
    entry = state["extensions"]["myext"]
    assert {k: entry[k] for k in ("name", "remote", "branch", "commit_hash", "enabled")} == {
        "name": "myext", "remote": str(setup.remote.bare), "branch": "main", "commit_hash": first, "enabled": True}
    assert state["extensions"]["plain"]["commit_hash"] is None

    second = setup.remote.commit("VALUE = 3\n")
    manage.check_updates(m)
    manage.update(m)
    manage.set_enabled(m, ["plain"])
    assert m.get("myext").commit_hash == second and not m.get("myext").enabled

    state["extensions"]["ghost"] = {"name": "ghost", "remote": "https://example.com/ghost.git", "enabled": True}
    lines = manage.restore(m, state)
    assert f"myext: {second[:8]} → {first[:8]}" in lines
    assert any(line.startswith("ghost: in the backup but not installed") for line in lines)
    assert not (setup.data / "extensions" / "ghost").exists()  # restore installs nothing
    ext = m.get("myext")
    assert ext.enabled and ext.commit_hash == first and ext.branch == "main"
    assert json.loads((setup.data / "config.json").read_text())["disabled_extensions"] == []
    assert setup.marker.read_text() == "ran\n"  # no install.py ran again
    assert manage.check_updates(m) == {"myext": "behind", "plain": "unknown"}  # and it can be updated again

    # a hostile backup: a commit that is an option, an extension left out (disabled, as A1111 does)
    bad = {"extensions": {"myext": {"enabled": True, "commit_hash": "--upload-pack=touch /tmp/pwned"}}}
    lines = manage.restore(m, bad)
    assert any("not a commit hash" in line for line in lines) and "plain: not in the backup; disabled" in lines
    assert not Path("/tmp/pwned").exists() and m.get("myext").commit_hash == first
    with pytest.raises(manage.ExtensionActionError, match="not an extensions backup"):
        manage.restore(m, ["not", "a", "backup"])


# ---------------------------------------------------------------- the refusal

def test_guard_rule() -> None:
    p = build_parser()
    assert manage.is_guarded(p.parse_args([])) is None
    assert manage.is_guarded(p.parse_args(["--server-name", "127.0.0.1"])) is None
    assert manage.is_guarded(p.parse_args(["--server-name", "localhost"])) is None
    assert "--listen" in manage.is_guarded(p.parse_args(["--listen"]))
    assert "--server-name 0.0.0.0" in manage.is_guarded(p.parse_args(["--server-name", "0.0.0.0"]))
    assert "--server-name my-box" in manage.is_guarded(p.parse_args(["--server-name", "my-box"]))
    assert manage.is_guarded(p.parse_args(["--listen", "--enable-insecure-extension-access"])) is None


def test_listen_server_refuses_every_action(setup: types.SimpleNamespace) -> None:
    """A server started with --listen (bound to 0.0.0.0) lists extensions but refuses to change them."""
    manage.install(setup.manager, str(setup.remote.bare))
    state = manage.backup(setup.manager)
    ckpt = setup.tmp / "ckpt"
    ckpt.mkdir()
    flags = ("--listen", "--skip-load-model-at-start")
    server = start_server(setup.data, ckpt, *flags)
    try:
        listed = requests.get(server.api("extensions"), timeout=10).json()
        assert [(e["name"], e["enabled"]) for e in listed] == [("myext", True)]
        # the API has no install/enable routes at all (A1111 has none either)
        assert requests.post(server.api("extensions"), json={}, timeout=10).status_code == 405
        # nor can POST /options switch extensions on or off
        for body in ({"disabled_extensions": []}, {"disable_all_extensions": "none"}):
            r = requests.post(server.api("options"), json=body, timeout=10)
            assert r.status_code == 403 and "--enable-insecure-extension-access" in r.json()["detail"]
    finally:
        stop_server(server)
    # the same flags as that server, as its Extensions tab sees them
    m = make_manager(setup.data, *flags)
    m.refresh()
    other = Remote(setup.tmp, "other", setup.tmp / "other-marker.txt")
    for action in (lambda: manage.install(m, str(other.bare)), lambda: manage.set_enabled(m, []),
                   lambda: manage.check_updates(m), lambda: manage.update(m), lambda: manage.restore(m, state)):
        with pytest.raises(manage.ExtensionAccessError, match="--enable-insecure-extension-access"):
            action()
    assert not (setup.data / "extensions" / "other").exists() and not (setup.tmp / "other-marker.txt").exists()
    config = setup.data / "config.json"
    assert not config.exists() or "disabled_extensions" not in json.loads(config.read_text())
    assert manage.backup(m)["extensions"]["myext"]["enabled"]  # reading stays allowed
    # only the default index may be loaded (no fetching/reading what a remote visitor names)
    idx = manage.load_index(m.args, str(setup.tmp / "index.json"))
    assert idx.error and "Only the default index" in idx.error
    allowed = make_manager(setup.data, "--listen", "--enable-insecure-extension-access")
    allowed.refresh()
    assert manage.install(allowed, str(other.bare)).name == "other"


# ---------------------------------------------------------------- the API over a real server

def test_api_lists_installed_extensions_with_their_enable_state(setup: types.SimpleNamespace) -> None:
    m = setup.manager
    manage.install(m, str(setup.remote.bare))
    Remote(setup.tmp, "second", setup.tmp / "m2")
    manage.install(m, str(setup.tmp / "remotes" / "second.git"))
    (setup.data / "extensions" / "plain").mkdir()
    manage.refresh(m)
    manage.set_enabled(m, ["myext", "plain"])
    ckpt = setup.tmp / "ckpt"
    ckpt.mkdir()
    server = start_server(setup.data, ckpt, "--skip-load-model-at-start")
    try:
        listed = requests.get(server.api("extensions"), timeout=10).json()
        by_name = {e["name"]: e for e in listed}
        assert [e["name"] for e in listed] == ["myext", "plain", "second"]
        assert by_name["myext"] == {"name": "myext", "remote": str(setup.remote.bare), "branch": "main",
                                    "commit_hash": setup.remote.head(), "version": setup.remote.head()[:8],
                                    "commit_date": m.get("myext").commit_date, "enabled": True}
        assert by_name["second"]["enabled"] is False  # the disable saved in config.json
        assert by_name["plain"] == {"name": "plain", "remote": "", "branch": "", "commit_hash": "", "version": "",
                                    "commit_date": 0, "enabled": True}
        # an extension installed while the server runs is listed (the folder is re-read, as A1111 does)
        Remote(setup.tmp, "third", setup.tmp / "m3")
        manage.install(m, str(setup.tmp / "remotes" / "third.git"))
        assert "third" in [e["name"] for e in requests.get(server.api("extensions"), timeout=10).json()]
    finally:
        stop_server(server)
    # the startup loader saw install.py's record: it did not run again
    assert setup.marker.read_text() == "ran\n"


# ---------------------------------------------------------------- available extensions

INDEX = {
    "tags": {"script": "a script", "tab": "a tab", "ads": "has ads"},
    "extensions": [
        {"name": "Alpha <b>", "url": "https://github.com/a/alpha.git", "description": "first <script>x</script>",
         "tags": ["script"], "added": "2023-01-02", "created_at": "2022-12-01T00:00:00Z", "stars": 12},
        {"name": "Beta", "url": "https://github.com/b/beta", "description": "second", "tags": ["tab", "ads"],
         "added": "2023-02-03", "created_at": "2023-01-01T00:00:00Z", "stars": 3},
        {"name": "Broken entry without url"},
    ],
}


def test_index_from_a_local_file_and_offline(tmp_path: Path, setup: types.SimpleNamespace) -> None:
    path = tmp_path / "index.json"
    path.write_text(json.dumps(INDEX))
    idx = git.load_index(str(path))
    assert idx.error is None and idx.tags["script"] == "a script"
    assert [(e["name"], e["url"], e["stars"]) for e in idx.extensions] == [
        ("Alpha <b>", "https://github.com/a/alpha.git", 12), ("Beta", "https://github.com/b/beta", 3)]
    # offline: an error text, never an exception (a closed local port stands for the unreachable index)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    off = git.load_index(f"http://127.0.0.1:{port}/index.json")
    assert off.extensions == [] and off.error.startswith(f"cannot load the index from http://127.0.0.1:{port}")
    assert "offline or unreachable" in off.error
    assert git.load_index(str(tmp_path / "missing.json")).error.startswith("cannot load the index: no file")
    (tmp_path / "bad.json").write_text("{not json")
    assert "JSONDecodeError" in git.load_index(str(tmp_path / "bad.json")).error
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "not an extensions index" in git.load_index(str(tmp_path / "list.json")).error
    assert "only http(s)" in git.load_index("ftp://example.com/index.json").error

    # the tab's rows: search, hidden tags, installed ones marked (and hidden by the "installed" tag)
    from webui.ui.extensions_tab import available_html, available_rows
    index = {"tags": idx.tags, "extensions": idx.extensions}
    assert [r["name"] for r in available_rows(index, None, "", [])] == ["Alpha <b>", "Beta"]
    assert [r["name"] for r in available_rows(index, None, "", ["ads"])] == ["Alpha <b>"]
    assert [r["name"] for r in available_rows(index, None, "SECOND", [])] == ["Beta"]
    m = setup.manager
    run_git("clone", "-q", str(setup.remote.bare), str(setup.data / "extensions" / "alpha"))
    run_git("remote", "set-url", "origin", "https://github.com/a/alpha", cwd=setup.data / "extensions" / "alpha")
    manage.refresh(m)
    rows = available_rows(index, m, "", [])
    assert [(r["name"], r["installed"]) for r in rows] == [("Alpha <b>", True), ("Beta", False)]
    assert [r["name"] for r in available_rows(index, m, "", ["installed"])] == ["Beta"]
    page = available_html(rows)
    assert "<script>" not in page and "&lt;script&gt;" in page and "Alpha &lt;b&gt;" in page


# ---------------------------------------------------------------- Settings tab

def test_settings_tab_shows_registered_radio_and_multiselect_options(tmp_path: Path) -> None:
    import gradio as gr

    from webui.ui.settings_tab import create_settings_tab

    settings = Settings.load(tmp_path / "config.json")
    settings.register_option("myext_mode", OptionInfo("fast", "Mode", "My extension", "radio",
                                                      choices=("fast", "slow")))
    settings.register_option("myext_parts", OptionInfo(("a",), "Parts", "My extension", "multiselect",
                                                       choices=("a", "b", "c")))
    svc = types.SimpleNamespace(settings=settings, options=settings.all,
                                args=types.SimpleNamespace(ui_config_file=str(tmp_path / "ui-config.json")),
                                registry=types.SimpleNamespace(list=lambda: []),
                                models=types.SimpleNamespace(vae_listing=lambda: [], current=None))
    with gr.Blocks():
        tab = create_settings_tab(svc)
    comps = tab.components
    assert "disabled_extensions" not in comps and "disable_all_extensions" not in comps  # the Extensions tab's
    assert isinstance(comps["myext_mode"], gr.Radio) and comps["myext_mode"].value == "fast"
    assert isinstance(comps["myext_parts"], gr.Dropdown) and comps["myext_parts"].multiselect
    assert comps["myext_parts"].value == ["a"]
    # Apply: the unchanged multiselect (list vs the default tuple) is no change; a new choice is saved
    keys = list(comps)
    fn = functools.partial(tab.apply_event.fn, None)  # the Apply button's handler (no gr.Request here)
    values = {k: settings.all()[k] for k in keys}
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    out = fn(*[values[k] for k in keys])
    assert "Nothing changed" in next(v for k, v in out.items() if k is tab.result)
    values["myext_parts"] = ["b", "c"]
    values["myext_mode"] = "slow"
    out = fn(*[values[k] for k in keys])
    assert "2 settings changed: Mode, Parts" in next(v for k, v in out.items() if k is tab.result)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["myext_parts"] == ["b", "c"] and saved["myext_mode"] == "slow"
