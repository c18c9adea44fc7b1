"""``wgpy server`` and ``wgpy server apikey create`` (wgpy/cli/server.py): in-process for the
arguments and errors, as the installed command for serving and stopping."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from wgpy.cli import ExitStatus

from .conftest import Client
from .pg import PostgresCluster
from .support import WGPY, run

API_KEY = re.compile(r"wgpy_api_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\n")


def test_apikey_create_prints_a_key_once(tmp_path: Path) -> None:
    status, out, err = run("server", "apikey", "create", "--state-dir", str(tmp_path))
    assert status == ExitStatus.SUCCESS and API_KEY.fullmatch(out)
    assert "shown only this once" in err and out.strip() not in err
    status, out2, _ = run(
        "server", "--state-dir", str(tmp_path), "apikey", "create", "--expiration", "60"
    )
    assert status == ExitStatus.SUCCESS and API_KEY.fullmatch(out2) and out2 != out
    assert oct((tmp_path / "wgpy.db").stat().st_mode & 0o777) == "0o600"


def test_apikey_create_on_postgresql_from_the_environment(postgres: PostgresCluster) -> None:
    from .conftest import new_database

    url = new_database(postgres)
    status, out, _ = run("server", "apikey", "create", env={"WGPY_DATABASE_URL": url})
    assert status == ExitStatus.SUCCESS and API_KEY.fullmatch(out)


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (
            ["server", "--listen", "nonsense"],
            ExitStatus.USAGE,
            "wgpy server: --listen 'nonsense': expected HOST:PORT, e.g. 127.0.0.1:8080 or "
            "[::]:8080\n",
        ),
        (
            ["server", "--database-url", "mysql://x"],
            ExitStatus.USAGE,
            "wgpy server: --database-url must be a postgresql:// URL "
            "(SQLite needs only --state-dir)\n",
        ),
        (
            ["server", "apikey", "create", "--state-dir", "{tmp}", "--expiration", "0"],
            ExitStatus.USAGE,
            "wgpy server: --expiration must be a positive number of seconds\n",
        ),
        (
            ["server", "--base-domain", "internal"],
            ExitStatus.USAGE,
            "wgpy server: --base-domain: The base domain 'internal' has one label; give at "
            "least two (e.g. mesh.internal) so that it cannot be taken for a host or a "
            "top-level domain.\n",
        ),
        (
            ["server", "--max-nodes-per-user", "-1"],
            ExitStatus.USAGE,
            "wgpy server: --max-nodes-per-user must be 0 (no limit) or more\n",
        ),
        (
            ["server", "--tls-cert", "/nonexistent.pem", "--listen", "127.0.0.1:0"],
            ExitStatus.ERROR,
            "wgpy server: TLS needs both a certificate and its key (--tls-cert and --tls-key)\n",
        ),
        (
            [
                "server",
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
                "--listen",
                "127.0.0.1:0",
            ],
            ExitStatus.ERROR,
            "wgpy server: cannot load the TLS certificate and key: No such file or directory\n",
        ),
        (
            ["server", "apikey", "create", "--database-url", "postgresql://nobody@127.0.0.1:1/x"],
            ExitStatus.ERROR,
            None,
        ),
    ],
)
def test_errors_are_one_sentence(
    argv: list[str], status: int, message: str | None, tmp_path: Path
) -> None:
    got, out, err = run(*(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert got == status
    if message is not None:
        assert err == message
    else:
        assert re.fullmatch(
            r"wgpy server: cannot connect to the PostgreSQL database: [^\n]+\n", err
        ), err
    assert out == ""


def test_an_unusable_state_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err = run("server", "apikey", "create", "--state-dir", str(blocker / "sub"))
    assert status == ExitStatus.ERROR
    assert err.startswith(f"wgpy server: cannot open the database {blocker}/sub/wgpy.db: ")


@pytest.mark.skipif(not WGPY.exists(), reason="the wgpy script is not installed")
def test_the_server_command_serves_until_sigterm(tmp_path: Path) -> None:
    status, key, _ = run("server", "apikey", "create", "--state-dir", str(tmp_path))
    assert status == 0
    process = subprocess.Popen(
        [str(WGPY), "server", "--state-dir", str(tmp_path), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOG_LEVEL": "info"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(
            r"wgpy server: listening on (http://127\.0\.0\.1:\d+) \(SQLite (.+)\)\n", line
        )
        assert match, line
        assert match[2] == str(tmp_path / "wgpy.db")

        async def use() -> None:
            async with aiohttp.ClientSession() as session:
                client = Client(session, match[1], key.strip())
                await client.user("alice")
                assert (await client.call("GET", "/users"))["users"][0]["name"] == "alice"

        asyncio.run(use())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        err = process.stderr.read() if process.stderr else ""
        assert "user created" in err and key.strip() not in err  # logs, but never a secret
        assert key.strip().split("_", 3)[3] not in err  # the secret may itself hold "_"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
