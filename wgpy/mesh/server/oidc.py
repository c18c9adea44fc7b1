"""Single sign-on through an OpenID provider: the decisions, without I/O.

The authorization code flow with PKCE (RFC 6749, RFC 7636, OpenID Connect Core 1.0):

1. :func:`new_authorization` makes a fresh ``state`` (ties the callback to this browser's
   request), ``nonce`` (ties the ID token to it) and PKCE ``verifier``;
   :func:`authorization_url` is where the browser goes, with the S256 code challenge.
2. The provider sends the browser back with ``code`` and ``state``; :func:`token_request`
   is the form and header of the code exchange (client_secret_basic, the verifier).
3. :func:`check_id_token` checks the ID token with joserfc: the signature by a key of the
   issuer's JWKS (an algorithm the provider announces, never ``none`` or an HMAC), then
   ``iss``, ``aud`` (and ``azp`` when there are several audiences), ``exp``, ``iat`` and
   ``nonce``. :class:`UnknownSigningKey` says the JWKS may be stale: fetch it once more.
4. :func:`identity_of` turns the claims into an :class:`Identity`; :func:`refusal` applies
   who may join (:class:`OidcSettings`: email domains, emails, groups; each set list must
   match, as Headscale does); :func:`user_name_for` gives the wgpy user name.

Time (``now``, seconds since the epoch) and randomness (``rng``) are arguments; the network
is oidc_provider.py's, the pages and the store's are oidc_routes.py's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    DecodeError,
    InvalidKeyIdError,
    JoseError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet

from .auth import Rng
from .policy import USER_NAME
from .principals import GROUP

DEFAULT_GROUPS_CLAIM = "groups"
LEEWAY = 60  # seconds of clock difference allowed on exp and iat
LOGIN_LIFETIME = 600.0  # seconds from /oidc/start to the callback
STATE_BYTES = 32  # random bytes in state and nonce (256 bits)
VERIFIER_BYTES = 48  # random bytes in the PKCE verifier: 64 characters (RFC 7636: 43 to 128)
MAX_TOKEN = 16 * 1024  # bytes of an ID token we look at
# Signing algorithms accepted (asymmetric only: a client-secret HMAC or "none" never).
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
BASE_SCOPES = ("openid", "email", "profile")
ASK = "; sign in with another account, or ask the network's admin to let this one in"


class OidcError(Exception):
    """A sign-in refused: the message is one sentence for the person signing in."""


class UnknownSigningKey(OidcError):
    """The token names a key the JWKS in hand does not have (the provider rotated keys)."""


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class OidcSettings:
    """The relying party (wgpy) at one provider, and who may join through it."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    allowed_domains: tuple[str, ...] = ()  # email domains (lowercase), e.g. "example.com"
    allowed_users: tuple[str, ...] = ()  # emails (lowercase)
    allowed_groups: tuple[str, ...] = ()  # group names as normalised (normalize_group)
    groups_claim: str = DEFAULT_GROUPS_CLAIM
    leeway: int = LEEWAY

    @classmethod
    def checked(
        cls,
        issuer: str,
        client_id: str,
        client_secret: str,
        *,
        allowed_domains: Sequence[str] = (),
        allowed_users: Sequence[str] = (),
        allowed_groups: Sequence[str] = (),
        groups_claim: str = DEFAULT_GROUPS_CLAIM,
    ) -> OidcSettings:
        """The settings, each checked; ValueError with the sentence for the operator."""
        issuer = check_issuer(issuer)
        if not client_id or len(client_id) > 255 or not client_id.isprintable():
            raise ValueError("the OIDC client ID must be 1 to 255 printable characters")
        if not client_secret:
            raise ValueError("the OIDC client secret is empty")
        domains = []
        for domain in allowed_domains:
            d = domain.strip().lower().removeprefix("@")
            if not re.fullmatch(
                r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", d
            ):
                raise ValueError(f'"{domain}" is not an email domain, e.g. example.com')
            domains.append(d)
        users = []
        for user in allowed_users:
            u = user.strip().lower()
            if u.count("@") != 1 or u.startswith("@") or u.endswith("@"):
                raise ValueError(f'"{user}" is not an email address, e.g. alice@example.com')
            users.append(u)
        groups = []
        for group in allowed_groups:
            g = normalize_group(group)
            if g is None:
                raise ValueError(f'"{group}" is not a group name')
            groups.append(g)
        if not groups_claim or len(groups_claim) > 255:
            raise ValueError("the groups claim must be a claim name, e.g. groups")
        return cls(
            issuer,
            client_id,
            client_secret,
            tuple(domains),
            tuple(users),
            tuple(groups),
            groups_claim,
        )


def check_issuer(issuer: str) -> str:
    """The issuer URL (no trailing slash); ValueError unless it is https (or http on a
    loopback address, for tests and local providers) without query or fragment."""
    parts = urlsplit(issuer.strip())
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(
            f'the OIDC issuer "{issuer}" must be an https:// URL (http:// only on loopback)'
        )
    if not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f'the OIDC issuer "{issuer}" must be a URL without query or fragment')
    return issuer.strip().rstrip("/")


# --------------------------------------------------------------------- provider metadata


@dataclass(frozen=True)
class ProviderMetadata:
    """What discovery says (``/.well-known/openid-configuration``), checked."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    scopes: tuple[str, ...]  # the scopes wgpy asks for
    algorithms: tuple[str, ...]  # ID token signing algorithms accepted


def discovery_url(issuer: str) -> str:
    return f"{issuer}/.well-known/openid-configuration"


def parse_metadata(document: object, settings: OidcSettings) -> ProviderMetadata:
    """The provider's metadata; OidcError unless it names this issuer exactly (OpenID
    Connect Discovery 1.0 section 4.3) and endpoints of the same scheme."""
    if not isinstance(document, dict):
        raise OidcError("the OpenID provider's discovery document is not a JSON object")
    if document.get("issuer") != settings.issuer:
        raise OidcError(
            f"the OpenID provider's discovery document names issuer "
            f'"{_short(document.get("issuer"))}", not the configured "{settings.issuer}"'
        )
    scheme = urlsplit(settings.issuer).scheme
    endpoints = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = document.get(name)
        if not isinstance(value, str) or urlsplit(value).scheme != scheme:
            raise OidcError(f'the OpenID provider\'s discovery document has no valid "{name}"')
        endpoints[name] = value
    supported = document.get("scopes_supported")
    scopes = list(BASE_SCOPES)
    if isinstance(supported, list) and settings.groups_claim in supported:
        scopes.append(settings.groups_claim)  # a provider may refuse a scope it lacks
    offered = document.get("id_token_signing_alg_values_supported")
    if isinstance(offered, list):
        algorithms = tuple(a for a in ALGORITHMS if a in offered)
    else:
        algorithms = ("RS256",)
    if not algorithms:
        raise OidcError(
            "the OpenID provider signs ID tokens with none of the algorithms wgpy accepts "
            f"({', '.join(ALGORITHMS)})"
        )
    return ProviderMetadata(
        settings.issuer,
        endpoints["authorization_endpoint"],
        endpoints["token_endpoint"],
        endpoints["jwks_uri"],
        tuple(scopes),
        algorithms,
    )


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class Authorization:
    """One authorization request: what the callback must match."""

    state: str = field(repr=False)
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)


def random_token(rng: Rng, size: int) -> str:
    """``size`` random bytes as base64url without padding."""
    return base64.urlsafe_b64encode(rng(size)).decode("ascii").rstrip("=")


def new_authorization(rng: Rng = os.urandom) -> Authorization:
    return Authorization(
        random_token(rng, STATE_BYTES),
        random_token(rng, STATE_BYTES),
        random_token(rng, VERIFIER_BYTES),
    )


def code_challenge(verifier: str) -> str:
    """RFC 7636's S256: BASE64URL(SHA256(verifier)), no padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def authorization_url(
    metadata: ProviderMetadata, settings: OidcSettings, redirect_uri: str, auth: Authorization
) -> str:
    query = {
        "response_type": "code",
        "client_id": settings.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(metadata.scopes),
        "state": auth.state,
        "nonce": auth.nonce,
        "code_challenge": code_challenge(auth.verifier),
        "code_challenge_method": "S256",
    }
    separator = "&" if urlsplit(metadata.authorization_endpoint).query else "?"
    return metadata.authorization_endpoint + separator + urlencode(query)


def token_request(
    settings: OidcSettings, redirect_uri: str, code: str, verifier: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(form, headers) of the code exchange; the client authenticates with HTTP Basic, its
    ID and secret form-encoded first (RFC 6749 section 2.3.1)."""
    user = quote(settings.client_id, safe="")
    secret = quote(settings.client_secret, safe="")
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    return form, {"Authorization": f"Basic {basic}", "Accept": "application/json"}


def callback_error(query: Mapping[str, str], settings: OidcSettings) -> str | None:
    """The sentence for a callback that carries the provider's error, or names another
    issuer (RFC 9207's ``iss``: a mix-up with another provider); None: neither."""
    iss = query.get("iss")
    if iss is not None and iss != settings.issuer:
        return "the sign-in answer came from another identity provider than this server's"
    error = query.get("error")
    if error is None:
        return None
    if error == "access_denied":
        return "the sign-in was cancelled at the identity provider"
    description = query.get("error_description", "")
    detail = f": {_printable(description, 200)}" if description else ""
    return f"the identity provider refused the sign-in ({_printable(error, 60)}{detail})"


def _printable(text: str, limit: int) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- the token


def check_id_token(
    token: str,
    jwks: Mapping[str, Any],
    *,
    settings: OidcSettings,
    metadata: ProviderMetadata,
    nonce: str,
    now: float,
) -> dict[str, Any]:
    """The ID token's claims once every check passed; OidcError (one sentence) otherwise,
    UnknownSigningKey when no key of ``jwks`` has the token's key ID."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise OidcError("the identity provider's answer has no usable ID token")
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError):
        raise OidcError("the identity provider's signing keys (JWKS) cannot be read") from None
    try:
        decoded = jwt.decode(token, keys, algorithms=list(metadata.algorithms))
    except InvalidKeyIdError:
        raise UnknownSigningKey(
            "the ID token is signed with a key the identity provider does not publish"
        ) from None
    except BadSignatureError:
        raise OidcError("the ID token's signature is not valid: it was altered or forged") from None
    except UnsupportedAlgorithmError:
        raise OidcError("the ID token is signed with an algorithm wgpy does not accept") from None
    except (DecodeError, JoseError, ValueError, TypeError):
        raise OidcError("the ID token cannot be read: it is malformed") from None
    claims = dict(decoded.claims)
    _check_claims(claims, settings, nonce, now)
    return claims


def _check_claims(claims: dict[str, Any], settings: OidcSettings, nonce: str, now: float) -> None:
    if claims.get("iss") != settings.issuer:
        raise OidcError(
            f'the ID token was issued by "{_short(claims.get("iss"))}", not by the configured '
            "identity provider"
        )
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if settings.client_id not in audiences:
        raise OidcError("the ID token was issued for another application (its audience is wrong)")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != settings.client_id:
        raise OidcError("the ID token was issued to another application (its azp is wrong)")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise OidcError("the ID token has no valid expiry or issue time")
    if exp <= now - settings.leeway:
        raise OidcError("the ID token has expired; sign in again")
    if iat > now + settings.leeway:
        raise OidcError("the ID token was issued in the future; check this server's clock")
    if claims.get("nonce") != nonce:
        raise OidcError("the ID token does not belong to this sign-in (its nonce is wrong)")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= 255:
        raise OidcError("the ID token names no subject")
    # The same checks through joserfc's registry, so nothing above is the only line.
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=settings.leeway,
        iss={"essential": True, "value": settings.issuer},
        aud={"essential": True, "value": settings.client_id},
        nonce={"essential": True, "value": nonce},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as e:  # pragma: no cover - the checks above refuse first
        raise OidcError(f"the ID token's claims are not valid ({e.error})") from None


# ------------------------------------------------------------------------ the identity


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in."""

    issuer: str
    subject: str
    email: str | None  # only when the provider says it is verified; lowercase
    username: str | None  # preferred_username, as given
    groups: tuple[str, ...]  # normalised (normalize_group), sorted, no duplicates
    name: str | None = None  # display name


def normalize_group(value: object) -> str | None:
    """A provider's group as wgpy names groups (``group:NAME`` in the policy): lowercase,
    a leading "/" dropped (Keycloak's paths), other characters outside [a-z0-9._-] as "-";
    None for a value that leaves nothing."""
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFKC", value).strip().lower().lstrip("/")
    text = re.sub(r"[^a-z0-9._-]+", "-", text).strip("-._")[:63]
    return text if GROUP.match(f"group:{text}") else None


def identity_of(claims: Mapping[str, Any], settings: OidcSettings) -> Identity:
    email = claims.get("email")
    verified = claims.get("email_verified") is True
    if isinstance(email, str) and verified and email.count("@") == 1 and len(email) <= 320:
        email = email.strip().lower()
    else:
        email = None
    username = claims.get("preferred_username")
    raw = claims.get(settings.groups_claim, [])
    if isinstance(raw, str):
        raw = [raw]
    groups = sorted({g for g in map(normalize_group, raw if isinstance(raw, list) else []) if g})
    name = claims.get("name")
    return Identity(
        issuer=str(claims["iss"]),
        subject=str(claims["sub"]),
        email=email,
        username=username if isinstance(username, str) and username else None,
        groups=tuple(groups[:256]),
        name=name if isinstance(name, str) and name else None,
    )


def refusal(identity: Identity, settings: OidcSettings) -> str | None:
    """Why ``identity`` may not join (None: it may). Each configured list must match: an
    email domain, an email, a group."""
    who = identity.email or identity.username or identity.subject
    if settings.allowed_domains or settings.allowed_users:
        if identity.email is None:
            return (
                "this server admits people by their email address, and the identity provider "
                f"gave no verified email for this account{ASK}"
            )
        domain = identity.email.rpartition("@")[2]
        if settings.allowed_domains and domain not in settings.allowed_domains:
            return f'accounts of the domain "{domain}" may not join this network{ASK}'
        if settings.allowed_users and identity.email not in settings.allowed_users:
            return f'"{who}" is not among the people allowed to join this network{ASK}'
    if settings.allowed_groups and not set(identity.groups) & set(settings.allowed_groups):
        return f'"{who}" is in none of the groups allowed to join this network{ASK}'
    return None


def user_name_for(identity: Identity) -> str:
    """The wgpy user name for a first sign-in: the email's local part, else the preferred
    user name, in the form user names take (lowercase; other characters as "-"); OidcError
    when neither gives one."""
    for candidate in (
        identity.email.partition("@")[0] if identity.email else None,
        identity.username.partition("@")[0] if identity.username else None,
    ):
        if not candidate:
            continue
        text = unicodedata.normalize("NFKD", candidate)
        text = "".join(c for c in text if not unicodedata.combining(c)).lower()
        text = re.sub(r"[^a-z0-9._-]+", "-", text).strip("-._")[:63]
        if USER_NAME.match(text):
            return text
    raise OidcError(
        "the identity provider gave neither an email nor a user name for this account, so "
        "wgpy cannot name its user; ask the provider's admin to release the email claim"
    )
