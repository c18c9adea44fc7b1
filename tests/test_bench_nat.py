"""benchmarks/nat_figures.py: what `make bench-nat` reads from a trial's ping and node logs,
the summary per cell and the issue's targets judged met or missed (no lab: the lab run is
benchmarks/nat.py)."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from nat_figures import CELLS, first_path, log_events, markdown, summarize_cell
from report import Reply, first_reply, ping_replies

PING = """\
PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.
[1765132000.100000] From 203.0.113.1 icmp_seq=1 Destination Net Unreachable
[1765132000.540000] 64 bytes from 100.64.0.2: icmp_seq=23 ttl=64 time=40.0 ms
[1765132000.561000] 64 bytes from 100.64.0.2: icmp_seq=24 ttl=64 time=1.00 ms
no answer yet for icmp_seq=25
[1765132003.002000] 64 bytes from 100.64.0.2: icmp_seq=140 ttl=64 time=2.00 ms
"""


def log_line(at: str, level: str, event: str, fields: str) -> str:
    """A line as the node's log has it (structlog's console renderer)."""
    return f"2026-12-07T18:{at}Z [{level:9s}] {event:30s} {fields}"


LOG = "\n".join(
    [
        log_line("35:56.857803", "info", "relay allocated",
                 "component=relay relay=203.0.113.3 relayed=203.0.113.3:64825 transport=tcp"),
        log_line("35:59.564278", "info", "path selected",
                 "component=paths endpoint=203.0.113.3:1 path=relay peer=ok4JomL4 rtt=0.0009"),
        log_line("35:59.600000", "info", "path selected",
                 "component=paths endpoint=203.0.113.9:1 path=direct peer=OTHERKEY rtt=0.0002"),
        log_line("36:00.250000", "info", "path selected",
                 "component=paths endpoint=203.0.113.102:41641 path=direct peer=ok4JomL4"),
        log_line("36:00.300000", "warning", "path lost; checking again",
                 "component=paths path=direct peer=ok4JomL4 why='no answer to 3 checks'"),
    ]
)  # fmt: skip
T0 = datetime.datetime(2026, 12, 7, 18, 35, 59, tzinfo=datetime.UTC).timestamp()


def test_ping_replies_are_read_with_their_send_times() -> None:
    replies = ping_replies(PING)
    assert [r.seq for r in replies] == [23, 24, 140]  # errors and "no answer yet" skipped
    assert replies[0].received == 1765132000.54
    assert abs(replies[0].sent - 1765132000.50) < 1e-6  # received less the round trip


def test_the_first_reply_to_a_request_sent_after_a_moment() -> None:
    replies = ping_replies(PING)
    first = first_reply(replies)
    assert first is not None and first.seq == 23
    # a reply to a request sent before the cut does not count as one after it
    late = [Reply(sent=9.9, received=10.2, seq=1), Reply(sent=10.5, received=10.6, seq=2)]
    after = first_reply(late, sent_after=10.0)
    assert after is not None and after.seq == 2
    assert first_reply(late, sent_after=11.0) is None
    assert first_reply([]) is None


def test_log_events_and_the_first_path_of_a_kind_to_a_peer() -> None:
    selected = log_events(LOG, "path selected")
    assert len(selected) == 3
    assert selected[0].fields["path"] == "relay" and selected[0].fields["peer"] == "ok4JomL4"
    assert abs(selected[0].at - (T0 + 0.564278)) < 1e-6
    assert first_path(selected, "direct", after=T0) == T0 + 0.6  # any peer
    direct = first_path(selected, "direct", after=T0, peer="ok4JomL4")
    assert direct is not None and abs(direct - (T0 + 1.25)) < 1e-6
    assert first_path(selected, "direct", after=T0 + 2, peer="ok4JomL4") is None
    lost = log_events(LOG, "path lost; checking again")
    assert lost[0].fields["why"] == "no answer to 3 checks"
    assert log_events(LOG, "relay allocated")[0].fields["transport"] == "tcp"
    assert log_events("garbage\n\n[info] path selected path=direct", "path selected") == []


def trial(first: float | None, path: str = "direct", **more: Any) -> dict[str, Any]:
    return {"first_packet_s": first, "path_a": path, "path_b": path, "up_s": 1.0, **more}


def test_easy_target_met_only_when_every_trial_is_direct_within_a_second() -> None:
    good = [trial(0.4, direct_s=0.5), trial(0.9, direct_s=0.95)]
    s = summarize_cell("easy/easy", good)
    assert s["target"]["met"] and s["direct_share"] == 1.0 and s["connected"] == 2
    assert s["times"]["first_packet_s"]["max"] == 0.9
    assert s["times"]["first_packet_s"]["median"] == 0.65
    slow = summarize_cell("easy/easy", [*good, trial(1.2)])
    assert not slow["target"]["met"] and slow["target"]["trials_meeting"] == 2
    relayed = summarize_cell("easy/easy", [*good, trial(0.5, "relay")])
    assert not relayed["target"]["met"] and relayed["direct_share"] == 2 / 3
    failed = summarize_cell("easy/easy", [*good, {"error": "no reply within 12 s", "up_s": 1.0}])
    assert not failed["target"]["met"] and failed["connected"] == 2
    assert failed["errors"] == ["no reply within 12 s"]


def test_udp_blocked_target_wants_the_relay_over_tcp_or_tls() -> None:
    tcp = trial(1.5, "relay", relay_transport="tcp")
    assert summarize_cell("udp_blocked/easy", [tcp])["target"]["met"]
    udp = trial(1.5, "relay", relay_transport="udp")
    assert not summarize_cell("udp_blocked/easy", [tcp, udp])["target"]["met"]
    assert summarize_cell("udp_blocked/easy", [tcp, udp])["relay_transports"] == ["tcp", "udp"]


def test_failover_target_is_judged_on_the_time_after_the_cut() -> None:
    ok = trial(0.4, "relay", direct_s=0.5, failover_s=2.8, relay_switch_s=2.9)
    assert summarize_cell("failover", [ok])["target"]["met"]
    late = trial(0.4, "relay", direct_s=0.5, failover_s=5.2, relay_switch_s=5.1)
    assert not summarize_cell("failover", [ok, late])["target"]["met"]


def test_cells_without_a_target_and_the_markdown_table() -> None:
    assert CELLS["easy/hard"].target is None
    cells = {
        "easy/easy": summarize_cell("easy/easy", [trial(0.4, direct_s=0.5,
                                    throughput_mbps=412.3, throughput_path="direct")]),
        "easy/hard": summarize_cell("easy/hard", [trial(0.8, "relay")]),
        "failover": summarize_cell("failover", [trial(0.4, "relay", failover_s=3.0,
                                   relay_switch_s=3.1)]),
    }  # fmt: skip
    assert "target" not in cells["easy/hard"]
    text = markdown({"date": "2026-12-07 18:40 UTC", "trials": 1, "command": "x", "cells": cells})
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "0.40 / 0.40 / 0.40" in rows["| easy/easy"] and "| met |" in rows["| easy/easy"]
    assert "412 (direct)" in rows["| easy/easy"]
    assert rows["| easy/hard"].endswith("| - | - |")
    assert "3.00 / 3.00 / 3.00" in rows["| failover (cut after direct)"]
