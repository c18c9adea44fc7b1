"""Where a process is stuck, on ``SIGUSR1``: ``kill -USR1 PID`` writes every thread's Python
stack (:mod:`faulthandler`, even when the event loop itself is blocked) and then, if the loop
runs, every asyncio task with the chain of awaits it waits in, to ``stream`` (the node's log
or its terminal's stderr). The mesh node's process installs it (cli/mesh_daemon.py); the test
harness sends the signal to a node that does not stop in time and reports what it wrote.

Only code locations are written, never a variable's value, so no secret reaches the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import linecache
import signal
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, TextIO

__all__ = ["SIGNAL", "await_chain", "format_tasks", "install"]

SIGNAL = signal.SIGUSR1
MAX_DEPTH = 64  # awaits followed per task


def install(stream: TextIO) -> Callable[[], None]:
    """Dump the stacks to ``stream`` on :data:`SIGNAL`; the function that puts the previous
    handling back. Only the main thread can install handlers; elsewhere (and for a stream
    without a file descriptor, the thread dump) this installs nothing."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (starting or gone): the threads' stacks are all there is
        with contextlib.suppress(Exception):
            stream.write(format_tasks(asyncio.all_tasks(loop)))
            stream.flush()

    try:
        previous = signal.signal(SIGNAL, on_signal)
    except ValueError:  # not the main thread
        return lambda: None
    threads = False
    with contextlib.suppress(AttributeError, OSError, ValueError):
        # after signal.signal: faulthandler's C handler writes first, then chains to it
        faulthandler.register(SIGNAL, file=stream, all_threads=True, chain=True)
        threads = True

    def uninstall() -> None:
        if threads:
            faulthandler.unregister(SIGNAL)
        signal.signal(SIGNAL, previous)

    return uninstall


def format_tasks(tasks: Iterable[asyncio.Task[Any]]) -> str:
    """Each task by name, with where it waits: its outermost coroutine first, down the chain
    of awaits to the innermost."""
    found = sorted(tasks, key=lambda t: t.get_name())
    lines = [f"asyncio tasks ({len(found)}), each from its outermost await inwards:"]
    for task in found:
        state = "done" if task.done() else "cancelling" if task.cancelling() else "pending"
        lines.append(f"Task {task.get_name()} ({state}):")
        if not task.done():
            lines += [f"  {line}" for line in await_chain(task.get_coro())]
    return "\n".join(lines) + "\n"


def await_chain(awaitable: object) -> list[str]:
    """Where ``awaitable`` (a coroutine, generator or async generator) waits: one line per
    frame, as a traceback writes it, following what each awaits; the last line names what
    the innermost waits on when that is no coroutine (a future)."""
    lines: list[str] = []
    for _ in range(MAX_DEPTH):
        if awaitable is None:
            break
        frame = _frame(awaitable)
        if frame is None:
            lines.append(f"waiting on {type(awaitable).__name__}")
            break
        code = frame.f_code
        lines.append(f'File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        source = linecache.getline(code.co_filename, frame.f_lineno).strip()
        if source:
            lines.append(f"  {source}")
        awaitable = _awaited(awaitable)
    return lines


def _frame(awaitable: object) -> FrameType | None:
    for name in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(awaitable, name, None)
        if frame is not None:
            return frame  # type: ignore[no-any-return]
    return None


def _awaited(awaitable: object) -> object:
    for name in ("cr_await", "gi_yieldfrom", "ag_await"):
        inner = getattr(awaitable, name, None)
        if inner is not None:
            return inner
    return None
