"""The server's Prometheus metrics (metrics.py): a real server on loopback with
``metrics_listen``, scraped over HTTP and parsed with prometheus-client's text parser, on
SQLite and PostgreSQL; off unless asked for; a taken address is a clear error."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from wgpy.cli import ExitStatus
from wgpy.cli.environment import CommandError
from wgpy.cli.server import _metrics_listen
from wgpy.mesh.server import MeshServer
from wgpy.mesh.server.db import DatabaseUnavailable
from wgpy.mesh.server.hub import Flushed
from wgpy.mesh.server.metrics import ServerMetrics, database_error
from wgpy.mesh.server.service import ServerError

from .conftest import ApiError, ServerConfig, open_map, register, running, with_
from .support import WGPY, run

Samples = list[Sample]


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    async with session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert found, f"no sample {name} {labels}"
    return sum(found)


async def test_scrape_counts_nodes_streams_requests_and_registrations(
    backend: str, config: ServerConfig
) -> None:
    async with running(with_(config, metrics_listen=("127.0.0.1", 0))) as r:
        url = r.server.metrics_url
        assert url is not None and url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        first = await register(r.admin.using(None), key, "laptop")
        once = await r.admin.auth_key("alice")
        await register(r.admin.using(None), once, "desktop")
        with pytest.raises(ApiError):  # a one-off key, used
            await register(r.admin.using(None), once, "intruder")
        stream = await open_map(first)
        try:
            await register(r.admin.using(None), key, "phone")  # a delta for laptop's stream
            await stream.until(lambda m: len(m.peers) == 2)
            async with r.session.get(r.url + "/no/such/path/1234") as response:
                assert response.status == 404

            samples = await scrape(r.session, url)
            assert value(samples, "wgpy_server_nodes", state="online") == 1
            assert value(samples, "wgpy_server_nodes", state="offline") == 2
            assert value(samples, "wgpy_server_map_streams") == 1
            registered = "wgpy_server_auth_events_total"
            assert value(samples, registered, event="register", method="authkey", result="ok") == 3
            assert value(samples, registered, event="register", result="refused") == 1
            requests = "wgpy_server_request_duration_seconds_count"
            ok = dict(route="/api/v1/register", method="POST", status="200")
            assert value(samples, requests, **ok) == 3
            assert value(samples, requests, route="/api/v1/register") == 4  # one refused
            assert value(samples, requests, route="unmatched", status="404") == 1
            assert not [s for s in samples if "1234" in str(s.labels)]  # no label per path
            assert value(samples, "wgpy_server_map_flush_duration_seconds_count") >= 1
            changes = value(samples, "wgpy_server_map_change_latency_seconds_count")
            assert changes == value(samples, "wgpy_server_map_flush_duration_seconds_count")
            # each (but the load at start) waited the coalescing time, not seconds on an idle server
            waited = value(samples, "wgpy_server_map_change_latency_seconds_sum")
            assert 0.8 * config.coalesce * (changes - 1) <= waited < 2.0 * changes
            assert value(samples, "wgpy_server_map_changed_nodes_total") >= 2
            assert value(samples, "wgpy_server_map_deltas_sent_total") >= 1
            assert value(samples, "wgpy_server_database_errors_total") == 0
        finally:
            stream.close()

        async def offline() -> None:
            samples = await scrape(r.session, url)
            assert value(samples, "wgpy_server_map_streams") == 0
            assert value(samples, "wgpy_server_nodes", state="online") == 0

        deadline = asyncio.get_running_loop().time() + 3.0
        while True:  # the stream's end reaches the hub once the server sees the hang-up
            try:
                await offline()
                break
            except AssertionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def test_metrics_are_off_unless_asked_for(config: ServerConfig) -> None:
    async with running(config) as r:
        assert r.server.metrics_url is None
        async with r.session.get(r.url + "/metrics") as response:
            assert response.status == 404  # not on the API's address either


async def test_a_taken_metrics_address_is_a_clear_error(config: ServerConfig) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MeshServer(with_(config, metrics_listen=("127.0.0.1", port)))
        with pytest.raises(ServerError, match=r"cannot serve metrics on 127\.0\.0\.1:\d+: .*"):
            await server.start()
    async with running(config) as r:  # the failed start let go of the state directory
        assert r.server.metrics_url is None


def test_metrics_listen_is_parsed_or_refused() -> None:
    assert _metrics_listen(None) is None
    assert _metrics_listen("127.0.0.1:9090") == ("127.0.0.1", 9090)
    assert _metrics_listen("[::1]:9090") == ("::1", 9090)
    with pytest.raises(CommandError, match="--metrics-listen 'nine': expected HOST:PORT"):
        _metrics_listen("nine")


def test_database_errors_are_told_from_others() -> None:
    assert database_error(sqlite3.OperationalError("database is locked"))
    assert database_error(DatabaseUnavailable("gone"))
    import asyncpg

    assert database_error(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert not database_error(ValueError("x"))
    assert not database_error(KeyError("x"))


def test_a_failed_flush_counts_as_a_database_error_and_not_as_a_flush() -> None:
    metrics = ServerMetrics()
    metrics.flushed(Flushed(0.5, 0.0, 0, 0, failed=True))
    metrics.flushed(Flushed(0.002, 0.07, 3, 7))
    samples = [
        s
        for family in text_string_to_metric_families(metrics.text().decode())
        for s in family.samples
    ]
    assert value(samples, "wgpy_server_database_errors_total", where="map") == 1
    assert value(samples, "wgpy_server_database_errors_total", where="request") == 0
    assert value(samples, "wgpy_server_map_flush_duration_seconds_count") == 1
    assert value(samples, "wgpy_server_map_changed_nodes_total") == 3
    assert value(samples, "wgpy_server_map_deltas_sent_total") == 7
    latency = "wgpy_server_map_change_latency_seconds"
    assert value(samples, latency + "_sum") == 0.07
    assert value(samples, latency + "_bucket", le="0.05") == 0
    assert value(samples, latency + "_bucket", le="0.1") == 1
    assert "wgpy_server_nodes" not in metrics.text().decode()  # no hub followed yet


async def test_stun_drops_are_read_at_scrape_time(config: ServerConfig) -> None:
    options = with_(config, metrics_listen=("127.0.0.1", 0), stun_listen=(("127.0.0.1", 0),))
    async with running(options) as r:
        url = r.server.metrics_url
        assert url is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"\x00\x01 not a STUN message", r.server.stun_addresses[0])
        deadline = asyncio.get_running_loop().time() + 2.0
        while not sum(r.server.stun.drops.values()):
            assert asyncio.get_running_loop().time() < deadline, "the datagram was not dropped"
            await asyncio.sleep(0.02)
        samples = await scrape(r.session, url)
        dropped = {
            s.labels["reason"]: s.value for s in samples if s.name == "wgpy_server_stun_drops_total"
        }
        assert dropped == dict(r.server.stun.drops) and sum(dropped.values()) == 1


def test_the_server_command_serves_metrics_where_asked(tmp_path: Path) -> None:
    status, _, err = run("server", "--state-dir", str(tmp_path), "--metrics-listen", "nine")
    assert status == ExitStatus.USAGE
    assert "--metrics-listen 'nine': expected HOST:PORT, e.g. 127.0.0.1:9090" in err
    process = subprocess.Popen(
        [str(WGPY), "server", "--state-dir", str(tmp_path), "--listen", "127.0.0.1:0",
         "--stun-listen", "off", "--metrics-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("wgpy server: listening on http://127.0.0.1:")
        line = process.stdout.readline()
        match = re.fullmatch(
            r"wgpy server: serving metrics on (http://127\.0\.0\.1:\d+/metrics)\n", line
        )
        assert match, line
        with urllib.request.urlopen(match[1], timeout=5) as response:
            text = response.read().decode()
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"wgpy_server_nodes", "wgpy_server_map_streams", "wgpy_server_auth_events"} <= names
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
