"""A browser's view of the server's HTML pages for HTTP-level tests: pages parsed into their
heading, message and forms (action, fields), one cookie jar per :class:`Browser` that the
test can read and swap (another user's cookie, an expired one)."""

from __future__ import annotations

import html.parser
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

COOKIE = "wgpy_session"


@dataclass
class Form:
    action: str
    fields: dict[str, str]  # name -> value (hidden fields and defaults)
    labels: list[str] = field(default_factory=list)  # the text of each <label>
    buttons: list[str] = field(default_factory=list)


class _Parser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.h1: list[str] = []
        self.paragraphs: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.lang: str | None = None
        self.label_for: list[str] = []
        self.input_ids: list[str] = []
        self._text: list[str] | None = None
        self._in: str | None = None
        self._href = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "form":
            self.forms.append(Form(a.get("action", ""), {}))
        elif tag in ("input", "textarea") and self.forms and "name" in a:
            self.forms[-1].fields[a["name"]] = a.get("value", "")
            if "id" in a:
                self.input_ids.append(a["id"])
        elif tag == "label":
            self.label_for.append(a.get("for", ""))
        if tag == "a":
            self._href = a.get("href", "")
        if tag in ("h1", "p", "label", "button", "a"):
            self._in, self._text = tag, []

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag != self._in or self._text is None:
            return
        text = " ".join("".join(self._text).split())
        if tag == "h1":
            self.h1.append(text)
        elif tag == "p":
            self.paragraphs.append(text)
        elif tag == "label" and self.forms:
            self.forms[-1].labels.append(text)
        elif tag == "button" and self.forms:
            self.forms[-1].buttons.append(text)
        elif tag == "a":
            self.links.append((text, self._href))
        self._in, self._text = None, None


@dataclass
class Page:
    status: int
    text: str
    headers: CIMultiDictProxy[str]
    forms: list[Form]
    h1: list[str]
    paragraphs: list[str]
    links: list[tuple[str, str]]
    lang: str | None
    label_for: list[str]
    input_ids: list[str]

    @property
    def title(self) -> str:
        assert len(self.h1) == 1, f"a page has one h1, not {self.h1}"
        return self.h1[0]

    @property
    def plain(self) -> str:
        """The page's text without its tags, spaces collapsed."""
        return " ".join(re.sub(r"<[^>]+>", "", self.text).split())

    @property
    def message(self) -> str:
        return " ".join(self.paragraphs)

    def form(self, action: str) -> Form:
        found = [f for f in self.forms if f.action == action]
        assert found, f"no form posting to {action} in {[f.action for f in self.forms]}"
        return found[0]


def parse(status: int, text: str, headers: CIMultiDictProxy[str]) -> Page:
    parser = _Parser()
    parser.feed(text)
    return Page(
        status,
        text,
        headers,
        parser.forms,
        parser.h1,
        parser.paragraphs,
        parser.links,
        parser.lang,
        parser.label_for,
        parser.input_ids,
    )


def set_cookie_value(headers: CIMultiDictProxy[str]) -> str | None:
    """The session cookie a response sets ("" when it deletes it); None: it sets none."""
    for header in headers.getall("Set-Cookie", []):
        match = re.match(rf"{COOKIE}=([^;]*)", header)
        if match:
            value = match[1].strip('"')
            return "" if re.search(r"(?i)max-age=0\b", header) else value
    return None


class Browser:
    """One browser against ``url``: its session cookie kept by hand (``cookie``)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.cookie: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}

    async def _page(self, response: aiohttp.ClientResponse) -> Page:
        text = await response.text()
        value = set_cookie_value(response.headers)
        if value is not None:
            self.cookie = value or None
        return parse(response.status, text, response.headers)

    async def get(self, path: str) -> Page:
        async with self.session.get(
            self.url + path, headers=self._headers(), allow_redirects=False
        ) as response:
            return await self._page(response)

    async def post(self, path: str, data: dict[str, Any]) -> Page:
        async with self.session.post(
            self.url + path, data=data, headers=self._headers(), allow_redirects=False
        ) as response:
            return await self._page(response)

    async def submit(self, form: Form, **values: str) -> Page:
        """Send ``form`` as the page has it, with ``values`` filled in."""
        return await self.post(form.action, {**form.fields, **values})
