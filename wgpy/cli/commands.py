"""The ``wgpy`` command table: parse the arguments, run one subcommand, return an exit status.

Each subcommand lives in its own module with a ``register(commands)`` function that adds its
parser and sets ``handler``, a function ``(args, env) -> ExitStatus``; add new modules to
:data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from types import ModuleType
from typing import NoReturn

from wgpy import __version__

from . import admin as admin_commands
from . import keys
from . import machine as machine_commands
from . import mesh as mesh_commands
from . import netcheck as netcheck_commands
from . import ping as ping_commands
from . import quick as quick_commands
from . import server as server_commands
from . import show as show_commands
from . import status as status_commands
from . import up as up_commands
from .environment import PROG, CommandError, Environment, ExitStatus

COMMAND_MODULES: tuple[ModuleType, ...] = (
    keys,
    show_commands,
    up_commands,  # up, down: a wg-quick configuration or a mesh node
    quick_commands,  # save
    mesh_commands,  # logout
    admin_commands,
    machine_commands,  # machine csr
    status_commands,
    server_commands,
    netcheck_commands,
    ping_commands,
)

Handler = Callable[[argparse.Namespace, Environment], ExitStatus]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="A userspace WireGuard implementation in Python."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str], env: Environment | None = None) -> ExitStatus:
    """Run ``wgpy`` with ``argv`` (without the program name) in ``env`` (default: this
    process's streams, environment and randomness)."""
    if env is None:
        env = Environment.from_process()
    command = None
    try:
        try:
            # argparse prints help and errors to sys.stdout/sys.stderr and exits.
            with redirect_stdout(env.stdout), redirect_stderr(env.stderr):
                args = build_parser().parse_args(argv)
        except SystemExit as e:
            return ExitStatus.SUCCESS if e.code in (0, None) else ExitStatus.USAGE
        command = args.command
        handler: Handler = args.handler
        status = handler(args, env)
        env.stdout.flush()
        return status
    except CommandError as e:
        _error(env, command, e.message)
        return e.status
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        return ExitStatus.ERROR  # whoever read our output has gone; there is no one to tell
    except OSError as e:
        _error(env, command, f"{e.strerror or e}")
        return ExitStatus.ERROR


def _error(env: Environment, command: str | None, message: str) -> None:
    prefix = f"{PROG} {command}" if command else PROG
    try:
        env.stderr.write(f"{prefix}: {message}\n")
        env.stderr.flush()
    except OSError:
        pass


def run() -> NoReturn:
    """The console script: ``main`` on this process, then exit with its status."""
    status = main(sys.argv[1:])
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Send what is still buffered to /dev/null so the flush at exit does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = ExitStatus.ERROR
    sys.exit(status)
