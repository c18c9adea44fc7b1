"""The server's Prometheus metrics (``wgpy server --metrics-listen HOST:PORT``).

:class:`ServerMetrics` owns one registry per server (two servers in one process do not mix
their figures). What already has a count elsewhere is read at scrape time by a collector
(nodes online and map streams, from the hub); what happens per request or per flush is
counted as it happens: request latencies by route (:func:`middleware`), authentication
results where the audit log is written (audit.py), map flushes and the deltas they fan out
(the hub's ``on_flush``), database errors. Nothing is counted per packet or per map line.

service.py serves the registry with wgpy/metrics.py, on its own address apart from the API, so
the API's address need not be reachable from the monitoring network and the other way round.
Imports: this module imports no other server module but db.py; web.py and service.py import it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .db import DatabaseUnavailable

if TYPE_CHECKING:
    from .hub import Flushed, Hub

__all__ = ["ServerMetrics", "database_error", "middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request latencies: API calls take milliseconds; a slow database makes them seconds.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A flush reloads the changed nodes and writes each stream its deltas.
FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
MAP_ROUTE = "/api/v1/node/map"  # a stream: its latency is how long it stayed open
UNMATCHED = "unmatched"  # a path no route has: one label, not one per path sent


def database_error(error: BaseException) -> bool:
    """Whether ``error`` came from the database (SQLite or PostgreSQL)."""
    if isinstance(error, sqlite3.Error | DatabaseUnavailable):
        return True
    module = type(error).__module__ or ""
    return module == "asyncpg" or module.startswith("asyncpg.")


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "wgpy_server_request_duration_seconds",
            "API requests by route, method and status: how long each took to answer "
            "(a map stream: how long it stayed open).",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.auth = Counter(
            "wgpy_server_auth_events",
            "Registrations, logins and admin authentications as written to the audit log, "
            "by event, method and result (ok, refused, failed).",
            ["event", "method", "result"],
            registry=self.registry,
        )
        self.database_errors = Counter(
            "wgpy_server_database_errors",
            "Database errors, by where they happened (request, audit, map).",
            ["where"],
            registry=self.registry,
        )
        self.flushes = Histogram(
            "wgpy_server_map_flush_duration_seconds",
            "Map flushes (changes reloaded and fanned out to the streams): how long each took.",
            buckets=FLUSH_BUCKETS,
            registry=self.registry,
        )
        self.change_latency = Histogram(
            "wgpy_server_map_change_latency_seconds",
            "From a change noticed (a write here, or a notification from another replica) to "
            "its deltas written to the streams: the coalescing wait and the flush.",
            buckets=FLUSH_BUCKETS,
            registry=self.registry,
        )
        self.changes = Counter(
            "wgpy_server_map_changed_nodes",
            "Nodes whose map entry changed, summed over the flushes.",
            registry=self.registry,
        )
        self.deltas = Counter(
            "wgpy_server_map_deltas_sent",
            "Delta lines written to map streams (each stream counts its own).",
            registry=self.registry,
        )
        for where in ("request", "audit", "map"):  # present at 0 before the first error
            self.database_errors.labels(where)
        self._hub: _HubCollector | None = None

    def follow(self, hub: Hub, stun_drops: Mapping[str, int] | None = None) -> None:
        """Read the hub's nodes and streams, and the STUN responder's drops by reason, at
        each scrape (and count the hub's flushes)."""
        if self._hub is None:
            self._hub = _HubCollector(hub, {} if stun_drops is None else stun_drops)
            self.registry.register(self._hub)
        else:
            self._hub.hub, self._hub.stun_drops = hub, {} if stun_drops is None else stun_drops
        hub.on_flush = self.flushed

    def flushed(self, flush: Flushed) -> None:
        if flush.failed:
            self.database_errors.labels("map").inc()
            return
        self.flushes.observe(flush.seconds)
        self.change_latency.observe(flush.waited)
        self.changes.inc(flush.changed)
        self.deltas.inc(flush.lines)

    def noted(self, event: str, method: str | None, result: str) -> None:
        self.auth.labels(event, method or "", result).inc()

    def text(self) -> bytes:
        """The exposition, as a scrape gets it."""
        return generate_latest(self.registry)


class _HubCollector(Collector):
    def __init__(self, hub: Hub, stun_drops: Mapping[str, int]) -> None:
        self.hub = hub
        self.stun_drops = stun_drops

    def collect(self) -> Iterator[Metric]:
        entries = list(self.hub.index.entries.values())
        online = sum(1 for entry in entries if entry.node.online)
        nodes = GaugeMetricFamily(
            "wgpy_server_nodes", "Nodes known to this server, by state.", labels=["state"]
        )
        nodes.add_metric(["online"], online)
        nodes.add_metric(["offline"], len(entries) - online)
        yield nodes
        yield GaugeMetricFamily(
            "wgpy_server_map_streams",
            "Map streams open on this server (nodes connected to this replica).",
            value=len(self.hub.streams),
        )
        drops = CounterMetricFamily(
            "wgpy_server_stun_drops",
            "STUN datagrams the server's responder dropped, by reason (stun.py).",
            labels=["reason"],
        )
        for reason, count in sorted(self.stun_drops.items()):
            drops.add_metric([reason], count)
        yield drops


def middleware(metrics: ServerMetrics) -> Middleware:
    """Time each request by its route (the route's pattern, not the path sent) and count
    the database errors that reach the error boundary. Goes inside errors_middleware."""

    @web.middleware
    async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        except Exception as e:
            if getattr(e, "status", None) is not None:  # a MeshError: the reply it becomes
                status = int(e.status)  # type: ignore[attr-defined]
            elif database_error(e):
                metrics.database_errors.labels("request").inc()
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else UNMATCHED
            metrics.requests.labels(route, request.method, str(status)).observe(
                time.perf_counter() - started
            )

    return timing
