"""``HOST:PORT`` on the command line: where a listener of wgpy's binds."""

from __future__ import annotations

import re

from .environment import CommandError, ExitStatus

__all__ = ["listen_address"]


def listen_address(text: str, option: str = "--listen", example: int = 8080) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets; no host: every IPv4 address), or a usage error."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([^:\[\]]*):([0-9]{1,5})", text)
    if match is None or not 0 <= int(match[2] or match[4]) <= 65535:
        raise CommandError(
            f"{option} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:{example} or [::]:{example}",
            ExitStatus.USAGE,
        )
    host = match[1] or match[3] or "0.0.0.0"
    return host, int(match[2] or match[4])
