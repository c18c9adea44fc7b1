"""What stands between the listening socket and aiohttp: connection caps, the open-files
limit, and logs that a flood cannot multiply.

- :class:`ConnectionGuard` counts open connections per source (an IPv4 address or an IPv6
  /64, auth.source_key) and in all. A connection is *idle* while no request of it is being
  handled: a keep-alive connection, or one still sending its headers. A source may hold
  ``per_source`` idle connections: a new one pushes out its oldest idle one (its requests
  being handled, such as map streams, are not counted: behind a reverse proxy every node
  shares one address). Over the total cap a new connection pushes out the oldest idle one
  of any source, or is closed at once if none is idle. Half-open requests therefore cannot
  lock out requests that complete.
- :class:`GuardedSite` listens (TCP, maybe TLS) through the guard; a TLS handshake has the
  header timeout to finish.
- :func:`raise_open_files_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard one at start;
  the total cap stays below it, so ``accept()`` does not fail with EMFILE.
- :func:`listen_overflows` reads the kernel's count of connections dropped on a full accept
  queue: the server logs its growth once per heartbeat (10 s), not per connection.
- :class:`Throttle` lets one log line of a kind through per interval (with the count of those
  it held back): asyncio's and aiohttp's loggers get it, as they log per connection.

Header and body timeouts are set where aiohttp reads: its keep-alive timeout closes a
connection that has not completed a request's headers ``header_timeout`` seconds after it
opened or after its previous response; web.read_json gives a body ``body_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .auth import source_key

LOG_INTERVAL = 10.0  # seconds between two log lines of one kind from a flood
FD_RESERVE = 128  # open files kept for the database, logs and the listening sockets
MAX_SOFT_LIMIT = 1 << 20


def raise_open_files_limit() -> int:
    """Lift the soft open-files limit to the hard one (capped at 2^20); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_SOFT_LIMIT if hard == resource.RLIM_INFINITY else min(hard, MAX_SOFT_LIMIT)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError):
            pass
    return soft


def listen_overflows(netstat: Path = Path("/proc/net/netstat")) -> int | None:
    """How many connections the kernel dropped because an accept queue was full (TcpExt
    ListenOverflows: for the whole network namespace, not one socket); None if unreadable."""
    try:
        lines = netstat.read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            value = counters.get("ListenOverflows", "")
            return int(value) if value.isdigit() else None
    return None


def connection_budget(open_files: int) -> int:
    """How many connections fit in ``open_files`` with room for everything else."""
    return max(16, open_files - max(FD_RESERVE, open_files // 8))


class Throttle(logging.Filter):
    """A logging filter: one record per (logger, first line) each ``interval`` seconds; the
    next one that passes says how many were held back."""

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}  # -> (last passed, held)

    def filter(self, record: logging.LogRecord) -> bool:
        first = str(record.msg).partition("\n")[0][:120]
        key = (record.name, first)
        now = self._clock()
        last, held = self._kinds.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._kinds[key] = (last, held + 1)
            return False
        if len(self._kinds) > 1000:
            self._kinds.clear()
        self._kinds[key] = (now, 0)
        if held:
            record.msg = f"{record.msg}\n({held} more like this in the last {now - last:.0f} s)"
        return True


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, admitted (or not) by the guard."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.source = "unknown"
        self.transport: asyncio.Transport | None = None
        self.admitted = False

    def idle(self) -> bool:
        """No request being handled (nor parsed and waiting for its turn)."""
        return not getattr(self.inner, "_request_in_progress", True) and not getattr(
            self.inner, "_messages", True
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.source = source_key(peer[0] if isinstance(peer, tuple) else None)
        if not self.guard.admit(self):
            transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.guard.forget(self)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return bool(self.inner.eof_received()) if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


class ConnectionGuard:
    def __init__(self, per_source: int, total: int, log: Any) -> None:
        self.per_source = per_source
        self.total = total
        self.log = log
        self.refused = 0  # connections closed at once, all busy
        self.evicted = 0  # idle connections closed to make room
        self._all: dict[_Guarded, None] = {}  # oldest first
        self._by_source: dict[str, dict[_Guarded, None]] = {}
        self._reported = -LOG_INTERVAL
        self._reported_counts = (0, 0)

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, factory())

    @property
    def open(self) -> int:
        return len(self._all)

    def admit(self, conn: _Guarded) -> bool:
        mine = self._by_source.get(conn.source, {})
        if len(mine) >= self.per_source:
            idle = [c for c in mine if c.idle()]
            if len(idle) >= self.per_source:
                self._close(idle[0])
        if len(self._all) >= self.total and not self._evict(self._all):
            self.refused += 1
            self._report()
            return False
        self._by_source.setdefault(conn.source, {})[conn] = None
        self._all[conn] = None
        return True

    def forget(self, conn: _Guarded) -> None:
        self._all.pop(conn, None)
        mine = self._by_source.get(conn.source)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self._by_source[conn.source]

    def _evict(self, conns: dict[_Guarded, None]) -> bool:
        for conn in conns:
            if conn.idle():
                self._close(conn)
                return True
        return False

    def _close(self, conn: _Guarded) -> None:
        self.forget(conn)
        if conn.transport is not None:
            conn.transport.abort()
        self.evicted += 1
        self._report()

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._reported < LOG_INTERVAL:
            return
        refused, evicted = self._reported_counts
        self.log.warning(
            "too many connections: idle ones closed to make room, or new ones refused",
            open=len(self._all),
            refused=self.refused - refused,
            evicted=self.evicted - evicted,
            per_source=self.per_source,
            total=self.total,
        )
        self._reported = now
        self._reported_counts = (self.refused, self.evicted)


class UnreadStreams:
    """Map streams whose client stopped reading (a write pending for a while), counted per
    source and in all. Each pins a full map and its send buffers until it is closed; past
    either cap, a stream that stalls is closed at once instead of after the write timeout."""

    def __init__(self, per_source: int, total: int) -> None:
        self.per_source = per_source
        self.total = total
        self.count = 0
        self.closed = 0  # streams closed for a cap
        self._by_source: dict[str, int] = {}

    def add(self, source: str) -> bool:
        """Count a stalled stream of ``source``; False (not counted) if over a cap."""
        mine = self._by_source.get(source, 0)
        if mine >= self.per_source or self.count >= self.total:
            self.closed += 1
            return False
        self._by_source[source] = mine + 1
        self.count += 1
        return True

    def remove(self, source: str) -> None:
        self.count -= 1
        mine = self._by_source[source] - 1
        if mine:
            self._by_source[source] = mine
        else:
            del self._by_source[source]


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass through ``guard``."""

    __slots__ = ("_guard", "_handshake_timeout", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 20.0,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard
        self._handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.wrap(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
        )
