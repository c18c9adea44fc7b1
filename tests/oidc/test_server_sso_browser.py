"""Single sign-on in a real browser: headless Chromium opens /oidc/start for a pending login
request, signs in at the real provider, confirms on wgpy's page and sees the device
connected; another person, of a domain the server does not admit, sees the refusal page.

Screenshots of each page go to the test's output directory (pytest's tmp_path, kept for the
last three runs under /tmp/pytest-of-USER/): provider-login.png, confirm.png, connected.png,
refused.png. Selenium blocks, so it runs in a thread beside the server's event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from .browser import chromium
from .test_browser import screenshot
from .test_server_sso import sso_lab

WAIT = 10  # seconds, for each page


def provider_sign_in(driver: WebDriver, login: str, shot: Path | None = None) -> None:
    wait = WebDriverWait(driver, WAIT)
    field = wait.until(ec.presence_of_element_located((By.NAME, "login")))
    if shot is not None:
        screenshot(driver, shot)
    field.send_keys(login)
    driver.find_element(By.NAME, "password").send_keys("any")
    driver.find_element(By.CSS_SELECTOR, "button.login-submit").click()
    wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "input[name=prompt][value=consent]"))
    )
    driver.find_element(By.CSS_SELECTOR, "button.login-submit").click()


def h1(driver: WebDriver) -> str:
    wait = WebDriverWait(driver, WAIT)
    wait.until(ec.url_contains("/oidc/"))
    return str(wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1"))).text)


async def test_chromium_connects_a_device_by_sso_and_sees_a_refusal(tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with sso_lab(tmp_path, allowed_domains=("example.com",)) as lab:
        request_id = await lab.login_request("laptop")
        refused_id = await lab.login_request("kiosk")
        start = f"{lab.server.url}/oidc/start?request="

        def alice() -> tuple[str, str, str]:
            with chromium(tmp_path / "chromium-alice") as driver:
                driver.get(start + request_id)
                provider_sign_in(driver, "alice", shots / "provider-login.png")
                confirm = h1(driver)
                text = driver.find_element(By.TAG_NAME, "main").text
                screenshot(driver, shots / "confirm.png")
                driver.find_element(By.CSS_SELECTOR, "button[name=answer][value=connect]").click()
                WebDriverWait(driver, WAIT).until(ec.title_contains("Device connected"))
                screenshot(driver, shots / "connected.png")
                return confirm, text, driver.find_element(By.TAG_NAME, "main").text

        def bob() -> tuple[str, str]:
            with chromium(tmp_path / "chromium-bob") as driver:
                driver.get(start + refused_id)
                provider_sign_in(driver, "bob")
                title = h1(driver)
                screenshot(driver, shots / "refused.png")
                return title, driver.find_element(By.TAG_NAME, "main").text

        confirm, asked, connected = await asyncio.to_thread(alice)
        assert confirm == "Connect this device?"
        assert "laptop" in asked and "alice" in asked
        assert "now connected" in connected and "alice" in connected
        request = await lab.server.store.login_requests.get(request_id)
        assert request is not None and (request.state, request.method) == ("approved", "oidc")

        title, said = await asyncio.to_thread(bob)
        assert title == "Sign-in refused"
        assert 'Accounts of the domain "other.test" may not join this network; sign in' in said
        refused = await lab.server.store.login_requests.get(refused_id)
        assert refused is not None and refused.pending
        assert [u.name for u in await lab.server.store.users.all()] == ["alice"]
    assert sorted(p.name for p in shots.iterdir()) == [
        "confirm.png",
        "connected.png",
        "provider-login.png",
        "refused.png",
    ]
