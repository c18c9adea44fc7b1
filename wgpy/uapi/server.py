"""The UAPI control socket on asyncio: ``/var/run/wireguard/NAME.sock``, as wireguard-go.

:func:`serve_uapi` creates the socket (mode 0600, never visible with looser permissions),
replacing a stale one, and serves :class:`~wgpy.uapi.protocol.UapiConnection` on every client:
several operations per connection, a set applied whole once complete. Limits keep a bad client
from holding the interface: line and request size (see :mod:`wgpy.uapi.protocol`), a short
timeout once a request has started, a long one between requests, a cap on connections. A
watcher calls ``on_socket_removed`` when the socket file is deleted or replaced, the signal on
which wireguard-go shuts its interface down. Where the socket is: :mod:`wgpy.uapi.paths`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..log import get_logger
from .paths import socket_path
from .protocol import MAX_LINE_BYTES, MAX_REQUEST_BYTES, UapiConnection, UapiTarget

__all__ = ["UapiServer", "serve_uapi"]

READ_SIZE = 256 * 1024


def _log() -> Any:
    """The logger, looked up when used: one bound at import would miss wgpy.log.configure."""
    return get_logger(component="uapi")


def _check_name(name: str) -> None:
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise ValueError(f"invalid interface name {name!r} for a control socket")


def _in_use(path: str) -> bool:
    """Whether something answers on the socket at ``path`` (else it is stale)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except TimeoutError:
        return True  # a full backlog: alive
    except OSError as e:
        return e.errno == errno.EAGAIN  # a full backlog too; anything else: stale, as in Go
    finally:
        probe.close()
    return True


def _create_socket(path: str, directory: str) -> tuple[socket.socket, tuple[int, int]]:
    """Bind a listening socket at ``path`` with mode 0600 and no window in which it is looser.

    The socket is bound inside a fresh 0700 directory, set to 0600 and renamed into place,
    which also replaces a stale socket atomically. (wireguard-go changes the umask instead; the
    umask is per process, and this process has other threads.)
    """
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)
    if os.path.lexists(path):
        if _in_use(path):
            raise OSError(errno.EADDRINUSE, f"UAPI socket {path} is in use")
        _log().info("uapi: replacing a stale socket", path=path)
    private_dir = tempfile.mkdtemp(prefix=".u", dir=directory)
    staging = os.path.join(private_dir, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(staging)
        os.chmod(staging, 0o600)
        st = os.stat(staging)
        os.rename(staging, path)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(private_dir)
    return sock, (st.st_dev, st.st_ino)


class UapiServer:
    """A listening control socket; :meth:`close` stops it and removes the file it created."""

    def __init__(
        self,
        path: str,
        target: UapiTarget,
        *,
        on_socket_removed: Callable[[], None],
        idle_timeout: float,
        request_timeout: float,
        max_connections: int,
        max_line: int,
        max_request: int,
        poll_interval: float,
    ) -> None:
        self.path = path
        self.target = target
        self.on_socket_removed = on_socket_removed
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.max_line = max_line
        self.max_request = max_request
        self.poll_interval = poll_interval
        self._identity: tuple[int, int] = (0, 0)
        self._server: asyncio.AbstractServer | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._closed = False

    async def _start(self, directory: str) -> None:
        sock, self._identity = _create_socket(self.path, directory)
        try:
            self._server = await asyncio.start_unix_server(self._on_client, sock=sock)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    # -- lifecycle

    def close(self) -> None:
        """Stop listening, drop the clients, remove the socket file if it is still ours."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        if self._watcher is not None:
            self._watcher.cancel()
        for task in self._clients:
            task.cancel()
        self._unlink()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._watcher, *self._clients) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> UapiServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def _is_ours(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def _unlink(self) -> None:
        if self._is_ours():
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                pass
            except OSError:
                continue  # cannot tell: keep going
            else:
                if (st.st_dev, st.st_ino) == self._identity:
                    continue
            _log().info("uapi: control socket removed", path=self.path)
            try:
                self.on_socket_removed()
            except Exception:
                _log().exception("uapi: on_socket_removed failed")
            return

    # -- clients

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closed or task is None or len(self._clients) >= self.max_connections:
            _log().error("uapi: too many connections", limit=self.max_connections)
            writer.close()
            return
        self._clients.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError) as e:
            _log().debug("uapi: client dropped", reason=type(e).__name__)
        except Exception:
            _log().exception("uapi: client failed")
        finally:
            self._clients.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = UapiConnection(
            self.target, max_line=self.max_line, max_request=self.max_request
        )
        while not connection.closed:
            timeout = self.request_timeout if connection.in_request else self.idle_timeout
            try:
                async with asyncio.timeout(timeout):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                _log().info("uapi: client timed out", in_request=connection.in_request)
                return
            reply = connection.receive_data(data)
            if reply:
                writer.write(reply)
                async with asyncio.timeout(self.request_timeout):
                    await writer.drain()


async def serve_uapi(
    name: str,
    target: UapiTarget,
    *,
    directory: Path | str | None = None,
    on_socket_removed: Callable[[], None],
    idle_timeout: float = 3600.0,
    request_timeout: float = 30.0,
    max_connections: int = 64,
    max_line: int | None = None,
    max_request: int | None = None,
    poll_interval: float = 0.5,
) -> UapiServer:
    """Serve the control protocol for ``target`` on ``DIRECTORY/NAME.sock`` (the directory
    defaults to :data:`wgpy.uapi.paths.SOCKET_DIR`).

    The directory is created (0755) if needed; a live socket of the same name raises OSError
    (EADDRINUSE), a stale one is replaced. ``idle_timeout`` bounds the wait between requests,
    ``request_timeout`` the time to receive a request once started and to send its reply.
    """
    _check_name(name)
    path = socket_path(name, directory)
    server = UapiServer(
        str(path),
        target,
        on_socket_removed=on_socket_removed,
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
        max_connections=max_connections,
        max_line=MAX_LINE_BYTES if max_line is None else max_line,
        max_request=MAX_REQUEST_BYTES if max_request is None else max_request,
        poll_interval=poll_interval,
    )
    await server._start(str(path.parent))
    _log().info("uapi: listening", path=server.path)
    return server
