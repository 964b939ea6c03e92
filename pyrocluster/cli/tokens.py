"""``pyrocluster token issue|revoke|list``: role tokens, made and revoked with the cluster secret."""

from __future__ import annotations

import time
from typing import Any

import click

from pyrocluster import render
from pyrocluster.cli.common import EXIT_OK, command, settings_from, shared_options
from pyrocluster.config import Settings
from pyrocluster.errors import ConfigError


@click.group()
def token() -> None:
    """Issue, revoke and list role tokens (viewer, submitter, operator)."""


def _secret_settings(kw: dict[str, Any], action: str) -> Settings:
    """Settings that hold the secret; RoleRefused for a token, ConfigError with neither."""
    from pyrocluster import config
    from pyrocluster.auth import own_peer
    from pyrocluster.roles import require_own
    from pyrocluster.tokens import Role

    settings = settings_from(kw)
    if settings.secret is None:
        if settings.token is None:
            raise ConfigError(f"{action} needs the cluster secret (--secret-file or PYROCLUSTER_SECRET)")
        require_own(own_peer(settings), Role.SECRET, action)
    config.apply(settings)
    return settings


@token.command()
@click.argument("name", metavar="NAME")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["viewer", "submitter", "operator"]),
    help="What the token may do.",
)
@click.option("--expires", default="30d", show_default=True, help="Lifetime: 30d, 12h, 90m, 1w ...")
@shared_options
@command
def issue(name: str, role: str, expires: str, **kw: Any) -> int:
    """Print a new token NAME with ROLE (needs the secret); it is recorded in the name server."""
    from pyrocluster import revocations, tokens
    from pyrocluster.handshake import credential
    from pyrocluster.nameserver import registry
    from pyrocluster.roles import SECRET_PEER, audit

    settings = _secret_settings(kw, "issue tokens")
    try:
        lifetime = tokens.parse_duration(expires)
        text = tokens.issue(settings.secret or b"", name, tokens.Role.parse(role), time.time(), lifetime)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    issued = credential(None, text)
    assert issued is not None
    ns = registry.connect(settings)
    try:
        revocations.record_token(ns, issued.peer)
    finally:
        ns._pyroRelease()
    audit(SECRET_PEER, "token issue", token=name, role=role, expires=issued.peer.expires)
    render.line(text)
    return EXIT_OK


@token.command()
@click.argument("name", metavar="NAME")
@shared_options
@command
def revoke(name: str, **kw: Any) -> int:
    """Revoke every token named NAME issued so far (needs the secret); refused everywhere within 5 s."""
    from pyrocluster import revocations
    from pyrocluster.nameserver import registry
    from pyrocluster.roles import SECRET_PEER, audit

    settings = _secret_settings(kw, "revoke tokens")
    ns = registry.connect(settings)
    try:
        revocations.publish_revocation(ns, name, int(time.time() * 1000))
    finally:
        ns._pyroRelease()
    audit(SECRET_PEER, "token revoke", token=name)
    render.line(f"token {name} revoked (every process refuses it within 5 s)")
    return EXIT_OK


@token.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@shared_options
@command
def list_tokens(as_json: bool, **kw: Any) -> int:
    """List the tokens issued: name, role, expiry, state (active, expired, revoked)."""
    from pyrocluster import config, revocations
    from pyrocluster.nameserver import registry

    settings = settings_from(kw)
    config.apply(settings)
    ns = registry.connect(settings)
    try:
        rows = revocations.read_tokens(ns)
    finally:
        ns._pyroRelease()
    now = time.time()
    for row in rows:
        row["state"] = (
            "revoked"
            if row["revoked_ms"]
            else "expired"
            if row["expires"] and now >= row["expires"]
            else "active"
        )
    if as_json:
        render.print_json({"tokens": rows})
        return EXIT_OK
    if not rows:
        render.line("no tokens issued")
    for row in rows:
        expires = (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row["expires"])) if row["expires"] else "never"
        )
        render.line(f"{row['name']}  {row['role']}  expires {expires}  {row['state']}")
    return EXIT_OK
