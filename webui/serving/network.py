"""The server's network guards from its flags: the Origin/Host policy, CORS, the upload limit, what
Gradio may serve, and the warning for a server reachable from the network without accounts."""
from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path
from typing import Any

from webui.cli import network_exposure
from webui.serving.origin_guard import OriginGuard, OriginPolicy
from webui.serving.upload_limit import UploadLimit

log = logging.getLogger(__name__)

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(args: argparse.Namespace) -> frozenset[str] | None:
    """The names a `Host` header may carry (IP addresses are always fine); None: any (`--allowed-host *`)."""
    extra = [str(h).strip().lower() for h in getattr(args, "allowed_host", None) or [] if str(h).strip()]
    if "*" in extra:
        return None
    names = set(LOCAL_NAMES) | set(extra)
    if getattr(args, "server_name", None):
        names.add(str(args.server_name).lower())
    host = socket.gethostname().lower()
    for name in (host, f"{host.split('.')[0]}.local", socket.getfqdn().lower()):  # how the LAN calls this machine
        if name and name != ".local":
            names.add(name)
    return frozenset(names)


def cors_origins(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(o.strip() for o in str(getattr(args, "cors_allow_origins", None) or "").split(",") if o.strip())


def origin_policy(args: argparse.Namespace) -> OriginPolicy:
    return OriginPolicy(allowed_hosts(args), cors_origins(args), getattr(args, "cors_allow_origins_regex", None))


def max_upload_bytes(args: argparse.Namespace) -> int:
    return int(getattr(args, "max_upload_mb", None) or 50) * 1024 * 1024


def install_network_guards(app: Any, args: argparse.Namespace) -> None:
    """Add the middlewares to the app (after every other one: they run first). CORS headers come
    only from Starlette's CORSMiddleware with exactly the flags' origins (Gradio then adds none)."""
    origins, regex = cors_origins(args), getattr(args, "cors_allow_origins_regex", None)
    if origins or regex:
        from starlette.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_origin_regex=regex,  # type: ignore[arg-type]
                           allow_methods=["*"], allow_headers=["*"], allow_credentials=True)
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes(args))  # type: ignore[arg-type]
    app.add_middleware(OriginGuard, policy=origin_policy(args))  # type: ignore[arg-type]


def gradio_file_paths(paths: Any, args: argparse.Namespace | None = None) -> dict[str, list[str]]:
    """`allowed_paths` / `blocked_paths` for Gradio's /file= route. Gradio 6 serves only its cache,
    its uploads and allowed paths; the outputs folder is added (its pictures may be linked), and
    config.json and the accounts files are blocked outright, so that no handler returning a path
    can ever hand them out. Model folders are simply not allowed (their cards' preview pictures
    pass through Gradio's cache)."""
    blocked = [paths.config_file, *(f for f in (getattr(args, "gradio_auth_path", None),
                                                getattr(args, "api_auth_path", None)) if f)]
    return {"allowed_paths": [str(Path(paths.outputs_dir).resolve())],
            "blocked_paths": sorted({str(Path(p).resolve()) for p in blocked})}


def exposure_warning(args: argparse.Namespace, accounts_enabled: bool) -> str | None:
    """The start-up warning for a server reachable from the network without accounts (None otherwise)."""
    reasons = network_exposure(args)
    if not reasons or accounts_enabled:
        return None
    return ("\n".join([
        "*" * 78,
        f"WARNING: the server is reachable from the network ({', '.join(reasons)}) and has NO accounts:",
        "  anyone who can reach this address can generate, change settings and read the outputs.",
        "  Add accounts with --gradio-auth user:password (or --gradio-auth-path FILE; --api-auth for the API),",
        "  or bind to localhost (drop --listen / --server-name) and put a reverse proxy with a log-in in front.",
        "  Extension installs stay refused (--enable-insecure-extension-access), folders named by requests are",
        "  confined to the data dir (--allowed-path DIR), and uploads are limited (--max-upload-mb).",
        "*" * 78]))


def warn_if_exposed(args: argparse.Namespace, accounts_enabled: bool) -> None:
    text = exposure_warning(args, accounts_enabled)
    if text:
        log.warning(text)


def banner_text(args: argparse.Namespace, accounts_enabled: bool) -> str | None:
    """The page's banner for the same case (plain text; the UI escapes it)."""
    reasons = network_exposure(args)
    if not reasons or accounts_enabled:
        return None
    return (f"⚠️ This server is reachable from the network ({', '.join(reasons)}) without accounts: anyone who "
            "can open this page can use it. Its owner can add accounts with --gradio-auth user:password.")
