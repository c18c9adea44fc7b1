"""The pages that connect a device (login_pages.py) against a real server on loopback, on
SQLite and PostgreSQL, with the server's clock moved by hand: password, TOTP enrolment (the
code computed from the key on the page), the confirm step, the connected page; and every
refusal changes nothing in the database: a form token missing or reused, a TOTP code used
twice, a bounded brute-force run that ends locked, one user's session cookie used for
another's steps, an expired session, an unknown or closed login request."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from wgpy.mesh.server import ServerConfig, login
from wgpy.mesh.server.models import LoginRequest
from wgpy.mesh.server.pages import SIGNED_IN_LIFETIME
from wgpy.mesh.server.store import Store
from wgpy.mesh.server.store.accounts import account_subject

from .conftest import Running, new_public_key, register, running
from .test_server_store import Clock
from .webpages import Browser, Page

PASSWORD = "correct horse battery"


@dataclass
class Lab:
    r: Running
    http: aiohttp.ClientSession
    clock: Clock

    @property
    def store(self) -> Store:
        return self.r.server.store

    def browser(self) -> Browser:
        return Browser(self.http, self.r.url)

    async def user(self, name: str, *, totp: str | None = None) -> None:
        """A user with PASSWORD; ``totp``: a secret they enrolled already."""
        await self.r.admin.call("POST", "/users", {"name": name, "password": PASSWORD})
        if totp is not None:
            assert await self.store.accounts.begin_totp(name, totp)
            assert await self.store.accounts.use_totp_step(name, totp, 0)

    async def request(self, hostname: str = "laptop", lifetime: float = 600.0) -> LoginRequest:
        request, _ = await self.store.login_requests.create(
            new_public_key(), hostname, lifetime=lifetime
        )
        return request

    def code(self, secret: str, steps: int = 0) -> str:
        return login.totp_code(secret, login.totp_step(self.clock.now) + steps)

    async def state(self, request: LoginRequest) -> tuple[str, str | None]:
        found = await self.store.login_requests.get(request.id)
        assert found is not None
        return found.state, found.user

    async def rows(self, table: str, columns: str = "*") -> list[tuple[object, ...]]:
        async with self.store.db.transaction() as tx:
            return [tuple(r) for r in await tx.fetch(f"SELECT {columns} FROM {table}")]


@asynccontextmanager
async def lab(config: ServerConfig) -> AsyncIterator[Lab]:
    clock = Clock()
    async with (
        running(config, clock=clock) as r,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        yield Lab(r, http, clock)


def secret_on(page: Page) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert match, "the enrolment page shows the key"
    return match[1]


async def signed_in_browser(
    lab: Lab, request: LoginRequest, name: str, secret: str
) -> tuple[Browser, Page]:
    """A browser through the password and code steps, and the confirm page."""
    browser = lab.browser()
    page = await browser.get(f"/login/{request.id}")
    page = await browser.submit(page.form(f"/login/{request.id}"), name=name, password=PASSWORD)
    page = await browser.submit(page.form(f"/login/{request.id}/totp"), code=lab.code(secret))
    assert page.title == "Connect this device?", page.message
    return browser, page


async def test_password_enrolment_confirm_connected(backend: str, config: ServerConfig) -> None:
    async with lab(config) as t:
        await t.user("alice")
        request = await t.request("laptop")
        browser = t.browser()
        page = await browser.get(f"/login/{request.id}")
        assert page.status == 200 and page.lang == "en"
        assert page.title == "Sign in to connect a device"
        assert "laptop" in page.plain and request.public_key in page.plain
        form = page.form(f"/login/{request.id}")
        assert form.labels == ["User name", "Password"] and form.buttons == ["Sign in"]
        assert page.label_for == ["name", "password"] == page.input_ids
        assert not [text for text, _ in page.links if "SSO" in text]  # no OIDC configured
        cookie = page.headers["Set-Cookie"]
        attributes = [a.strip().lower() for a in cookie.split(";")]
        assert {"httponly", "samesite=lax", "path=/", "max-age=1800"} <= set(attributes)
        assert "secure" not in attributes  # plain HTTP here (test_server_pages: over TLS)
        anonymous = browser.cookie
        # a wrong password: said, counted, the form again with the name kept
        page = await browser.submit(form, name="alice", password="wrong horse")
        assert page.status == 401 and page.title == "Sign in to connect a device"
        assert "The user name or password is not right." in page.plain
        assert page.form(f"/login/{request.id}").fields["name"] == "alice"
        assert await t.rows("login_failures", "subject, failures") == [
            ("user:alice", 1),
            ("source:127.0.0.1", 1),
        ]
        # the right one: enrolment (a QR code and the key as text)
        page = await browser.submit(
            page.form(f"/login/{request.id}"), name=" Alice", password=PASSWORD
        )
        assert page.status == 200 and page.title == "Set up your authenticator"
        assert '<svg viewBox="0 0 ' in page.text and 'aria-label="QR code' in page.text
        secret = secret_on(page)
        account = await t.store.accounts.get("alice")
        assert account is not None and account.totp_secret == secret
        assert not account.totp_confirmed
        # a reload shows the same step and key (the session passed the password step)
        again = await browser.get(f"/login/{request.id}")
        assert again.title == "Set up your authenticator" and secret_on(again) == secret
        page = await browser.submit(page.form(f"/login/{request.id}/totp"), code=t.code(secret))
        assert page.status == 200 and page.title == "Connect this device?"
        assert "Connect the device laptop to the network as alice?" in page.plain
        assert browser.cookie != anonymous  # a new session at sign-in
        assert await t.store.sessions.get(anonymous) is None
        assert "Signed in as alice." in page.plain
        assert await t.state(request) == ("pending", None)  # nothing approved before Connect
        page = await browser.submit(page.form(f"/login/{request.id}/approve"))
        assert page.status == 200 and page.title == "Device connected"
        assert await t.state(request) == ("approved", "alice")
        found = await t.store.login_requests.get(request.id)
        assert found is not None and found.method == "password"
        nodes = (await t.r.admin.call("GET", "/nodes"))["nodes"]
        assert [(n["user"], n["hostname"], n["public_key"]) for n in nodes] == [
            ("alice", "laptop", request.public_key)
        ]
        assert "The device laptop is now connected as laptop for alice." in page.plain
        assert f"Addresses {nodes[0]['ipv4']}, {nodes[0]['ipv6']}" in page.plain
        # the failures were forgotten with the complete sign-in (the source's stay)
        assert await t.rows("login_failures", "subject") == [("source:127.0.0.1",)]
        # signed in: the next device is one click, the page says so
        second = await t.request("phone")
        page = await browser.get(f"/login/{second.id}")
        assert page.title == "Connect this device?" and "phone" in page.plain
        page = await browser.submit(page.form(f"/login/{second.id}/approve"))
        assert page.title == "Device connected" and await t.state(second) == ("approved", "alice")


async def test_a_totp_code_is_not_accepted_twice(backend: str, config: ServerConfig) -> None:
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        first = await t.request("laptop")
        await signed_in_browser(t, first, "alice", secret)
        # another browser, the same code in the same 30 s: refused, nothing changed
        second = await t.request("phone")
        browser = t.browser()
        page = await browser.get(f"/login/{second.id}")
        page = await browser.submit(
            page.form(f"/login/{second.id}"), name="alice", password=PASSWORD
        )
        assert page.title == "Enter your code" and "totp-secret" not in page.text
        page = await browser.submit(page.form(f"/login/{second.id}/totp"), code=t.code(secret))
        assert page.status == 401 and page.title == "Enter your code"
        assert "used already" in page.plain
        session = await t.store.sessions.get(browser.cookie)
        assert session is not None and not session.signed_in
        assert await t.state(second) == ("pending", None)
        # the next step's code is taken
        t.clock.now += login.TOTP_STEP
        page = await browser.submit(page.form(f"/login/{second.id}/totp"), code=t.code(secret))
        assert page.title == "Connect this device?"


async def test_form_tokens_missing_or_reused_change_nothing(
    backend: str, config: ServerConfig
) -> None:
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        request = await t.request()
        browser = t.browser()
        page = await browser.get(f"/login/{request.id}")
        form = page.form(f"/login/{request.id}")
        before = await t.rows("web_sessions", "id, user_id, pending_user")
        for csrf in (None, "", "A" * 43, "not a token"):
            fields = {"name": "alice", "password": PASSWORD}
            if csrf is not None:
                fields["csrf"] = csrf
            refused = await browser.post(f"/login/{request.id}", fields)
            assert refused.status == 403 and refused.title == "Form expired"
        # the right password was never checked: no pending user, no failure, no session
        assert await t.rows("web_sessions", "id, user_id, pending_user") == before
        assert await t.rows("login_failures") == []
        # a form used once is not taken again, even with the right code
        page = await browser.submit(form, name="alice", password=PASSWORD)
        totp_form = page.form(f"/login/{request.id}/totp")
        assert (await browser.submit(form, name="alice", password=PASSWORD)).status == 403
        page = await browser.submit(totp_form, code=t.code(secret))
        assert page.title == "Connect this device?"
        approve_form = page.form(f"/login/{request.id}/approve")
        t.clock.now += login.TOTP_STEP
        refused = await browser.submit(totp_form, code=t.code(secret))
        assert refused.status == 403
        # a token for one form does not post another (the sign-out form's, to approve)
        signout = page.form("/logout")
        refused = await browser.post(
            f"/login/{request.id}/approve", {"csrf": signout.fields["csrf"], "answer": "connect"}
        )
        assert refused.status == 403 and await t.state(request) == ("pending", None)
        # a cross-site POST carries no cookie (SameSite=Lax): refused too
        cookie, browser.cookie = browser.cookie, None
        refused = await browser.submit(approve_form)
        assert refused.status == 403 and refused.title == "Session expired"
        assert await t.state(request) == ("pending", None)
        browser.cookie = cookie
        done = await browser.submit(approve_form)
        assert done.title == "Device connected"
        again = await browser.submit(approve_form)
        assert again.status == 403 and await t.state(request) == ("approved", "alice")
        assert len((await t.r.admin.call("GET", "/nodes"))["nodes"]) == 1


async def test_a_brute_force_run_locks_the_account(backend: str, config: ServerConfig) -> None:
    async with lab(config) as t:
        await t.user("alice")
        request = await t.request(lifetime=3600.0)  # outlives the lock
        browser = t.browser()
        page = await browser.get(f"/login/{request.id}")
        statuses = []
        for tries in range(30):  # bounded; waits as told, as a patient attacker would
            page = await browser.submit(
                page.form(f"/login/{request.id}"), name="alice", password=f"guess {tries}"
            )
            statuses.append(page.status)
            if page.status == 429:
                assert int(page.headers["Retry-After"]) >= 1
                if "locked" in page.plain:
                    break
                assert "wait" in page.plain
                t.clock.now += int(page.headers["Retry-After"])
        assert statuses.count(401) == login.ACCOUNT_POLICY.lock_after
        assert statuses[-1] == 429 and page.headers["Retry-After"] == "900"
        assert "it is locked for 15 more minutes" in page.plain
        # locked: the right password is not even checked, and says so
        page = await browser.submit(
            page.form(f"/login/{request.id}"), name="alice", password=PASSWORD
        )
        assert page.status == 429 and "locked" in page.plain
        session = await t.store.sessions.get(browser.cookie)
        assert session is not None and session.pending_user is None
        failures = await t.store.accounts.failures(account_subject("alice"))
        assert failures.count == login.ACCOUNT_POLICY.lock_after
        assert failures.locked_until > t.clock.now
        assert await t.state(request) == ("pending", None)
        # after the lock, the right password goes through
        t.clock.now += 900
        page = await browser.submit(
            page.form(f"/login/{request.id}"), name="alice", password=PASSWORD
        )
        assert page.title == "Set up your authenticator"


async def test_one_users_cookie_does_not_act_for_another(
    backend: str, config: ServerConfig
) -> None:
    async with lab(config) as t:
        alice_secret, bob_secret = login.new_totp_secret(), login.new_totp_secret()
        await t.user("alice", totp=alice_secret)
        await t.user("bob", totp=bob_secret)
        request = await t.request("bobs-laptop")
        bob, alice = t.browser(), t.browser()
        page = await bob.get(f"/login/{request.id}")
        page = await bob.submit(page.form(f"/login/{request.id}"), name="bob", password=PASSWORD)
        bob_totp = page.form(f"/login/{request.id}/totp")
        # alice's session (past her password step) with bob's form token: refused
        page = await alice.get(f"/login/{request.id}")
        page = await alice.submit(
            page.form(f"/login/{request.id}"), name="alice", password=PASSWORD
        )
        alice_totp = page.form(f"/login/{request.id}/totp")
        refused = await alice.submit(bob_totp, code=t.code(bob_secret))
        assert refused.status == 403
        # with her own token, bob's code is checked against her secret: refused
        refused = await alice.submit(alice_totp, code=t.code(bob_secret))
        assert refused.status == 401 and "not right" in refused.plain
        assert [s for s in await t.rows("web_sessions", "user_id") if s[0] is not None] == []
        # bob goes on (his code unused), and his confirm form is his alone
        page = await bob.submit(bob_totp, code=t.code(bob_secret))
        assert "as bob?" in page.plain
        bob_approve = page.form(f"/login/{request.id}/approve")
        t.clock.now += login.TOTP_STEP
        page = await alice.submit(
            refused.form(f"/login/{request.id}/totp"), code=t.code(alice_secret)
        )
        assert "as alice?" in page.plain
        refused = await alice.submit(bob_approve)
        assert refused.status == 403 and await t.state(request) == ("pending", None)
        assert (await bob.submit(bob_approve)).title == "Device connected"
        assert await t.state(request) == ("approved", "bob")
        # the node is bob's; alice cannot take the same key for herself
        page = await alice.submit(page.form(f"/login/{request.id}/approve"))
        assert page.status == 409 and "already approved" in page.plain


async def test_another_users_node_key_is_not_taken(backend: str, config: ServerConfig) -> None:
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        await t.r.admin.user("bob")
        bobs = await register(t.r.admin, await t.r.admin.auth_key("bob"), "bobs-laptop")
        request, _ = await t.store.login_requests.create(bobs.public_key, "bobs-laptop")
        browser, page = await signed_in_browser(t, request, "alice", secret)
        refused = await browser.submit(page.form(f"/login/{request.id}/approve"))
        assert refused.status == 403 and refused.title == "Not allowed"
        assert "belongs to another user's node" in refused.plain
        assert await t.state(request) == ("pending", None)
        nodes = (await t.r.admin.call("GET", "/nodes"))["nodes"]
        assert [(n["user"], n["hostname"]) for n in nodes] == [("bob", "bobs-laptop")]


async def test_an_expired_session_is_refused(backend: str, config: ServerConfig) -> None:
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        request = await t.request(lifetime=2 * SIGNED_IN_LIFETIME)
        browser, page = await signed_in_browser(t, request, "alice", secret)
        approve_form = page.form(f"/login/{request.id}/approve")
        t.clock.now += SIGNED_IN_LIFETIME
        refused = await browser.submit(approve_form)
        assert refused.status == 403 and refused.title == "Session expired"
        assert await t.state(request) == ("pending", None)
        assert await t.rows("web_sessions") == []
        page = await browser.get(f"/login/{request.id}")
        assert page.title == "Sign in to connect a device"


async def test_unknown_expired_and_closed_requests(backend: str, config: ServerConfig) -> None:
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        browser = t.browser()
        for path in ("/login/nosuchrequest", "/login/" + "x" * 200, "/login/%3Cscript%3E"):
            page = await browser.get(path)
            assert page.status == 404 and page.title == "No such login request"
            assert page.headers["Content-Type"].startswith("text/html")
            assert "run wgpy up again" in page.plain and "<script>" not in page.text
        request = await t.request()
        browser, page = await signed_in_browser(t, request, "alice", secret)
        await t.store.login_requests.cancel(request.id)
        refused = await browser.submit(page.form(f"/login/{request.id}/approve"))
        assert refused.status == 409 and "cancelled on the device" in refused.plain
        assert (await t.r.admin.call("GET", "/nodes"))["nodes"] == []
        # a step's address opened by hand: back to the page
        for step in ("totp", "approve"):
            moved = await browser.get(f"/login/{request.id}/{step}")
            assert (moved.status, moved.headers["Location"]) == (303, f"/login/{request.id}")
        assert (await browser.get("/login/a%0d%0aSet-Cookie:%20x/totp")).status == 404
        late = await t.request()
        t.clock.now += 601
        page = await browser.get(f"/login/{late.id}")
        assert page.status == 410 and page.title == "Login request expired"


async def test_hostile_forms(backend: str, config: ServerConfig) -> None:
    async with lab(config) as t:
        await t.user("alice")
        request = await t.request()
        browser = t.browser()
        page = await browser.get(f"/login/{request.id}")
        form = page.form(f"/login/{request.id}")
        huge = await browser.post(
            f"/login/{request.id}", {**form.fields, "password": "x" * 100_000}
        )
        assert huge.status == 413 and huge.headers["Content-Type"].startswith("text/html")
        page = await browser.submit(form, name="<b>alice</b>" * 20, password=PASSWORD)
        assert page.status == 401 and "<b>" not in page.text
        assert page.form(f"/login/{request.id}").fields["name"] == ("<b>alice</b>" * 20)[:64]
        assert await t.state(request) == ("pending", None)
        for name, password in [("alice\x00", PASSWORD), ("alice", "a\x00b" * 300)]:
            page = await browser.submit(
                page.form(f"/login/{request.id}"), name=name, password=password
            )
            assert page.status == 401, page.message
        # not UTF-8 (percent-escaped bytes): read with replacement characters, refused
        csrf = page.form(f"/login/{request.id}").fields["csrf"]
        async with t.http.post(
            f"{t.r.url}/login/{request.id}",
            data=f"csrf={csrf}&name=%FF%FE%ED%A0%80&password=%C0%80".encode(),
            headers={
                "Cookie": f"wgpy_session={browser.cookie}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        ) as response:
            assert response.status == 401, await response.text()
        page = await browser.get(f"/login/{request.id}")
        # a multipart form whose fields are files: no answer, the form again
        form = page.form(f"/login/{request.id}")
        data = aiohttp.FormData()
        data.add_field("csrf", form.fields["csrf"])
        data.add_field("name", b"alice", filename="name.txt")
        data.add_field("password", PASSWORD.encode(), filename="p.txt")
        async with t.http.post(
            f"{t.r.url}/login/{request.id}",
            data=data,
            headers={"Cookie": f"wgpy_session={browser.cookie}"},
        ) as response:
            assert response.status == 401 and "not right" in await response.text()
        assert await t.state(request) == ("pending", None)
