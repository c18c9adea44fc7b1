"""Stopping a task from another one without losing the stopper's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has finished. Its own CancelledError is expected and
    swallowed; a cancellation of the caller that arrives meanwhile is not: it propagates, so a
    loop that stops a child and goes on is still stopped when it is itself cancelled
    (``contextlib.suppress(CancelledError)`` around the await would lose that one)."""
    if task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
