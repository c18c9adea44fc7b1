"""A person at the device-connection pages, without a browser: open the URL a node printed,
sign in with a password, enrol TOTP from the key on the page (or use a known key), connect.

    python -m interop.login_walk URL NAME [--secret BASE32] [--after-step N] < password

(with tests/ on PYTHONPATH) prints one JSON object: the title of each page on the way, the
TOTP key (when the walk enrolled it), the TOTP step whose code it typed and the seconds the walk
took. A user's code is accepted once: a second walk for the same user within 30 s passes the
step the first one used (--after-step) and types the next step's code (the window allows
it). It exits 1 with the page it stopped at when a step does not lead where a person would
expect. Tests run it inside the server's namespace (tests/interop/test_login_netns.py);
`make demo-login` does too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from mesh.webpages import Browser, Page

from wgpy.mesh.server import login

TIMEOUT = 30  # seconds for the whole walk


class WalkFailed(Exception):
    pass


def _expect(page: Page, title: str) -> None:
    if page.status != 200 or page.h1 != [title]:
        raise WalkFailed(
            f"expected the page {title!r}, got {page.status} {page.h1}: {page.message}"
        )


async def walk(
    url: str, name: str, password: str, secret: str | None, after_step: int | None = None
) -> dict[str, Any]:
    started = time.monotonic()
    parts = urlsplit(url)
    base, path = f"{parts.scheme}://{parts.netloc}", parts.path
    titles: list[str] = []
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout) as http:
        browser = Browser(http, base)
        page = await browser.get(path)
        titles.append(page.h1[0] if page.h1 else str(page.status))
        _expect(page, "Sign in to connect a device")
        page = await browser.submit(page.form(path), name=name, password=password)
        titles.append(page.h1[0] if page.h1 else str(page.status))
        enrolled = None
        if page.h1 == ["Set up your authenticator"]:
            match = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
            if match is None:
                raise WalkFailed("the enrolment page shows no key")
            secret = enrolled = match[1]
        else:
            _expect(page, "Enter your code")
        if secret is None:
            raise WalkFailed("the user has TOTP already: give its key with --secret")
        step = login.totp_step(time.time())
        if after_step is not None:
            step = max(step, after_step + 1)
        code = login.totp_code(secret, step)
        page = await browser.submit(page.form(f"{path}/totp"), code=code)
        titles.append(page.h1[0] if page.h1 else str(page.status))
        _expect(page, "Connect this device?")
        page = await browser.submit(page.form(f"{path}/approve"))
        titles.append(page.h1[0] if page.h1 else str(page.status))
        _expect(page, "Device connected")
    return {
        "titles": titles,
        "secret": enrolled,
        "step": step,
        "message": page.message,
        "seconds": round(time.monotonic() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="login_walk")
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("--secret", help="the user's TOTP key, when they enrolled already")
    parser.add_argument(
        "--after-step", type=int, help="a TOTP step this user's code was used for already"
    )
    args = parser.parse_args(argv)
    password = sys.stdin.readline().rstrip("\n")
    try:
        result = asyncio.run(walk(args.url, args.name, password, args.secret, args.after_step))
    except (WalkFailed, aiohttp.ClientError, TimeoutError, AssertionError) as e:
        print(json.dumps({"error": str(e) or type(e).__name__}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
