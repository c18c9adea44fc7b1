"""The server's life cycle: open the store (migrations), load the hub, listen, heartbeat; and
stop in order (streams end, nodes go offline, the replica leaves, the database closes).

Each process is one *replica* with a random id. Replicas sharing a PostgreSQL database hear
each other's changes through LISTEN/NOTIFY (db.py) and write a heartbeat every
``heartbeat`` seconds; each heartbeat also sweeps: a replica silent for ``replica_timeout``
seconds is dead and its nodes offline, and ephemeral nodes offline for ``ephemeral_idle``
seconds are deleted. With SQLite there is one replica, so at start every stream that the
database still records belongs to a previous run and is cleared at once; a lock in the state
directory (statedir.py) keeps a second server from starting on it. What the server does
against hostile clients (timeouts, connection caps, the open-files limit) is in guard.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from cryptography import x509

from wgpy import machinecert, metrics
from wgpy.log import get_logger

from . import guard, nat, statedir
from .app import create_app
from .auth import Credential, RateLimiter, Rng
from .config import ServerConfig
from .db import DATABASE_FILE, DatabaseUnavailable
from .hub import Hub
from .metrics import ServerMetrics
from .models import ApiKey
from .oidc_client import OidcClient, OidcConfigError, settings_of
from .store import Store, open_store
from .stun import StunListenError, StunResponder, open_stun_listeners, show
from .web import Context

LINGER = 2.0  # seconds an unread request body is drained after the reply, then closed
THROTTLED_LOGGERS = ("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.access")


class ServerError(Exception):
    """The server cannot start; the message is one sentence for the operator."""


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None and config.tls_key is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise ServerError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ServerError(f"cannot load the TLS certificate and key: {reason}") from None
    return context


def load_machine_ca(path: Path | None, now: float) -> x509.Certificate | None:
    """The machine CA certificate of ``--machine-ca``, checked (a CA, valid now)."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ServerError(f"cannot read the machine CA {path}: {e.strerror or e}") from None
    try:
        ca = machinecert.load_certificate(data, f"the machine CA {path}")
        machinecert.check_ca(ca, now)
    except machinecert.MachineCertError as e:
        raise ServerError(str(e)) from None
    return ca


async def _open_store(
    config: ServerConfig, replica: str, clock: Callable[[], float], rng: Rng
) -> Store:
    try:
        store = await open_store(
            state_dir=config.state_dir,
            database_url=config.database_url,
            replica=replica,
            clock=clock,
            rng=rng,
        )
    except DatabaseUnavailable as e:
        raise ServerError(str(e)) from None
    store.login_requests.key_expiry = config.key_expiry
    store.login_requests.max_nodes = config.max_nodes_per_user
    return store


class MeshServer:
    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: Rng = os.urandom,
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng
        self.replica = secrets.token_hex(6)
        self.log = get_logger(component="server", replica=self.replica)
        self._store: Store | None = None
        self._hub: Hub | None = None
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._state_lock: statedir.ServerLock | None = None
        self.guard: guard.ConnectionGuard | None = None
        self.unread: guard.UnreadStreams | None = None
        self._throttle = guard.Throttle()
        self.stun = StunResponder(rate=config.stun_rate, burst=config.stun_burst)
        self._stun: list[tuple[asyncio.DatagramTransport, tuple[str, int]]] = []
        self._oidc: OidcClient | None = None
        self.metrics = ServerMetrics()
        self._metrics_runner: web.AppRunner | None = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "the server is not started"
        return self._store

    @property
    def hub(self) -> Hub:
        assert self._hub is not None, "the server is not started"
        return self._hub

    @property
    def url(self) -> str:
        """Where it listens, e.g. ``http://127.0.0.1:8080``."""
        assert self._runner is not None, "the server is not started"
        host, port = self._runner.addresses[0][:2]
        scheme = "https" if self.config.tls_cert else "http"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{port}"

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes, e.g. ``http://127.0.0.1:9090/metrics``; None: nowhere."""
        return None if self._metrics_runner is None else metrics.url_of(self._metrics_runner)

    @property
    def stun_addresses(self) -> list[tuple[str, int]]:
        """Where the STUN responder listens, as bound (port 0 resolved)."""
        return [address for _, address in self._stun]

    async def start(self) -> None:
        config = self.config
        tls = ssl_context(config)
        machine_ca = load_machine_ca(config.machine_ca, self.clock())
        try:
            turn = nat.turn_settings(config.turn_urls, config.turn_secret_file, config.turn_ttl)
        except nat.NatConfigError as e:
            raise ServerError(str(e)) from None
        try:
            oidc = None if config.oidc is None else OidcClient(settings_of(config.oidc))
        except OidcConfigError as e:
            raise ServerError(str(e)) from None
        self._oidc = oidc
        self._lock_state_dir()
        for name in THROTTLED_LOGGERS:  # they log per connection: a flood must not multiply
            logging.getLogger(name).addFilter(self._throttle)
        try:
            self._stun = await open_stun_listeners(config.stun_listen, self.stun)
            self._store = store = await _open_store(config, self.replica, self.clock, self.rng)
        except StunListenError as e:
            await self.stop()
            raise ServerError(str(e)) from None
        except BaseException:
            await self.stop()
            raise
        try:
            await store.streams.heartbeat()
            single = store.db.dialect == "sqlite"
            await store.streams.sweep(
                dead_after=0.0 if single else config.replica_timeout,
                ephemeral_idle=config.ephemeral_idle,
            )
            self._hub = hub = Hub(
                store,
                coalesce=config.coalesce,
                ephemeral_grace=config.ephemeral_grace,
                clock=self.clock,
                base_domain=config.base_domain,
            )
            await store.db.listen()  # before the hub loads all, so nothing falls between
            await hub.start()
            limiter = RateLimiter(config.auth_rate, config.auth_burst)
            failures = RateLimiter(config.auth_failure_rate, config.auth_failure_burst)
            self.unread = unread = guard.UnreadStreams(
                config.max_unread_streams_per_source, config.max_unread_streams
            )
            context = Context(config, store, hub, limiter, failures, unread, self.clock)
            context.stun, context.turn = self.stun_addresses, turn
            context.machine_ca = machine_ca
            context.oidc = oidc
            context.metrics = self.metrics
            self.metrics.follow(hub, self.stun.drops)
            app = create_app(context)
            # aiohttp's keep-alive timeout runs from the connection's start too: a
            # connection must complete a request's headers within it (guard.py).
            self._runner = web.AppRunner(
                app,
                handler_cancellation=True,
                access_log=None,
                keepalive_timeout=config.header_timeout,
                lingering_time=LINGER,
            )
            await self._runner.setup()
            open_files = guard.raise_open_files_limit()
            self.guard = guard.ConnectionGuard(
                config.max_idle_per_source,
                config.max_connections or guard.connection_budget(open_files),
                self.log,
            )
            site = guard.GuardedSite(
                self._runner,
                config.host,
                config.port,
                self.guard,
                ssl_context=tls,
                handshake_timeout=config.header_timeout,
            )
            try:
                await site.start()
            except OSError as e:
                where = f"{config.host}:{config.port}"
                raise ServerError(f"cannot listen on {where}: {e.strerror or e}") from None
            if config.metrics_listen is not None:
                host, port = config.metrics_listen
                try:
                    self._metrics_runner = await metrics.serve(self.metrics.registry, host, port)
                except metrics.ListenError as e:
                    raise ServerError(str(e)) from None
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        except BaseException:
            await self.stop()
            raise
        self.log.info(
            "listening",
            url=self.url,
            database=store.db.dialect,
            stun=[show(h, p) for h, p in self.stun_addresses],
            turn=[u.text for u in turn.urls] if turn is not None else [],
        )

    def _lock_state_dir(self) -> None:
        """One server per SQLite state directory: a second one would take the first one's
        streams for a dead replica's. Replicas sharing PostgreSQL need no such lock."""
        state_dir = self.config.state_dir
        if self.config.database_url or state_dir is None:
            return
        database = state_dir / DATABASE_FILE
        try:
            statedir.secure(state_dir, database)
            self._state_lock = statedir.ServerLock(state_dir)
        except statedir.StateDirError as e:
            raise ServerError(str(e)) from None
        except OSError as e:
            raise ServerError(f"cannot open the database {database}: {e.strerror or e}") from None

    async def _beat(self) -> None:
        overflows = guard.listen_overflows()
        while True:
            await asyncio.sleep(self.config.heartbeat)
            now = guard.listen_overflows()
            if now is not None and overflows is not None and now > overflows:
                self.log.warning(
                    "connections were dropped: an accept queue was full",
                    dropped=now - overflows,
                    seconds=self.config.heartbeat,
                    counted="for the whole network namespace",
                )
            overflows = now
            try:
                if not await self.store.streams.heartbeat():
                    # Others took this replica for dead (it stalled) and cleared its streams.
                    self.log.error("this replica was taken for dead; restoring its streams")
                    for stream in list(self.hub.streams.values()):
                        await self.store.streams.opened(stream.node_id, stream.stream_id)
                await self.store.streams.sweep(
                    dead_after=self.config.replica_timeout,
                    ephemeral_idle=self.config.ephemeral_idle,
                )
                await self.store.login_requests.prune()  # a day past their expiry
                await self.store.audit.prune()  # events older than AUDIT_RETENTION
            except Exception:
                self.log.exception("heartbeat failed")

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._hub is not None:
            await self._hub.stop(self.config.shutdown_timeout)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        for transport, _ in self._stun:
            transport.close()
        self._stun = []
        if self._oidc is not None:
            await self._oidc.close()
            self._oidc = None
        try:
            if self._store is not None:
                with contextlib.suppress(Exception):
                    await self._store.streams.leave()
                store, self._store = self._store, None
                await store.close()
        finally:  # even if closing failed: the directory is free for the next server
            if self._state_lock is not None:
                self._state_lock.release()
                self._state_lock = None
            for name in THROTTLED_LOGGERS:
                logging.getLogger(name).removeFilter(self._throttle)

    async def __aenter__(self) -> MeshServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def create_api_key(config: ServerConfig, lifetime: float | None) -> tuple[ApiKey, Credential]:
    """Bootstrap: an admin API key made directly in the database (no server needed)."""
    store = await _open_store(config, "cli-" + secrets.token_hex(4), time.time, os.urandom)
    try:
        return await store.api_keys.create(None if lifetime is None else time.time() + lifetime)
    finally:
        await store.close()
