"""wgpy/cli/stacks.py: where a process is stuck, written on SIGUSR1 (every thread's stack and
every asyncio task's chain of awaits), for a node that does not stop in time."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from wgpy.cli.stacks import SIGNAL, await_chain, format_tasks, install


async def _innermost(never: asyncio.Event) -> None:
    await never.wait()


async def _outermost(never: asyncio.Event) -> None:
    await _innermost(never)


def test_a_task_is_shown_from_its_outermost_await_to_what_it_waits_on() -> None:
    async def main() -> str:
        never = asyncio.Event()
        task = asyncio.create_task(_outermost(never), name="stuck")
        done = asyncio.create_task(asyncio.sleep(0), name="done")
        await asyncio.sleep(0.01)
        text = format_tasks([task, done])
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return text

    text = asyncio.run(main())
    lines = text.splitlines()
    assert lines[0] == "asyncio tasks (2), each from its outermost await inwards:"
    assert lines[1] == "Task done (done):"
    assert lines[2] == "Task stuck (pending):"
    where = [line.strip() for line in lines[3:]]
    outer = next(i for i, w in enumerate(where) if w.endswith("in _outermost"))
    inner = next(i for i, w in enumerate(where) if w.endswith("in _innermost"))
    assert outer < inner and where[outer + 1] == "await _innermost(never)"
    assert where[-1].startswith("waiting on ")  # the event's future, no coroutine


def test_a_chain_ends_at_anything_that_is_no_coroutine() -> None:
    assert await_chain(None) == []
    assert await_chain(object()) == ["waiting on object"]

    def generator() -> object:
        yield 1

    running = generator()
    next(running)  # type: ignore[call-overload]
    (line, source) = await_chain(running)
    assert line.endswith("in generator") and source.strip() == "yield 1"


def test_install_and_uninstall_leave_the_previous_handling() -> None:
    before = signal.getsignal(SIGNAL)
    uninstall = install(io.StringIO())  # no file descriptor: no thread dump, tasks only
    assert signal.getsignal(SIGNAL) is not before
    uninstall()
    assert signal.getsignal(SIGNAL) is before


PROGRAM = """
import asyncio, sys, threading
from wgpy.cli.stacks import install

install(sys.stderr)

def blocked_thread(event):
    event.wait()

async def hung_on_shutdown():
    await asyncio.Event().wait()

async def main():
    event = threading.Event()
    threading.Thread(target=blocked_thread, args=(event,), daemon=True).start()
    task = asyncio.create_task(hung_on_shutdown(), name="closing")
    print("ready", flush=True)
    await task

asyncio.run(main())
"""


def test_sigusr1_writes_every_threads_and_tasks_stack_and_the_process_goes_on(
    tmp_path: Path,
) -> None:
    log, program = tmp_path / "stderr", tmp_path / "hung.py"
    program.write_text(PROGRAM)
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(program)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        process.send_signal(SIGNAL)
        deadline = time.monotonic() + 10
        while "Task closing" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None  # a dump, not the end
    finally:
        process.kill()
        process.communicate(timeout=10)
    err = log.read_text()
    assert "in blocked_thread" in err  # faulthandler: every thread
    assert "Task closing (pending):" in err  # and every task, with its awaits
    assert "in hung_on_shutdown" in err and "await asyncio.Event().wait()" in err
