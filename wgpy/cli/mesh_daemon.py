"""The mesh node's own process: ``python -m wgpy.cli.mesh_daemon``, started by ``wgpy up
--login-server`` (:mod:`wgpy.cli.mesh`) with a command line and an environment that hold no
secret.

A daemon that is ``wgpy up`` forked keeps ``wgpy up``'s command line, and with it the
pre-auth key of ``--auth-key``, in ``/proc/PID/cmdline``, which every local user may read, for
as long as the node runs. This is a fresh program instead: its options (the key among them)
come through a pipe, ``--options-fd FD``, as one JSON object ``{"options", "log_level"}``,
and the variables that may hold a secret (``WGPY_AUTH_KEY``) are not in its environment.

In the background (``--report-fd FD``) it reports once through that pipe: ``ok\\n`` and the
node's one-line summary when the interface is up and the first map applied, or the sentence
that says why not; it logs to its stderr, which ``wgpy up`` points at ``STATE_DIR/wgpy.log``.
With ``--foreground`` the node runs attached to the terminal: the summary on stdout, the log
and any error on stderr (``wgpy up --foreground`` becomes this process when the key was on
its command line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO

from wgpy import log
from wgpy.mesh.client import daemon

from .environment import PROG, ExitStatus

MAX_OPTIONS = 1024 * 1024  # bytes: the options are a few hundred
# variables that may hold a secret: never handed on to the daemon
SECRET_VARIABLES = ("WGPY_AUTH_KEY", "WGPY_API_KEY")


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(main)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(main)


def clean_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the daemon: this one without the secrets."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k not in SECRET_VARIABLES}


def options_pipe(options: daemon.DaemonOptions, log_level: str) -> int:
    """The read end of a pipe that holds the options, whole (they fit in a pipe's buffer,
    so this never blocks), for the daemon to inherit."""
    data = json.dumps({"options": options.to_json(), "log_level": log_level}).encode()
    if len(data) > 60 * 1024:  # a pipe holds 64 KiB
        raise ValueError("the mesh daemon's options are too large for its pipe")
    read_fd, write_fd = os.pipe()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return read_fd


def command(options_fd: int, *, report_fd: int | None = None) -> list[str]:
    """The daemon's command line: nothing secret in it. ``-P``: the working directory is
    not put first on the module path, so a ``json.py`` or ``wgpy/`` where root ran ``wgpy
    up`` is never imported (``-I`` would also drop PYTHONPATH, which a test's code needs)."""
    argv = [sys.executable, "-P", "-m", __name__, "--options-fd", str(options_fd)]
    return [*argv, "--report-fd", str(report_fd)] if report_fd is not None else argv


def read_options(fd: int) -> tuple[daemon.DaemonOptions, str]:
    """ValueError if the pipe does not hold the options."""
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read(MAX_OPTIONS + 1)
    if len(data) > MAX_OPTIONS:
        raise ValueError("the mesh daemon's options are too large")
    try:
        decoded = json.loads(data)
    except ValueError:
        raise ValueError("the mesh daemon's options are not JSON") from None
    if not isinstance(decoded, dict):
        raise ValueError("the mesh daemon's options are not a JSON object")
    return daemon.DaemonOptions.from_json(decoded.get("options")), str(
        decoded.get("log_level") or "info"
    )


def background(options: daemon.DaemonOptions, log_level: str, report_fd: int) -> int:
    """Run the node, reporting once through ``report_fd``; the exit status."""
    reported = False

    def report(error: str | None, summary: str) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        message = b"ok\n" + summary.encode() if error is None else error.encode()
        with contextlib.suppress(OSError):
            os.write(report_fd, message)
        with contextlib.suppress(OSError):
            os.close(report_fd)

    try:
        log.configure(log_level, stream=sys.stderr)  # the log file
        status = run_loop(daemon.serve(options, report))
        if not reported:
            report("the mesh daemon stopped before it was up", "")
        return status
    except BaseException as e:
        traceback.print_exc()  # into the log
        report(f"the mesh daemon failed: {e}", "")
        return 1


def foreground(
    options: daemon.DaemonOptions,
    log_level: str,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the node attached to the terminal: the summary on ``stdout``, the log and any
    error on ``stderr`` (default: this process's); the exit status, 130 after Ctrl-C before
    the node was up. ``wgpy up --foreground`` runs this, in its own process or in this one."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    log.configure(log_level, stream=err)
    failed: list[str] = []

    def report(error: str | None, summary: str) -> None:
        if error is not None:
            failed.append(error)
        else:
            out.write(summary + "\n")
            out.flush()

    status = run_loop(daemon.serve(options, report))
    if status == daemon.INTERRUPTED:
        return int(ExitStatus.INTERRUPTED)  # Ctrl-C before the node was up: nothing left
    if failed:
        err.write(f"{PROG} up: {failed[0]}\n")
        return int(ExitStatus.ERROR)
    return int(ExitStatus.SUCCESS if status == 0 else ExitStatus.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__name__}",
        description="The mesh node's process, started by `wgpy up --login-server`.",
    )
    parser.add_argument("--options-fd", type=int, required=True, metavar="FD")
    parser.add_argument("--report-fd", type=int, metavar="FD")
    args = parser.parse_args(argv)
    try:
        options, log_level = read_options(args.options_fd)
    except (OSError, ValueError) as e:
        message = f"the mesh daemon cannot start: {e}"
        if args.report_fd is None:
            sys.stderr.write(f"{PROG} up: {message}\n")
        else:
            with contextlib.suppress(OSError):
                os.write(args.report_fd, message.encode())
        return 1
    if args.report_fd is None:
        return foreground(options, log_level)
    return background(options, log_level, args.report_fd)


if __name__ == "__main__":  # pragma: no cover - run as the daemon's process
    sys.exit(main())
