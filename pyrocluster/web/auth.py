"""Who may see the dashboard and act from it: tokens, the cookie, and the ``Host`` check.

* With a cluster secret every request shows a credential: the dashboard token (HMAC-SHA256 of the
  secret and ``pyrocluster-dashboard``, hex; it may look, as a viewer) or a role token (SPEC 13),
  as ``Authorization: Bearer`` or once as ``?token=``, which sets a cookie. An action (a POST)
  needs the token in the ``Authorization`` header: a cookie alone is refused, so another site
  cannot make a browser act (CSRF).
* Without a secret anyone who reaches the dashboard may do everything (it listens on loopback
  unless ``--insecure``), but a request whose ``Host`` is not the dashboard's own address is
  refused (a page of another site whose name was rebound to 127.0.0.1: DNS rebinding), and a POST
  needs the ``X-Requested-By: pyrocluster`` header, which a form of another site cannot send.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import socket
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from pyrocluster import tokens
from pyrocluster.config import is_ip, is_loopback
from pyrocluster.roles import SECRET_PEER, Peer, invalid_reason
from pyrocluster.tokens import Role

TOKEN_CONTEXT = b"pyrocluster-dashboard"
COOKIE = "pyrocluster_token"
ACTION_HEADER = "x-requested-by"
"""Without a secret, a POST must carry this header (value ``pyrocluster``)."""
DASHBOARD_PEER = Peer("dashboard-token", Role.VIEWER)
"""The dashboard token looks, as a viewer: it never expires, so it may not act."""


def dashboard_token(secret: bytes) -> str:
    """HMAC-SHA256 of the secret and ``pyrocluster-dashboard``, hex: what a browser or scraper presents."""
    return hmac.new(secret, TOKEN_CONTEXT, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Visitor:
    """Who sent a request: their peer (name and role), the role token they showed, and where."""

    peer: Peer
    token: str | None = None
    """The role token, to act on the visitor's behalf (None for the secret's or the dashboard's)."""
    in_header: bool = True
    """True when the credential came in the ``Authorization`` header (not the cookie)."""


@functools.lru_cache(maxsize=1024)
def _token_peer(text: str, cluster: bytes) -> Peer | None:
    """The peer a role token names when this cluster signed it and its key is whole; else None."""
    try:
        token = tokens.parse(text)
    except tokens.TokenInvalid:
        return None
    if token.claims.cluster != cluster:
        return None
    c = token.claims
    return Peer(c.name, c.role, c.issued_ms, c.expires)


class Credentials:
    """Checks what a request shows against the secret (dashboard token) and the cluster key (tokens)."""

    def __init__(self, secret: bytes) -> None:
        self._dashboard = dashboard_token(secret)
        self._cluster = tokens.cluster_public(secret)

    def is_dashboard_token(self, shown: str) -> bool:
        """True for the dashboard token itself."""
        return hmac.compare_digest(shown.encode(), self._dashboard.encode())

    def peer(self, shown: str | None) -> Peer | None:
        """The peer ``shown`` proves now (not expired, not revoked), or None."""
        if not shown:
            return None
        if self.is_dashboard_token(shown):
            return DASHBOARD_PEER
        peer = _token_peer(shown, self._cluster)
        if peer is None or invalid_reason(peer, time.time()):
            return None
        return peer


def own_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` values that name this dashboard: its address, and loopback names when local."""
    host = host.lower()
    names = {host}
    wildcard = host in ("0.0.0.0", "::")
    if wildcard or is_loopback(host):
        names |= {"localhost", "127.0.0.1", "::1"}
    if wildcard:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names)


def host_allowed(header: str, allowed: frozenset[str], wildcard: bool) -> bool:
    """True when a request's ``Host`` names this dashboard (bound to a wildcard: any IP literal too)."""
    header = header.strip().lower()
    if header in allowed:
        return True
    if not wildcard:
        return False
    name = header.rpartition(":")[0].strip("[]")
    return is_ip(name) and header.rpartition(":")[2] == next(iter(allowed)).rpartition(":")[2]


def _unauthorized() -> Response:
    return PlainTextResponse(
        "401 Unauthorized: this dashboard needs a token (pyrocluster dashboard --print-token, or a "
        "role token from pyrocluster token issue), as 'Authorization: Bearer <token>' or once as "
        "/?token=<token>\n",
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


class TokenGate:
    """ASGI middleware: decides the visitor of every request and puts it in ``scope["state"]``."""

    def __init__(self, app: Any, secret: bytes | None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.credentials = Credentials(secret) if secret else None
        self.hosts = own_hosts(host, port)
        self.wildcard = host in ("0.0.0.0", "::")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # none served: refused (HTTP 403) before any app sees it
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._check(request, scope)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _check(self, request: Request, scope: Any) -> Response | None:
        """None to serve the request (its visitor set), or the refusal to send."""
        post = request.method == "POST"
        if self.credentials is None:
            if not host_allowed(request.headers.get("host", ""), self.hosts, self.wildcard):
                return PlainTextResponse(
                    "403 Forbidden: the Host header does not name this dashboard (DNS rebinding?)\n",
                    status_code=403,
                )
            if post and request.headers.get(ACTION_HEADER) != "pyrocluster":
                return PlainTextResponse(
                    f"403 Forbidden: an action needs the header '{ACTION_HEADER}: pyrocluster'\n",
                    status_code=403,
                )
            scope.setdefault("state", {})["visitor"] = Visitor(SECRET_PEER)
            return None
        header = request.headers.get("authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        query = request.query_params.get("token")
        if query is not None and not post:
            if self.credentials.peer(query) is None:
                return _unauthorized()
            # The page keeps a role token (from the fragment, which never reaches a server) to
            # send it in the header of its actions; the cookie serves its reads.
            fragment = "" if self.credentials.is_dashboard_token(query) else f"#token={query}"
            # One leading slash: ``//host/`` would send the browser to another site.
            target = "/" + request.url.path.lstrip("/") + fragment
            redirect = RedirectResponse(target, status_code=303)
            redirect.set_cookie(COOKIE, query, httponly=True, samesite="strict")
            return redirect
        shown: str | None
        if bearer is not None:
            peer = self.credentials.peer(bearer)
            shown, in_header = bearer, True
        else:
            shown, in_header = request.cookies.get(COOKIE), False
            peer = self.credentials.peer(shown)
        if peer is None:
            return _unauthorized()
        if post and not in_header:
            return PlainTextResponse(
                "403 Forbidden: an action needs the token in the Authorization header (a cookie alone "
                "is refused)\n",
                status_code=403,
            )
        token = None if peer is DASHBOARD_PEER else shown
        scope.setdefault("state", {})["visitor"] = Visitor(peer, token, in_header)
        return None
