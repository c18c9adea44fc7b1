"""The SQLite state directory (wgpy/mesh/server/statedir.py): processes that open one
database together take turns, loose modes are tightened at start, and one server runs per
directory (replicas on PostgreSQL stay allowed)."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from wgpy.mesh.server import MeshServer, ServerConfig, statedir
from wgpy.mesh.server.db import DatabaseUnavailable
from wgpy.mesh.server.service import ServerError
from wgpy.mesh.server.store import open_store

from .conftest import FAST, new_database, running
from .pg import PostgresCluster
from .support import WGPY, run

ROUNDS = 20
OPENERS = 12


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_many_openers_of_one_new_sqlite_database_take_turns(tmp_path: Path) -> None:
    """Before the opener's lock, a few rounds in twenty failed with "database is locked"
    (switching to WAL does not wait for the busy timeout)."""
    for i in range(ROUNDS):
        state_dir = tmp_path / f"round{i}"
        stores = await asyncio.gather(
            *(
                open_store(state_dir=state_dir, database_url=None, replica=f"r{j}")
                for j in range(OPENERS)
            ),
            return_exceptions=True,
        )
        for store in stores:
            if not isinstance(store, BaseException):
                await store.close()
        assert [s for s in stores if isinstance(s, BaseException)] == [], f"round {i}"


async def test_loose_modes_are_tightened_at_start(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = await open_store(state_dir=state_dir, database_url=None, replica="r1")
    try:
        names = ("wgpy.db", "wgpy.db-wal", "wgpy.db-shm")  # the open connection keeps all 3
        os.chmod(state_dir, 0o755)
        for name in names:
            os.chmod(state_dir / name, 0o644)
        second = await open_store(state_dir=state_dir, database_url=None, replica="r2")
        await second.close()
        assert mode(state_dir) == 0o700
        assert {name: mode(state_dir / name) for name in names} == dict.fromkeys(names, 0o600)
    finally:
        await first.close()
    for lock in state_dir.glob("*lock"):
        assert mode(lock) == 0o600, lock


async def test_a_shared_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(DatabaseUnavailable) as refused:
        await open_store(state_dir=shared, database_url=None, replica="r1")
    assert str(refused.value) == (
        f"the state directory {shared} is shared (sticky, like /tmp); "
        "give the server a directory of its own with --state-dir"
    )
    assert mode(shared) == 0o1777


async def test_a_second_server_on_one_state_directory_refuses_to_start(tmp_path: Path) -> None:
    config = ServerConfig(state_dir=tmp_path / "state", **FAST)  # type: ignore[arg-type]
    async with running(config) as first:
        second = MeshServer(config)
        with pytest.raises(ServerError) as refused:
            await second.start()
        assert str(refused.value) == (
            f"another wgpy server (pid {os.getpid()}) is already running on the state "
            f"directory {tmp_path / 'state'}; stop it first, or share a PostgreSQL database "
            "(--database-url) between several servers"
        )
        # the first one goes on serving, and the database still opens for the bootstrap
        await first.admin.user("alice")
        argv = ("server", "apikey", "create", "--state-dir", str(tmp_path / "state"))
        status, out, _ = await asyncio.to_thread(run, *argv)
        assert status == 0 and out.startswith("wgpy_api_")
    async with running(config) as again:  # once the first has stopped
        assert [u["name"] for u in (await again.admin.call("GET", "/users"))["users"]] == ["alice"]


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    return new_database(postgres)


async def test_replicas_on_postgresql_share_a_state_directory(tmp_path: Path, pg_url: str) -> None:
    config = ServerConfig(state_dir=tmp_path, database_url=pg_url, **FAST)  # type: ignore[arg-type]
    async with running(config), running(config) as second:
        await second.admin.user("alice")


@pytest.mark.skipif(not WGPY.exists(), reason="the wgpy script is not installed")
def test_the_second_wgpy_server_says_why_it_does_not_start(tmp_path: Path) -> None:
    argv = [str(WGPY), "server", "--state-dir", str(tmp_path), "--listen", "127.0.0.1:0"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().startswith("wgpy server: listening on ")
        second = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert second.returncode == 1
        assert re.fullmatch(
            rf"wgpy server: another wgpy server \(pid {first.pid}\) is already running on the "
            rf"state directory {re.escape(str(tmp_path))}; stop it first, or share a "
            r"PostgreSQL database \(--database-url\) between several servers\n",
            second.stderr,
        ), second.stderr
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(timeout=10)


# ----------------------------------------------------------------------------------------
# Links and other users' files in the state directory: a server running as root would
# chmod or write what they point to.


def precious(path: Path) -> Path:
    path.write_text("precious\n")
    os.chmod(path, 0o644)
    return path


def untouched(path: Path) -> bool:
    return path.read_text() == "precious\n" and mode(path) == 0o644


@pytest.mark.parametrize("name", ["wgpy.db", "wgpy.db-wal", "wgpy.db-shm", "wgpy.db.open-lock"])
async def test_a_linked_database_file_is_refused(tmp_path: Path, name: str) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    target = precious(tmp_path / "target")
    (state_dir / name).symlink_to(target)
    with pytest.raises(DatabaseUnavailable) as refused:
        await open_store(state_dir=state_dir, database_url=None, replica="r1")
    assert str(refused.value) == (
        f"{state_dir / name} is a symbolic link; remove it (the server makes its own file there)"
    )
    assert untouched(target)


async def test_a_dangling_link_is_not_followed_to_create_a_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    (state_dir / "wgpy.db").symlink_to(tmp_path / "made")
    with pytest.raises(DatabaseUnavailable, match="is a symbolic link; remove it"):
        await open_store(state_dir=state_dir, database_url=None, replica="r1")
    assert not (tmp_path / "made").exists()


async def test_a_linked_state_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o755)
    state_dir = tmp_path / "state"
    state_dir.symlink_to(elsewhere)
    message = (
        f"the state directory {state_dir} is a symbolic link or not a directory; "
        "remove it, or give the server the real directory with --state-dir"
    )
    with pytest.raises(DatabaseUnavailable) as refused:
        await open_store(state_dir=state_dir, database_url=None, replica="r1")
    assert str(refused.value) == message
    config = ServerConfig(state_dir=state_dir, **FAST)  # type: ignore[arg-type]
    with pytest.raises(ServerError) as refused_server:
        await MeshServer(config).start()
    assert str(refused_server.value) == message
    assert mode(elsewhere) == 0o755 and list(elsewhere.iterdir()) == []


async def test_a_linked_server_lock_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    target = precious(tmp_path / "target")
    (state_dir / "server.lock").symlink_to(target)
    config = ServerConfig(state_dir=state_dir, **FAST)  # type: ignore[arg-type]
    with pytest.raises(ServerError) as refused:
        await MeshServer(config).start()
    assert str(refused.value) == (
        f"{state_dir / 'server.lock'} is a symbolic link; remove it (the server makes its own "
        "file there)"
    )
    assert untouched(target)


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's file needs root")
async def test_another_users_database_file_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    database = precious(state_dir / "wgpy.db")
    os.chown(database, 65534, 65534)
    with pytest.raises(DatabaseUnavailable) as refused:
        await open_store(state_dir=state_dir, database_url=None, replica="r1")
    assert str(refused.value) == (
        f"{database} belongs to uid 65534, not to this server's user (uid 0); remove it, "
        "or chown it to that user"
    )
    assert untouched(database)


async def test_a_lock_that_cannot_be_written_closes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(statedir.os, "ftruncate", full)
    with pytest.raises(statedir.StateDirError, match="cannot write the lock file"):
        statedir.ServerLock(tmp_path)
    assert len(os.listdir("/proc/self/fd")) == before


async def test_a_server_whose_database_fails_to_close_still_frees_its_directory(
    tmp_path: Path,
) -> None:
    config = ServerConfig(state_dir=tmp_path / "state", **FAST)  # type: ignore[arg-type]
    server = MeshServer(config)
    await server.start()
    store = server.store
    close = store.close

    async def failing() -> None:
        await close()
        raise DatabaseUnavailable("the disk went away")

    store.close = failing  # type: ignore[method-assign]
    with pytest.raises(DatabaseUnavailable):
        await server.stop()
    async with running(config) as again:
        await again.admin.user("alice")
