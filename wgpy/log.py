"""Structured logging (structlog), configured once by the command line.

Nothing in wgpy prints outside ``cli/``; libraries log through ``get_logger``. Secrets are
never passed to a logger. Log lines carry the interface and, per peer, a short key.

Tracebacks are plain text, without local variables: structlog's console renderer would print
every frame's locals when rich (or better-exceptions) is installed, and a frame of the node's
registration holds the pre-auth key. The JSON renderer gets the same plain text traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LEVELS = {
    "verbose": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "error": logging.ERROR,
    "silent": logging.CRITICAL + 10,
}


def configure(level_name: str = "error", *, stream: Any = None, json: bool = False) -> None:
    """Set up structlog for a process: LOG_LEVEL as wireguard-go reads it."""
    level = LEVELS.get(level_name.lower(), logging.ERROR)
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(**context: Any) -> Any:
    """A logger bound to ``context``. If the application has not configured structlog, wgpy
    logs only errors, to stderr (structlog's own default would print everything to stdout)."""
    if not structlog.is_configured():
        configure("error")
    return structlog.get_logger("wgpy").bind(**context)
