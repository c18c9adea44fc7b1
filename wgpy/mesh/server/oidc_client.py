"""The server's side of the talk with the OpenID provider (aiohttp): discovery, the JWKS
(cached; fetched again once when a token names a key it lacks) and the code exchange.

The decisions are oidc.py's; this module only fetches, bounds what it reads (size, time) and
turns every network failure into :class:`OidcUnavailable` with one sentence. The client
secret goes only into the token request's Authorization header, never into a log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from wgpy.log import get_logger

from . import oidc
from .config import OidcConfig
from .oidc import OidcError, OidcSettings, ProviderMetadata, UnknownSigningKey
from .secretfile import read_secret_file

TIMEOUT = 10.0  # seconds for one request to the provider
MAX_RESPONSE = 1024 * 1024  # bytes read from the provider in one answer
METADATA_TTL = 3600.0  # seconds discovery and the JWKS are kept
JWKS_REFETCH_GAP = 10.0  # seconds between two fetches of the JWKS for unknown keys


class OidcUnavailable(OidcError):
    """The provider could not be reached or answered nonsense."""


class OidcConfigError(ValueError):
    """The OIDC settings cannot work; one sentence for the operator."""


def load_client_secret(path: Path) -> str:
    """The client secret in ``path`` (surrounding whitespace stripped). The file must be the
    owner's alone (mode 0600 or 0400): whoever reads it can act as this server at the
    provider."""
    data = read_secret_file(path, "OIDC client secret", OidcConfigError)
    try:
        secret = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise OidcConfigError(f"the OIDC client secret file {path} is not UTF-8 text") from None
    if not secret:
        raise OidcConfigError(
            f"the OIDC client secret file {path} is empty; put the provider's client secret in it"
        )
    return secret


def settings_of(config: OidcConfig) -> OidcSettings:
    """The checked settings, with the secret read from its file; OidcConfigError."""
    secret = load_client_secret(config.client_secret_file)
    try:
        return OidcSettings.checked(
            config.issuer,
            config.client_id,
            secret,
            allowed_domains=config.allowed_domains,
            allowed_users=config.allowed_users,
            allowed_groups=config.allowed_groups,
            groups_claim=config.groups_claim,
        )
    except ValueError as e:
        raise OidcConfigError(str(e)) from None


class OidcClient:
    """One provider, seen from this server; ``clock`` is monotonic (cache ages)."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = TIMEOUT,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.timeout = timeout
        self.log = get_logger(component="oidc", issuer=settings.issuer)
        self._session: aiohttp.ClientSession | None = None
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._jwks: tuple[float, dict[str, Any]] | None = None
        self._jwks_fetched_at = -JWKS_REFETCH_GAP
        self._lock = asyncio.Lock()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            async with self._http().get(
                url, allow_redirects=False, headers={"Accept": "application/json"}
            ) as resp:
                body = await _read_bounded(resp)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise OidcUnavailable(
                f"the identity provider cannot be reached for its {what} ({_reason(e)}); "
                "try again later"
            ) from None
        if status != 200:
            raise OidcUnavailable(f"the identity provider answered {status} for its {what}")
        return _parse(body, what)

    async def metadata(self) -> ProviderMetadata:
        """Discovery, cached for METADATA_TTL seconds."""
        now = self.clock()
        if self._metadata is not None and now - self._metadata[0] < METADATA_TTL:
            return self._metadata[1]
        async with self._lock:
            if self._metadata is not None and now - self._metadata[0] < METADATA_TTL:
                return self._metadata[1]
            document = await self._get_json(
                oidc.discovery_url(self.settings.issuer), "discovery document"
            )
            metadata = oidc.parse_metadata(document, self.settings)
            self._metadata = (self.clock(), metadata)
            self.log.info("provider discovered", scopes=list(metadata.scopes))
            return metadata

    async def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        """The provider's public keys, cached; ``refresh``: fetch again (at most once every
        JWKS_REFETCH_GAP seconds, so forged key IDs cannot make us hammer the provider)."""
        async with self._lock:
            now = self.clock()
            cached = self._jwks
            if cached is not None:
                if not refresh and now - cached[0] < METADATA_TTL:
                    return cached[1]
                if refresh and now - self._jwks_fetched_at < JWKS_REFETCH_GAP:
                    return cached[1]
            metadata = self._metadata[1] if self._metadata else None
            if metadata is None:
                raise OidcUnavailable("the identity provider was not discovered yet")
            self._jwks_fetched_at = now
            document = await self._get_json(metadata.jwks_uri, "signing keys (JWKS)")
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise OidcUnavailable("the identity provider's JWKS has no list of keys")
            self._jwks = (self.clock(), document)
            self.log.info("signing keys fetched", keys=len(document["keys"]))
            return document

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
        """The token endpoint's answer for ``code``; OidcError with the provider's reason
        when it refuses (a used or stolen code, a wrong verifier)."""
        metadata = await self.metadata()
        form, headers = oidc.token_request(self.settings, redirect_uri, code, verifier)
        try:
            async with self._http().post(
                metadata.token_endpoint, data=form, headers=headers, allow_redirects=False
            ) as resp:
                body = await _read_bounded(resp)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise OidcUnavailable(
                f"the identity provider cannot be reached to finish the sign-in ({_reason(e)}); "
                "sign in again"
            ) from None
        answer = _parse(body, "token answer")
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            self.log.warning("code exchange refused", status=status, error=str(error)[:60])
            raise OidcError(
                "the identity provider refused to finish the sign-in "
                f"({str(error)[:60] if error else status}); sign in again"
            )
        return answer

    async def verify(self, id_token: object, nonce: str, now: float) -> dict[str, Any]:
        """The ID token's claims (oidc.check_id_token), fetching the JWKS again once when
        the token names a key the cached set lacks."""
        metadata = await self.metadata()
        if not isinstance(id_token, str):
            raise OidcError("the identity provider's answer has no ID token")
        keys = await self.jwks()
        try:
            return oidc.check_id_token(
                id_token, keys, settings=self.settings, metadata=metadata, nonce=nonce, now=now
            )
        except UnknownSigningKey:
            keys = await self.jwks(refresh=True)
        return oidc.check_id_token(
            id_token, keys, settings=self.settings, metadata=metadata, nonce=nonce, now=now
        )


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body, or its first MAX_RESPONSE + 1 bytes when it is longer (a read
    returns what has arrived, so read until the end or the bound)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_RESPONSE:
        chunk = await resp.content.read(MAX_RESPONSE + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _parse(body: bytes, what: str) -> Any:
    if len(body) > MAX_RESPONSE:
        raise OidcUnavailable(
            f"the identity provider's {what} is larger than {MAX_RESPONSE // 1024} KiB"
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: no real answer
        raise OidcUnavailable(f"the identity provider's {what} is not JSON") from None


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer in time"
    text = str(e) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."
