"""The sign-in pages and login requests attacked as a hostile client would, against a real
server on loopback (SQLite and PostgreSQL): what the outside review of issue 12 tried that
the other page tests do not cover already."""

from __future__ import annotations

import asyncio

from wgpy.mesh.server import ServerConfig, login
from wgpy.mesh.server.store.accounts import account_subject

from .test_server_login_pages import lab


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
