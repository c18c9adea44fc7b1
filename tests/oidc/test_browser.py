"""A smoke test of the browser harness: headless Chromium signs in at the real OpenID provider.

The pages' screenshots go to the test's output directory (pytest's tmp_path, kept for the
last three runs under /tmp/pytest-of-USER/): login.png, consent.png, callback.png.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from yarl import URL

from .browser import chromium
from .provider import OidcClient, OidcProvider

WAIT = 10  # seconds, for each page


class _Callback(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>Signed in</title><h1>Signed in</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def callback_uri() -> Iterator[str]:
    """A relying party's redirect URI that answers a plain page (the browser lands there)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oidc/callback"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def screenshot(driver: WebDriver, path: Path) -> None:
    assert driver.save_screenshot(str(path)), f"Chromium could not save {path}."
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chromium_signs_in_at_the_provider_and_lands_on_the_redirect_uri(
    start_oidc_provider: Callable[..., OidcProvider], callback_uri: str, tmp_path: Path
) -> None:
    client = OidcClient.new(callback_uri)
    provider = start_oidc_provider([client])
    state, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(48)
    authorize = URL(f"{provider.issuer}/auth").with_query(
        response_type="code",
        client_id=client.client_id,
        redirect_uri=client.redirect_uri,
        scope="openid email groups",
        state=state,
        nonce=secrets.token_urlsafe(16),
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with chromium(tmp_path / "chromium") as driver:
        wait = WebDriverWait(driver, WAIT)
        driver.get(str(authorize))
        login = wait.until(ec.presence_of_element_located((By.NAME, "login")))
        assert driver.current_url.startswith(f"{provider.issuer}/interaction/")
        screenshot(driver, shots / "login.png")

        login.send_keys("alice")
        driver.find_element(By.NAME, "password").send_keys("any")
        driver.find_element(By.CSS_SELECTOR, "button.login-submit").click()
        consent = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "input[name=prompt][value=consent]"))
        )
        assert consent is not None
        screenshot(driver, shots / "consent.png")

        driver.find_element(By.CSS_SELECTOR, "button.login-submit").click()
        wait.until(ec.url_contains("/oidc/callback"))
        wait.until(ec.title_is("Signed in"))
        screenshot(driver, shots / "callback.png")
        landing = URL(driver.current_url)

    assert str(landing).startswith(callback_uri)
    assert landing.query["state"] == state
    assert landing.query["iss"] == provider.issuer
    assert len(landing.query["code"]) > 20
    assert sorted(p.name for p in shots.iterdir()) == ["callback.png", "consent.png", "login.png"]
