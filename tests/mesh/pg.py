"""A throwaway PostgreSQL cluster for tests: initdb into a temporary directory, start it on a
free loopback port (and a Unix socket in the same directory), hand out a DSN, then stop it
and remove everything.

It runs the server binaries of the newest /usr/lib/postgresql/*/bin (or those on PATH). As
root it runs them as the ``postgres`` user (``runuser -u postgres``), which owns the
directory; otherwise as the current user. Durability is off (fsync, full_page_writes,
synchronous_commit): the data lives only as long as the test session.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg

TIMEOUT = 60


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries here, or the cluster would not start."""


def find_bin_dir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for directory in reversed(candidates):
        if (Path(directory) / "initdb").exists():
            return Path(directory)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) were found")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.as_postgres = os.geteuid() == 0
        self.directory = Path(tempfile.mkdtemp(prefix="wgpy-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.user = "postgres"
        if self.as_postgres:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, but there is no postgres user"
                ) from None
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def socket_dsn_for(self, database: str) -> str:
        """The DSN through the cluster's Unix socket, for processes in other network
        namespaces (where the cluster's loopback address does not exist)."""
        return f"postgresql://{self.user}@/{database}?host={self.directory}&port={self.port}"

    def create_database(self, prefix: str) -> str:
        """A fresh, empty database; its name."""
        name = prefix + secrets.token_hex(6)

        async def create() -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f"CREATE DATABASE {name}")
            finally:
                await conn.close()

        asyncio.run(create())
        return name

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd="/"
        )

    def start(self) -> None:
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "--username",
            self.user,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout}")
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.directory}"
            " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            " -c max_connections=200"
        )
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "log"),
            "-o",
            options,
            "-w",
            "-t",
            str(TIMEOUT),
            "start",
        )
        if done.returncode != 0:
            log = self.log()
            raise PostgresUnavailable(f"pg_ctl start failed: {done.stderr.strip()} {log[-2000:]}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "log").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started cluster, stopped and removed on exit."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
