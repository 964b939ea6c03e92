"""The dashboard token (derived from the cluster secret, never the secret) and the gate that checks it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

TOKEN_CONTEXT = b"pyrocluster-dashboard"
COOKIE = "pyrocluster_token"


def dashboard_token(secret: bytes) -> str:
    """HMAC-SHA256 of the secret and ``pyrocluster-dashboard``, hex: what a browser or scraper presents."""
    return hmac.new(secret, TOKEN_CONTEXT, hashlib.sha256).hexdigest()


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class TokenGate:
    """ASGI middleware: with a token, every request shows it as a Bearer header or the cookie.

    ``?token=`` once (on any page) sets the cookie and redirects to the same path without it.
    """

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        response: Response | None = None
        if _same(request.query_params.get("token"), self.token):
            response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        elif _same(bearer, self.token) or _same(request.cookies.get(COOKIE), self.token):
            await self.app(scope, receive, send)
            return
        else:
            response = PlainTextResponse(
                "401 Unauthorized: this dashboard needs its token (pyrocluster dashboard --print-token), "
                "as 'Authorization: Bearer <token>' or once as /?token=<token>\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        await response(scope, receive, send)
