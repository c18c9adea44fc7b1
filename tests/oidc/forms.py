"""A headless walk through an OpenID provider's pages with aiohttp: no browser, no JavaScript.

``sign_in`` follows redirects from an authorization URL and submits the forms the provider
shows (oidc-provider's dev login form, then its consent form) until a redirect leads to
``stop_at`` (the relying party's redirect URI): it returns that URL without fetching it, so the
test reads ``code`` and ``state`` from it. With ``cancel=True`` it follows the login page's
"Cancel" link instead, and the provider sends the browser back with ``error=access_denied``.
The session needs ``aiohttp.CookieJar(unsafe=True)``: aiohttp's default jar drops cookies for
IP-address hosts such as 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import aiohttp
from yarl import URL

MAX_STEPS = 16  # redirects and forms in one sign-in; the dev pages take about 8


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.links: list[str] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._current)
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _parse(html: str) -> _FormParser:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser


def parse_forms(html: str) -> list[Form]:
    """The forms in a page with their inputs' names and values (pure; tested alone)."""
    return _parse(html).forms


def parse_links(html: str) -> list[str]:
    """The href of every link in a page, in order (pure; tested alone)."""
    return _parse(html).links


class SignInFailed(AssertionError):
    """The walk did not reach the redirect URI (an error page, a loop, too many steps)."""


@dataclass(frozen=True)
class Step:
    method: str
    url: URL
    status: int


async def sign_in(
    session: aiohttp.ClientSession,
    url: str | URL,
    *,
    login: str,
    stop_at: str,
    password: str = "any",
    cancel: bool = False,
) -> tuple[URL, list[Step]]:
    """Walk from URL through the login and consent forms to a redirect under STOP_AT.

    Returns the redirect's URL (not fetched) and the steps taken (for failure messages).
    """
    steps: list[Step] = []
    method, target, data = "GET", URL(url), None
    for _ in range(MAX_STEPS):
        if str(target).startswith(stop_at):
            return target, steps
        async with session.request(method, target, data=data, allow_redirects=False) as resp:
            steps.append(Step(method, target, resp.status))
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if location is None:
                    raise SignInFailed(f"{target} answered {resp.status} with no Location.")
                method, target, data = "GET", target.join(URL(location)), None
                continue
            html = await resp.text()
            aborts = [href for href in parse_links(html) if href.endswith("/abort")]
            if cancel and aborts:
                method, target, data = "GET", target.join(URL(aborts[0])), None
                continue
            forms = [f for f in parse_forms(html) if f.method == "post"]
            if resp.status != 200 or not forms:
                raise SignInFailed(
                    f"{method} {target} answered {resp.status} without a form to submit: "
                    f"{html[:600]!r}; steps: {steps}"
                )
            form = forms[0]
            fields = dict(form.fields)
            if "login" in fields:
                fields["login"] = login
            if "password" in fields:
                fields["password"] = password
            method, target, data = "POST", target.join(URL(form.action)), fields
    raise SignInFailed(f"The sign-in took more than {MAX_STEPS} steps: {steps}")
