"""The sign-in pages and login requests attacked as a hostile client would, against a real
server on loopback (SQLite and PostgreSQL): what the outside review of issue 12 tried that
the other page tests do not cover already."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import io
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from wgpy import cli
from wgpy.cli import server as server_cli
from wgpy.cli.admin import format_table
from wgpy.cli.environment import Environment
from wgpy.mesh.server import MeshServer, ServerConfig, login
from wgpy.mesh.server.errors import Forbidden
from wgpy.mesh.server.oidc import OidcError, OidcSettings
from wgpy.mesh.server.oidc_client import OidcClient
from wgpy.mesh.server.signin import Next
from wgpy.mesh.server.store.accounts import account_subject

from .conftest import Database, new_public_key
from .test_server_login_pages import PASSWORD, lab, signed_in_browser
from .test_server_machines import wgpy
from .test_server_signin import HERE, signin, with_password
from .test_server_store import Clock, opened


async def test_concurrent_guesses_do_not_outrun_the_lockout(
    backend: str, config: ServerConfig
) -> None:
    """Many password guesses sent at once (each with a form token of its own, collected
    beforehand) are checked no faster than one after another: the account's free tries,
    then refusals, not a guess per token."""
    async with lab(config) as t:
        await t.user("alice")
        request = await t.request()
        browser = t.browser()
        forms = []
        for _ in range(20):
            page = await browser.get(f"/login/{request.id}")
            forms.append(page.form(f"/login/{request.id}"))
        pages = await asyncio.gather(
            *(
                browser.submit(form, name="alice", password=f"guess {n}")
                for n, form in enumerate(forms)
            )
        )
        statuses = sorted(p.status for p in pages)
        assert statuses.count(401) == login.ACCOUNT_POLICY.free, statuses
        assert statuses.count(429) == len(forms) - login.ACCOUNT_POLICY.free
        failures = await t.store.accounts.failures(account_subject("alice"))
        assert failures.count == login.ACCOUNT_POLICY.free


async def test_concurrent_code_guesses_do_not_outrun_the_lockout(
    backend: str, config: ServerConfig
) -> None:
    """The same for TOTP codes: someone past the password step sends 20 codes at once."""
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        request = await t.request()
        browser = t.browser()
        page = await browser.get(f"/login/{request.id}")
        await browser.submit(page.form(f"/login/{request.id}"), name="alice", password=PASSWORD)
        forms = []
        for _ in range(20):
            page = await browser.get(f"/login/{request.id}")
            forms.append(page.form(f"/login/{request.id}/totp"))
        right = t.code(secret)
        wrong = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 21)]
        pages = await asyncio.gather(
            *(browser.submit(form, code=code) for form, code in zip(forms, wrong, strict=True))
        )
        statuses = sorted(p.status for p in pages)
        assert statuses.count(401) == login.ACCOUNT_POLICY.free, statuses
        failures = await t.store.accounts.failures(account_subject("alice"))
        assert failures.count == login.ACCOUNT_POLICY.free


def test_control_characters_do_not_reach_the_admins_terminal(tmp_path: Path) -> None:
    """An unauthenticated client's refused admin request names its path in the audit log:
    escape sequences and newlines in it (percent-encoded in the URL) are shown escaped by
    `wgpy admin audit`, one line per event, never as terminal control."""
    config = ServerConfig(
        host="127.0.0.1", port=0, state_dir=tmp_path / "server", shutdown_timeout=1.0
    )

    async def main() -> None:
        server = MeshServer(config)
        await server.start()
        try:
            _, api_key = await server.store.api_keys.create(None)
            text = str(api_key)
            wrong = text[:-1] + ("A" if text[-1] != "A" else "B")
            evil = "/api/v1/users/x%1b%5b2J%0d%0a2026-01-01%20users.create%20ok%e2%80%ae"
            async with (
                aiohttp.ClientSession() as http,
                http.delete(
                    server.url + evil, headers={"Authorization": f"Bearer {wrong}"}
                ) as response,
            ):
                assert response.status == 401
            events = await server.store.audit.list(limit=10)
            assert len(events) == 1 and events[0].detail is not None
            assert all(c.isprintable() for c in events[0].detail), events[0].detail
            admin = ("admin", "--server", server.url, "--api-key", text)
            r = await asyncio.to_thread(wgpy, *admin, "audit")
            assert r.status == 0, r.err
            assert "\x1b" not in r.out and "\r" not in r.out and "\u202e" not in r.out
            lines = r.out.splitlines()
            assert len(lines) == 2 and "\\x1b[2J" in lines[1], lines
        finally:
            await server.stop()

    asyncio.run(main())


def test_admin_tables_escape_control_characters() -> None:
    """Rows written before the store escaped them (or by another tool) are shown escaped."""
    table = format_table(
        [("DETAIL", "detail"), ("TAGS", "tags")],
        [{"detail": "a\x1b[2J\nb\u202ec", "tags": ["x\ny"]}],
    )
    assert table.splitlines() == ["DETAIL              TAGS", "a\\x1b[2J\\nb\\u202ec  x\\ny"]


async def test_with_admin_enrolment_a_password_alone_never_enrols(
    backend: str, config: ServerConfig
) -> None:
    """Someone who knows the password of a user without TOTP enrols their own key at the
    first sign-in: that is the default (as Tailscale and Headscale users expect). With
    --totp-enrolment admin they get no key and no sign-in; only the admin's enrolment (the
    key handed to the person) lets the person sign in, and it is never in the audit log."""
    async with lab(dataclasses.replace(config, totp_enrolment="admin")) as t:
        await t.user("alice")
        request = await t.request()
        browser = t.browser()
        page = await browser.get(f"/login/{request.id}")
        page = await browser.submit(
            page.form(f"/login/{request.id}"), name="alice", password=PASSWORD
        )
        assert page.status == 401 and page.title == "Sign in to connect a device"
        assert "only an admin sets one up" in page.plain and "totp-secret" not in page.text
        account = await t.store.accounts.get("alice")
        assert account is not None and account.totp_secret is None
        session = await t.store.sessions.get(browser.cookie)
        assert session is not None and session.pending_user is None
        refused = await browser.post(f"/login/{request.id}/totp", {"code": "123456"})
        assert refused.status == 403
        # the admin enrols alice: the key once, in the answer only
        enrolment = await t.r.admin.call("POST", "/users/alice/totp/enrol", {})
        secret = enrolment["secret"]
        assert enrolment["user"] == "alice" and f"secret={secret}" in enrolment["uri"]
        page = await browser.get(f"/login/{request.id}")
        page = await browser.submit(
            page.form(f"/login/{request.id}"), name="alice", password=PASSWORD
        )
        assert page.title == "Enter your code" and "totp-secret" not in page.text
        page = await browser.submit(page.form(f"/login/{request.id}/totp"), code=t.code(secret))
        assert page.title == "Connect this device?", page.message
        events = (await t.r.admin.call("GET", "/audit"))["events"]
        assert next(e for e in events if e["event"] == "users.totp_enrol")["user"] == "alice"
        assert secret not in repr(events)


async def test_an_admin_enrolment_is_not_replaced_by_a_sign_in(
    backend: str, config: ServerConfig
) -> None:
    """With the default enrolment at sign-in, a user an admin enrolled is asked for a code:
    the password alone shows no key, and the admin's key stays."""
    async with lab(config) as t:
        await t.user("bob")
        secret = (await t.r.admin.call("POST", "/users/bob/totp/enrol", {}))["secret"]
        request = await t.request()
        browser = t.browser()
        page = await browser.get(f"/login/{request.id}")
        page = await browser.submit(
            page.form(f"/login/{request.id}"), name="bob", password=PASSWORD
        )
        assert page.title == "Enter your code" and "totp-secret" not in page.text
        account = await t.store.accounts.get("bob")
        assert account is not None and account.totp_secret == secret and account.totp_confirmed


def test_totp_enrolment_commands(tmp_path: Path) -> None:
    """`wgpy server --totp-enrolment admin` and `wgpy admin users totp enrol NAME` (the key
    and URI printed once)."""
    parser = cli.commands.build_parser()
    env = Environment(io.BytesIO(), io.StringIO(), io.StringIO())
    args = parser.parse_args(["server", "--state-dir", "/tmp/x"])
    assert server_cli._config(args, env).totp_enrolment == "sign-in"
    args = parser.parse_args(["server", "--state-dir", "/tmp/x", "--totp-enrolment", "admin"])
    assert server_cli._config(args, env).totp_enrolment == "admin"
    config = ServerConfig(
        host="127.0.0.1", port=0, state_dir=tmp_path / "server", shutdown_timeout=1.0
    )

    async def main() -> None:
        server = MeshServer(config)
        await server.start()
        try:
            _, api_key = await server.store.api_keys.create(None)
            admin = ("admin", "--server", server.url, "--api-key", str(api_key))
            assert (await asyncio.to_thread(wgpy, *admin, "users", "create", "carol")).status == 0
            r = await asyncio.to_thread(wgpy, *admin, "users", "totp", "enrol", "carol")
            assert r.status == 0, r.err
            account = await server.store.accounts.get("carol")
            assert account is not None and account.totp_confirmed and account.totp_secret
            assert account.totp_secret in r.out.splitlines() and "otpauth://totp/" in r.out
            r = await asyncio.to_thread(wgpy, *admin, "users", "totp", "enrol", "nobody")
            assert r.status != 0 and "no user" in r.err
        finally:
            await server.stop()

    asyncio.run(main())


async def test_a_locked_account_stays_locked_by_any_spelling_or_source(
    backend: str, database: Database
) -> None:
    """A lock is the account's: the right password is refused from a fresh source, and
    other spellings of the name (case, spaces, look-alike Unicode) are the same account or
    no account, never a way around the lock."""
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await with_password(store)
        s = signin(store)
        for n in range(20):  # bounded: each from a new source, waiting as told
            outcome = await s.check_password("alice", f"guess {n}", f"198.51.100.{n}")
            if outcome.next is Next.REFUSED:
                if "locked" in outcome.message:
                    break
                clock.now += outcome.retry_after
        assert "locked" in outcome.message
        for name in ("alice", "ALICE", " Alice\t", "\uff41lice", "al\u0131ce", "alice\u200b"):
            outcome = await s.check_password(name, "correct horse", "203.0.113.9")
            assert not outcome.passed, name
        assert (await s.check_password("alice", "correct horse", "203.0.113.9")).next is (
            Next.REFUSED
        )


async def test_a_totp_code_is_taken_once_across_replicas(backend: str, database: Database) -> None:
    """Two replicas (two stores on one database) checking the same code at once: one signs
    in, the other is told the code was used; codes of the window's edges: the next step's
    is accepted (then the current one is refused as used), two steps off is wrong."""
    clock = Clock()
    async with (
        opened(database, "r1", clock=clock) as one,
        opened(database, "r2", clock=clock) as two,
    ):
        await with_password(one)
        secret = login.new_totp_secret()
        assert await one.accounts.begin_totp("alice", secret)
        assert await one.accounts.use_totp_step("alice", secret, 0)
        step = login.totp_step(clock.now)
        code = login.totp_code(secret, step)
        outcomes = await asyncio.gather(
            signin(one).check_totp("alice", code, HERE), signin(two).check_totp("alice", code, HERE)
        )
        assert sorted(o.next.value for o in outcomes) == ["failed", "signed_in"]
        assert any("used already" in o.message for o in outcomes)
        s = signin(two)
        assert (await s.check_totp("alice", login.totp_code(secret, step + 2), HERE)).message == (
            login.TotpCheck(login.TotpOutcome.WRONG).message
        )
        clock.now += 1000  # past the failures' waits, same accounts
        step = login.totp_step(clock.now)
        nxt = login.totp_code(secret, step + 1)
        assert (await s.check_totp("alice", nxt, HERE)).next is Next.SIGNED_IN
        now = await s.check_totp("alice", login.totp_code(secret, step), HERE)
        assert now.next is Next.FAILED and "used already" in now.message


async def test_a_new_password_ends_a_session_that_passed_the_old_one(
    backend: str, config: ServerConfig
) -> None:
    """Someone who knows a leaked password passes the password step; the admin sets a new
    password (or resets the TOTP, or deletes the user and makes a new one of that name):
    their half-done session is gone with it, so the old password is worth nothing, code or
    not."""
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        request = await t.request()
        for change in ("password", "totp/reset", "delete"):
            browser = t.browser()
            page = await browser.get(f"/login/{request.id}")
            page = await browser.submit(
                page.form(f"/login/{request.id}"), name="alice", password=PASSWORD
            )
            totp_form = page.form(f"/login/{request.id}/totp")
            if change == "delete":  # a new alice, not the one whose password was passed
                await t.r.admin.call("DELETE", "/users/alice")
                assert await t.store.sessions.get(browser.cookie) is None
                await t.user("alice")
            else:
                body = {"password": PASSWORD} if change == "password" else {}
                await t.r.admin.call("POST", f"/users/alice/{change}", body)
            if change != "password":  # alice enrols again, the same key for the test
                assert await t.store.accounts.begin_totp("alice", secret)
            t.clock.now += login.TOTP_STEP
            page = await browser.submit(totp_form, code=t.code(secret))
            assert page.status == 403 and page.title == "Session expired", page.message
            assert await t.state(request) == ("pending", None)


async def test_every_page_carries_the_protective_headers(
    backend: str, config: ServerConfig
) -> None:
    """No script, no frames, no Referer with the request's id, no caching: on the sign-in
    page, its refusals, a redirect, an unknown request, the home page and sign-out."""
    async with lab(config) as t:
        await t.user("alice")
        request = await t.request()
        browser = t.browser()
        pages = [await browser.get("/"), await browser.get(f"/login/{request.id}")]
        form = pages[-1].form(f"/login/{request.id}")
        pages.append(await browser.submit(form, name="alice", password="wrong horse"))
        pages.append(await browser.submit(form, name="alice", password="wrong horse"))  # reused
        pages.append(await browser.get(f"/login/{request.id}/totp"))  # 303 to the page
        pages.append(await browser.get("/login/" + "x" * 30))
        pages.append(await browser.get(f"/oidc/start?request={request.id}"))  # no SSO: 404
        pages.append(await browser.post("/logout", {}))
        assert [p.status for p in pages] == [200, 200, 401, 403, 303, 404, 404, 403]
        for page in pages:
            csp = page.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "form-action 'self'" in csp and "script-src" not in csp
            assert page.headers["X-Frame-Options"] == "DENY"
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            assert page.headers["Referrer-Policy"] == "no-referrer"
            assert page.headers["Cache-Control"] == "no-store"


async def test_no_redirect_leaves_the_server(backend: str, config: ServerConfig) -> None:
    """The only redirect (a GET of a step's form action, back to the request's page) goes
    to a path on this server whatever the id holds; there is no next= or return= at all."""
    async with lab(config) as t:
        browser = t.browser()
        for hostile in (
            "%2F%2Fevil.example",
            "x%0d%0aLocation:%20https:%2F%2Fevil.example",
            "..%2F..%2Fevil",
            "%5C%5Cevil.example",
            "@evil.example",
        ):
            page = await browser.get(f"/login/{hostile}/approve")
            assert page.status == 404 and "Location" not in page.headers, hostile
        page = await browser.get("/login/abc_DEF-123/approve?next=https://evil.example")
        assert page.status == 303 and page.headers["Location"] == "/login/abc_DEF-123"
        page = await browser.get("/?next=https://evil.example")
        assert page.status == 200 and "Location" not in page.headers


async def test_an_sso_state_is_taken_once_even_at_the_same_moment(
    backend: str, database: Database
) -> None:
    """The provider's answer replayed at once to two replicas: one of them takes the
    sign-in (its nonce and verifier), the other finds none."""
    async with (
        opened(database, "r1") as one,
        opened(database, "r2") as two,
    ):
        taken = 0
        for n in range(10):  # bounded; a race shows within a few
            state, browser = f"state-{n}", "B" * 43
            await one.oidc.begin(state, browser, f"request{n}", "nonce", "verifier", 600.0)
            found = await asyncio.gather(
                one.oidc.take(state, browser), two.oidc.take(state, browser)
            )
            assert sum(f is not None for f in found) == 1, n
            taken += 1
        assert taken == 10 and await one.oidc.pending() == 0


async def test_a_hostile_identity_provider_gets_one_sentence() -> None:
    """Discovery and JWKS answers a hostile or broken provider may send (larger than any
    real one, endless, not JSON, the wrong shape, another issuer, a redirect, unreadable
    keys, too slow): each a one-sentence OidcError or OidcUnavailable, never a crash."""
    answer: dict[str, object] = {}

    async def discovery(request: web.Request) -> web.StreamResponse:
        return await serve(request, answer["discovery"])

    async def jwks(request: web.Request) -> web.StreamResponse:
        return await serve(request, answer["jwks"])

    async def serve(request: web.Request, what: object) -> web.StreamResponse:
        if what == "endless":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(2048):  # 2 MiB at most, in 1 KiB chunks
                await response.write(b" " * 1024)
            return response
        if what == "slow":
            await asyncio.sleep(3)
        if what == "redirect":
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        if isinstance(what, bytes):
            return web.Response(body=what, content_type="application/json")
        return web.json_response(what)

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    issuer = f"http://127.0.0.1:{runner.addresses[0][1]}"
    good = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    }
    settings = OidcSettings.checked(issuer, "wgpy", "s")
    try:
        for document, expected in [
            (b"[" * 2_000_000, "larger than"),
            ("endless", "larger than"),
            (b"[" * 100_000, "not JSON"),  # nested deeper than the parser goes
            (b"\xff\xfe not json", "not JSON"),
            ([1, 2, 3], ""),
            ({**good, "issuer": "https://evil.example"}, "names issuer"),
            ({**good, "id_token_signing_alg_values_supported": ["HS256", "none"]}, "none of"),
            ({"issuer": issuer}, ""),
            ("redirect", "answered 302"),
            ("slow", "no answer in time"),
        ]:
            answer["discovery"] = document
            client = OidcClient(settings, timeout=1.0)
            try:
                with pytest.raises(OidcError) as caught:
                    await client.metadata()
            finally:
                await client.close()
            message = str(caught.value)
            assert expected in message and "\n" not in message and len(message) < 300, message
        # a large answer that is fine (it arrives in many reads) is read whole
        answer["discovery"] = json.dumps({**good, "padding": "x" * 500_000}).encode()
        client = OidcClient(settings, timeout=5.0)
        try:
            assert (await client.metadata()).jwks_uri == f"{issuer}/jwks"
        finally:
            await client.close()
        answer["discovery"] = good
        for keys, expected in [
            (b"{" * 2_000_000, "larger than"),
            ({"keys": "none"}, "no list of keys"),
            ({"keys": [{"kty": "RSA", "n": "!!!", "e": "AQAB"}]}, "cannot be read"),
            ({"keys": [{"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA"}]}, "cannot be read"),
            ({"keys": [{"kty": "oct", "k": "A" * 43}]}, ""),  # an HMAC key: of no use
        ]:
            answer["jwks"] = keys
            client = OidcClient(settings, timeout=1.0)
            try:
                with pytest.raises(OidcError) as caught:
                    await client.verify("e30.e30.AA", "nonce", 0.0)
            finally:
                await client.close()
            assert expected in str(caught.value), str(caught.value)
    finally:
        await runner.cleanup()


async def test_every_post_needs_its_own_forms_token(backend: str, config: ServerConfig) -> None:
    """A signed-in browser's POSTs without a token, with another form's token (the
    password approval's for the SSO approval and back, the sign-out's for either), or from
    a page without the cookie: each refused before anything changes."""
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        request = await t.request()
        browser, page = await signed_in_browser(t, request, "alice", secret)
        approve_token = page.form(f"/login/{request.id}/approve").fields["csrf"]
        signout_token = page.form("/logout").fields["csrf"]
        connect = {"answer": "connect"}
        for path, token in [
            (f"/oidc/approve/{request.id}", None),
            (f"/oidc/approve/{request.id}", approve_token),
            (f"/oidc/approve/{request.id}", signout_token),
            (f"/login/{request.id}/approve", None),
            (f"/login/{request.id}/approve", signout_token),
            ("/logout", None),
            ("/logout", approve_token),
        ]:
            fields = connect if token is None else {**connect, "csrf": token}
            refused = await browser.post(path, fields)
            assert refused.status == 403 and refused.title == "Form expired", (path, refused.title)
        assert await t.state(request) == ("pending", None)
        session = await t.store.sessions.get(browser.cookie)
        assert session is not None and session.user == "alice"  # not signed out either


async def test_another_users_node_is_not_taken_through_its_token(
    backend: str, database: Database
) -> None:
    """A login request that carries alice's node token (her node logging in again, under a
    new key) approved by bob: refused, her node and its key unchanged, the request still
    pending for alice."""
    async with opened(database) as store:
        alice = (await store.users.create("alice")).id
        bob = (await store.users.create("bob")).id
        request, secret = await store.login_requests.create(new_public_key(), "laptop")
        node = await store.login_requests.approve(request.id, alice, "password")
        _, token = await store.login_requests.take_token(request.id, secret)
        relogin, _ = await store.login_requests.create(new_public_key(), "laptop", node_token=token)
        with pytest.raises(Forbidden, match="another user's node"):
            await store.login_requests.approve(relogin.id, bob, "password")
        [kept] = await store.nodes.all()
        assert (kept.id, kept.user, kept.public_key) == (node.id, "alice", node.public_key)
        still = await store.login_requests.get(relogin.id)
        assert still is not None and still.state == "pending"


def test_an_hs256_token_keyed_with_the_providers_rsa_key_is_refused() -> None:
    """The key-confusion forgery: HS256 with the provider's public RSA key (its PEM, its
    JWK text, its modulus) as the HMAC secret, under the RSA key's kid, checked against the
    provider's real JWKS; and the same with "alg": "none" and an empty signature."""
    from cryptography.hazmat.primitives import serialization

    from .test_oidc import JWKS, KEY, check, claims

    public = KEY.get_op_key("verify")
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    for secret in (pem, json.dumps(JWKS["keys"][0]).encode(), KEY.as_dict()["n"].encode()):
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"k1","typ":"JWT"}').rstrip(b"=")
        signing_input = header + b"." + body
        mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
        token = (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
        with pytest.raises(OidcError, match="algorithm wgpy does not accept"):
            check(token)
    none = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').rstrip(b"=")
    with pytest.raises(OidcError, match="algorithm wgpy does not accept"):
        check((none + b"." + body + b".").decode())


async def test_the_cookie_of_a_signed_out_session_is_worth_nothing(
    backend: str, config: ServerConfig
) -> None:
    """The cookie and an approval form kept from before signing out (a shared computer):
    refused, the device not connected, no session made of it."""
    async with lab(config) as t:
        secret = login.new_totp_secret()
        await t.user("alice", totp=secret)
        request = await t.request()
        browser, page = await signed_in_browser(t, request, "alice", secret)
        kept_cookie, approve = browser.cookie, page.form(f"/login/{request.id}/approve")
        done = await browser.submit(page.form("/logout"))
        assert done.title == "Signed out" and browser.cookie is None
        browser.cookie = kept_cookie
        refused = await browser.submit(approve)
        assert refused.status == 403 and refused.title == "Session expired"
        page = await browser.get(f"/login/{request.id}")
        assert page.title == "Sign in to connect a device" and browser.cookie != kept_cookie
        assert await t.state(request) == ("pending", None)


async def test_cookies_are_secure_behind_a_tls_proxy(backend: str, config: ServerConfig) -> None:
    """The server behind a reverse proxy that ends TLS (plain HTTP to the server, the public
    URL https://): its cookies are Secure still, so a browser never sends them over a plain
    http:// request an attacker on the path provoked."""
    public = dataclasses.replace(config, public_url="https://mesh.example")
    async with lab(public) as t:
        request = await t.request()
        page = await t.browser().get(f"/login/{request.id}")
        attributes = [a.strip().lower() for a in page.headers["Set-Cookie"].split(";")]
        assert "secure" in attributes and "httponly" in attributes


async def test_malformed_form_bodies_are_a_page_not_a_crash(
    backend: str, config: ServerConfig
) -> None:
    """Form posts a browser never sends (a multipart body with a broken part header, an
    unknown charset, a JSON body, thousands of empty fields): a page that says the form could
    not be read (4xx), never a 500, nothing checked."""
    async with lab(config) as t:
        await t.user("alice")
        request = await t.request()
        browser = t.browser()
        await browser.get(f"/login/{request.id}")
        form = "application/x-www-form-urlencoded"
        for body, content_type in [
            (b"--x\r\nbroken\r\n\r\nvalue\r\n--x--\r\n", "multipart/form-data; boundary=x"),
            (b"--x\r\nbroken", "multipart/form-data"),
            (b"name=alice&password=x", f"{form}; charset=utf-99"),
            (b"{}", "application/json"),
            (b"&" * 60_000, form),
        ]:
            async with t.http.post(
                f"{t.r.url}/login/{request.id}",
                data=body,
                headers={"Cookie": f"wgpy_session={browser.cookie}", "Content-Type": content_type},
            ) as response:
                text = await response.text()
                assert 400 <= response.status < 500, (content_type, response.status, text)
                assert response.headers["Content-Type"].startswith("text/html"), text
        assert await t.rows("login_failures") == []
        assert await t.state(request) == ("pending", None)
