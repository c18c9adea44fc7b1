"""The sign-in pages and login requests attacked as a hostile client would, against a real
server on loopback (SQLite and PostgreSQL): what the outside review of issue 12 tried that
the other page tests do not cover already."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from wgpy.cli.admin import format_table
from wgpy.mesh.server import MeshServer, ServerConfig, login
from wgpy.mesh.server.store.accounts import account_subject

from .test_server_login_pages import lab
from .test_server_machines import wgpy


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
    table = format_table([("DETAIL", "detail")], [{"detail": "a\x1b[2J\nb\u202ec"}])
    assert table.splitlines() == ["DETAIL", "a\\x1b[2J\\nb\\u202ec"]
