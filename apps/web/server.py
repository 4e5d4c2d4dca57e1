"""Assemble and run the web app: our routes and gate around the mounted Gradio UI, served by uvicorn."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import gradio as gr
import uvicorn
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from ..logformat import active_format
from ..service import LoupeService
from .deepzoom import HEAD as DEEP_ZOOM_HEAD
from .deepzoom import build_router as deepzoom_router
from .gate import Gate, Scope, WebSecurity, database_unavailable
from .maps import HEAD as MAP_HEAD
from .maps import build_router as maps_router
from .metrics import Metrics, Observed, instrument
from .pages import build_router
from .stack import HEAD as STACK_HEAD
from .stack import build_router as stack_router
from .ui import CSS, build_ui
from .workspace import upload_limit

log = logging.getLogger(__name__)


def configure_gradio_env(service: LoupeService) -> None:
    """Keep Gradio's temp files under LOUPE_HOME and its analytics off; must run before the app is built."""
    os.environ["GRADIO_TEMP_DIR"] = str(service.settings.gradio_tmp_dir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


class ForwardedScheme:
    """Take the scheme (https behind a TLS-terminating proxy) from a trusted proxy only, and nothing else.

    uvicorn's own proxy_headers is off: it would also take the client address from X-Forwarded-For for any
    loopback peer. The gate derives the client address itself (``WebSecurity.client_address``).
    """

    def __init__(self, app: Observed, security: WebSecurity) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket") and (scheme := self.security.forwarded_scheme(scope)):
            if scope["type"] == "websocket":
                scheme = "wss" if scheme == "https" else "ws"
            scope = {**scope, "scheme": scheme}
        await self.app(scope, receive, send)


def create_app(service: LoupeService) -> tuple[Observed, WebSecurity]:
    """The ASGI app: metrics and request ids (outermost), then the gate, then our routes and Gradio's."""
    configure_gradio_env(service)
    security = WebSecurity(service)
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    api.add_exception_handler(OperationalError, database_unavailable)  # a route's own query, e.g. the login
    api.include_router(build_router(security))
    api.include_router(deepzoom_router(security))
    api.include_router(stack_router(security))
    api.include_router(maps_router(security))
    metrics = Metrics(service)
    instrument(api, service, metrics)  # /readyz, /metrics; answers counted from their run records
    blocks = build_ui(service, security)
    blocks.queue(default_concurrency_limit=1)
    gr.mount_gradio_app(
        api, blocks, "/",
        auth_dependency=lambda request: request.scope.get("loupe.user"),
        footer_links=[], run_history=False,  # no "Use via API" page, no run history kept in the browser
        show_error=False, css=CSS, head=DEEP_ZOOM_HEAD + STACK_HEAD + MAP_HEAD,
        max_file_size=max(upload_limit(d, service.settings.budgets) for d in service.domains.values()),
        app_kwargs={"docs_url": None, "redoc_url": None, "openapi_url": None})
    return Observed(Gate(api, security), metrics, security.from_proxy), security


class RunningApp:
    """A server started in a background thread (tests, ``block=False``)."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, security: WebSecurity) -> None:
        self.server = server
        self.thread = thread
        self.security = security

    @property
    def routes_app(self) -> FastAPI:
        """The FastAPI app behind the gate (route listings in tests and diagnostics)."""
        return self.server.config.app.app.app.app  # ForwardedScheme -> Observed -> Gate -> FastAPI

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.security.shutdown()


def launch(service: LoupeService, host: str = "127.0.0.1", port: int | None = None,
           block: bool = True) -> tuple[RunningApp | None, str]:
    swept = service.store.sweep_orphans()  # what a killed server left between writing blobs and its rows
    if swept:
        log.info("removed %d unreferenced asset files", swept)
    service.jobs.warm()
    app, security = create_app(service)
    port = port or 7860
    # JSON logs: uvicorn's own lines go through the root logger's JSON handler too, not its text handlers.
    log_config = None if active_format() == "json" else uvicorn.config.LOGGING_CONFIG
    config = uvicorn.Config(ForwardedScheme(app, security), host=host, port=port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=1, proxy_headers=False, log_config=log_config)
    server = uvicorn.Server(config)
    url = f"http://{host}:{port}/"
    security.start_housekeeping()
    if block:
        try:
            server.run()
        finally:
            security.shutdown()  # nothing of a session outlives the server: temp files wiped
        return None, url
    thread = threading.Thread(target=server.run, daemon=True, name="loupe-web")
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"the web server did not start on {url}")
    return RunningApp(server, thread, security), url
