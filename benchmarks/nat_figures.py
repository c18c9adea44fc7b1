"""The figures of `make bench-nat` (benchmarks/nat.py), without I/O: the lab's cells and the
issue's targets, what a trial's ping and node log say, the summary per cell, and the
Markdown table. benchmarks/nat.py runs the lab; tests/test_bench_nat.py tests this module.
The ping output's parsing and the spreads are benchmarks/report.py's (login.py's too).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from report import seconds, spread


@dataclass(frozen=True)
class Target:
    """What the issue asks of a cell: every trial connected on ``path`` (and, for the relay,
    over one of ``transports``) with ``metric`` at most ``within`` seconds."""

    text: str
    metric: str
    within: float
    path: str | None = None  # "direct" or "relay": the path every trial must end on
    transports: tuple[str, ...] = ()  # the relay transports that count (udp_blocked)


@dataclass(frozen=True)
class Cell:
    """Two nodes: ``a`` joins second and pings ``b``; a kind is a router kind of the NAT lab
    or ``open`` (a public host, no NAT, no firewall)."""

    a: str
    b: str
    expect: str  # what the lab's tests found: "direct" or "relay"
    target: Target | None = None
    failover: bool = False  # cut the direct path once it is up: time back over the relay


CELLS: dict[str, Cell] = {
    "easy/easy": Cell(
        "easy",
        "easy",
        "direct",
        Target("100 % direct, first packet within 1 s", "first_packet_s", 1.0, "direct"),
    ),
    "easy/hard": Cell("easy", "hard", "relay"),
    "hard/hard": Cell(
        "hard",
        "hard",
        "relay",
        Target("100 % connected through the relay within 2 s", "first_packet_s", 2.0, "relay"),
    ),
    "firewall/firewall": Cell("firewall", "firewall", "direct"),
    "open/hard": Cell("open", "hard", "direct"),
    "udp_blocked/easy": Cell(
        "udp_blocked",
        "easy",
        "relay",
        Target(
            "connected over TCP/TLS within 3 s",
            "first_packet_s",
            3.0,
            "relay",
            ("tcp", "tls"),
        ),
    ),
    "failover": Cell(
        "easy",
        "easy",
        "direct",
        Target("direct -> relay within 5 s", "failover_s", 5.0, "relay"),
        failover=True,
    ),
}

# per-trial times summarized per cell: key -> label in the table
TIMES: dict[str, str] = {
    "up_s": "`wgpy up` (second node)",
    "path_s": "a path selected (both sides)",
    "first_packet_s": "first packet",
    "first_packet_from_start_s": "first packet from the start of `wgpy up`",
    "direct_s": "direct (both sides)",
    "failover_s": "failover: packets again",
    "relay_switch_s": "failover: both sides on the relay",
}


# ------------------------------------------------------------------ what a trial's output says

# a node's log (wgpy.log, structlog's console renderer):
# "2026-12-07T18:31:56.123456Z [info     ] path selected   component=paths path=direct ..."
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z?) \[\s*(\w+)\s*\] (.+?)(?:\s{2,}(.*))?$")
FIELD = re.compile(r"(\w+)=('[^']*'|\"[^\"]*\"|\S+)")


@dataclass(frozen=True)
class LogEvent:
    at: float  # wall clock
    event: str
    fields: dict[str, str]


def log_events(text: str, event: str) -> list[LogEvent]:
    """The lines of a node's log that say ``event``, with their time and key=value fields."""
    found = []
    for line in text.splitlines():
        m = LOG_LINE.match(line.rstrip())
        if m is None or m.group(3).strip() != event:
            continue
        stamp = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=datetime.UTC)
        fields = {k: v.strip("'\"") for k, v in FIELD.findall(m.group(4) or "")}
        found.append(LogEvent(stamp.timestamp(), event, fields))
    return found


def first_path(
    events: Iterable[LogEvent], kind: str | None, *, after: float = 0.0, peer: str = ""
) -> float | None:
    """When the node first selected a path of ``kind`` (None: any kind) after ``after`` (wall
    clock), to ``peer`` (the short key its log names the peer by) if given."""
    times = [
        e.at
        for e in events
        if (kind is None or e.fields.get("path") == kind)
        and e.at >= after
        and (not peer or e.fields.get("peer") == peer)
    ]
    return min(times, default=None)


# ------------------------------------------------------------------ summary


def ends(trial: dict[str, Any]) -> str:
    """The path a trial ended on: both sides' kind if they agree, else "a/b"."""
    a, b = trial.get("path_a") or "none", trial.get("path_b") or "none"
    return a if a == b else f"{a}/{b}"


def connected(trial: dict[str, Any]) -> bool:
    return trial.get("first_packet_s") is not None and not trial.get("error")


def meets(trial: dict[str, Any], target: Target) -> bool:
    value = trial.get(target.metric)
    if not connected(trial) or value is None or value > target.within:
        return False
    if target.path is not None and ends(trial) != target.path:
        return False
    return not target.transports or trial.get("relay_transport") in target.transports


def summarize_cell(name: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    cell = CELLS[name]
    done = [t for t in trials if not t.get("error")]
    summary: dict[str, Any] = {
        "trials": len(trials),
        "connected": sum(connected(t) for t in trials),
        "ends_direct": sum(ends(t) == "direct" for t in trials),
        "ends": {k: sum(ends(t) == k for t in trials) for k in sorted({ends(t) for t in trials})},
        "errors": [t["error"] for t in trials if t.get("error")],
        "relay_transports": sorted(
            {t["relay_transport"] for t in done if t.get("relay_transport")}
        ),
        "times": {k: spread([t[k] for t in done if t.get(k) is not None]) for k in TIMES},
        "throughput": [
            {"mbps": t["throughput_mbps"], "path": t.get("throughput_path")}
            for t in trials
            if t.get("throughput_mbps") is not None
        ],
    }
    summary["direct_share"] = summary["ends_direct"] / len(trials) if trials else 0.0
    if cell.target is not None:
        met = sum(meets(t, cell.target) for t in trials)
        summary["target"] = {
            "text": cell.target.text,
            "trials_meeting": met,
            "met": bool(trials) and met == len(trials),
        }
    return summary


# ------------------------------------------------------------------ Markdown


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# wgpy across the NAT lab, {result['date']}",
        "",
        f"{result['trials']} trials a cell, each a fresh pair of nodes (new keys and state, "
        f"the routers' connection tracking flushed). Command: `{result['command']}`.",
        "Times in seconds, median / p90 / max, counted from the moment the second node's "
        "`wgpy up` returned (failover: from the cut); see benchmarks/README.md.",
        "",
        "| cell | connected | ends direct | path found | first packet | direct | `wgpy up` | "
        "TURN over | throughput (Mbit/s, path) | target | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in result["cells"].items():
        times = s["times"]
        first = times["failover_s"] if CELLS[name].failover else times["first_packet_s"]
        tput = ", ".join(f"{x['mbps']:.0f} ({x['path']})" for x in s["throughput"]) or "-"
        target = s.get("target")
        verdict = "-"
        if target is not None:
            verdict = (
                "met" if target["met"] else f"missed ({target['trials_meeting']}/{s['trials']})"
            )
        label = f"{name} (cut after direct)" if CELLS[name].failover else name
        lines.append(
            f"| {label} | {s['connected']}/{s['trials']} | {s['direct_share']:.0%} | "
            f"{seconds(times['path_s'])} | {seconds(first)} | {seconds(times['direct_s'])} | "
            f"{seconds(times['up_s'])} | "
            f"{', '.join(s['relay_transports']) or '-'} | {tput} | "
            f"{target['text'] if target else '-'} | {verdict} |"
        )
    failover = result["cells"].get("failover")
    if failover is not None:
        lines += [
            "",
            "Failover: the first packet column is the time from the cut to the first reply to "
            "a ping sent after it; both sides showed the relay as their path after "
            f"{seconds(failover['times']['relay_switch_s'])} s.",
        ]
    lines += ["", "Per cell, the first packet counted from the start of the second `wgpy up`:", ""]
    for name, s in result["cells"].items():
        if not CELLS[name].failover:
            lines.append(f"- {name}: {seconds(s['times']['first_packet_from_start_s'])}")
    errors = [(n, e) for n, s in result["cells"].items() for e in s["errors"]]
    if errors:
        lines += ["", "Trials that failed:", ""] + [f"- {n}: {e}" for n, e in errors]
    return "\n".join(lines) + "\n"
