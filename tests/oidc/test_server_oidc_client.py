"""wgpy/mesh/server/oidc_client.py against the real provider: discovery, the JWKS cache
(fetched again once for a key it lacks, not more than once in JWKS_REFETCH_GAP), the code
exchange and its refusals; the client secret's file (0600) and the server's OIDC options."""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path

import aiohttp
import pytest
from joserfc.jwk import RSAKey
from mesh.support import run

from wgpy.cli import ExitStatus
from wgpy.cli.commands import build_parser
from wgpy.cli.environment import Environment
from wgpy.cli.server import _config
from wgpy.mesh.server import MeshServer, ServerConfig, oidc
from wgpy.mesh.server.config import OidcConfig
from wgpy.mesh.server.oidc import OidcError, OidcSettings
from wgpy.mesh.server.oidc_client import (
    JWKS_REFETCH_GAP,
    OidcClient,
    OidcConfigError,
    OidcUnavailable,
    load_client_secret,
    settings_of,
)
from wgpy.mesh.server.service import ServerError

from .forms import sign_in
from .provider import OidcProvider
from .test_provider import Login

STALE = {"keys": [RSAKey.generate_key(2048, parameters={"kid": "old", "alg": "RS256"}).as_dict()]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(provider: OidcProvider, **kw: object) -> OidcSettings:
    c = provider.client
    return OidcSettings.checked(provider.issuer, c.client_id, c.client_secret, **kw)  # type: ignore[arg-type]


async def code_for(provider: OidcProvider, client: OidcClient, login: Login) -> str:
    metadata = await client.metadata()
    auth = oidc.Authorization(login.state, login.nonce, login.verifier)
    url = oidc.authorization_url(metadata, client.settings, provider.client.redirect_uri, auth)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        landing, _ = await sign_in(http, url, login="alice", stop_at=provider.client.redirect_uri)
    return landing.query["code"]


async def test_discovery_exchange_and_a_rotated_key(oidc_provider: OidcProvider) -> None:
    clock = Clock()
    client = OidcClient(settings(oidc_provider), clock=clock)
    try:
        metadata = await client.metadata()
        assert metadata.token_endpoint == f"{oidc_provider.issuer}/token"
        assert "groups" in metadata.scopes and metadata.algorithms == ("RS256",)
        login = Login(oidc_provider.client)
        code = await code_for(oidc_provider, client, login)
        tokens = await client.exchange(code, login.verifier, oidc_provider.client.redirect_uri)
        # The cache holds a set without the provider's key (it rotated since): the token
        # names a key it lacks, so the set is fetched again, once, and the token passes.
        client._jwks = (clock.now, STALE)
        claims = await client.verify(tokens["id_token"], login.nonce, now=time.time())
        assert claims["sub"] == "alice"
        assert client._jwks is not None and client._jwks[1] != STALE
        # A key that the fresh set lacks too: refused, and no second fetch within the gap.
        client._jwks = (clock.now, STALE)
        clock.now += JWKS_REFETCH_GAP / 2
        with pytest.raises(OidcError, match="does not publish"):
            await client.verify(tokens["id_token"], login.nonce, now=time.time())
        assert client._jwks[1] == STALE
        # The code was used: a second exchange is refused by the provider, in a sentence.
        with pytest.raises(OidcError, match=r"refused to finish the sign-in \(invalid_grant\)"):
            await client.exchange(code, login.verifier, oidc_provider.client.redirect_uri)
    finally:
        await client.close()


async def test_a_wrong_secret_and_a_wrong_issuer_are_refused(oidc_provider: OidcProvider) -> None:
    wrong = OidcSettings.checked(
        oidc_provider.issuer, oidc_provider.client.client_id, "not-the-secret"
    )
    client = OidcClient(wrong)
    try:
        login = Login(oidc_provider.client)
        code = await code_for(oidc_provider, client, login)
        with pytest.raises(OidcError, match="invalid_client"):
            await client.exchange(code, login.verifier, oidc_provider.client.redirect_uri)
    finally:
        await client.close()
    # Configured with an issuer the discovery document does not name (a trailing path).
    impostor = OidcSettings.checked(oidc_provider.issuer + "/x", "wgpy", "s")
    client = OidcClient(impostor)
    try:
        with pytest.raises(OidcUnavailable, match="answered 404"):
            await client.metadata()
    finally:
        await client.close()


async def test_an_unreachable_provider_is_one_sentence() -> None:
    client = OidcClient(OidcSettings.checked("http://127.0.0.1:9", "wgpy", "s"), timeout=2.0)
    try:
        with pytest.raises(OidcUnavailable, match="cannot be reached for its discovery"):
            await client.metadata()
    finally:
        await client.close()


def secret_file(tmp_path: Path, data: bytes = b"s3cret\n", mode: int = 0o600) -> Path:
    path = tmp_path / "oidc-secret"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_the_client_secret_file_must_be_the_owners(tmp_path: Path) -> None:
    assert load_client_secret(secret_file(tmp_path)) == "s3cret"
    assert load_client_secret(secret_file(tmp_path, mode=0o400)) == "s3cret"
    path = secret_file(tmp_path, mode=0o644)
    with pytest.raises(OidcConfigError, match=r"read or written by others \(mode 0644\)"):
        load_client_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # reported, not changed
    with pytest.raises(OidcConfigError, match="is empty"):
        load_client_secret(secret_file(tmp_path, b" \n"))
    with pytest.raises(OidcConfigError, match="cannot read"):
        load_client_secret(tmp_path / "missing")
    with pytest.raises(OidcConfigError, match="longer than"):
        load_client_secret(secret_file(tmp_path, b"x" * 5000))
    config = OidcConfig("https://id.example.com", "wgpy", secret_file(tmp_path))
    assert settings_of(config).client_secret == "s3cret"
    assert "s3cret" not in repr(settings_of(config))


async def test_the_server_refuses_to_start_with_an_open_secret(tmp_path: Path) -> None:
    oidc = OidcConfig("https://id.example.com", "wgpy", secret_file(tmp_path, mode=0o640))
    server = MeshServer(ServerConfig(state_dir=tmp_path / "state", port=0, oidc=oidc))
    with pytest.raises(ServerError, match="chmod 600"):
        await server.start()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--oidc-allowed-domains", "example.com"], "the --oidc-* options need --oidc-issuer"),
        (["--oidc-issuer", "https://id.example.com"], "needs --oidc-client-id ID and"),
        (
            ["--oidc-issuer", "http://id.example.com", "--oidc-client-id", "c",
             "--oidc-client-secret", "{tmp}/s"],
            "must be an https:// URL",
        ),
        (
            ["--oidc-issuer", "https://id.example.com", "--oidc-client-id", "c",
             "--oidc-client-secret", "{tmp}/s", "--oidc-allowed-users", "alice"],
            '"alice" is not an email address',
        ),
    ],
)  # fmt: skip
def test_server_options_are_checked(argv: list[str], message: str, tmp_path: Path) -> None:
    status, out, err = run("server", *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert status == ExitStatus.USAGE
    assert err.startswith("wgpy server: ") and message in err and err.count("\n") == 1
    assert out == ""


def test_server_options_make_the_config(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "server",
            "--oidc-issuer",
            "https://id.example.com/",
            "--oidc-client-id",
            "wgpy",
            "--oidc-client-secret",
            str(tmp_path / "s"),
            "--oidc-allowed-domains",
            "example.com, example.org",
            "--oidc-allowed-domains",
            "example.net",
            "--oidc-allowed-groups",
            "eng",
            "--oidc-groups-claim",
            "roles",
        ]
    )
    env = Environment(stdin=io.BytesIO(), stdout=io.StringIO(), stderr=io.StringIO(), env={})
    config = _config(args, env)
    assert config.oidc == OidcConfig(
        "https://id.example.com/",
        "wgpy",
        tmp_path / "s",
        ("example.com", "example.org", "example.net"),
        (),
        ("eng",),
        "roles",
    )
