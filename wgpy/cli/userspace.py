"""``wgpy-userspace [-f|--foreground] IFNAME``: a drop-in for wireguard-go's command line
(``--version`` prints ``wgpy-userspace vX.Y.Z``).

It creates the TUN device and the control socket /var/run/wireguard/IFNAME.sock, then goes to
the background (unless ``-f`` or ``WG_PROCESS_FOREGROUND=1``); the parent returns only once
the interface is ready, so ``wg`` can configure it at once (wg-quick relies on this). It
stops when the socket file is removed, the interface is deleted, or on SIGTERM/SIGINT.
``LOG_LEVEL`` is read as wireguard-go reads it (verbose, error, silent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys

from .. import __version__, log
from ..device.interface import Interface, poll_us_from_environment
from ..device.tun import TunError
from ..uapi.server import serve_uapi

_NAME = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}$")


async def serve(name: str, ready: int | None = None) -> int:
    """Run one interface until it is stopped; write b"ok" or an error to ``ready``."""
    loop = asyncio.get_running_loop()
    try:
        iface = Interface(name, poll_us=poll_us_from_environment())
    except ValueError as e:
        _report(ready, str(e))
        return 1
    except (TunError, OSError) as e:
        _report(ready, e.strerror or str(e))
        return 1
    stop = asyncio.Event()
    try:
        server = await serve_uapi(iface.name, iface, on_socket_removed=stop.set)
    except OSError as e:
        iface.close()
        _report(ready, f"cannot create the control socket: {e.strerror or e}")
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _report(ready, None)
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(iface.closed.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        server.close()
        iface.close("stopped")
    return 0


def _report(fd: int | None, error: str | None) -> None:
    if fd is None:
        if error:
            print(f"wgpy-userspace: {error}", file=sys.stderr)
        return
    with contextlib.suppress(OSError):
        os.write(fd, b"ok" if error is None else error.encode())
        os.close(fd)


def _run_loop(name: str, ready: int | None) -> int:
    try:
        import uvloop

        return uvloop.run(serve(name, ready))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(serve(name, ready))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wgpy-userspace",
        description="Userspace WireGuard interface (a drop-in for wireguard-go's command line).",
    )
    parser.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    parser.add_argument(
        "--version", action="version", version=f"wgpy-userspace v{__version__}", help="print it"
    )
    parser.add_argument("interface", metavar="IFNAME")
    args = parser.parse_args(argv)
    name: str = args.interface
    if not _NAME.match(name):
        print(f"wgpy-userspace: {name!r} is not a valid interface name", file=sys.stderr)
        return 1
    try:
        poll_us_from_environment()  # checked here too, so a daemon never starts with a bad one
    except ValueError as e:
        print(f"wgpy-userspace: {e}", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("wgpy-userspace: creating an interface needs root; run it with sudo", file=sys.stderr)
        return 1
    log.configure(os.environ.get("LOG_LEVEL", "error"))
    foreground = args.foreground or os.environ.get("WG_PROCESS_FOREGROUND") == "1"
    if foreground:
        return _run_loop(name, None)
    # Daemonize: the parent waits until the child says the interface is ready.
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 4096):
            chunks.append(chunk)
        message = b"".join(chunks).decode(errors="replace")
        if message == "ok":
            return 0
        print(
            f"wgpy-userspace: {message or 'the daemon exited before it was ready'}", file=sys.stderr
        )
        return 1
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    if os.environ.get("LOG_LEVEL", "error").lower() in ("silent", "error"):
        os.dup2(devnull, 2)
    os.close(devnull)
    code = _run_loop(name, write_fd)
    os._exit(code)


def run() -> None:
    sys.exit(main())
