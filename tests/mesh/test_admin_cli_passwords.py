"""``wgpy admin users create NAME --password``, ``users passwd``, ``users totp reset`` against
the real server (SQLite) in this process: the password typed twice without echo (the
environment's read_secret) or read with --password-stdin, never printed."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from wgpy import cli
from wgpy.cli import environment
from wgpy.cli.environment import Environment, ExitStatus
from wgpy.mesh.server import MeshServer, ServerConfig, login
from wgpy.mesh.server.signin import Next, SignIn

from .test_admin_cli import Run

PASSWORD = "correct horse battery"


def admin(
    url: str, key: str, *args: str, stdin: bytes = b"", typed: list[str] | None = None
) -> tuple[Run, list[str]]:
    """Run ``wgpy admin ARGS``; ``typed``: the lines typed at each prompt; the prompts."""
    prompts: list[str] = []
    answers = list(typed or [])

    def read_secret(prompt: str) -> str:
        prompts.append(prompt)
        return answers.pop(0)

    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdin=io.BytesIO(stdin),
        stdout=out,
        stderr=err,
        env={"WGPY_SERVER": url, "WGPY_API_KEY": key},
        read_secret=read_secret,
    )
    status = cli.main(["admin", *args], env)
    return Run(status, out.getvalue(), err.getvalue()), prompts


def with_server(tmp_path: Path, body: Callable[[MeshServer, str], object]) -> None:
    config = ServerConfig(
        host="127.0.0.1", port=0, state_dir=tmp_path / "server", shutdown_timeout=1.0
    )

    async def main() -> None:
        server = MeshServer(config)
        await server.start()
        try:
            _, key = await server.store.api_keys.create(None)
            await body(server, str(key))  # type: ignore[misc]
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_users_create_passwd_and_totp_reset(tmp_path: Path) -> None:
    async def body(server: MeshServer, key: str) -> None:
        def run(*args: str, **kw: object) -> tuple[Run, list[str]]:
            return admin(server.url, key, *args, **kw)  # type: ignore[arg-type]

        call = asyncio.to_thread
        signin = SignIn(server.store)
        # typed twice at prompts that do not echo; never printed
        r, prompts = await call(run, "users", "create", "alice", "--password", typed=[PASSWORD] * 2)
        assert r.status == 0, r.err
        assert prompts == ["New password for alice: ", "The same again: "]
        assert r.out.split()[:3] == ["ID", "NAME", "CREATED"] and PASSWORD not in r.out + r.err
        outcome = await signin.check_password("alice", PASSWORD, "127.0.0.1")
        assert outcome.next is Next.ENROL
        # two different: nothing sent, nothing made
        r, _ = await call(run, "users", "create", "bob", "--password", typed=[PASSWORD, "other"])
        assert (r.status, r.err) == (
            1,
            "wgpy admin: the two passwords differ; nothing was changed\n",
        )
        assert await server.store.accounts.get("bob") is None
        # the server's sentence for a short one, and still no user
        r, _ = await call(run, "users", "create", "bob", "--password", typed=["short"] * 2)
        assert r.status == 1 and "at least 8 characters" in r.err
        assert await server.store.accounts.get("bob") is None
        # from stdin (the first line; --password implied), for scripts
        r, prompts = await call(
            run, "users", "create", "bob", "--password-stdin", stdin=b"stdin horse\nmore\n"
        )
        assert r.status == 0 and prompts == [], r.err
        assert (await signin.check_password("bob", "stdin horse", "127.0.0.1")).passed
        r, _ = await call(run, "users", "passwd", "bob", "--password-stdin", stdin=b"")
        assert r.status == 1 and "holds no password" in r.err
        r, _ = await call(
            run, "users", "passwd", "bob", "--password-stdin", stdin=b"\xff\xfe12345678"
        )
        assert r.status == 1 and "not UTF-8" in r.err
        assert (await signin.check_password("bob", "stdin horse", "127.0.0.1")).passed
        # passwd
        r, prompts = await call(run, "users", "passwd", "alice", typed=["new horse 2"] * 2)
        assert (r.status, r.out) == (0, "password of alice set\n"), r.err
        assert (await signin.check_password("alice", "new horse 2", "127.0.0.1")).passed
        assert not (await signin.check_password("alice", PASSWORD, "127.0.0.1")).passed
        r, _ = await call(run, "users", "passwd", "carol", typed=[PASSWORD] * 2)
        assert (r.status, r.err) == (1, 'wgpy admin: there is no user "carol"\n')
        r, _ = await call(run, "users", "passwd", "alice", "--json", typed=[PASSWORD] * 2)
        assert (r.status, json.loads(r.out)) == (0, {})
        # totp reset
        enrolment = await signin.begin_enrolment("alice")
        assert enrolment is not None
        now = server.store.clock()
        code = login.totp_code(enrolment.secret, login.totp_step(now))
        assert (await signin.check_totp("alice", code, "127.0.0.1")).next is Next.SIGNED_IN
        r, _ = await call(run, "users", "totp", "reset", "alice")
        assert r.status == 0, r.err
        assert r.out == "TOTP of alice reset: they enrol again at their next sign-in\n"
        outcome = await signin.check_password("alice", PASSWORD, "127.0.0.1")
        assert outcome.next is Next.ENROL
        r, _ = await call(run, "users", "totp", "reset", "carol")
        assert r.status == 1 and 'no user "carol"' in r.err
        # `users create` without --password asks for nothing
        r, prompts = await call(run, "users", "create", "dave")
        assert r.status == 0 and prompts == []
        r, _ = await call(run, "users", "list")
        lines = [line.split() for line in r.out.splitlines()]
        assert lines[0] == ["ID", "NAME", "CREATED", "PASSWORD", "TOTP"]
        assert [(line[1], line[-2], line[-1]) for line in lines[1:]] == [
            ("alice", "yes", "no"),
            ("bob", "yes", "no"),
            ("dave", "no", "no"),
        ]

    with_server(tmp_path, body)


def test_no_terminal_says_use_password_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment.sys, "stdin", io.StringIO(""))
    with pytest.raises(environment.CommandError, match="with --password-stdin"):
        environment.ask_terminal("Password: ")


def test_usage() -> None:
    r, _ = admin("http://127.0.0.1:9", "k", "users", "totp")
    assert r.status == ExitStatus.USAGE
    r, _ = admin("http://127.0.0.1:9", "k", "users", "passwd")
    assert r.status == ExitStatus.USAGE and "NAME" in r.err
