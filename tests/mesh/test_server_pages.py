"""What every page shares (pages.py) against a real server on loopback: templates escaped,
headers, the stylesheet, the session cookie's attributes (Secure over TLS), sign-out with a
single-use form token, and refusals (no token, a reused one, another session's, an expired
session) that change nothing in the database."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import aiohttp

from wgpy.mesh.server import ServerConfig
from wgpy.mesh.server.pages import HEADERS, TEMPLATES, as_sentence
from wgpy.mesh.server.store import Store

from .conftest import running, with_
from .webpages import COOKIE, Browser


def test_templates_escape_what_they_show() -> None:
    html = TEMPLATES.get_template("message.html").render(
        title="<b>t</b>",
        sentence='the device "<script>alert(1)</script>" & co',
        signed_in_as="a<i>",
        signout_csrf="x",
        stylesheet="/static/wgpy.css",
    )
    assert "<script>" not in html and "<b>" not in html and "a<i>" not in html
    assert "&lt;script&gt;" in html and "&amp; co" in html and "&lt;b&gt;t&lt;/b&gt;" in html


def test_the_device_pages_escape_the_device() -> None:
    common = dict(title="t", signed_in_as=None, signout_csrf="", stylesheet="/s.css", user="alice")
    hostile = '<img src=x onerror="alert(1)">'
    confirm = TEMPLATES.get_template("confirm.html").render(
        hostname=hostile, public_key="k" * 44, action="/login/abc", csrf="c", **common
    )
    connected = TEMPLATES.get_template("connected.html").render(
        hostname=hostile, name="n", addresses=["100.64.0.1", "fd7a:115c:a1e0::1"], **common
    )
    for html in (confirm, connected):
        assert "<img" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert 'action="/login/abc"' in confirm and 'name="csrf" value="c"' in confirm
    assert "<code>100.64.0.1</code>, <code>fd7a:115c:a1e0::1</code>" in connected


def test_messages_read_as_sentences() -> None:
    assert as_sentence("the code is not right") == "The code is not right."
    assert as_sentence("wait 3 s. Then try again!") == "Wait 3 s. Then try again!"
    assert as_sentence("  ") == ""


def browser(session: aiohttp.ClientSession, url: str) -> Browser:
    return Browser(session, url)


async def signed_in_cookie(store: Store, user: str = "alice") -> str:
    if await store.accounts.get(user) is None:
        await store.users.create(user)
    _, secret = await store.sessions.sign_in(None, user, "password", 3600.0)
    return secret


async def count(store: Store, table: str) -> int:
    async with store.db.transaction() as tx:
        return int(await tx.fetchval(f"SELECT COUNT(*) FROM {table}"))


async def test_the_home_page_and_stylesheet(config: ServerConfig) -> None:
    async with (
        running(config) as r,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        page = await browser(http, r.url).get("/")
        assert page.status == 200 and page.lang == "en"
        assert page.title == "wgpy coordination server"
        assert f"wgpy up --login-server {r.url}" in page.message
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        for name, value in HEADERS.items():
            assert page.headers[name] == value
        assert "Set-Cookie" not in page.headers  # no form, no session
        assert await count(r.server.store, "web_sessions") == 0
        async with http.get(r.url + "/static/wgpy.css") as response:
            assert response.status == 200 and response.content_type == "text/css"
            assert "font" in await response.text()


async def test_sign_out_takes_the_form_token_once(backend: str, config: ServerConfig) -> None:
    async with (
        running(config) as r,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        store = r.server.store
        alice = browser(http, r.url)
        alice.cookie = await signed_in_cookie(store)
        page = await alice.get("/")
        assert "Signed in as alice." in page.plain
        form = page.form("/logout")
        assert form.buttons == ["Sign out"] and form.fields["csrf"]
        # without the token, with a forged one, with one for another form: refused, kept
        for fields in ({}, {"csrf": "x" * 43}, {"csrf": ""}):
            refused = await alice.post("/logout", fields)
            assert refused.status == 403 and refused.title == "Form expired"
            assert "did not come from this page" in refused.message
        assert await store.sessions.get(alice.cookie) is not None
        done = await alice.submit(form)
        assert done.status == 200 and done.title == "Signed out"
        assert alice.cookie is None  # the response deleted the cookie
        assert await count(store, "web_sessions") == 0
        assert await count(store, "web_form_tokens") == 0
        # the same form again, with the old cookie: the session is gone
        alice.cookie = "stale"
        again = await alice.submit(form)
        assert again.status == 403 and again.title == "Session expired"


async def test_a_form_token_of_another_session_is_refused(
    backend: str, config: ServerConfig
) -> None:
    async with (
        running(config) as r,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        store = r.server.store
        alice, bob = browser(http, r.url), browser(http, r.url)
        alice.cookie = await signed_in_cookie(store, "alice")
        bob.cookie = await signed_in_cookie(store, "bob")
        alice_form = (await alice.get("/")).form("/logout")
        refused = await bob.submit(alice_form)  # bob's cookie, alice's token
        assert refused.status == 403
        assert await store.sessions.get(alice.cookie) is not None
        assert await store.sessions.get(bob.cookie) is not None
        assert (await alice.submit(alice_form)).status == 200  # the token was not used up


async def test_an_expired_session_is_signed_out(backend: str, config: ServerConfig) -> None:
    async with (
        running(config) as r,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        store = r.server.store
        alice = browser(http, r.url)
        alice.cookie = await signed_in_cookie(store)
        form = (await alice.get("/")).form("/logout")
        async with store.db.transaction() as tx:
            await tx.execute("UPDATE web_sessions SET expires_at = ?", r.server.clock() - 1)
        page = await alice.get("/")
        assert "Signed in as" not in page.text and not page.forms
        refused = await alice.submit(form)
        assert refused.status == 403 and refused.title == "Session expired"
        assert await count(store, "web_sessions") == 0


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory / "cert.pem", directory / "key.pem"


async def test_the_cookie_is_http_only_samesite_and_secure_over_tls(
    tmp_path: Path, config: ServerConfig
) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False
    for tls in (False, True):
        server_config = with_(config, tls_cert=cert, tls_key=key) if tls else config
        async with (
            running(server_config) as r,
            aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(ssl=context if tls else False),
            ) as http,
        ):
            alice = browser(http, r.url)
            alice.cookie = await signed_in_cookie(r.server.store)
            form = (await alice.get("/")).form("/logout")
            async with http.post(
                r.url + "/logout", data=form.fields, headers={"Cookie": f"{COOKIE}={alice.cookie}"}
            ) as response:
                assert response.status == 200
                (header,) = response.headers.getall("Set-Cookie")
            attributes = [a.strip().lower() for a in header.split(";")]
            assert attributes[0] == f'{COOKIE}=""' and "httponly" in attributes
            assert "samesite=lax" in attributes and "path=/" in attributes
            assert ("secure" in attributes) is tls
