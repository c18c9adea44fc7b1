"""The mesh node's own process: ``python -P -m wgpy.cli.mesh_daemon --options-fd FD
[--report-fd FD]``, started by ``wgpy up --login-server`` (:mod:`wgpy.cli.mesh`) with a
command line and an environment that hold no secret (:mod:`wgpy.mesh.client.daemon` says why,
and does the rest).

In the background (``--report-fd FD``) it reports once through that pipe and logs to its
stderr, which ``wgpy up`` points at ``STATE_DIR/wgpy.log``. With ``--foreground`` the node runs
attached to the terminal: the summary on stdout, the log and any error on stderr (``wgpy up
--foreground`` becomes this process when the key was on its command line). Either way
``kill -USR1 PID`` writes where it is (every thread's and task's stack, :mod:`.stacks`) there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from wgpy import log
from wgpy.mesh.client import daemon

from . import stacks
from .environment import PROG, ExitStatus


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

    uninstall = stacks.install(err)
    try:
        status = daemon.run_loop(daemon.serve(options, report))
    finally:
        uninstall()
    if status == daemon.INTERRUPTED:
        return int(ExitStatus.INTERRUPTED)  # Ctrl-C before the node was up: nothing left
    if failed:
        err.write(f"{PROG} up: {failed[0]}\n")
        return int(ExitStatus.ERROR)
    return int(ExitStatus.SUCCESS if status == 0 else ExitStatus.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """The daemon program's command line (:data:`wgpy.mesh.client.daemon.PROGRAM`)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {daemon.PROGRAM}",
        description="The mesh node's process, started by `wgpy up --login-server`.",
    )
    parser.add_argument("--options-fd", type=int, required=True, metavar="FD")
    parser.add_argument("--report-fd", type=int, metavar="FD")
    args = parser.parse_args(argv)
    try:
        options, log_level = daemon.read_options(args.options_fd)
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
    stacks.install(sys.stderr)  # the log file; for the process's whole life
    return daemon.background(options, log_level, args.report_fd)


if __name__ == "__main__":  # pragma: no cover - run as the daemon's process
    sys.exit(main())
