"""The loopback coturn fixture (coturn.py), for tests outside the NAT lab: it answers STUN on
each of its addresses, relays over UDP, TCP and TLS with REST credentials (trusting the
certificate it made through `ca_file`), refuses a wrong secret, and stops with the test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .coturn import EXAMPLE, PROBE, Coturn, CoturnFailed, free_port, rest_credentials, start_coturn
from .netns import PYTHON, Lab, Process, run, wait_for

pytestmark = pytest.mark.root


def probe(*args: str) -> Any:
    result = run([PYTHON, str(PROBE), *args], check=False, timeout=30)
    return json.loads(result.stdout.strip().splitlines()[-1])


def echo_peer(lab: Lab) -> str:
    port = free_port()
    peer = f"127.0.0.1:{port}"
    process = Process(
        [PYTHON, str(PROBE), "reflect", "--bind", peer, "--for", "20"], lab.workdir / "echo.log"
    )
    lab.callback(process.stop)
    wait_for(lambda: process.output().strip(), timeout=10, what="the echo peer to start")
    return peer


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_loopback_relay_relays_with_rest_credentials(
    lab: Lab, coturn: Coturn, transport: str
) -> None:
    peer = echo_peer(lab)
    username, password = coturn.credentials("node-1", ttl=300)
    port = coturn.tls_port if transport == "tls" else coturn.port
    out = probe(
        "turn", "--server", f"127.0.0.1:{port}", "--transport", transport,
        "--username", username, "--password", password, "--peer", peer,
        "--cafile", str(coturn.ca_file),
    )  # fmt: skip
    assert "error" not in out, f"{out}\n{coturn.log()}"
    assert out["relayed"][0] == "127.0.0.1"
    assert out["echo"] == "hello through the relay"
    urls = coturn.urls()
    assert urls[0] == f"turn:127.0.0.1:{coturn.port}?transport=udp"
    assert urls[2] == f"turns:127.0.0.1:{coturn.tls_port}?transport=tcp"


def test_loopback_relay_on_two_addresses_refuses_a_wrong_secret_and_stops(lab: Lab) -> None:
    relay = start_coturn(lab, addresses=["127.0.0.1", "127.0.0.2"], secret="right")
    out = probe("stun", *(x for s in relay.stun() for x in ("--to", s)))
    assert [m and m[0] for m in out["mapped"]] == ["127.0.0.1", "127.0.0.1"]  # both answer
    username, password = rest_credentials("wrong", "node-1")
    out = probe(
        "turn", "--server", relay.stun()[0], "--username", username, "--password", password,
        "--peer", "127.0.0.1:9", "--timeout", "2",
    )  # fmt: skip
    assert out["code"] == 401, out
    secret_file = relay.write_secret(lab.workdir / "turn-secret")
    assert secret_file.read_text() == "right\n" and secret_file.stat().st_mode & 0o777 == 0o600
    assert relay.stop() is not None and not relay.alive


def test_a_config_line_coturn_ignores_fails_the_start(lab: Lab) -> None:
    example = EXAMPLE.read_text() + "# a misspelt setting\nno-multicast-peer\n"
    with pytest.raises(CoturnFailed, match="no-multicast-peer"):
        start_coturn(lab, example=example)
