"""Role tokens (SPEC 13) as pure code: issued from the secret, never revealing it, never made stronger."""

from __future__ import annotations

import base64
import json

import pytest

from pyrocluster import handshake, tokens
from pyrocluster.roles import Peer, Revocations
from pyrocluster.tokens import Role

SECRET = b"unit-secret-for-tokens"
NOW = 1_800_000_000.0


def issue(role: Role = Role.VIEWER, name: str = "grafana", lifetime: int = 3600) -> str:
    return tokens.issue(SECRET, name, role, NOW, lifetime)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_token_carries_name_role_expiry_and_not_the_secret() -> None:
    text = issue(Role.SUBMITTER, "data-team", 30 * 86400)
    token = tokens.parse(text)
    assert (token.claims.name, token.claims.role) == ("data-team", Role.SUBMITTER)
    assert token.claims.expires == int(NOW) + 30 * 86400
    assert SECRET.decode() not in text and SECRET.hex() not in text
    assert token.claims.cluster == tokens.cluster_public(SECRET)
    assert tokens.cluster_key(SECRET).private_bytes_raw() not in base64.urlsafe_b64decode(
        text.split(".")[3] + "=="
    )


def test_editing_the_claims_to_a_stronger_role_breaks_the_signature() -> None:
    prefix, body, signature, key = issue(Role.VIEWER).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["r"] = "operator"
    forged = ".".join((prefix, b64(json.dumps(claims).encode()), signature, key))
    with pytest.raises(tokens.TokenInvalid, match="not signed by this cluster"):
        tokens.parse(forged)


def test_a_token_cannot_sign_another_token() -> None:
    # the holder's own key signs handshakes, not claims: claims it signs are refused
    holder = tokens.parse(issue(Role.OPERATOR))
    prefix, body, _, key = issue(Role.OPERATOR, "other").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["r"] = "secret"
    raw = json.dumps(claims).encode()
    forged = ".".join((prefix, b64(raw), b64(holder.private.sign(raw)), key))
    with pytest.raises(tokens.TokenInvalid):
        tokens.parse(forged)


def test_a_token_of_another_cluster_is_refused_in_the_handshake() -> None:
    other = tokens.parse(tokens.issue(b"another-secret", "x", Role.OPERATOR, NOW, 60))
    hello = handshake.client_hello(handshake.Credential(token=other), "obj", NOW)
    with pytest.raises(handshake.HandshakeRefused, match="invalid token"):
        handshake.check_client_hello(SECRET, hello, NOW)


def test_the_handshake_learns_the_role_and_refuses_an_expired_token() -> None:
    cred = handshake.Credential(token=tokens.parse(issue(Role.SUBMITTER, "ci", lifetime=60)))
    hello = handshake.client_hello(cred, "obj", NOW)
    peer = handshake.check_client_hello(SECRET, hello, NOW)
    assert (peer.name, peer.role) == ("ci", Role.SUBMITTER)
    late = handshake.client_hello(cred, "obj", NOW + 61)
    with pytest.raises(handshake.HandshakeRefused, match="expired"):
        handshake.check_client_hello(SECRET, late, NOW + 61)


def test_a_stolen_certificate_without_the_key_proves_nothing() -> None:
    cred = handshake.Credential(token=tokens.parse(issue()))
    hello = handshake.client_hello(cred, "obj", NOW)
    intruder = handshake.Credential(token=tokens.parse(issue(name="intruder")))
    forged = {**handshake.client_hello(intruder, "obj", NOW), "cert": hello["cert"]}
    with pytest.raises(handshake.HandshakeRefused, match="wrong signature"):
        handshake.check_client_hello(SECRET, forged, NOW)


def test_servers_and_clients_of_either_kind_prove_themselves_to_each_other() -> None:
    secret = handshake.Credential(secret=SECRET)
    token = handshake.Credential(token=tokens.parse(issue(Role.SUBMITTER)))
    stranger = handshake.Credential(secret=b"not ours")
    for server in (secret, token):
        for client in (secret, token):
            hello = handshake.client_hello(client, "obj", NOW)
            if server is token and client is secret:  # a MAC it cannot check: it asks for a signature
                with pytest.raises(handshake.HandshakeRefused, match="sign the handshake"):
                    handshake.check_client_hello(server, hello, NOW)
                hello = handshake.client_hello(client, "obj", NOW, signed=True)
            assert handshake.check_client_hello(server, hello, NOW).role == client.role
            reply = handshake.server_reply(server, hello["nonce"], signed="mac" not in hello)
            assert handshake.check_server_reply(client, hello["nonce"], reply, NOW)
            fake = handshake.server_reply(stranger, hello["nonce"], signed=True)
            assert not handshake.check_server_reply(client, hello["nonce"], fake, NOW)


def test_revocation_covers_tokens_issued_before_it_only() -> None:
    revoked = Revocations()
    old, new = Peer("ci", Role.SUBMITTER, issued_ms=1000), Peer("ci", Role.SUBMITTER, issued_ms=3000)
    revoked.update({"ci": 2000})
    assert revoked.refuses(old) and not revoked.refuses(new)
    assert not revoked.refuses(Peer("secret", Role.SECRET))


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("1w", 604800), ("1d12h", 129600)]
)
def test_durations(text: str, seconds: int) -> None:
    assert tokens.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "abc", "0d", "-1d", "3x"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration|longer than zero"):
        tokens.parse_duration(text)


def test_bad_names_and_roles_are_refused() -> None:
    with pytest.raises(ValueError, match="token name"):
        tokens.issue(SECRET, "has space", Role.VIEWER, NOW, 60)
    with pytest.raises(ValueError, match="cannot carry the secret"):
        tokens.issue(SECRET, "x", Role.SECRET, NOW, 60)
    with pytest.raises(ValueError, match="unknown role"):
        Role.parse("admin")
    with pytest.raises(tokens.TokenInvalid, match="not a pyrocluster token"):
        tokens.parse(SECRET.decode())
