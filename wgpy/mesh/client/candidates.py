"""The node's ICE candidates, kept reported to the coordination server.

:meth:`CandidateReporter.update` asks the server where its STUN servers are (``GET
/api/v1/node/nat``, again after the ``refresh`` it gives), asks those STUN servers through the
WireGuard socket where this node is (:func:`wgpy.nat.discovery.discover`), and reports the
candidate list with the node's ICE ufrag (``POST /api/v1/node/candidates``) when it
changed. A server older than this node answers both with 404: the node then reports its
endpoints only, as before, and says so once. Failures are logged and tried again on the next
update; none stops the node.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from aioice.candidate import Candidate

from ...endpoint import Endpoint
from ...log import get_logger
from ...nat.discovery import (
    MAX_CANDIDATES,
    Discovery,
    IceCredentials,
    candidate_list,
    discover,
)
from ...nat.servers import NatConfig
from ...nat.stunmux import StunMux
from .api import ApiError, MeshClientError, NodeClient

__all__ = ["CANDIDATE_INTERVAL", "CandidateReporter"]

CANDIDATE_INTERVAL = 20.0  # seconds between STUN checks of this node's public address
NOT_THERE = (404, 405)  # what a server without the endpoint answers
SILENT_ROUNDS = 2  # rounds without any STUN answer before the last mapping is dropped
EARLY_REPORT = 0.5  # seconds discovery may take before what is known is reported without it

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CandidateReporter:
    """See the module docstring. ``ice`` is made once per run of the node."""

    def __init__(self, client: NodeClient, ice: IceCredentials, log: Any = None) -> None:
        self.client = client
        self.ice = ice
        self.log = log if log is not None else get_logger(component="mesh")
        self.nat = NatConfig()
        self.discovery = Discovery()
        self.reported: list[str] | None = None
        self.supported = True  # False once the server said it has no such endpoint
        self._nat_until = float("-inf")
        self._silent = 0  # rounds in a row without an answer from any STUN server
        self.relayed: Callable[[], Sequence[Candidate]] = tuple
        """This node's relayed candidates (:meth:`wgpy.nat.relay.RelayManager.candidates`)."""
        self._relayed_moved = asyncio.Event()
        self._reporting = asyncio.Lock()
        self.on_reported: Callable[[], None] | None = None
        """Called after each report that changed the list (ICE checks with the new ones)."""

    def forget_reported(self) -> None:
        """Report again at the next update (the server may have lost what it had)."""
        self.reported = None

    async def refresh_nat(self, now: float) -> NatConfig:
        """Where the STUN and relay servers are (asked again after the server's ``refresh``)."""
        await self._refresh_nat(now)
        return self.nat

    def relayed_changed(self) -> None:
        """The relayed candidate came, went or moved: an update under way reports it at once
        instead of after discovery (which waits out its timeouts where UDP is blocked)."""
        self._relayed_moved.set()

    async def update(
        self, mux: StunMux | None, addresses: Sequence[IPAddress], port: int, now: float
    ) -> None:
        """Gather the candidates and report them if they changed. STUN discovery that has
        not finished within :data:`EARLY_REPORT` (UDP blocked, or far away) does not hold
        the rest back: what is known (the last mapping, host and relayed candidates) is
        reported then, and again whenever the relayed candidate changes, and the whole list
        once discovery ends."""
        if not self.supported:
            return
        await self._refresh_nat(now)
        if mux is None or not self.nat.stun:
            self.discovery = Discovery()
            await self._report(addresses, port, udp=None)
            return
        discovery = asyncio.ensure_future(discover(mux, self.nat.stun))
        try:
            timeout: float | None = EARLY_REPORT
            while not discovery.done():
                moved = asyncio.ensure_future(self._relayed_moved.wait())
                try:
                    await asyncio.wait(
                        (discovery, moved), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    moved.cancel()
                if discovery.done():
                    break
                self._relayed_moved.clear()
                timeout = None  # from now on: at each relay change, or when discovery ends
                await self._report(addresses, port, udp=self.discovery.udp)
        finally:
            discovery.cancel()
        self.discovered(discovery.result())
        await self._report(addresses, port, udp=self.discovery.udp)

    async def _report(self, addresses: Sequence[IPAddress], port: int, udp: bool | None) -> None:
        """Report the candidates known now if they differ from those reported last (one
        report at a time: the list is made when the previous one is done, so the last made
        is the last the server gets)."""
        async with self._reporting:
            relayed = list(self.relayed())[:1]
            found = candidate_list(addresses, port, self.discovery)
            found = found[: MAX_CANDIDATES - len(relayed)] + relayed
            candidates = [c.to_sdp() for c in found]
            if candidates == self.reported or not self.supported:
                return
            try:
                await self.client.report_candidates(self.ice.ufrag, candidates)
            except ApiError as e:
                if e.status in NOT_THERE:
                    self._unsupported()
                    return
                self.log.warning(
                    "cannot report the ICE candidates; will try again", error=e.message
                )
                return
            except MeshClientError as e:
                self.log.warning(
                    "cannot report the ICE candidates; will try again", error=e.message
                )
                return
            self.reported = candidates
            self.log.info(
                "candidates reported",
                candidates=[f"{c.type} {Endpoint(c.host, c.port)}" for c in found],
                udp=udp,
            )
            if self.on_reported is not None:
                self.on_reported()

    def discovered(self, found: Discovery) -> None:
        """Take ``found``; but when no STUN server answered, keep what they saw last for up
        to :data:`SILENT_ROUNDS` rounds (a lost datagram or two must not take the
        server-reflexive candidates away from every peer and back)."""
        if found.udp or not self.discovery.udp or self._silent >= SILENT_ROUNDS:
            if not found.udp and self.discovery.udp:
                self.log.warning("no STUN server answers: only host candidates are reported")
            self.discovery, self._silent = found, 0
            return
        self._silent += 1

    async def _refresh_nat(self, now: float) -> None:
        if now < self._nat_until:
            return
        try:
            nat = await self.client.nat_config()
        except ApiError as e:
            if e.status in NOT_THERE:  # an older server: no STUN, host candidates only
                self.nat, self._nat_until = NatConfig(), now + NatConfig().refresh
                return
            self.log.warning("cannot get the STUN and relay servers", error=e.message)
            return
        except MeshClientError as e:
            self.log.warning("cannot get the STUN and relay servers", error=e.message)
            return
        if nat.skipped:
            self.log.warning(
                "unusable STUN or relay servers from the server left out", count=nat.skipped
            )
        self.nat, self._nat_until = nat, now + nat.refresh

    def _unsupported(self) -> None:
        self.supported = False
        self.log.info(
            "the coordination server takes no ICE candidates (it is older than this node): "
            "only the endpoints are reported"
        )
