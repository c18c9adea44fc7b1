"""The runners: the only code in :mod:`wgpy.host` that starts a process.

:func:`run` is wg-quick's (``wgpy up CONFIG``: synchronous, its caller echoes and checks);
:func:`run_async` is the mesh node's (in its event loop, with a time limit, an error that
says which command failed and why).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping, Sequence

__all__ = ["HostNetworkError", "run", "run_async"]

TIMEOUT = 10.0  # seconds for one command of the mesh node's


class HostNetworkError(Exception):
    """A command failed; the message says which and why."""


def run(
    argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end with ``input`` on its stdin, its output captured as text,
    whatever its exit status; FileNotFoundError if there is no such program."""
    return subprocess.run(
        list(argv), input=input, capture_output=True, text=True, env=env, check=False
    )


async def run_async(
    argv: Sequence[str], *, stdin: str | None = None, timeout: float = TIMEOUT
) -> str:
    """The stdout of ``argv``; HostNetworkError if it cannot be started, fails, or takes
    longer than ``timeout`` seconds (it is killed)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise HostNetworkError(f"cannot run `{argv[0]}': {e.strerror or e}") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(None if stdin is None else stdin.encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise HostNetworkError(f"`{' '.join(argv)}' did not finish in time") from None
    if proc.returncode:
        lines = [line.strip() for line in err.decode(errors="replace").splitlines()]
        detail = next((line for line in lines if line), f"exit status {proc.returncode}")
        raise HostNetworkError(f"`{' '.join(argv)}' failed: {detail}")
    return out.decode(errors="replace")
