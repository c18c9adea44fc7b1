"""A real OpenID provider for the tests: oidc-provider (npm) run by Node on loopback.

``make setup`` (target ``oidc-provider``) installs the pinned package into
tests/oidc/node_modules. ``start_provider`` writes the provider's configuration (0600: it holds
the client secrets) into a directory the test owns, starts ``node provider.mjs`` on 127.0.0.1
on a free port, waits for the line it prints when it serves, and on exit stops that process
and nothing else. The issuer is ``http://127.0.0.1:PORT`` (plain HTTP, as oidc-provider allows
on loopback).
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "provider.mjs"
PACKAGE = HERE / "node_modules" / "oidc-provider" / "package.json"
READY_TIMEOUT = 30.0  # seconds; it serves in 0.3-0.8 s here (a 2048-bit RSA key each run)
STOP_TIMEOUT = 5.0


class ProviderUnavailable(RuntimeError):
    """Node or the oidc-provider package is missing, or the provider did not start."""


@dataclass(frozen=True)
class OidcClient:
    """A confidential client (client_secret_basic, code flow, PKCE required)."""

    client_id: str
    client_secret: str
    redirect_uri: str

    @classmethod
    def new(cls, redirect_uri: str, client_id: str = "wgpy") -> OidcClient:
        return cls(client_id, secrets.token_urlsafe(24), redirect_uri)


# Users the provider knows, by login name: the claims its ID tokens carry for each (scopes
# email, profile and groups). Any other login name signs in with "sub" alone.
DEFAULT_USERS: Mapping[str, Mapping[str, Any]] = {
    "alice": {
        "email": "alice@example.com",
        "email_verified": True,
        "preferred_username": "alice",
        "name": "Alice Example",
        "groups": ["eng", "admins"],
    },
    "bob": {
        "email": "bob@other.test",
        "email_verified": True,
        "preferred_username": "bob",
        "name": "Bob Other",
        "groups": ["sales"],
    },
}


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    clients: tuple[OidcClient, ...]
    users: Mapping[str, Mapping[str, Any]]
    log_path: Path
    pid: int
    direct: str = ""  # http://HOST:PORT it listens on (the issuer unless a proxy is in front)

    @property
    def client(self) -> OidcClient:
        return self.clients[0]

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise ProviderUnavailable(
            "Node.js is not installed; the OIDC tests need Node 20.19 or later (`node`)."
        )
    if not PACKAGE.is_file():
        raise ProviderUnavailable(
            f"oidc-provider is not installed in {PACKAGE.parent.parent}; run `make oidc-provider`"
            " (part of `make setup`)."
        )
    return node


def provider_config(
    clients: Sequence[OidcClient],
    users: Mapping[str, Mapping[str, Any]],
    id_token_ttl: int,
    host: str,
    issuer: str | None = None,
) -> dict[str, Any]:
    """The JSON provider.mjs reads; ``issuer``: a URL in front of it (default: its own)."""
    if not clients:
        raise ValueError("An OpenID provider needs at least one client.")
    if id_token_ttl < 1:
        raise ValueError(f"The ID token lifetime must be at least 1 s, not {id_token_ttl}.")
    return {
        **({"issuer": issuer} if issuer else {}),
        "host": host,
        "port": 0,
        "clients": [
            {
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "redirect_uris": [c.redirect_uri],
            }
            for c in clients
        ],
        "users": {name: dict(claims) for name, claims in users.items()},
        "id_token_ttl": id_token_ttl,
    }


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise ProviderUnavailable(
                    f"The OpenID provider did not start within {timeout:.0f} s."
                )
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise ProviderUnavailable(
                    f"The OpenID provider exited with status {process.wait(STOP_TIMEOUT)}"
                    " before it served."
                )
            line += chunk
    ready: dict[str, Any] = json.loads(line)
    return ready


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
    if process.stdout is not None:
        process.stdout.close()


@contextmanager
def start_provider(
    directory: Path,
    clients: Sequence[OidcClient],
    users: Mapping[str, Mapping[str, Any]] = DEFAULT_USERS,
    *,
    id_token_ttl: int = 3600,
    host: str = "127.0.0.1",
    name: str = "oidc",
    wrap: Sequence[str] = (),
    issuer: str | None = None,
) -> Iterator[OidcProvider]:
    """Run an OpenID provider with these clients and users until the block ends.

    Files: DIRECTORY/NAME.json (configuration, 0600) and DIRECTORY/NAME.log (its stderr).
    WRAP prefixes the command: ``namespace.exec_args([])`` (tests/interop/netns.py) runs the
    provider in a network namespace, with HOST one of that namespace's addresses (`ip netns
    exec` execs node, so the process stopped is node itself).
    """
    node = node_binary()
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{name}.json"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(provider_config(clients, users, id_token_ttl, host, issuer), f)
    log_path = directory / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*wrap, node, str(SCRIPT), str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=HERE,
        )
    try:
        try:
            ready = _read_ready_line(process, READY_TIMEOUT)
        except ProviderUnavailable as e:
            raise ProviderUnavailable(
                f"{e} Its log:\n{log_path.read_text(errors='replace')}"
            ) from e
        direct = f"http://{host if ':' not in host else f'[{host}]'}:{ready['port']}"
        yield OidcProvider(ready["issuer"], tuple(clients), users, log_path, process.pid, direct)
    finally:
        _stop(process)
