"""Git for extensions, through the `git` command (no GitPython): what a checkout is (remote, branch,
commit, date), cloning an extension into place, checking for and pulling updates, checking out a
saved commit, and the list of available extensions (A1111's index.json).

Every git call: no shell, a timeout, `GIT_TERMINAL_PROMPT=0` (a URL that wants a password fails
instead of waiting for one), `GIT_CEILING_DIRECTORIES` (a plain folder inside another checkout, e.g.
`extensions/` inside this project's own, is not mistaken for that checkout), the `ext::` transport
refused, and `--` before URLs and revisions that come from a user. Failures raise `GitError` with
git's own message.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.extensions.discovery import Extension

DEFAULT_INDEX_URL = ("https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/"
                     "master/index.json")
INDEX_ENV = "WEBUI_EXTENSIONS_INDEX"
INDEX_TIMEOUT_S = 10.0
INDEX_MAX_BYTES = 32 * 1024 * 1024
LOCAL_TIMEOUT_S = 30.0      # git commands that stay on this machine
NETWORK_TIMEOUT_S = 60.0    # ls-remote / fetch / pull
CLONE_TIMEOUT_S = 600.0

_COMMIT_RE = re.compile(r"^[0-9a-fA-F]{4,64}$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]*$")
_URL_SCHEMES = ("https://", "http://", "git://", "ssh://", "file://", "git+ssh://", "ssh+git://")
_SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:[^\s]+$")  # git@github.com:user/repo.git


class GitError(RuntimeError):
    """A git command failed, timed out, or git is not installed; the message says which and why."""


def default_index_source() -> str:
    return os.environ.get(INDEX_ENV) or DEFAULT_INDEX_URL


# ------------------------------------------------------------------ running git

def _env(ceiling: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "LC_ALL": "C", "LANGUAGE": "C",
                "GIT_SSH_COMMAND": env.get("GIT_SSH_COMMAND") or "ssh -o BatchMode=yes"})
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    if ceiling is not None:
        env["GIT_CEILING_DIRECTORIES"] = str(ceiling)
    return env


def run_git(args: list[str], cwd: Path | None = None, *, timeout: float = LOCAL_TIMEOUT_S,
            check: bool = True) -> subprocess.CompletedProcess:
    """`git <args>` in `cwd`; raises GitError when it fails (check) or cannot run."""
    cmd = ["git", "-c", "protocol.ext.allow=never", "-c", "core.hooksPath=/dev/null", *args]
    ceiling = cwd.resolve().parent if cwd is not None else None
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=_env(ceiling), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed (the git command was not found)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took longer than {timeout:.0f} s and was stopped") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise GitError(f"git {args[0]} failed: {msg}")
    return proc


def is_checkout(path: Path) -> bool:
    """True when `path` is itself the top of a git checkout (not merely inside one)."""
    return (path / ".git").exists()


# ------------------------------------------------------------------ reading a checkout

def read_info(ext: Extension) -> Extension:
    """Fill remote/branch/commit_hash/commit_date/version from the extension's checkout (A1111's
    read_info_from_repo: remote origin's URL, the branch, HEAD's hash and commit time, version =
    the hash's first 8 characters). A plain folder, or a checkout git cannot read, is left empty."""
    ext.remote = ext.branch = ext.commit_hash = None
    ext.commit_date = None
    ext.version = ""
    path = Path(ext.path)
    if not is_checkout(path):
        return ext
    try:
        log = run_git(["log", "-1", "--format=%H%n%ct"], path).stdout.split()
        if len(log) >= 2:
            ext.commit_hash, ext.commit_date = log[0], int(log[1])
            ext.version = log[0][:8]
        remote = run_git(["config", "--get", "remote.origin.url"], path, check=False).stdout.strip()
        if not remote:
            names = run_git(["remote"], path, check=False).stdout.split()
            if names:
                remote = run_git(["config", "--get", f"remote.{names[0]}.url"], path, check=False).stdout.strip()
        ext.remote = remote or None
        branch = run_git(["symbolic-ref", "--short", "-q", "HEAD"], path, check=False).stdout.strip()
        ext.branch = branch or None  # None: detached HEAD (a restored commit)
    except GitError as e:
        if f"git: {e}" not in ext.errors:
            ext.errors.append(f"git: {e}")
    return ext


# ------------------------------------------------------------------ installing

def check_url(url: str) -> str:
    """The URL stripped, or ValueError: git URLs (https, http, git, ssh, file, user@host:path) and
    local paths of repositories; nothing that git would read as an option or a remote helper."""
    url = (url or "").strip()
    if not url:
        raise ValueError("no URL given")
    if url.startswith("-") or any(c in url for c in "\0\n\r"):
        raise ValueError(f"not a git URL: {url!r}")
    low = url.lower()
    if low.startswith(_URL_SCHEMES) or _SCP_RE.match(url):
        return url
    if "::" in url or re.match(r"^[a-z][a-z0-9+.-]*://", low):  # ext::, fd::, other remote helpers
        raise ValueError(f"unsupported URL scheme: {url!r} (use https://, ssh://, git://, file:// or a path)")
    if os.path.isabs(url) or url.startswith(("./", "../", "~")):
        return url
    raise ValueError(f"not a git URL: {url!r} (expected e.g. https://github.com/user/extension.git)")


def check_branch(branch: str | None) -> str | None:
    branch = (branch or "").strip()
    if not branch:
        return None
    if not _BRANCH_RE.match(branch) or ".." in branch or branch.endswith((".lock", "/", ".")) or "//" in branch:
        raise ValueError(f"not a branch name: {branch!r}")
    return branch


def dirname_from_url(url: str) -> str:
    """A1111's folder name for a URL: its last path part without `.git`."""
    last = re.split(r"[/:\\]", url.strip().rstrip("/\\"))[-1]
    return last[:-4] if last.lower().endswith(".git") else last


def check_dirname(name: str) -> str:
    """A folder name for `extensions/`: one path component, not hidden (discovery skips those)."""
    name = (name or "").strip()
    if not name:
        raise ValueError("empty folder name")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name) \
            or name.startswith(".") or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise ValueError(f"not a usable folder name: {name!r} (one name without '/', not starting with '.')")
    return name


def clone(url: str, dest_dir: Path, branch: str | None = None, dirname: str | None = None) -> Path:
    """Clone `url` into `dest_dir/<dirname>` (the name from the URL when not given) and return that
    folder. The clone goes into a hidden temporary folder of `dest_dir` first and is moved into place
    when complete, so a failed clone leaves nothing behind; an existing folder is refused."""
    url = check_url(url)
    branch = check_branch(branch)
    name = check_dirname(dirname if (dirname or "").strip() else dirname_from_url(url))
    dest_dir = Path(dest_dir)
    target = dest_dir / name
    if target.exists() or target.is_symlink():
        raise ValueError(f"extension folder already exists: {target}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".installing-", dir=dest_dir))
    try:
        args = ["clone", "--quiet", "--no-recurse-submodules"]
        if branch:
            args += ["--branch", branch]
        run_git(args + ["--", url, str(tmp / "repo")], dest_dir, timeout=CLONE_TIMEOUT_S)
        if target.exists() or target.is_symlink():  # someone else got there during the clone
            raise ValueError(f"extension folder already exists: {target}")
        os.rename(tmp / "repo", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------ updates

def _remote_head(ext: Extension) -> str:
    """The commit the remote's branch (or its HEAD, for a detached checkout) points at, read with
    `git ls-remote` (a dry fetch: nothing changes locally)."""
    ref = f"refs/heads/{ext.branch}" if ext.branch else "HEAD"
    out = run_git(["ls-remote", "--", "origin", ref], Path(ext.path), timeout=NETWORK_TIMEOUT_S).stdout.split()
    if not out:
        raise GitError(f"the remote has no {ref}")
    return out[0]


def check_for_updates(ext: Extension) -> str:
    """"latest", "behind" (the remote has commits this checkout lacks) or "error: ..." (also stored
    in ext.update_status). A plain folder is "unknown". Never changes the checkout."""
    path = Path(ext.path)
    if not is_checkout(path):
        ext.update_status = "unknown"
        return ext.update_status
    try:
        if not ext.commit_hash:
            read_info(ext)
        remote = _remote_head(ext)
        head = run_git(["rev-parse", "HEAD"], path).stdout.strip()
        if remote == head:
            status = "latest"
        else:
            # a checkout ahead of its remote (local commits) has nothing to pull
            known = run_git(["merge-base", "--is-ancestor", remote, "HEAD"], path, check=False).returncode == 0
            status = "latest" if known else "behind"
    except GitError as e:
        status = f"error: {e}"
    ext.update_status = status
    return status


def update(ext: Extension) -> str:
    """Fast-forward the checkout's branch to its remote (`git pull --ff-only`); returns what changed.
    A detached checkout or diverged history raises GitError (nothing is overwritten)."""
    path = Path(ext.path)
    if not is_checkout(path):
        raise GitError(f"{ext.name} is not a git checkout")
    read_info(ext)
    if not ext.branch:
        raise GitError(f"{ext.name} is at a detached commit ({ext.version}); check out a branch to update it")
    before = ext.commit_hash
    run_git(["pull", "--ff-only", "--no-rebase", "--quiet", "--no-recurse-submodules", "--", "origin", ext.branch],
            path, timeout=NETWORK_TIMEOUT_S)
    read_info(ext)
    ext.update_status = "latest"
    if before == ext.commit_hash:
        return f"{ext.name}: already up to date ({ext.version})"
    return f"{ext.name}: updated {(before or '')[:8]} → {ext.version}"


def checkout_commit(ext: Extension, commit: str) -> str:
    """Move the checkout's branch (or detached HEAD) to `commit` (A1111's restore), fetching when the
    commit is not here yet. `git reset --keep`: local changes that the move would overwrite make it
    fail instead of being lost."""
    path = Path(ext.path)
    commit = (commit or "").strip()
    if not _COMMIT_RE.match(commit):
        raise ValueError(f"not a commit hash: {commit!r}")
    if not is_checkout(path):
        raise GitError(f"{ext.name} is not a git checkout")
    read_info(ext)
    before = ext.commit_hash or ""
    if before.lower().startswith(commit.lower()):
        return f"{ext.name}: already at {commit[:8]}"
    exists = run_git(["cat-file", "-e", f"{commit}^{{commit}}"], path, check=False).returncode == 0
    if not exists:
        run_git(["fetch", "--quiet", "--no-recurse-submodules", "origin"], path, timeout=NETWORK_TIMEOUT_S)
    run_git(["reset", "--keep", "--quiet", commit, "--"], path)
    read_info(ext)
    ext.update_status = "unknown"
    return f"{ext.name}: {before[:8]} → {ext.version}"


# ------------------------------------------------------------------ available extensions (index.json)

@dataclass
class ExtensionIndex:
    """A1111's index: `tags` (tag → description) and `extensions` (dicts with name, url, description,
    tags, added, created_at, stars). `error` is set instead of raising when it could not be loaded."""
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def load_index(source: str | None = None) -> ExtensionIndex:
    """Read an index from an http(s) URL (short timeout) or a local JSON file. Never raises: an
    offline machine, a missing file or bad JSON give an ExtensionIndex with `error` set."""
    source = (source or "").strip() or default_index_source()
    try:
        if re.match(r"^https?://", source, re.I):
            req = urllib.request.Request(source, headers={"User-Agent": "webui-extensions-index"})
            with urllib.request.urlopen(req, timeout=INDEX_TIMEOUT_S) as resp:  # noqa: S310 (scheme checked)
                raw = resp.read(INDEX_MAX_BYTES + 1)
        elif "://" in source:
            return ExtensionIndex(source, error=f"cannot load the index from {source}: only http(s) URLs and local "
                                                "JSON files are read")
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                return ExtensionIndex(source, error=f"cannot load the index: no file {path}")
            with open(path, "rb") as f:
                raw = f.read(INDEX_MAX_BYTES + 1)
        if len(raw) > INDEX_MAX_BYTES:
            return ExtensionIndex(source, error=f"cannot load the index from {source}: larger than "
                                                f"{INDEX_MAX_BYTES // (1024 * 1024)} MB")
        data = json.loads(raw.decode("utf-8"))
    except urllib.error.URLError as e:
        reason = getattr(e, "reason", e)
        return ExtensionIndex(source, error=f"cannot load the index from {source} (offline or unreachable: "
                                            f"{reason}); install from a URL still works")
    except (OSError, ValueError, UnicodeDecodeError) as e:  # timeouts, refused connections, bad JSON
        return ExtensionIndex(source, error=f"cannot load the index from {source}: {type(e).__name__}: {e}")
    return parse_index(source, data)


def parse_index(source: str, data: Any) -> ExtensionIndex:
    if not isinstance(data, dict) or not isinstance(data.get("extensions"), list):
        return ExtensionIndex(source, error=f"{source} is not an extensions index (expected "
                                            '{"tags": {...}, "extensions": [...]})')
    tags = data.get("tags") if isinstance(data.get("tags"), dict) else {}
    out = []
    for item in data["extensions"]:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item.get("url"):
            continue
        t = item.get("tags")
        stars = item.get("stars")
        out.append({"name": str(item.get("name") or dirname_from_url(item["url"])), "url": item["url"],
                    "description": str(item.get("description") or ""),
                    "tags": [str(x) for x in t] if isinstance(t, list) else [],
                    "added": str(item.get("added") or ""), "created_at": str(item.get("created_at") or ""),
                    "stars": stars if isinstance(stars, int) and not isinstance(stars, bool) else 0})
    return ExtensionIndex(source, tags={str(k): str(v) for k, v in tags.items()}, extensions=out)
