"""What a command may touch, and how it reports the outcome.

A command gets its streams, environment variables and randomness from an :class:`Environment`
instead of from :mod:`sys` and :mod:`os`, so tests run it in-process with their own. It returns
an :class:`ExitStatus`, or raises :class:`CommandError` with one sentence for the user.
"""

from __future__ import annotations

import enum
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

PROG = "wgpy"


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process killed by Ctrl-C


@dataclass(frozen=True)
class Environment:
    """The process's streams, environment variables and random source, replaceable in tests.

    stdin is binary because keys and configurations are read as ``wg`` reads them, byte by
    byte; stdout and stderr are text.
    """

    stdin: BinaryIO
    stdout: TextIO
    stderr: TextIO
    env: Mapping[str, str] = field(default_factory=dict)
    rng: Callable[[int], bytes] = os.urandom
    # Asks for a secret (a password) on the terminal without echo.
    read_secret: Callable[[str], str] = field(default=lambda prompt: ask_terminal(prompt))

    @classmethod
    def from_process(cls) -> Environment:
        # sys.stdin is None when the process was started with stdin closed.
        stdin = sys.stdin.buffer if sys.stdin is not None else open(os.devnull, "rb")  # noqa: SIM115
        return cls(stdin=stdin, stdout=sys.stdout, stderr=sys.stderr, env=os.environ)


class CommandError(Exception):
    """A failure the user can act on: main prints ``wgpy COMMAND: MESSAGE`` and exits."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def ask_terminal(prompt: str) -> str:
    """A line typed on the terminal without echo, after ``prompt``."""
    if sys.stdin is None or not sys.stdin.isatty():
        raise CommandError(
            "there is no terminal to ask for the password on; give it on standard input "
            "with --password-stdin"
        )
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise CommandError("no password was typed; nothing was changed") from None
