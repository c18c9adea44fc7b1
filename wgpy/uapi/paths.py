"""Where control sockets live: ``/var/run/wireguard/NAME.sock``, as ``wg`` and wireguard-go
have it. The one place that knows the directory and the suffix; the server creates sockets
there, the client finds and lists them."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SOCKET_DIR", "SOCKET_SUFFIX", "interface_of", "socket_path"]

SOCKET_DIR = Path("/var/run/wireguard")
SOCKET_SUFFIX = ".sock"


def socket_path(name: str, directory: Path | str | None = None) -> Path:
    """The control socket of interface ``name``: ``DIRECTORY/NAME.sock``, the directory being
    :data:`SOCKET_DIR` unless given (looked up when called, so a test can point it elsewhere).
    The name is not checked here: each side refuses the names it cannot use."""
    return Path(SOCKET_DIR if directory is None else directory) / f"{name}{SOCKET_SUFFIX}"


def interface_of(entry: str) -> str | None:
    """The interface whose socket a directory entry would be (``wg0.sock`` -> ``wg0``), or
    None for any other entry (``.sock`` alone names none)."""
    if len(entry) <= len(SOCKET_SUFFIX) or not entry.endswith(SOCKET_SUFFIX):
        return None
    return entry[: -len(SOCKET_SUFFIX)]
