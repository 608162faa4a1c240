"""Composition root: flags → services → API + UI → one uvicorn server.

The socket opens at once with a small "starting" page; torch, diffusers and gradio are imported
in a background thread and the real app is swapped in when ready, so heavy imports and the model
load never keep the address from answering.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from webui.cli import api_enabled, parse_args, resolve_paths, server_host, server_port  # noqa: E402

log = logging.getLogger(__name__)

STARTING_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>Stable Diffusion web UI</title>
<meta http-equiv="refresh" content="1"></head><body style="font-family:sans-serif;background:#0b0f19;color:#ddd">
<h2>Stable Diffusion web UI</h2><p id="starting">Starting&hellip; this page reloads by itself.</p></body></html>"""


class SwitchableApp:
    """ASGI app that answers with a starting page until the real app is installed."""

    def __init__(self) -> None:
        self.app: Any = None
        self.error: str | None = None
        self.stop_inner: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self.stop_inner is not None:
                        await self.stop_inner()  # let the real app (gradio's queue) shut down cleanly
                    svc = getattr(getattr(self.app, "state", None), "services", None)
                    if svc is not None and svc.executor is not None:
                        # a scale-out backend takes its workers down (a local Ray cluster: all of it); here,
                        # because uvicorn re-raises the stopping signal once serving ends
                        await asyncio.to_thread(svc.executor.close)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        status, body, ctype = 503, STARTING_PAGE, b"text/html; charset=utf-8"
        if self.error:
            status, body = 500, f"startup failed: {self.error}".encode()
            ctype = b"text/plain; charset=utf-8"
        elif scope["path"].startswith("/sdapi/"):
            body, ctype = b'{"detail": "starting"}', b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": body})


async def _run_lifespan(app: Any, shell: "SwitchableApp") -> None:
    """Start the real app's lifespan (gradio starts its queue there) inside the server's loop;
    the shell forwards the server's shutdown to it later."""
    started = asyncio.Event()
    shutdown = asyncio.Event()
    stopped = asyncio.Event()
    sent = [False]

    async def receive() -> dict:
        # exactly one startup message; the next read waits for the server's shutdown
        if not sent[0]:
            sent[0] = True
            return {"type": "lifespan.startup"}
        await shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def send(msg: dict) -> None:
        if msg["type"].startswith("lifespan.startup"):
            started.set()
        elif msg["type"].startswith("lifespan.shutdown"):
            stopped.set()

    async def run() -> None:
        try:
            await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        finally:
            started.set()
            stopped.set()

    task = asyncio.get_running_loop().create_task(run())

    async def stop() -> None:
        shutdown.set()
        try:
            await asyncio.wait_for(stopped.wait(), timeout=5)
        except asyncio.TimeoutError:
            task.cancel()

    shell.stop_inner = stop
    await started.wait()


def build_real_app(args: argparse.Namespace, t_start: float) -> Any:
    from PIL import Image

    from webui.imaging.decode import MAX_INPUT_SIDE
    from webui.services.container import build_services

    # Uploads the UI decodes itself (Gradio opens them with PIL): refuse pictures beyond the input
    # limit before their pixels are decoded, with PIL's message naming the limit
    Image.MAX_IMAGE_PIXELS = MAX_INPUT_SIDE * MAX_INPUT_SIDE // 2
    paths = resolve_paths(args)
    svc = build_services(args, paths)
    if args.backend == "ray":  # generations go to Ray Serve workers; the queue, outputs and UI stay here
        from webui.serving.ray_backend import start_ray_backend
        svc.use_executor(start_ray_backend(args, paths.outputs_dir, int(svc.settings.get("sd_checkpoints_limit"))))
    from webui.serving.network import warn_if_exposed
    warn_if_exposed(args, svc.accounts.enabled)  # reachable from the network without accounts: say so loudly
    from webui.extensions.startup import load_extensions
    load_extensions(svc)  # before the API and the UI: their scripts, options and tabs are part of both
    return build_app(svc, args)


def build_app(svc: Any, args: argparse.Namespace) -> Any:
    """The API and the UI over the given services (built again, from the same services, when the
    extensions are reloaded)."""
    from fastapi_offline import FastAPIOffline

    from webui.api.routes import install_api
    from webui.extensions.startup import fire

    # /docs and /redoc load Swagger UI / ReDoc from a packaged copy (fastapi-offline), not a CDN,
    # so they work on a machine without internet
    app = FastAPIOffline(title="Stable Diffusion web UI API", docs_url="/docs", redoc_url="/redoc",
                         static_url="/docs-static")
    if api_enabled(args):
        install_api(app, svc)
        from webui.api.outputs_routes import build_outputs_router
        app.include_router(build_outputs_router(svc))  # the Image Browser: /webui/v1/outputs
        from webui.api.backend_routes import build_backend_router
        app.include_router(build_backend_router(svc))  # /webui/v1/backend: in-process or scale-out workers

    @app.get("/internal/ping")
    def ping() -> dict:
        return {}

    from webui.api.progress_routes import build_progress_router
    from webui.api.system_routes import build_sysinfo_router
    app.include_router(build_sysinfo_router(svc))  # the Settings page's Sysinfo download needs it without --api
    app.include_router(build_progress_router(svc))  # A1111's task progress, part of the page as in A1111

    from webui.serving.page_login import PageLogin, is_open_page_path
    if svc.page_login is None:  # one per server: its sessions outlive "Reload UI"
        svc.page_login = PageLogin(svc.accounts)
    if not args.nowebui:
        import gradio as gr

        from webui.ui.main import build_ui, launch_kwargs
        from webui.api.page_routes import build_page_router
        app.include_router(build_page_router(svc))  # notification.mp3 and the title's progress, for the page
        demo = build_ui(svc)
        fire("app_started", demo, app)  # before the UI is mounted at "/": routes extensions add are reachable
        app = gr.mount_gradio_app(app, demo, path="/", **launch_kwargs(svc))
        if svc.accounts.enabled:
            svc.page_login.attach(app)  # the guard knows the page's signed-in sessions
    else:
        fire("app_started", None, app)
    app.state.services = svc
    from webui.serving.auth_guard import AuthGuard
    # every route, the mounted page's included, passes the log-in guard (a no-op without accounts):
    # HTTP Basic, or the page's signed-in cookie; only the log-in page and its assets are open
    page = not args.nowebui
    app.add_middleware(AuthGuard, accounts=svc.accounts,  # type: ignore[arg-type]
                       page_user=svc.page_login.user if page else None,
                       page_route=is_open_page_path if page else None)

    from webui.serving.network import install_network_guards
    # added last, so they run first: foreign-origin and unknown-Host requests, CORS, oversized bodies
    install_network_guards(app, args)
    return app


class AppReloader:
    """A1111's "Apply and restart UI" inside the running process: the extensions are reloaded and a
    new API + UI app, built from the same services (model, queue and running jobs untouched),
    replaces the served one. The old app keeps serving what it already started (the request that
    asked for the reload gets its answer) and is shut down after a grace period."""

    OLD_APP_GRACE_S = 60.0

    def __init__(self, shell: SwitchableApp, loop: asyncio.AbstractEventLoop, svc: Any,
                 args: argparse.Namespace) -> None:
        self.shell, self.loop, self.svc, self.args = shell, loop, svc, args
        self._lock = threading.Lock()

    def reload(self) -> str:
        """Called from a Gradio event handler: the new Blocks are built in a thread of their own,
        since Gradio's per-event context variables would otherwise treat them as dynamic
        components of the running page."""
        out: dict[str, Any] = {}

        def work() -> None:
            try:
                out["text"] = self._reload()
            except BaseException as e:  # noqa: BLE001 - handed to the caller below
                out["error"] = e

        t = threading.Thread(target=work, name="ui-reload", daemon=True)
        t.start()
        t.join()
        if "error" in out:
            raise out["error"]
        return str(out["text"])

    def _reload(self) -> str:
        from webui.extensions.reload import reload_extensions
        with self._lock:
            t0 = time.time()
            report = reload_extensions(self.svc)
            app = build_app(self.svc, self.args)
            old_stop = self.shell.stop_inner
            asyncio.run_coroutine_threadsafe(_run_lifespan(app, self.shell), self.loop).result(timeout=60)
            self.shell.app = app
            if old_stop is not None:
                def later() -> None:
                    self.loop.call_later(self.OLD_APP_GRACE_S, lambda: asyncio.ensure_future(old_stop()))
                self.loop.call_soon_threadsafe(later)
            log.info("UI reloaded in %.2fs", time.time() - t0)
            return report.text()


def start_model_load(svc: Any, args: argparse.Namespace) -> None:
    if args.skip_load_model_at_start:
        return
    if svc.executor.shared:  # scale-out: the workers load checkpoints; the front names the selected one
        from webui.services.model_service import ModelLoadError
        for wanted in [w for w in (str(args.ckpt or ""), str(svc.settings.get("sd_model_checkpoint") or "")) if w] + [""]:
            try:
                svc.select_checkpoint(str(wanted))  # "": the default checkpoint
                return
            except ModelLoadError as e:
                log.warning("Could not select %s: %s", wanted or "a checkpoint", e)
        return
    wanted = None
    if args.ckpt:
        wanted = str(args.ckpt)
    elif svc.settings.get("sd_model_checkpoint"):
        wanted = svc.settings.get("sd_model_checkpoint")

    def load(state: Any) -> None:
        from webui.services.model_service import ModelLoadError
        try:
            m = svc.models.load(wanted) if wanted else svc.models.load()
        except ModelLoadError as e:
            if not wanted:
                log.warning("No checkpoint loaded: %s", e)
                return
            log.warning("Could not load %s: %s; trying the default checkpoint", wanted, e)
            try:
                m = svc.models.load()
            except ModelLoadError as e2:
                log.warning("No checkpoint loaded: %s", e2)
                return
        svc.settings.set("sd_model_checkpoint", m.info.title, notify=False)

    svc.queue.submit(load, label="load checkpoint")


def _configure_logging(level: str = "INFO") -> None:
    """The one configured logger: every `webui.*` message goes to stderr with time, level and source,
    at ``level`` (--log-level) and above, so an operator can read what the server did."""
    import logging
    logger = logging.getLogger("webui")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               datefmt="%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))


def main(argv: list[str] | None = None) -> None:
    t_start = float(os.environ.get("WEBUI_T0", time.time()))
    _configure_logging()  # extensions preloaded while the flags are read log at INFO already
    args = parse_args(argv)
    _configure_logging(args.log_level)
    if args.backend == "ray":
        from webui.serving.ray_backend import ServeConfigError, check_flags
        try:
            check_flags(args)
        except ServeConfigError as e:
            log.error("%s", e)
            sys.exit(2)
    import uvicorn

    host, port = server_host(args), server_port(args)
    shell = SwitchableApp()
    tls = {"ssl_keyfile": str(args.tls_keyfile), "ssl_certfile": str(args.tls_certfile)} if args.tls_keyfile else {}
    config = uvicorn.Config(shell, host=host, port=port, log_level="warning", timeout_keep_alive=30, **tls)
    server = uvicorn.Server(config)
    shown = "127.0.0.1" if host == "0.0.0.0" else f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{port}"

    def builder() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.01)
        log.info("Running on local URL:  %s  (answering after %.2fs)", url, time.time() - t_start)
        try:
            app = build_real_app(args, t_start)
            loop = server_loop[0]
            asyncio.run_coroutine_threadsafe(_run_lifespan(app, shell), loop).result(timeout=60)
            shell.app = app
            app.state.services.reload_ui = AppReloader(shell, loop, app.state.services, args).reload
        except Exception as e:  # the shell keeps answering with the reason
            log.exception("The server could not be set up")
            shell.error = f"{type(e).__name__}: {e}"
            return
        svc = app.state.services
        svc.stop_server = lambda: setattr(server, "should_exit", True)  # POST /sdapi/v1/server-stop
        what = "API" if args.nowebui else "UI"
        log.info("%s ready at %s in %.2fs from start", what, url, time.time() - t_start)
        if args.exit:
            server.should_exit = True
            return
        start_model_load(svc, args)

    server_loop: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        server_loop.append(asyncio.get_running_loop())
        threading.Thread(target=builder, name="app-builder", daemon=True).start()
        await server.serve()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    if not server.started:
        log.error("could not start the server on %s:%s (is the port in use?)", host, port)
        sys.exit(1)
