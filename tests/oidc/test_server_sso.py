"""Connecting a device by single sign-on, end to end against the real provider: a real wgpy
server (SQLite), a pending login request (as `wgpy up --login-server` makes), the browser's
walk through /oidc/start, the provider's login and consent pages and /oidc/callback, the
confirmation, and the approval. And every refusal: a forged, foreign or replayed state, a
tampered ID token, one issued to another client, an expired one, a domain not allowed, a
name already taken; each a page with one sentence, and nothing changed in the database.

A proxy (proxy.py) stands in front of the provider as its issuer, so that a test can alter
what crosses the token path; without tampering it passes everything unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from mesh.webpages import Page, parse
from multidict import MultiDict
from yarl import URL

from wgpy.mesh.server import MeshServer, ServerConfig
from wgpy.mesh.server.config import OidcConfig

from .forms import sign_in
from .provider import DEFAULT_USERS, OidcClient, OidcProvider, start_provider
from .proxy import Proxy, Tampering, start_proxy

FAST = dict(host="127.0.0.1", port=0, keepalive=0.5, heartbeat=0.5, shutdown_timeout=1.0)


def new_public_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Lab:
    server: MeshServer
    provider: OidcProvider
    proxy: Proxy
    client: OidcClient
    http: aiohttp.ClientSession  # the browser: one cookie jar for the provider and wgpy
    other: OidcClient  # a second client registered at the same provider
    stack: ExitStack = field(default_factory=ExitStack)

    @property
    def callback(self) -> str:
        return f"{self.server.url}/oidc/callback"

    async def login_request(self, hostname: str = "laptop") -> str:
        request, _ = await self.server.store.login_requests.create(
            new_public_key(), hostname, lifetime=600
        )
        return request.id

    async def new_browser(self) -> None:
        """Another browser (the provider's session in the old one would sign in its user
        again at once)."""
        await self.http.close()
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, url: str | URL) -> Page:
        async with self.http.get(url, allow_redirects=False) as resp:
            return parse(resp.status, await resp.text(), resp.headers)

    async def start(self, request_id: str) -> URL:
        """GET /oidc/start: the provider's authorization URL it redirects to."""
        url = f"{self.server.url}/oidc/start?request={request_id}"
        async with self.http.get(url, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            return URL(resp.headers["Location"])

    async def sign_in(self, request_id: str, login: str = "alice") -> Page:
        """Through the provider to the callback; the page the callback shows."""
        authorize = await self.start(request_id)
        landing, _ = await sign_in(self.http, authorize, login=login, stop_at=self.callback)
        return await self.get(landing)

    async def post(self, page: Page, action: str, **fields: str) -> Page:
        form = page.form(action)
        data = {**form.fields, **fields}
        async with self.http.post(
            self.server.url + action, data=data, allow_redirects=False
        ) as resp:
            return parse(resp.status, await resp.text(), resp.headers)

    async def snapshot(self) -> dict[str, Any]:
        """What a refusal must leave unchanged."""
        store = self.server.store
        async with store.db.transaction() as tx:
            nodes = await tx.fetchval("SELECT COUNT(*) FROM nodes")
            groups = await tx.fetchval("SELECT COUNT(*) FROM user_groups")
            signed = await tx.fetchval(
                "SELECT COUNT(*) FROM web_sessions WHERE user_id IS NOT NULL"
            )
            version = await tx.fetchval("SELECT version FROM policy")
        requests = [
            (r.id, r.state, r.user) for r in await store.login_requests.all(pending_only=False)
        ]
        return {
            "users": [u.name for u in await store.users.all()],
            "nodes": nodes,
            "groups": groups,
            "signed_in_sessions": signed,
            "policy_version": version,
            "requests": requests,
        }


@asynccontextmanager
async def sso_lab(
    tmp_path: Path,
    *,
    users: Mapping[str, Mapping[str, Any]] = DEFAULT_USERS,
    clock: Callable[[], float] = time.time,
    **oidc: Any,
) -> AsyncIterator[Lab]:
    client = OidcClient.new("http://127.0.0.1:9/pending", client_id="wgpy")
    other = OidcClient.new("http://127.0.0.1:9/pending", client_id="another-app")
    secret_file = tmp_path / "oidc-secret"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(client.client_secret + "\n")
    async with start_proxy() as proxy:
        config = ServerConfig(
            state_dir=tmp_path / "state",
            oidc=OidcConfig(proxy.url, client.client_id, secret_file, **oidc),
            **FAST,  # type: ignore[arg-type]
        )
        server = MeshServer(config, clock=clock)
        await server.start()
        stack = ExitStack()
        try:
            callback = f"{server.url}/oidc/callback"
            registered = [
                OidcClient(client.client_id, client.client_secret, callback),
                OidcClient(other.client_id, other.client_secret, callback),
            ]
            provider = stack.enter_context(
                start_provider(tmp_path / "oidc", registered, users, issuer=proxy.url)
            )
            proxy.upstream = provider.direct
            http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            lab = Lab(server, provider, proxy, registered[0], http, registered[1], stack)
            try:
                yield lab
            finally:
                await lab.http.close()
        finally:
            stack.close()
            await server.stop()


def assert_refused(page: Page, status: int, *words: str) -> None:
    assert page.status == status, (page.status, page.message)
    assert page.title == "Sign-in refused" or status in (404, 409, 410, 503), page.title
    for word in words:
        assert word.lower() in page.message.lower(), (word, page.message)
    assert not page.forms or all(f.action == "/logout" for f in page.forms)


# --------------------------------------------------------------------------- success


async def test_sso_connects_the_device_of_a_pending_request(tmp_path: Path) -> None:
    async with sso_lab(tmp_path) as lab:
        request_id = await lab.login_request("laptop")
        confirm = await lab.sign_in(request_id, "alice")
        assert confirm.status == 200 and confirm.title == "Connect this device?"
        assert "laptop" in confirm.plain and "alice" in confirm.plain
        # The account's user was made at this first sign-in, with its groups; the request
        # waits for the person's answer.
        users = await lab.server.store.users.all()
        assert [u.name for u in users] == ["alice"] and not users[0].password
        assert await lab.server.store.oidc.groups("alice") == ("admins", "eng")
        request = await lab.server.store.login_requests.get(request_id)
        assert request is not None and request.pending
        done = await lab.post(confirm, f"/oidc/approve/{request_id}", answer="connect")
        assert done.status == 200 and done.title == "Device connected", done.message
        request = await lab.server.store.login_requests.get(request_id)
        assert request is not None
        assert (request.state, request.user, request.method) == ("approved", "alice", "oidc")
        node = await lab.server.store.nodes.get(request.node_id or 0)
        assert node.user == "alice" and node.hostname == "laptop"
        events = [
            (e.event, e.result, e.method, e.user) for e in await lab.server.store.audit.list()
        ]
        assert ("users.create", "ok", "oidc", "alice") in events
        assert ("login.approve", "ok", "oidc", "alice") in events
        assert node.expires_at is not None and node.expires_at > time.time() + 170 * 86400
        # The form token was single use: the same confirmation again changes nothing.
        again = await lab.post(confirm, f"/oidc/approve/{request_id}", answer="connect")
        assert again.status == 403
        # A second device, the same account: no new user, the same groups.
        second = await lab.login_request("desktop")
        confirm = await lab.sign_in(second, "alice")
        done = await lab.post(confirm, f"/oidc/approve/{second}", answer="connect")
        assert done.title == "Device connected"
        assert [u.name for u in await lab.server.store.users.all()] == ["alice"]
        assert await lab.server.store.oidc.pending() == 0


async def test_the_browser_cookie_is_http_only_lax_and_scoped(tmp_path: Path) -> None:
    async with sso_lab(tmp_path) as lab:
        request_id = await lab.login_request()
        url = f"{lab.server.url}/oidc/start?request={request_id}"
        async with lab.http.get(url, allow_redirects=False) as resp:
            cookie = resp.cookies["wgpy_oidc"]
            location = URL(resp.headers["Location"])
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/oidc"
        query = location.query
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert query["redirect_uri"] == lab.callback and query["client_id"] == "wgpy"
        assert "groups" in query["scope"].split()


# ----------------------------------------------------------------------------- refusals


async def test_a_forged_or_foreign_state_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    async with sso_lab(tmp_path) as lab:
        request_id = await lab.login_request()
        authorize = await lab.start(request_id)
        landing, _ = await sign_in(lab.http, authorize, login="alice", stop_at=lab.callback)
        before = await lab.snapshot()
        # A forged state, with this browser's cookie.
        forged = landing.update_query(state="forged-" + "x" * 40)
        assert_refused(await lab.get(forged), 400, "not one this browser started")
        # The real state from another browser (no cookie, or its own cookie).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            async with other.get(landing, allow_redirects=False) as resp:
                page = parse(resp.status, await resp.text(), resp.headers)
            assert_refused(page, 400, "not one this browser started")
            other.cookie_jar.update_cookies({"wgpy_oidc": "A" * 43}, URL(lab.server.url))
            async with other.get(landing, allow_redirects=False) as resp:
                assert resp.status == 400
        # No state at all.
        assert_refused(await lab.get(landing.with_query(code="x")), 400)
        assert await lab.snapshot() == before
        assert await lab.server.store.oidc.pending() == 1  # the real sign-in still waits
        # ... and finishes: the refusals took nothing from it.
        confirm = await lab.get(landing)
        assert confirm.title == "Connect this device?"
        # Replayed: the state is used up.
        assert_refused(await lab.get(landing), 400, "finished or expired already")


async def test_a_tampered_id_token_is_refused(tmp_path: Path) -> None:
    async with sso_lab(tmp_path) as lab:

        def forge(answer: dict[str, Any]) -> dict[str, Any]:
            header, payload, signature = answer["id_token"].split(".")
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            claims["email"] = "mallory@example.com"
            claims["groups"] = ["admins"]
            body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            return {**answer, "id_token": f"{header}.{body}.{signature}"}

        lab.proxy.tampering = Tampering(token_answer=forge)
        request_id = await lab.login_request()
        before = await lab.snapshot()
        page = await lab.sign_in(request_id, "bob")
        assert_refused(page, 403, "signature is not valid")
        assert await lab.snapshot() == before
        (event,) = await lab.server.store.audit.list()
        assert (event.event, event.result, event.method) == ("web.signin", "refused", "oidc")
        assert event.detail is not None and "signature is not valid" in event.detail
        assert event.source == "127.0.0.1"


async def test_a_token_issued_to_another_client_is_refused(tmp_path: Path) -> None:
    """A mix-up: the authorization and the code exchange are switched to another client of
    the same provider, which then issues a genuine token whose audience is that client."""
    async with sso_lab(tmp_path) as lab:
        other = lab.other

        def authorize(query: MultiDict[str]) -> MultiDict[str]:
            query = query.copy()
            query["client_id"] = other.client_id
            return query

        def token_request(
            form: dict[str, str], headers: dict[str, str]
        ) -> tuple[dict[str, str], dict[str, str]]:
            basic = base64.b64encode(f"{other.client_id}:{other.client_secret}".encode())
            return form, {**headers, "Authorization": f"Basic {basic.decode()}"}

        lab.proxy.tampering = Tampering(authorize=authorize, token_request=token_request)
        request_id = await lab.login_request()
        before = await lab.snapshot()
        page = await lab.sign_in(request_id, "alice")
        assert_refused(page, 403, "issued for another application")
        assert await lab.snapshot() == before
        assert "POST /token" in lab.proxy.tampering.seen


async def test_an_expired_id_token_is_refused(tmp_path: Path) -> None:
    # The server's clock is two hours ahead of the provider's: the token (valid one hour)
    # reaches it expired.
    async with sso_lab(tmp_path, clock=lambda: time.time() + 7200) as lab:
        request_id = await lab.login_request()
        before = await lab.snapshot()
        page = await lab.sign_in(request_id, "alice")
        assert_refused(page, 403, "has expired")
        assert await lab.snapshot() == before


async def test_a_domain_not_allowed_is_refused(tmp_path: Path) -> None:
    async with sso_lab(tmp_path, allowed_domains=("example.com",)) as lab:
        request_id = await lab.login_request()
        before = await lab.snapshot()
        page = await lab.sign_in(request_id, "bob")  # bob@other.test
        assert_refused(page, 403, 'domain "other.test" may not join')
        assert await lab.snapshot() == before
        # An account without a (verified) email cannot pass a domain rule either.
        await lab.new_browser()
        page = await lab.sign_in(await lab.login_request("other"), "mallory")
        assert_refused(page, 403, "no verified email")
        # alice@example.com may.
        await lab.new_browser()
        page = await lab.sign_in(request_id, "alice")
        assert page.title == "Connect this device?"


async def test_groups_and_users_allowed(tmp_path: Path) -> None:
    async with sso_lab(
        tmp_path, allowed_groups=("eng",), allowed_users=("alice@example.com",)
    ) as lab:
        page = await lab.sign_in(await lab.login_request(), "bob")
        assert_refused(page, 403, "not among the people allowed")
        await lab.new_browser()
        page = await lab.sign_in(await lab.login_request(), "alice")
        assert page.title == "Connect this device?"


async def test_a_name_taken_by_a_password_user_is_refused_not_merged(tmp_path: Path) -> None:
    async with sso_lab(tmp_path) as lab:
        await lab.server.store.users.create("alice")  # made by an admin, say with a password
        request_id = await lab.login_request()
        before = await lab.snapshot()
        page = await lab.sign_in(request_id, "alice")
        assert_refused(page, 409, 'there is already a user "alice"')
        assert await lab.snapshot() == before


async def test_cancel_at_the_provider_and_closed_requests(tmp_path: Path) -> None:
    async with sso_lab(tmp_path) as lab:
        request_id = await lab.login_request()
        authorize = await lab.start(request_id)
        landing, _ = await sign_in(
            lab.http, authorize, login="alice", stop_at=lab.callback, cancel=True
        )
        before = await lab.snapshot()
        assert_refused(await lab.get(landing), 403, "cancelled at the identity provider")
        assert await lab.snapshot() == before
        # An answer that names another issuer (RFC 9207: a mix-up of providers).
        landing, _ = await sign_in(
            lab.http, await lab.start(request_id), login="alice", stop_at=lab.callback
        )
        mixed = landing.update_query(iss="https://evil.example")
        assert_refused(await lab.get(mixed), 403, "another identity provider")
        assert await lab.snapshot() == before
        # Unknown, and no longer pending, requests are refused before the provider is asked.
        page = await lab.get(f"{lab.server.url}/oidc/start?request=nope")
        assert page.status == 404
        await lab.server.store.login_requests.cancel(request_id)
        page = await lab.get(f"{lab.server.url}/oidc/start?request={request_id}")
        assert page.status == 409
