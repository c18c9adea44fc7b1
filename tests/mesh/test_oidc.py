"""wgpy/mesh/server/oidc.py: the sans-IO OIDC decisions, with tokens signed here by joserfc.

PKCE challenges are checked against authlib's. Tokens are made with a key generated per test
module; the real provider's tokens are checked in tests/oidc/test_server_oidc.py.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from wgpy.mesh.server import oidc
from wgpy.mesh.server.oidc import Identity, OidcError, OidcSettings, UnknownSigningKey

ISSUER = "https://id.example.com"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k2", "alg": "RS256", "use": "sig"})
JWKS = {"keys": [KEY.as_dict(private=False)]}
NOW = 1_800_000_000
SETTINGS = OidcSettings.checked(ISSUER, "wgpy", "s3cret")
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/auth",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
    "scopes_supported": ["openid", "email", "profile", "groups"],
    "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
}
METADATA = oidc.parse_metadata(DISCOVERY, SETTINGS)


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "aud": "wgpy",
        "sub": "alice-id",
        "exp": NOW + 300,
        "iat": NOW - 5,
        "nonce": "n-1",
        "email": "Alice@Example.com",
        "email_verified": True,
        "preferred_username": "alice",
        "groups": ["eng", "/Admins"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = KEY, alg: str = "RS256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, payload, key)


def check(token: str, *, nonce: str = "n-1", now: float = NOW, **kw: Any) -> dict[str, Any]:
    return oidc.check_id_token(
        token,
        kw.pop("jwks", JWKS),
        settings=kw.pop("settings", SETTINGS),
        metadata=METADATA,
        nonce=nonce,
        now=now,
    )


def test_pkce_s256_matches_authlib() -> None:
    for verifier in ("a" * 43, "dBjftJeZ4CVP-mJ92K9Rnq9LvdJjgCzVXXWgLUEYIlE", "~._-" * 32):
        assert oidc.code_challenge(verifier) == create_s256_code_challenge(verifier)
    assert len(oidc.code_challenge("a" * 43)) == 43  # 32 bytes, base64url without padding


def test_each_authorization_is_fresh_and_the_url_carries_it() -> None:
    counter = iter(range(1000))

    def rng(n: int) -> bytes:
        return bytes([next(counter) % 256]) * n

    a, b = oidc.new_authorization(rng), oidc.new_authorization(rng)
    assert len({a.state, a.nonce, a.verifier, b.state, b.nonce, b.verifier}) == 6
    assert 43 <= len(a.verifier) <= 128 and len(a.state) >= 43
    assert "state" not in repr(a) or a.state not in repr(a)
    url = oidc.authorization_url(METADATA, SETTINGS, "https://wgpy.example/oidc/callback", a)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ISSUER}/auth"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "response_type": "code",
        "client_id": "wgpy",
        "redirect_uri": "https://wgpy.example/oidc/callback",
        "scope": "openid email profile groups",
        "state": a.state,
        "nonce": a.nonce,
        "code_challenge": oidc.code_challenge(a.verifier),
        "code_challenge_method": "S256",
    }


def test_token_request_authenticates_with_basic_and_sends_the_verifier() -> None:
    settings = OidcSettings.checked(ISSUER, "wg py", "a:b/c")
    form, headers = oidc.token_request(settings, "https://x/cb", "the-code", "the-verifier")
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "https://x/cb",
        "code_verifier": "the-verifier",
    }
    basic = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert basic == "wg%20py:a%3Ab%2Fc"  # form-encoded first (RFC 6749 2.3.1)
    assert "a:b/c" not in repr(settings)


def test_metadata_must_name_the_issuer_and_asymmetric_algorithms() -> None:
    assert METADATA.algorithms == ("RS256",)  # HS256 and none are never accepted
    assert METADATA.scopes == ("openid", "email", "profile", "groups")
    without_groups = {**DISCOVERY, "scopes_supported": ["openid", "email"]}
    assert oidc.parse_metadata(without_groups, SETTINGS).scopes == ("openid", "email", "profile")
    with pytest.raises(OidcError, match=r'names issuer "https://evil\.example"'):
        oidc.parse_metadata({**DISCOVERY, "issuer": "https://evil.example"}, SETTINGS)
    with pytest.raises(OidcError, match='no valid "token_endpoint"'):
        oidc.parse_metadata({**DISCOVERY, "token_endpoint": "http://id.example.com/t"}, SETTINGS)
    with pytest.raises(OidcError, match="none of the algorithms"):
        oidc.parse_metadata(
            {**DISCOVERY, "id_token_signing_alg_values_supported": ["HS256"]}, SETTINGS
        )
    with pytest.raises(OidcError, match="not a JSON object"):
        oidc.parse_metadata([], SETTINGS)


def test_settings_are_checked() -> None:
    s = OidcSettings.checked(
        "https://id.example.com/",
        "wgpy",
        "x",
        allowed_domains=["@Example.com"],
        allowed_users=["Bob@Other.test"],
        allowed_groups=["/Eng Team"],
    )
    assert (s.issuer, s.allowed_domains, s.allowed_users, s.allowed_groups) == (
        "https://id.example.com",
        ("example.com",),
        ("bob@other.test",),
        ("eng-team",),
    )
    assert OidcSettings.checked("http://127.0.0.1:5556", "c", "x").issuer.startswith("http:")
    for issuer in ("http://id.example.com", "ftp://x", "https://x/?a=b", "https://"):
        with pytest.raises(ValueError, match="issuer"):
            OidcSettings.checked(issuer, "c", "x")
    with pytest.raises(ValueError, match="not an email domain"):
        OidcSettings.checked(ISSUER, "c", "x", allowed_domains=["exa mple.com"])
    with pytest.raises(ValueError, match="not an email address"):
        OidcSettings.checked(ISSUER, "c", "x", allowed_users=["alice"])
    with pytest.raises(ValueError, match="secret is empty"):
        OidcSettings.checked(ISSUER, "c", "")


def test_a_good_token_passes() -> None:
    got = check(sign(claims()))
    assert got["sub"] == "alice-id"
    assert check(sign(claims(aud=["wgpy", "other"], azp="wgpy")))["azp"] == "wgpy"
    assert check(sign(claims()), now=NOW + 300 + oidc.LEEWAY - 1)["sub"] == "alice-id"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: sign(claims(), OTHER_KEY), "does not publish"),
        (
            lambda: tamper(sign(claims()), email="mallory@example.com"),
            "signature is not valid",
        ),
        (lambda: sign(claims(aud="another-app")), "audience is wrong"),
        (lambda: sign(claims(aud=["wgpy", "other"])), "azp is wrong"),
        (lambda: sign(claims(aud=["wgpy", "other"], azp="other")), "azp is wrong"),
        (lambda: sign(claims(iss="https://evil.example")), 'issued by "https://evil.example"'),
        (lambda: sign(claims(exp=NOW - oidc.LEEWAY)), "has expired"),
        (lambda: sign(claims(iat=NOW + oidc.LEEWAY + 1)), "issued in the future"),
        (lambda: sign(claims(exp=None)), "no valid expiry"),
        (lambda: sign(claims(nonce="replayed")), "nonce is wrong"),
        (lambda: sign(claims(nonce=None)), "nonce is wrong"),
        (lambda: sign(claims(sub="")), "no subject"),
        (lambda: "not.a.token", "malformed"),
        (lambda: "", "no usable ID token"),
        (lambda: "x" * (oidc.MAX_TOKEN + 1), "no usable ID token"),
    ],
)
def test_each_bad_token_is_refused(token: Any, message: str) -> None:
    with pytest.raises(OidcError, match=message):
        check(token())


def test_unknown_key_asks_for_a_fresh_jwks() -> None:
    with pytest.raises(UnknownSigningKey):
        check(sign(claims(), OTHER_KEY))
    both = {"keys": [KEY.as_dict(private=False), OTHER_KEY.as_dict(private=False)]}
    assert check(sign(claims(), OTHER_KEY), jwks=both)["sub"] == "alice-id"


def test_hmac_and_none_algorithms_are_refused() -> None:
    secret = OctKey.import_key(b"s3cret-s3cret-s3cret-s3cret-s3cret!")
    hs = jwt.encode({"alg": "HS256"}, claims(), secret)
    with pytest.raises(OidcError, match="algorithm wgpy does not accept"):
        check(hs, jwks={"keys": [secret.as_dict()]})
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    with pytest.raises(OidcError, match="algorithm wgpy does not accept"):
        check(f"{header}.{body}.")
    with pytest.raises(OidcError, match="JWKS"):
        check(sign(claims()), jwks={"keys": [{"kty": "nope"}]})


def tamper(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def identity(**changes: Any) -> Identity:
    return oidc.identity_of(check(sign(claims(**changes))), SETTINGS)


def test_identity_keeps_only_a_verified_email_and_normalises_groups() -> None:
    who = identity()
    assert who == Identity(ISSUER, "alice-id", "alice@example.com", "alice", ("admins", "eng"))
    assert identity(email_verified=False).email is None
    assert identity(email_verified=None).email is None
    assert identity(groups="Solo").groups == ("solo",)
    assert identity(groups=[1, "", "///", "Ops Team", "ops-team"]).groups == ("ops-team",)
    assert identity(groups=None).groups == ()
    custom = OidcSettings.checked(ISSUER, "wgpy", "x", groups_claim="roles")
    assert oidc.identity_of(claims(roles=["r1"]), custom).groups == ("r1",)


def test_who_may_join_each_configured_list_must_match() -> None:
    alice = identity()
    bob = identity(email="bob@other.test", groups=["sales"], sub="bob")

    def rules(**kw: Any) -> OidcSettings:
        return OidcSettings.checked(ISSUER, "wgpy", "x", **kw)

    assert oidc.refusal(alice, rules()) is None
    assert oidc.refusal(bob, rules()) is None
    domains = rules(allowed_domains=["example.com"])
    assert oidc.refusal(alice, domains) is None
    assert oidc.refusal(bob, domains) == (
        'accounts of the domain "other.test" may not join this network; sign in with another '
        "account, or ask the network's admin to let this one in"
    )
    users = rules(allowed_users=["bob@other.test"])
    assert oidc.refusal(bob, users) is None
    assert "not among the people allowed" in str(oidc.refusal(alice, users))
    groups = rules(allowed_groups=["eng"])
    assert oidc.refusal(alice, groups) is None
    assert "none of the groups" in str(oidc.refusal(bob, groups))
    both = rules(allowed_domains=["other.test"], allowed_groups=["eng"])
    assert oidc.refusal(alice, both) is not None and oidc.refusal(bob, both) is not None
    unverified = identity(email_verified=False)
    assert "no verified email" in str(oidc.refusal(unverified, domains))


@pytest.mark.parametrize(
    ("email", "username", "name"),
    [
        ("alice@example.com", "ignored", "alice"),
        ("Jean.Dupont+vpn@example.com", None, "jean.dupont-vpn"),
        ("élodie@example.com", None, "elodie"),
        (None, "Bob Smith", "bob-smith"),
        (None, "carol@corp.example", "carol"),
        ("___@example.com", "dave", "dave"),
    ],
)
def test_user_names_follow_the_user_name_rules(
    email: str | None, username: str | None, name: str
) -> None:
    who = Identity(ISSUER, "s", email, username, ())
    assert oidc.user_name_for(who) == name


def test_an_account_without_email_or_name_cannot_be_named() -> None:
    with pytest.raises(OidcError, match="neither an email nor a user name"):
        oidc.user_name_for(Identity(ISSUER, "s", None, None, ()))
    with pytest.raises(OidcError):
        oidc.user_name_for(Identity(ISSUER, "s", None, "!!!", ()))


def test_callback_errors_read_as_sentences() -> None:
    assert oidc.callback_error({}, SETTINGS) is None
    assert oidc.callback_error({"iss": ISSUER, "code": "c"}, SETTINGS) is None
    assert oidc.callback_error({"error": "access_denied"}, SETTINGS) == (
        "the sign-in was cancelled at the identity provider"
    )
    assert "another identity provider" in str(
        oidc.callback_error({"iss": "https://evil.example", "code": "c"}, SETTINGS)
    )
    text = oidc.callback_error(
        {"error": "invalid_request", "error_description": "bad\x00" * 99}, SETTINGS
    )
    assert text is not None and text.startswith("the identity provider refused the sign-in")
    assert "\x00" not in text and len(text) < 320


def test_the_real_clock_is_not_read() -> None:
    # Everything above passed a fixed "now" far from today's clock: a token valid then is
    # expired now, so the module takes time only as its argument.
    with pytest.raises(OidcError, match="issued in the future"):
        check(sign(claims()), now=time.time())
