"""Request bodies: a JSON object whose fields are all known and of the right form.

Each endpoint names its required and optional fields with a check that turns the JSON value
into what the store takes, or raises BadRequest naming the field. Unknown fields are refused.
A field whose name contains "private" is refused before anything else, on every endpoint:
the server never takes a private key (nodes send their public key only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from wgpy import candidates as ice
from wgpy import keys
from wgpy.endpoint import Endpoint

from . import login
from .errors import BadRequest
from .policy import HOSTNAME, USER_NAME
from .principals import TAG

MAX_ENDPOINTS = 16
MAX_TAGS = 32
MAX_LIFETIME = 10 * 365 * 86400  # seconds
PRIVATE_FIELD = re.compile("private", re.IGNORECASE)

Check = Callable[[str, Any], Any]


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise BadRequest("the request needs a JSON body (use {} for none)")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadRequest(f"the body is not valid JSON: {e.msg}") from None
    except RecursionError:
        raise BadRequest("the body is not valid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"the body is not usable JSON: {e}") from None


def fields(
    body: Any, required: Mapping[str, Check], optional: Mapping[str, Check] | None = None
) -> dict[str, Any]:
    """The body's fields, checked; optional ones that are absent are left out."""
    optional = optional or {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for name in body:
        if PRIVATE_FIELD.search(name):
            raise BadRequest(
                f'field "{_printable(name)}" refused: the server never takes private keys; '
                "send only the public key"
            )
    unknown = [n for n in body if n not in required and n not in optional]
    if unknown:
        known = ", ".join(f'"{n}"' for n in (*required, *optional))
        takes = f"the fields are {known}" if known else "this endpoint takes none ({})"
        raise BadRequest(f'unknown field "{_printable(unknown[0])}"; {takes}')
    out = {}
    for name, check in required.items():
        if name not in body:
            raise BadRequest(f'missing field "{name}"')
        out[name] = check(name, body[name])
    for name, check in optional.items():
        if name in body:
            out[name] = check(name, body[name])
    return out


def _printable(text: str) -> str:
    return json.dumps(text[:64])[1:-1]


def _string(name: str, value: Any, max_len: int = 256) -> str:
    if not isinstance(value, str):
        raise BadRequest(f'"{name}" must be a string')
    if len(value) > max_len:
        raise BadRequest(f'"{name}" is longer than {max_len} characters')
    return value


def credential_text(name: str, value: Any) -> str:
    return _string(name, value, 200)


def public_key(name: str, value: Any) -> str:
    text = _string(name, value, 64)
    try:
        key = keys.key_from_base64(text)
    except ValueError as e:
        raise BadRequest(f'"{name}" is not a valid WireGuard public key: {e}') from None
    if keys.is_low_order(key):
        raise BadRequest(
            f'"{name}" is a point of small order on Curve25519 (such as all zeros), which no '
            "private key owns; send the public key derived from the node's private key"
        )
    return text


def hostname(name: str, value: Any) -> str:
    text = _string(name, value, 63).lower()
    if not HOSTNAME.match(text):
        raise BadRequest(
            f'"{name}" must be a DNS label: 1 to 63 letters, digits and "-", not starting or '
            'ending with "-"'
        )
    return text


def user_name(name: str, value: Any) -> str:
    text = _string(name, value, 63)
    if not USER_NAME.match(text):
        raise BadRequest(
            f'"{name}" must be 1 to 63 of a-z, 0-9, ".", "_" and "-", starting with a letter '
            "or digit"
        )
    return text


def password(name: str, value: Any) -> str:
    """A new password (login.check_new_password); never echoed back in an error."""
    if not isinstance(value, str):
        raise BadRequest(f'"{name}" must be a string')
    try:
        return login.check_new_password(value)
    except ValueError as e:
        raise BadRequest(f'"{name}": {e}') from None


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f'"{name}" must be true or false')
    return value


def seconds(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIFETIME:
        raise BadRequest(f'"{name}" must be a whole number of seconds from 1 to {MAX_LIFETIME}')
    return value


def expiry(name: str, value: Any) -> int | None:
    """``"never"`` (None) or a whole number of seconds from now."""
    if value == "never":
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIFETIME:
        raise BadRequest(
            f'"{name}" must be "never" or a whole number of seconds from 1 to {MAX_LIFETIME}'
        )
    return value


def tags(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise BadRequest(f'"{name}" must be a list of at most {MAX_TAGS} tags')
    for tag in value:
        if not isinstance(tag, str) or not TAG.match(tag):
            shown = _printable(tag) if isinstance(tag, str) else json.dumps(tag)[:64]
            raise BadRequest(f'"{name}": "{shown}" is not a tag; expected tag:NAME (a DNS label)')
    return tuple(sorted(set(value)))


def endpoints(name: str, value: Any) -> tuple[str, ...]:
    """``IPv4:port`` or ``[IPv6]:port``, normalized, duplicates dropped, order kept."""
    if not isinstance(value, list) or len(value) > MAX_ENDPOINTS:
        raise BadRequest(f'"{name}" must be a list of at most {MAX_ENDPOINTS} "host:port"')
    out: list[str] = []
    for item in value:
        endpoint = _endpoint(name, item)
        if endpoint not in out:
            out.append(endpoint)
    return tuple(out)


def _endpoint(name: str, item: Any) -> str:
    bad = BadRequest(
        f'"{name}": {json.dumps(item)[:80]} is not an endpoint; expected "192.0.2.1:51820" '
        'or "[2001:db8::1]:51820"'
    )
    if not isinstance(item, str) or len(item) > 64:
        raise bad
    try:
        endpoint = Endpoint.parse_address(item)
    except ValueError:
        raise bad from None
    if endpoint.port == 0 or "%" in endpoint.host:  # a zone means nothing to another node
        raise bad
    return str(endpoint)


def candidates(name: str, value: Any) -> tuple[str, ...]:
    """ICE candidates (wgpy/candidates.py), canonical, duplicates dropped, order kept."""
    if isinstance(value, list) and len(value) <= ice.MAX_CANDIDATES:
        for i, item in enumerate(value):
            try:
                ice.check_candidate(item)
            except ice.CandidateError as e:
                raise BadRequest(
                    f'"{name}"[{i}] is not a usable candidate: {e}; expected e.g. '
                    '"1 1 udp 2130706431 192.0.2.1 41641 typ host"'
                ) from None
    try:
        return ice.check_candidates(value)
    except ice.CandidateError as e:
        raise BadRequest(f'"{name}" {e}') from None


def ice_ufrag(name: str, value: Any) -> str:
    try:
        return ice.check_ice_ufrag(value)
    except ice.CandidateError as e:
        raise BadRequest(f'"{name}" {e}') from None


def ice_pwd(name: str, value: Any) -> str:
    try:
        return ice.check_ice_pwd(value)
    except ice.CandidateError as e:
        raise BadRequest(f'"{name}" {e}') from None


MAX_CERTIFICATE = 16 * 1024  # characters of PEM


def certificate_pem(name: str, value: Any) -> str:
    """One PEM certificate (checked further by wgpy/machinecert.py)."""
    if not isinstance(value, str) or "-----BEGIN CERTIFICATE-----" not in value:
        raise BadRequest(f'"{name}" must be a PEM certificate (-----BEGIN CERTIFICATE-----)')
    if len(value) > MAX_CERTIFICATE:
        raise BadRequest(f'"{name}" is longer than {MAX_CERTIFICATE} characters')
    return value


def certificate_serial(name: str, value: Any) -> str:
    """A certificate serial number in lowercase hex, as the server lists it."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{1,40}", value):
        raise BadRequest(f'"{name}" must be a certificate serial in hex, as listed')
    return value
