"""How the asyncio shell reads its TUN: a lone packet after a quiet spell costs one read, a
burst is drained in batches, and nothing queued is ever left behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable

from wgpy.device.interface import BATCH, BURST_GAP, Interface


class QueueTun:
    """A TUN stand-in: packets in a list, readiness from a pipe that holds one byte while
    anything is queued (so the loop's level-triggered poller sees it as a TUN fd)."""

    name = "fake0"
    mtu = 1420

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.reads: list[tuple[int, int]] = []  # (limit asked, packets returned)
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)

    def push(self, packets: Iterable[bytes]) -> None:
        was_empty = not self.queue
        self.queue.extend(packets)
        if was_empty and self.queue:
            os.write(self._w, b"x")

    def fileno(self) -> int:
        return self._r

    def read_batch(self, limit: int = BATCH) -> list[bytes]:
        taken, self.queue = self.queue[:limit], self.queue[limit:]
        if not self.queue:
            os.read(self._r, 1)
        self.reads.append((limit, len(taken)))
        return taken

    def write_batch(self, packets: Iterable[bytes]) -> None:
        pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)
        self._r = -1


def test_quiet_packets_are_read_alone_and_bursts_drained() -> None:
    async def scenario() -> tuple[list[tuple[int, int]], list[int]]:
        tun = QueueTun()
        iface = Interface("fake0", tun=tun)  # type: ignore[arg-type]
        seen: list[int] = []
        iface.device.send_packets = lambda packets, now: seen.append(len(packets))  # type: ignore[method-assign]
        try:
            loop = asyncio.get_running_loop()
            for _ in range(3):  # lone packets, a quiet spell apart
                tun.push([b"\x45" + bytes(27)])
                await asyncio.sleep(BURST_GAP * 5)
            tun.push([b"\x45" + bytes(27)] * (BATCH + 72))  # a burst after a quiet spell
            deadline = loop.time() + 5
            while tun.queue and loop.time() < deadline:
                await asyncio.sleep(0)
            return tun.reads, seen
        finally:
            iface.close()

    reads, seen = asyncio.run(scenario())
    assert reads[:3] == [(1, 1), (1, 1), (1, 1)]  # one read each: no read that fails
    assert reads[3] == (1, 1)  # the burst's first wake-up still thinks it is quiet...
    assert reads[4] == (BATCH, BATCH)  # ...and the next drains in batches
    assert sum(seen) == 3 + BATCH + 72  # every packet reached the core
