"""Headless Chromium for the tests: Debian's `chromium` driven through `chromium-driver`.

``make setup`` installs both (apt). ``chromium(directory)`` starts one browser with a profile
of its own under DIRECTORY and quits it (and the chromedriver it started) at the end. The
driver and browser paths are given explicitly, so selenium-manager never runs (it would try
the network first). DNS for anything but 127.0.0.1 fails at once: a page that loads web
fonts does not wait on a resolver.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_LOAD_TIMEOUT = 15  # seconds


class BrowserUnavailable(RuntimeError):
    """chromium or chromium-driver is not installed."""


def browser_options(profile: Path) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1024,768",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    return options


@contextmanager
def chromium(directory: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium, its profile in DIRECTORY/profile, chromedriver's log beside it."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            raise BrowserUnavailable(
                f"{path} is missing; install Debian's {package} (`make setup` does)."
            )
    directory.mkdir(parents=True, exist_ok=True)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(directory / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=browser_options(directory / "profile"))
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        yield driver
    finally:
        driver.quit()
