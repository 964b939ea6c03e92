"""The dashboard's operator actions: ``POST /api/{jobs,workers,schedules}/{name}/{action}``.

Each acts with the visitor's own credential (their role token, or the dashboard's settings
without a secret), so the process that performs it checks the role and logs who asked; the role
is also checked here first, so a request beyond it is refused before anything is contacted.
200 with a JSON body when done, 403 beyond the role, 404 for an unknown name, 503 when the name
server or the process that would act (a dead or frozen worker) does not answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import anyio
from Pyro5.errors import CommunicationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pyrocluster import operate
from pyrocluster.config import Settings
from pyrocluster.errors import ClusterUnreachable, ConfigError, RoleRefused
from pyrocluster.jobs.announce import cancel_job
from pyrocluster.roles import refusal
from pyrocluster.tokens import Role
from pyrocluster.web.auth import Visitor

NO_STORE = {"Cache-Control": "no-store"}
ACTION_THREADS = 8
"""Actions run at once; more wait their turn, so actions stuck on a frozen worker (5 s each)
never hold every thread of the pool that also serves the page and its static files."""


def acting_settings(settings: Settings, visitor: Visitor) -> Settings:
    """The dashboard's settings with the visitor's own credential in place of the secret."""
    if visitor.token is None:
        return settings
    return replace(settings, secret=None, token=visitor.token)


def _cancel(settings: Settings, job: str) -> dict[str, Any]:
    try:
        ids = cancel_job(settings, job)
    except ConfigError as exc:  # a name several running jobs share
        return {"status": 409, "error": str(exc)}
    if not ids:
        raise LookupError(f"no running job named {job!r}")
    return {"cancelling": ids}


def _drain(draining: bool) -> Callable[[Settings, str], dict[str, Any]]:
    def act(settings: Settings, worker: str) -> dict[str, Any]:
        return {"changed": operate.set_draining(settings, worker, draining)}

    return act


def _pause(paused: bool) -> Callable[[Settings, str], dict[str, Any]]:
    def act(settings: Settings, schedule: str) -> dict[str, Any]:
        return {"changed": operate.set_paused(settings, schedule, paused)}

    return act


ACTIONS: dict[tuple[str, str], tuple[Role, Callable[[Settings, str], dict[str, Any]]]] = {
    ("jobs", "cancel"): (Role.SUBMITTER, _cancel),
    ("workers", "drain"): (Role.OPERATOR, _drain(True)),
    ("workers", "undrain"): (Role.OPERATOR, _drain(False)),
    ("schedules", "pause"): (Role.OPERATOR, _pause(True)),
    ("schedules", "resume"): (Role.OPERATOR, _pause(False)),
}
"""(kind, action) -> the least role that may ask (cancel: a submitter its own jobs), and the act."""


def action_routes(settings: Settings) -> list[Route]:
    """The POST routes, acting on the cluster of ``settings``."""

    limiter = anyio.CapacityLimiter(ACTION_THREADS)

    async def act(request: Request) -> Response:
        kind, name, action = (request.path_params[k] for k in ("kind", "name", "action"))
        entry = ACTIONS.get((kind, action))
        if entry is None:
            return JSONResponse(
                {"error": f"no action {action!r} on {kind}"}, status_code=404, headers=NO_STORE
            )
        role, perform = entry
        visitor: Visitor = request.state.visitor
        what = f"{action} {kind}"
        if visitor.peer.role < role:
            message = refusal(visitor.peer, role, what).partition(": ")[2]
            return JSONResponse({"error": message}, status_code=403, headers=NO_STORE)
        try:
            acting = acting_settings(settings, visitor)
            body = await anyio.to_thread.run_sync(perform, acting, name, limiter=limiter)
        except RoleRefused as exc:
            return JSONResponse({"error": str(exc)}, status_code=403, headers=NO_STORE)
        except LookupError as exc:
            return JSONResponse({"error": str(exc.args[0])}, status_code=404, headers=NO_STORE)
        except ClusterUnreachable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=NO_STORE)
        except CommunicationError as exc:  # listed, but dead or frozen
            error = f"{kind[:-1]} {name!r} did not answer: {exc}"
            return JSONResponse({"error": error}, status_code=503, headers=NO_STORE)
        status = body.pop("status", 200)
        return JSONResponse({"action": action, kind[:-1]: name, **body}, status_code=status, headers=NO_STORE)

    # ``name:path``: a worker's name may hold a slash, which arrives decoded from its ``%2F``.
    return [Route("/api/{kind}/{name:path}/{action}", act, methods=["POST"])]
