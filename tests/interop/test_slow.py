"""Timers in real time: rekey after REKEY_AFTER_TIME, and giving up on a peer that is down.

Each test runs its two scenarios at once (two independent topologies), so each takes about
as long as its longest timer, not twice that. Both are under the slow hard timeout.
"""

from __future__ import annotations

import itertools
import re
import signal
import time
from dataclasses import dataclass, field

import pytest

from .netns import (
    PAIRS,
    TUN4,
    WGPY_PAIRS,
    Lab,
    Process,
    WgInterface,
    make_pair,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

REKEY_AFTER_TIME = 120
REKEY_TIMEOUT = 5
KEEPALIVE_TIMEOUT = 10
REKEY_ATTEMPT_TIME = 90
INITIATION_SIZE = 148


def ping_summary(proc: Process) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", proc.output())
    assert m is not None, proc.output()
    return int(m.group(1)), int(m.group(2))


@dataclass
class RekeyScenario:
    name: str
    initiator: WgInterface
    responder: WgInterface
    first: int  # wall-clock second of the first handshake on the initiator, as `wg show` has it
    responder_first: int
    pinger: Process
    rekeyed: int = 0


@pytest.mark.parametrize(("impl_a", "impl_b"), PAIRS)
def test_rekey_after_time(lab: Lab, impl_a: str, impl_b: str) -> None:
    """With a ping every second, the side that initiated the session starts a new handshake
    once the session is REKEY_AFTER_TIME old, and traffic carries on through the change.
    Scenario "a": A initiated the first session; scenario "b": B did."""
    scenarios: list[RekeyScenario] = []
    for name in ("a", "b"):
        pair = make_pair(lab, impl_a, impl_b)
        ini, resp = pair.side(name), pair.other(name)
        assert ini.ns.ping(TUN4[1 if name == "a" else 0], count=1, wait=5) == 1
        first = ini.wait_handshake(resp, timeout=5)
        responder_first = resp.wait_handshake(ini, timeout=5)
        pinger = pair.a.ns.spawn(
            ["ping", "-n", "-q", "-i", "1", "-W", "1", "-c", "200", TUN4[1]], log=f"ping-{name}"
        )
        scenarios.append(RekeyScenario(name, ini, resp, first, responder_first, pinger))

    deadline = time.monotonic() + REKEY_AFTER_TIME + 40
    for _ in range(int((REKEY_AFTER_TIME + 40) / 0.5) + 1):
        for s in scenarios:
            if not s.rekeyed:
                hs = s.initiator.peer(s.responder).latest_handshake
                if hs > s.first:
                    s.rekeyed = hs
        if all(s.rekeyed for s in scenarios) or time.monotonic() > deadline:
            break
        for s in scenarios:
            assert s.initiator.alive and s.responder.alive
        time.sleep(0.5)

    for s in scenarios:
        assert s.rekeyed, f"scenario {s.name}: no new handshake within {REKEY_AFTER_TIME + 40} s"
        age = s.rekeyed - s.first
        assert REKEY_AFTER_TIME - 2 <= age <= REKEY_AFTER_TIME + 15, f"{s.name}: rekey at {age} s"
        # The new session carries traffic both ways.
        s.responder.wait_handshake(s.initiator, timeout=5, newer_than=s.responder_first)
        for side, dst in ((s.initiator, s.responder), (s.responder, s.initiator)):
            addr = TUN4[0] if dst.ns.role == "a" else TUN4[1]
            assert side.ns.ping(addr, count=3) == 3
        s.pinger.signal(signal.SIGINT)
        s.pinger.wait(timeout=10)
        sent, received = ping_summary(s.pinger)
        assert sent >= REKEY_AFTER_TIME - 5
        assert received >= sent - 2, f"{s.name}: {sent - received} of {sent} pings lost"


@dataclass
class DownScenario:
    name: str
    observer: WgInterface  # the side still up, sending initiations
    peer: WgInterface  # the side that is down
    t0: float = 0.0
    changes: list[tuple[float, int]] = field(default_factory=list)  # (s after t0, tx delta)
    last_tx: int = 0
    done: bool = False


@pytest.mark.parametrize(("impl_a", "impl_b"), WGPY_PAIRS)
def test_peer_down_retries_then_gives_up(lab: Lab, impl_a: str, impl_b: str) -> None:
    """A packet for a peer that does not answer: an initiation every REKEY_TIMEOUT, given
    up after REKEY_ATTEMPT_TIME; observed as growth of `wg show transfer` tx stopping.

    "never-up": B's daemon is stopped before any traffic; A sends one ping.
    "went-down": A and B had a session, then A's daemon stops; B sends one ping, which goes
    out in the old session, and after KEEPALIVE_TIMEOUT + REKEY_TIMEOUT without an answer B
    starts handshaking.
    """
    never = make_pair(lab, impl_a, impl_b)
    never.b.stop()
    went = make_pair(lab, impl_a, impl_b)
    assert went.a.ns.ping(TUN4[1], count=1, wait=5) == 1
    went.b.wait_handshake(went.a, timeout=5)
    went.a.stop()

    scenarios = [
        DownScenario("never-up", never.a, never.b),
        DownScenario("went-down", went.b, went.a),
    ]
    for s in scenarios:
        s.last_tx = s.observer.peer(s.peer).tx
        dst = TUN4[1] if s.observer.ns.role == "a" else TUN4[0]
        s.t0 = time.monotonic()
        # In the background, so that sampling starts right away.
        s.observer.ns.spawn(["ping", "-n", "-c", "1", "-W", "1", dst], log=f"ping-{s.name}")

    quiet_needed = 20.0
    limit = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_ATTEMPT_TIME + 2 * quiet_needed
    deadline = time.monotonic() + limit
    for _ in range(int(limit / 0.2) + 1):
        for s in scenarios:
            if s.done:
                continue
            assert s.observer.alive, f"{s.name}: {s.observer} died:\n{s.observer.log()}"
            tx = s.observer.peer(s.peer).tx
            now = time.monotonic() - s.t0
            if tx != s.last_tx:
                s.changes.append((now, tx - s.last_tx))
                s.last_tx = tx
            last = s.changes[-1][0] if s.changes else 0.0
            s.done = now - last >= quiet_needed
        if all(s.done for s in scenarios) or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    for s in scenarios:
        assert s.done, f"{s.name}: still sending after {limit:g} s: {s.changes}"
        changes = s.changes
        if s.name == "went-down":
            assert changes, "went-down: the ping was not even sent"
            data_at = changes[0][0]
            changes = changes[1:]
            assert changes, "went-down: no initiation after the unanswered data packet"
            first_wait = changes[0][0] - data_at
            assert (
                KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - 1
                <= first_wait
                <= KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 3
            ), f"went-down: first initiation {first_wait:.1f} s after the data: {s.changes}"
        times = [t for t, _ in changes]
        assert [d for _, d in changes] == [INITIATION_SIZE] * len(changes), (
            f"{s.name}: tx grew by other than one initiation at a time: {changes}"
        )
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
        assert all(REKEY_TIMEOUT - 0.5 <= g <= REKEY_TIMEOUT + 1.5 for g in gaps), (
            f"{s.name}: gaps between initiations {gaps}"
        )
        span = times[-1] - times[0]
        assert REKEY_ATTEMPT_TIME - 5 <= span <= REKEY_ATTEMPT_TIME + 15, (
            f"{s.name}: initiations for {span:.1f} s: {times}"
        )
        assert 17 <= len(times) <= 21, f"{s.name}: {len(times)} initiations"
