"""Fixtures for the OIDC harness tests: a real OpenID provider (Node, oidc-provider) on loopback.

- ``async def`` tests run in a fresh event loop each (``asyncio.run``), with a time limit.
- ``oidc_client``: a confidential client with a random secret; its redirect URI is on a port
  nothing listens on (the headless walk stops before fetching it).
- ``oidc_provider``: the provider with that client and DEFAULT_USERS (alice@example.com in
  groups eng and admins, bob@other.test in sales), one per test module (it starts in ~0.5 s;
  every test signs in with a session and a request of its own, so none sees another's state).
- ``start_oidc_provider``: a factory for fresh ones (other clients, users, ID token
  lifetime), stopped at the end of the test.
Without Node or the npm package the tests fail with a message naming `make oidc-provider`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from .provider import OidcClient, OidcProvider, start_provider

TEST_TIMEOUT = 30.0
REDIRECT_URI = "http://127.0.0.1:9/oidc/callback"  # port 9 (discard): never fetched


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_TIMEOUT))
    return True


@pytest.fixture(scope="module")
def oidc_client() -> OidcClient:
    return OidcClient.new(REDIRECT_URI)


@pytest.fixture
def start_oidc_provider(tmp_path: Path) -> Iterator[Callable[..., OidcProvider]]:
    with ExitStack() as stack:
        count = 0

        def start(clients: list[OidcClient], **kwargs: Any) -> OidcProvider:
            nonlocal count
            count += 1
            return stack.enter_context(
                start_provider(tmp_path / "oidc", clients, name=f"provider{count}", **kwargs)
            )

        yield start


@pytest.fixture(scope="module")
def oidc_provider(
    tmp_path_factory: pytest.TempPathFactory, oidc_client: OidcClient
) -> Iterator[OidcProvider]:
    with start_provider(tmp_path_factory.mktemp("oidc"), [oidc_client]) as provider:
        yield provider
