"""What the trial benchmarks share (benchmarks/login.py and nat.py, with their figures in
login_figures.py and nat_figures.py): the progress lines, Ctrl-C and SIGTERM, the result's
header, the results written as ``PREFIX-<time>.{json,md}`` with ``PREFIX-latest.*`` links, the
echo replies in ``ping -D`` output, and a spread of times (median / p90 / max). Only
:func:`write` and :func:`say` do I/O; tests/test_bench_nat.py tests the parsing.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------ a run


def say(text: str) -> None:
    """One line of progress (a closed pipe, `| head`, ends nothing)."""
    with contextlib.suppress(BrokenPipeError):
        print(text, flush=True)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM as Ctrl-C: the lab's ``with`` blocks clean up either way."""
    signal.signal(signal.SIGTERM, _interrupted)


def header(started: datetime.datetime, command: str, trials: int) -> dict[str, Any]:
    """The first keys of a result: when, how it was run, and on what."""
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "trials": trials,
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
    }


def write(
    out: Path, prefix: str, started: datetime.datetime, result: dict[str, Any], markdown: str
) -> Path:
    """``out/PREFIX-<time>.json`` and ``.md``, ``PREFIX-latest.*`` linked to them, the table
    and where it went said; the path without its suffix."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{prefix}-" + started.strftime("%Y%m%dT%H%M%SZ")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    for suffix in ("json", "md"):
        latest = out / f"{prefix}-latest.{suffix}"
        latest.unlink(missing_ok=True)
        latest.symlink_to(f"{stem}.{suffix}")
    say("\n" + markdown)
    say(f"written: {out / stem}.json, .md (and {prefix}-latest.*)")
    return out / stem


# ------------------------------------------------------------------ `ping -D -n` output

# "[1733596496.123456] 64 bytes from 100.64.0.2: icmp_seq=5 ttl=64 time=1.23 ms"
PING_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+) .*time=([\d.]+) ms")


@dataclass(frozen=True)
class Reply:
    sent: float  # wall clock: when the request left (reply time less the round trip)
    received: float
    seq: int


def ping_replies(text: str) -> list[Reply]:
    """The echo replies in `ping -D -n` output (error lines and "no answer yet" skipped)."""
    replies = []
    for line in text.splitlines():
        m = PING_REPLY.match(line)
        if m:
            received, rtt = float(m.group(1)), float(m.group(3)) / 1000
            replies.append(Reply(received - rtt, received, int(m.group(2))))
    return replies


def first_reply(replies: Iterable[Reply], *, sent_after: float = 0.0) -> Reply | None:
    """The first reply to a request sent after ``sent_after`` (wall clock)."""
    return min((r for r in replies if r.sent > sent_after), key=lambda r: r.received, default=None)


# ------------------------------------------------------------------ spreads


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 0.9),
        "max": max(values),
        "n": len(values),
    }


def seconds(s: dict[str, float] | None) -> str:
    """A spread in a table cell: median / p90 / max."""
    if s is None:
        return "-"
    return f"{s['median']:.2f} / {s['p90']:.2f} / {s['max']:.2f}"
