"""The dashboard routes: the page, ``/api/status``, ``/api/dashboard`` (polled by the page),
``/metrics``, and the operator actions (``actions.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pyrocluster.config import Settings
from pyrocluster.listed_jobs import list_jobs
from pyrocluster.web.actions import NO_STORE, action_routes
from pyrocluster.web.auth import TokenGate, Visitor
from pyrocluster.web.cache import StatusCache
from pyrocluster.web.metrics import make_registry

STATIC = Path(__file__).parent / "static"
"""The page and its script and style, served from the package (no CDN)."""
NO_FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
"""The page acts on clicks: no other site may frame it and trick a visitor into them (clickjacking)."""


def create_app(
    cache: StatusCache, settings: Settings | None = None, host: str = "127.0.0.1", port: int = 0
) -> Any:
    """The ASGI app over ``cache``; with a secret in ``settings``, every request must show a token."""
    settings = settings or cache.settings
    registry = make_registry(cache.view)
    cache.render_metrics = lambda view: generate_latest(make_registry(lambda: view))

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={**NO_STORE, **NO_FRAMING})

    async def api_status(request: Request) -> Response:
        return JSONResponse(cache.view().status, headers=NO_STORE)

    async def api_dashboard(request: Request) -> Response:
        view = cache.view()
        visitor: Visitor = request.state.visitor
        body = {
            "status": view.status,
            "jobs": list_jobs(view.status.get("jobs", [])),  # as ``status`` lists them; the page draws it
            "failures": view.failures,
            "age_s": round(max(0.0, cache.clock() - view.updated), 2) if view.updated else None,
            "round_s": round(view.round_s, 3),
            "role": visitor.peer.role.label,
            "you": visitor.peer.name,
            "throughput": view.throughput,
            "durations": view.durations,
        }
        return JSONResponse(body, headers=NO_STORE)

    async def metrics(request: Request) -> Response:
        view = cache.view()
        body = view.metrics or generate_latest(registry)  # rendered by the round; the first one here
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/status", api_status),
            Route("/api/dashboard", api_dashboard),
            Route("/metrics", metrics),
            *action_routes(settings),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ]
    )
    return TokenGate(app, settings.secret, host, port)
