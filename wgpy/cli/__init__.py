"""The ``wgpy`` command line; the only part of wgpy that prints.

The command table (``commands``) loads every command's module, and the mesh ones bring aiohttp
and the database drivers: ``main`` and ``run`` load it on first call, so that
``wgpy-userspace``, which needs none of that, does not carry it in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from .environment import CommandError, Environment, ExitStatus

__all__ = ["CommandError", "Environment", "ExitStatus", "main", "run"]


def main(argv: Sequence[str], env: Environment | None = None) -> ExitStatus:
    """Run ``wgpy`` with ``argv`` (without the program name); see :mod:`wgpy.cli.commands`."""
    from .commands import main as run_command

    return run_command(argv, env)


def run() -> NoReturn:
    """The ``wgpy`` console script."""
    from .commands import run as run_script

    run_script()
