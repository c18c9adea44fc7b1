"""The SQLite state directory: its modes, and the two locks kept in it.

- Modes: the directory is 0700 and the database files (``wgpy.db`` and SQLite's ``-wal`` and
  ``-shm`` beside it) 0600. A directory or file that already exists with looser modes is
  tightened at start, with a warning saying what was changed; one this process may not
  change (another owner), or a shared directory such as /tmp (sticky bit), is refused with a
  message saying what to do.
- Links: the directory, the database files and the lock files are opened without following
  a symbolic link, and their modes are read and changed on the open descriptor. A link, a
  file that is not a regular one, or one owned by another user is refused with a message
  saying what to remove: a server running as root would otherwise chmod or write whatever
  the link points to.
- ``wgpy.db.open-lock``: held while a process opens the database (WAL mode, migrations).
  Switching to WAL and the first statements can fail at once with "database is locked" when
  another process opens the same file at that moment, without waiting for the busy timeout;
  openers take turns instead. A process that cannot get it within its deadline gives up with
  a message.
- ``server.lock``: held by a running ``wgpy server`` for its whole life, so a second one on the
  same directory refuses to start (it would take the first one's streams for a dead
  replica's). Commands that only open the database (``wgpy server apikey create``) do not
  take it.

Both are ``flock`` locks: the kernel drops them when the process ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

from wgpy.log import get_logger

DIR_MODE = 0o700
FILE_MODE = 0o600
SERVER_LOCK = "server.lock"
POLL = (0.001, 0.02)  # seconds between attempts at a held lock: the first, the longest

log = get_logger(component="statedir")


class StateDirError(Exception):
    """The state directory cannot be used; the message is one sentence for the operator."""


def secure(directory: Path, database: Path) -> None:
    """Make ``directory`` (0700) if it is missing; tighten it and the database files that
    exist if their modes are loose; StateDirError if that is not possible or one of them is a
    link or not this user's (OSError if the directory cannot be made)."""
    with contextlib.suppress(FileExistsError):  # a directory, or a link refused below
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StateDirError(
                f"the state directory {directory} is a symbolic link or not a directory; "
                "remove it, or give the server the real directory with --state-dir"
            ) from None
        message = f"cannot open the state directory {directory}: {e.strerror or e}"
        raise StateDirError(message) from None
    try:
        info = os.fstat(dir_fd)
        if info.st_mode & stat.S_ISVTX:
            raise StateDirError(
                f"the state directory {directory} is shared (sticky, like /tmp); "
                "give the server a directory of its own with --state-dir"
            )
        _check_owner(directory, info)
        _tighten(dir_fd, directory, info.st_mode, DIR_MODE, "chmod 700")
        for name in (database.name, database.name + "-wal", database.name + "-shm"):
            path = directory / name
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(name, flags, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise _refused(path, e) from None
            try:
                _check_file(fd, path)
            finally:
                os.close(fd)
    finally:
        os.close(dir_fd)


def _refused(path: Path, error: OSError) -> StateDirError:
    if error.errno == errno.ELOOP:
        return StateDirError(
            f"{path} is a symbolic link; remove it (the server makes its own file there)"
        )
    return StateDirError(f"cannot open {path}: {error.strerror or error}")


def _check_owner(path: Path, info: os.stat_result) -> None:
    if info.st_uid != os.geteuid():
        raise StateDirError(
            f"{path} belongs to uid {info.st_uid}, not to this server's user "
            f"(uid {os.geteuid()}); remove it, or chown it to that user"
        )


def _check_file(fd: int, path: Path) -> None:
    """The open ``fd`` of ``path`` is a regular file of this user's, 0600 or tightened to it."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise StateDirError(f"{path} is not a regular file; remove it")
    _check_owner(path, info)
    _tighten(fd, path, info.st_mode, FILE_MODE, "chmod 600")


def _tighten(fd: int, path: Path, mode: int, wanted: int, command: str) -> None:
    loose = stat.S_IMODE(mode) & ~wanted
    if not loose:
        return
    try:
        os.fchmod(fd, stat.S_IMODE(mode) & wanted)
    except OSError as e:
        raise StateDirError(
            f"{path} is open to other users (mode {stat.S_IMODE(mode):04o}) and this process "
            f"cannot change that ({e.strerror or e}): run `{command} {path}`"
        ) from None
    log.warning(
        "tightened a loose mode",
        path=str(path),
        was=f"{stat.S_IMODE(mode):04o}",
        now=f"{stat.S_IMODE(mode) & wanted:04o}",
    )


def _open_lock_file(path: Path) -> int:
    """Open (or create, 0600) the lock file ``path``: never through a link, and only a
    regular file of this user's; StateDirError says why not."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as e:
        raise _refused(path, e) from None
    try:
        _check_file(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.asynccontextmanager
async def opening(database: Path, timeout: float) -> AsyncIterator[None]:
    """Hold ``DATABASE.open-lock`` (waiting up to ``timeout`` seconds for another opener)."""
    path = database.with_name(database.name + ".open-lock")
    fd = _open_lock_file(path)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = POLL[0]
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise StateDirError(
                        f"another process has been opening the database {database} for "
                        f"{timeout:g} s (it holds {path}); try again once it has started"
                    ) from None
                await asyncio.sleep(pause)
                pause = min(2 * pause, POLL[1])
        yield
    finally:
        os.close(fd)  # releases the lock


class ServerLock:
    """``DIR/server.lock``, held while this server runs."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / SERVER_LOCK
        self._fd: int | None = _open_lock_file(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(self._fd)
            self.release()
            who = f" (pid {holder})" if holder else ""
            raise StateDirError(
                f"another wgpy server{who} is already running on the state directory "
                f"{directory}; stop it first, or share a PostgreSQL database "
                "(--database-url) between several servers"
            ) from None
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            self.release()
            raise StateDirError(
                f"cannot write the lock file {self.path}: {e.strerror or e}"
            ) from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
