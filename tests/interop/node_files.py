"""What the namespace test drivers (ice_node.py, relay_node.py, ice_attacker.py) share: with
no coordination server, each node writes its description to DIR/NAME.json (public key, ICE
ufrag, candidates, tunnel address), reads its peers' from theirs, and says what it sees in
DIR/NAME.status.json until SIGTERM. The drivers run as scripts (``python ice_node.py``): this
module is imported from their directory."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wgpy.nat.ice import parse_remote

WAIT = 20.0  # seconds for a peer's description


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` so that a reader never sees half of it."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def describe(
    directory: Path, me: str, key: bytes, ufrag: str, candidates: Sequence[str], inner: str
) -> None:
    """DIR/ME.json: what a peer needs of this node (``key``: its public key)."""
    write_json(
        directory / f"{me}.json",
        {
            "public_key": base64.b64encode(key).decode(),
            "ufrag": ufrag,
            "candidates": list(candidates),
            "inner": inner,
        },
    )


def read_node(directory: Path, name: str, wait: float = WAIT) -> dict[str, Any]:
    """DIR/NAME.json once it appears (SystemExit after ``wait`` seconds)."""
    path = directory / f"{name}.json"
    deadline = time.monotonic() + wait
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {wait:g} s")
        time.sleep(0.05)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def wait_node(directory: Path, name: str, wait: float = WAIT) -> dict[str, Any]:
    """:func:`read_node` for a driver whose event loop keeps running meanwhile."""
    path = directory / f"{name}.json"
    deadline = time.monotonic() + wait
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {wait:g} s")
        await asyncio.sleep(0.05)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def add_peer(iface: Any, paths: Any, node: dict[str, Any]) -> bytes:
    """Add the peer ``node`` (its description) to ``iface`` without an endpoint and hand its
    candidates to ``paths`` (a PathManager): ICE finds the endpoint. Its public key."""
    key = base64.b64decode(node["public_key"])
    iface.device.add_peer(key, allowed_ips=[f"{node['inner']}/32"])
    remote, _ = parse_remote(node["ufrag"], node["candidates"])
    paths.set_remote(key, remote)
    return key


async def report_until_stopped(path: Path, status: Callable[[], dict[str, Any]]) -> None:
    """Write ``status()`` to ``path`` every 0.1 s until SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        write_json(path, status())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
