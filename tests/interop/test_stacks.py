"""The harness's report of a wgpy process that does not stop in time (netns.py
``Process.wait_stopped``): SIGUSR1 makes it write where it hangs (wgpy/cli/stacks.py), and
the failure shows that, so a hang seen once in CI says where it was."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from .netns import Process

pytestmark = pytest.mark.root

HUNG = """
import asyncio, signal, sys
from wgpy.cli.stacks import install

install(sys.stderr)

async def close_that_never_returns():
    await asyncio.Event().wait()

async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # Ctrl-C taken, and then nothing
    print("up", flush=True)
    await close_that_never_returns()

asyncio.run(main())
"""


def test_a_process_that_does_not_stop_in_time_fails_with_where_it_hangs(tmp_path: Path) -> None:
    program = tmp_path / "hung.py"
    program.write_text(HUNG)
    process = Process([sys.executable, str(program)], tmp_path / "hung.log")
    try:
        for _ in range(100):
            if "up" in process.output():
                break
            assert process.alive, process.output()
            time.sleep(0.05)
        process.signal(signal.SIGINT)
        with pytest.raises(AssertionError) as failed:
            process.wait_stopped(0.5)
        message = str(failed.value)
        assert "did not stop within 0.5 s" in message
        assert "in close_that_never_returns" in message
        assert "await asyncio.Event().wait()" in message
        assert process.alive  # killed by whoever owns it, not by the report
    finally:
        assert process.stop() is not None


def test_a_process_that_stops_gives_its_status() -> None:
    process = Process([sys.executable, "-c", "raise SystemExit(3)"], Path("/dev/null"))
    assert process.wait_stopped(10) == 3
