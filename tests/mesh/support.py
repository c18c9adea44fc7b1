"""Helpers the mesh tests share that are not fixtures: the command line in process, captured
log events, a node record for the in-memory index."""

from __future__ import annotations

import base64
import contextlib
import io
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from wgpy import log
from wgpy.cli import Environment, main
from wgpy.mesh.server.models import Node

WGPY = Path(sys.executable).parent / "wgpy"
NOW = 1_800_000_000.0
USERS = ("alice", "bob", "carol")


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``wgpy ARGV`` in this process: (status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(
        list(argv), Environment(stdin=io.BytesIO(), stdout=stdout, stderr=stderr, env=env or {})
    )
    return status, stdout.getvalue(), stderr.getvalue()


@contextlib.contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every log event (of every level) while in the block, for loggers made in it."""
    log.configure("debug", stream=io.StringIO())
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.reset_defaults()


def node(i: int, user: str = "alice", **fields: Any) -> Node:
    """Node ``i`` of ``user`` (an index into USERS, or 99), as the index holds it."""
    base = Node(
        id=i,
        user_id=USERS.index(user) + 1 if user in USERS else 99,
        user=user,
        hostname=f"h{i}",
        public_key=base64.b64encode(i.to_bytes(32, "big")).decode(),
        addr_index=i,
        endpoints=(),
        tags=(),
        ephemeral=False,
        expires_at=None,
        last_seen=NOW,
        stream_id=None,
        stream_replica=None,
        created_at=NOW,
    )
    return replace(base, **fields)
