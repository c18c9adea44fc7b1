"""The device-connection pages in a real browser: headless Chromium (Debian's chromium and
chromium-driver, tests/oidc/browser.py) with JavaScript off, against a real server on
loopback, signs in with a password, enrols TOTP (the code computed from the key the page
shows), connects a pending login request and sees the confirmation; the failure pages on
the way (a form sent without its session cookie, a wrong password, a wrong code, a closed
and an unknown request) and sign-out.

Screenshots of each page go to the test's output directory (pytest's tmp_path, kept for the
last three runs under /tmp/pytest-of-USER/): screenshots/NN-NAME.png.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from oidc.browser import chromium
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from wgpy.mesh.server import ServerConfig, login

from .conftest import new_public_key, running

TEST_TIMEOUT = 120.0  # seconds for a whole walk by Chromium on a busy machine (others: 30)
WAIT = 10  # seconds, for each page
PASSWORD = "correct horse battery"


@dataclass
class Walk:
    driver: WebDriver
    shots: Path
    count: int = 0

    def shot(self, name: str) -> Path:
        """Save the page as NN-NAME.png; checks it is a PNG and the page has no script."""
        self.count += 1
        path = self.shots / f"{self.count:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path)), f"Chromium could not save {path}."
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<script" not in self.driver.page_source
        return path

    def heading(self) -> str:
        (h1,) = self.driver.find_elements(By.TAG_NAME, "h1")
        return str(h1.text)

    def open(self, url: str, heading: str) -> None:
        self.driver.get(url)
        self.wait_for(heading)

    def wait_for(self, heading: str) -> None:
        # while the next page loads, Chromium may answer a lookup with "node does not belong
        # to the document": try again until the heading is there (or WAIT passes)
        WebDriverWait(self.driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
            ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), heading)
        )

    def fill(self, field: str, text: str) -> None:
        element = self.driver.find_element(By.ID, field)
        element.clear()
        element.send_keys(text)

    def press(self, text: str, heading: str) -> None:
        button = self.driver.find_element(By.XPATH, f"//main//button[normalize-space()='{text}']")
        button.click()
        self.wait_for(heading)

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)


def walk_through(base: str, request_id: str, directory: Path) -> list[Path]:
    """The browser's part (blocking: run in a thread while the server serves)."""
    shots = directory / "screenshots"
    shots.mkdir(parents=True)
    with chromium(directory / "chromium") as driver:
        # no script runs: the pages must work without JavaScript
        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        w = Walk(driver, shots)
        url = f"{base}/login/{request_id}"
        w.open(url, "Sign in to connect a device")
        assert "laptop" in w.text()
        # the first field has the focus: a person can type at once
        assert driver.switch_to.active_element.get_attribute("id") == "name"
        w.shot("sign-in")
        # the cookie gone (expired, or blocked) when the form is sent: refused, said so
        driver.delete_all_cookies()
        w.fill("name", "alice")
        w.fill("password", PASSWORD)
        w.press("Sign in", "Session expired")
        assert "open the link again" in w.text()
        w.shot("session-expired")
        w.open(url, "Sign in to connect a device")
        w.fill("name", "alice")
        w.fill("password", "wrong horse")
        w.press("Sign in", "Sign in to connect a device")
        assert "The user name or password is not right." in w.text()
        w.shot("wrong-password")
        w.fill("password", PASSWORD)
        w.press("Sign in", "Set up your authenticator")
        assert driver.find_element(By.CSS_SELECTOR, ".qr svg").is_displayed()
        secret = driver.find_element(By.ID, "totp-secret").text
        w.shot("enrol")
        step = login.totp_step(time.time())
        valid = {login.totp_code(secret, step + d) for d in (-1, 0, 1, 2)}
        w.fill("code", next(c for c in ("000000", "111111", "222222", "333333") if c not in valid))
        w.press("Confirm", "Set up your authenticator")
        assert "not right" in w.text()
        w.shot("wrong-code")
        w.fill("code", login.totp_code(secret, login.totp_step(time.time())))
        w.press("Confirm", "Connect this device?")
        assert "Connect the device laptop to the network as alice?" in w.text()
        w.shot("confirm")
        w.press("Connect", "Device connected")
        assert "is now connected" in w.text() and "100.64.0." in w.text()
        w.shot("connected")
        # the same link again: closed; an unknown one; then sign out
        w.open(url, "Login request closed")
        assert "already approved" in w.text()
        w.shot("closed")
        w.open(f"{base}/login/no-such-request", "No such login request")
        w.shot("unknown")
        signout = driver.find_element(By.XPATH, "//footer//button[normalize-space()='Sign out']")
        signout.click()
        w.wait_for("Signed out")
        w.shot("signed-out")
        assert driver.get_cookie("wgpy_session") is None
        return sorted(shots.iterdir())


async def test_chromium_signs_in_enrols_and_connects_a_device(
    config: ServerConfig, tmp_path: Path
) -> None:
    async with running(config) as r:
        await r.admin.call("POST", "/users", {"name": "alice", "password": PASSWORD})
        request, _ = await r.server.store.login_requests.create(new_public_key(), "laptop")
        shots = await asyncio.to_thread(walk_through, r.url, request.id, tmp_path)
        assert [p.name for p in shots] == [
            "01-sign-in.png",
            "02-session-expired.png",
            "03-wrong-password.png",
            "04-enrol.png",
            "05-wrong-code.png",
            "06-confirm.png",
            "07-connected.png",
            "08-closed.png",
            "09-unknown.png",
            "10-signed-out.png",
        ]
        found = await r.server.store.login_requests.get(request.id)
        assert found is not None and (found.state, found.user) == ("approved", "alice")
        nodes = (await r.admin.call("GET", "/nodes"))["nodes"]
        assert [(n["user"], n["hostname"]) for n in nodes] == [("alice", "laptop")]
        async with r.server.store.db.transaction() as tx:
            assert (
                await tx.fetchval("SELECT COUNT(*) FROM web_sessions WHERE user_id IS NOT NULL")
                == 0
            )
