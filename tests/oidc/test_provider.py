"""The OIDC harness: a real OpenID provider on loopback, driven headlessly.

Discovery, the authorization code flow with PKCE through the provider's own login and consent
forms (aiohttp, no browser), and the ID token checked with joserfc: signature by the issuer's
JWKS, issuer, audience, expiry and nonce. These are the checks the server's OIDC login will
make; the refusals below show the harness can produce each bad token.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
)
from joserfc.jwk import KeySet
from yarl import URL

from .forms import SignInFailed, parse_forms, parse_links, sign_in
from .provider import OidcClient, OidcProvider, ProviderUnavailable, provider_config

SCOPE = "openid email profile groups"


def check_id_token(
    token: str,
    jwks: dict[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    now: int | None = None,
) -> dict[str, Any]:
    """The ID token's claims, once signature, issuer, audience, expiry and nonce are checked."""
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])  # type: ignore[arg-type]
    registry = jwt.JWTClaimsRegistry(
        now=now,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        nonce={"essential": True, "value": nonce},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    )
    registry.validate(decoded.claims)
    return dict(decoded.claims)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def discover(http: aiohttp.ClientSession, provider: OidcProvider) -> dict[str, Any]:
    async with http.get(provider.discovery_url) as resp:
        assert resp.status == 200
        document: dict[str, Any] = await resp.json()
    return document


class Login:
    """One authorization request (state, nonce, PKCE verifier) and what came of it."""

    def __init__(self, client: OidcClient) -> None:
        self.client = client
        self.state = secrets.token_urlsafe(16)
        self.nonce = secrets.token_urlsafe(16)
        self.verifier = secrets.token_urlsafe(48)

    def url(self, metadata: dict[str, Any], *, pkce: bool = True) -> URL:
        query = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.client.redirect_uri,
            "scope": SCOPE,
            "state": self.state,
            "nonce": self.nonce,
        }
        if pkce:
            query["code_challenge"] = create_s256_code_challenge(self.verifier)
            query["code_challenge_method"] = "S256"
        return URL(metadata["authorization_endpoint"]).with_query(query)


async def exchange(
    http: aiohttp.ClientSession,
    metadata: dict[str, Any],
    client: OidcClient,
    code: str,
    verifier: str,
) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uri,
        "code_verifier": verifier,
    }
    auth = {"Authorization": aiohttp.encode_basic_auth(client.client_id, client.client_secret)}
    async with http.post(metadata["token_endpoint"], data=form, headers=auth) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def log_in(
    http: aiohttp.ClientSession, provider: OidcProvider, user: str, client: OidcClient | None = None
) -> tuple[Login, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The whole code flow: (login, metadata, JWKS, token response)."""
    client = client or provider.client
    metadata = await discover(http, provider)
    async with http.get(metadata["jwks_uri"]) as resp:
        jwks: dict[str, Any] = await resp.json()
    login = Login(client)
    landing, _ = await sign_in(http, login.url(metadata), login=user, stop_at=client.redirect_uri)
    assert landing.query["state"] == login.state
    assert landing.query["iss"] == provider.issuer  # RFC 9207
    status, tokens = await exchange(http, metadata, client, landing.query["code"], login.verifier)
    assert status == 200, tokens
    return login, metadata, jwks, tokens


def tamper_payload(token: str, **changes: Any) -> str:
    """The token with claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


# Pure pieces of the harness


def test_parse_forms_reads_the_dev_login_form() -> None:
    html = """<form autocomplete="off" action="/interaction/abc/login" method="post">
      <input type="hidden" name="prompt" value="login"/>
      <input required type="text" name="login" placeholder="Enter any login" autofocus>
      <input required type="password" name="password" placeholder="and password">
      <button type="submit" class="login login-submit">Sign-in</button></form>
      <a href="/interaction/abc/abort">[ Cancel ]</a>"""
    (form,) = parse_forms(html)
    assert (form.action, form.method) == ("/interaction/abc/login", "post")
    assert form.fields == {"prompt": "login", "login": "", "password": ""}
    assert parse_forms("<p>no form</p><input name='stray'>") == []
    assert parse_links(html) == ["/interaction/abc/abort"]


def test_provider_config_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="at least one client"):
        provider_config([], {}, 60, "127.0.0.1")
    with pytest.raises(ValueError, match="at least 1 s"):
        provider_config([OidcClient.new("http://127.0.0.1:9/cb")], {}, 0, "127.0.0.1")
    config = provider_config([OidcClient("id", "secret", "http://x/cb")], {"a": {}}, 60, "::1")
    assert config["clients"] == [
        {"client_id": "id", "client_secret": "secret", "redirect_uris": ["http://x/cb"]}
    ]


# Against the real provider


async def test_discovery_names_endpoints_on_the_issuer_and_pkce_s256(
    oidc_provider: OidcProvider,
) -> None:
    async with session() as http:
        metadata = await discover(http, oidc_provider)
        assert metadata["issuer"] == oidc_provider.issuer
        assert oidc_provider.issuer.startswith("http://127.0.0.1:")
        for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            assert metadata[endpoint].startswith(oidc_provider.issuer + "/")
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert {"email", "groups"} <= set(metadata["scopes_supported"])
        async with http.get(metadata["jwks_uri"]) as resp:
            (key,) = (await resp.json())["keys"]
        assert (key["kty"], key["alg"]) == ("RSA", "RS256")
        assert "d" not in key  # the public half only


async def test_code_flow_with_pkce_gives_an_id_token_with_email_and_groups(
    oidc_provider: OidcProvider,
) -> None:
    async with session() as http:
        login, _, jwks, tokens = await log_in(http, oidc_provider, "alice")
    claims = check_id_token(
        tokens["id_token"],
        jwks,
        issuer=oidc_provider.issuer,
        client_id=oidc_provider.client.client_id,
        nonce=login.nonce,
    )
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["email_verified"] is True
    assert claims["groups"] == ["eng", "admins"]
    assert claims["preferred_username"] == "alice"
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60


async def test_each_bad_id_token_is_refused(oidc_provider: OidcProvider) -> None:
    async with session() as http:
        login, _, jwks, tokens = await log_in(http, oidc_provider, "alice")
    token = tokens["id_token"]
    good = {
        "issuer": oidc_provider.issuer,
        "client_id": oidc_provider.client.client_id,
        "nonce": login.nonce,
    }
    exp = check_id_token(token, jwks, **good)["exp"]

    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    with pytest.raises(BadSignatureError):
        check_id_token(f"{header}.{payload}.{flipped}", jwks, **good)
    with pytest.raises(BadSignatureError):
        check_id_token(tamper_payload(token, email="mallory@example.com"), jwks, **good)
    with pytest.raises(InvalidClaimError, match="aud"):
        check_id_token(token, jwks, **{**good, "client_id": "another-client"})
    with pytest.raises(InvalidClaimError, match="iss"):
        check_id_token(token, jwks, **{**good, "issuer": "http://127.0.0.1:1"})
    with pytest.raises(InvalidClaimError, match="nonce"):
        check_id_token(token, jwks, **{**good, "nonce": "replayed"})
    with pytest.raises(ExpiredTokenError):
        check_id_token(token, jwks, **good, now=exp + 1)


async def test_a_token_from_another_provider_fails_the_signature_check(
    start_oidc_provider: Callable[..., OidcProvider], oidc_client: OidcClient
) -> None:
    first = start_oidc_provider([oidc_client])
    second = start_oidc_provider([oidc_client])
    async with session() as http:
        login, _, _, tokens = await log_in(http, first, "alice")
        _, _, second_jwks, _ = await log_in(http, second, "alice")
    # Same client, same claims shape, a different signing key: refused on the signature.
    with pytest.raises(JoseError):
        check_id_token(
            tokens["id_token"],
            second_jwks,
            issuer=first.issuer,
            client_id=oidc_client.client_id,
            nonce=login.nonce,
        )


async def test_pkce_is_required_and_the_verifier_checked(oidc_provider: OidcProvider) -> None:
    client = oidc_provider.client
    async with session() as http:
        metadata = await discover(http, oidc_provider)
        login = Login(client)
        landing, _ = await sign_in(
            http, login.url(metadata, pkce=False), login="alice", stop_at=client.redirect_uri
        )
        # Without a code challenge the provider sends the browser back with an error.
        assert landing.query["error"] == "invalid_request"
        assert "PKCE" in landing.query["error_description"]
        assert "code" not in landing.query

        login = Login(client)
        landing, _ = await sign_in(
            http, login.url(metadata), login="alice", stop_at=client.redirect_uri
        )
        status, body = await exchange(
            http, metadata, client, landing.query["code"], secrets.token_urlsafe(48)
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        # oidc-provider consumes the code on any exchange: after a wrong verifier the right
        # one is refused too (a stolen code without its verifier is worth nothing).
        status, tokens = await exchange(
            http, metadata, client, landing.query["code"], login.verifier
        )
        assert status == 200 and "id_token" in tokens
        status, body = await exchange(http, metadata, client, landing.query["code"], login.verifier)
        assert (status, body["error"]) == (400, "invalid_grant")


async def test_wrong_client_secret_is_refused(oidc_provider: OidcProvider) -> None:
    client = oidc_provider.client
    async with session() as http:
        metadata = await discover(http, oidc_provider)
        login = Login(client)
        landing, _ = await sign_in(
            http, login.url(metadata), login="alice", stop_at=client.redirect_uri
        )
        wrong = OidcClient(client.client_id, "not-the-secret", client.redirect_uri)
        status, body = await exchange(http, metadata, wrong, landing.query["code"], login.verifier)
    assert (status, body["error"]) == (401, "invalid_client")


async def test_an_unknown_login_signs_in_without_email(oidc_provider: OidcProvider) -> None:
    async with session() as http:
        login, _, jwks, tokens = await log_in(http, oidc_provider, "mallory")
    claims = check_id_token(
        tokens["id_token"],
        jwks,
        issuer=oidc_provider.issuer,
        client_id=oidc_provider.client.client_id,
        nonce=login.nonce,
    )
    assert claims["sub"] == "mallory"
    assert "email" not in claims and "groups" not in claims


async def test_a_short_id_token_lifetime_is_honoured(
    start_oidc_provider: Callable[..., OidcProvider], oidc_client: OidcClient
) -> None:
    provider = start_oidc_provider([oidc_client], id_token_ttl=2)
    async with session() as http:
        login, _, jwks, tokens = await log_in(http, provider, "bob")
    good = {"issuer": provider.issuer, "client_id": oidc_client.client_id, "nonce": login.nonce}
    claims = check_id_token(tokens["id_token"], jwks, **good)
    assert claims["exp"] - claims["iat"] == 2
    assert claims["email"] == "bob@other.test"
    with pytest.raises(ExpiredTokenError):
        check_id_token(tokens["id_token"], jwks, **good, now=claims["iat"] + 3)


async def test_a_redirect_uri_not_registered_is_refused_on_the_provider(
    oidc_provider: OidcProvider,
) -> None:
    rogue = OidcClient(
        oidc_provider.client.client_id,
        oidc_provider.client.client_secret,
        "http://127.0.0.1:9/evil",
    )
    async with session() as http:
        metadata = await discover(http, oidc_provider)
        with pytest.raises(SignInFailed, match="redirect_uri"):
            await sign_in(
                http, Login(rogue).url(metadata), login="alice", stop_at=rogue.redirect_uri
            )


def test_a_missing_package_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import provider as module

    monkeypatch.setattr(module, "PACKAGE", module.HERE / "no-such" / "package.json")
    with pytest.raises(ProviderUnavailable, match="make oidc-provider"):
        module.node_binary()


async def test_cancel_on_the_login_page_sends_access_denied_back(
    oidc_provider: OidcProvider,
) -> None:
    client = oidc_provider.client
    async with session() as http:
        metadata = await discover(http, oidc_provider)
        login = Login(client)
        landing, _ = await sign_in(
            http, login.url(metadata), login="alice", stop_at=client.redirect_uri, cancel=True
        )
    assert landing.query["error"] == "access_denied"
    assert landing.query["state"] == login.state
    assert "code" not in landing.query
