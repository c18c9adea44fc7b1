"""The node as a router (subnet routes; an exit node too): IP forwarding on for the families
it routes, the ``wgpy-nat`` masquerade (wgpy/host/forwarding.py) when asked, and at the end
everything it changed put back: a forwarding switch it turned on is turned off again, one that
was on stays on; the table is deleted.

The commands run through ``run`` (wgpy.host.run.run_async by default), so a test can record
them; a failing command is a HostNetworkError with the command and the reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from ...host import forwarding
from ...host.run import HostNetworkError, run_async

__all__ = ["Forwarder"]

Runner = Callable[..., Awaitable[str]]  # run_async(argv, stdin=...)


class Forwarder:
    def __init__(self, interface: str, log: Any, run: Runner = run_async) -> None:
        self.interface = interface
        self.log = log
        self._run = run
        self.turned_on: list[str] = []  # sysctl keys this node turned on, to turn off at close
        self.masquerading = False

    async def apply(
        self, versions: Collection[int], *, masquerade: bool, out_interfaces: Sequence[str] = ()
    ) -> None:
        """Forward the IP ``versions`` (4, 6) and masquerade what leaves the mesh (out of
        ``out_interfaces`` only, when given), or stop masquerading; a switch turned on
        earlier for a version no longer routed is turned off again."""
        wanted = forwarding.forwarding_keys(sorted(set(versions)))
        for key in [k for k in self.turned_on if k not in wanted]:
            await self._run(forwarding.set_forwarding(key, False))
            self.turned_on.remove(key)
        for key in wanted:
            if key in self.turned_on:
                continue
            value = (await self._run(forwarding.read_forwarding(key))).strip()
            if value != "1":
                await self._run(forwarding.set_forwarding(key, True))
                self.turned_on.append(key)
                self.log.info("IP forwarding turned on", sysctl=key)
        if masquerade and wanted:
            script = forwarding.nat_script(self.interface, out_interfaces)
            await self._run(forwarding.NFT_APPLY, stdin=script)
            if not self.masquerading:
                self.log.info("masquerading what leaves the mesh", table=forwarding.NAT_TABLE)
            self.masquerading = True
        elif self.masquerading:
            await self._run(forwarding.NFT_APPLY, stdin=forwarding.nat_delete_script())
            self.masquerading = False

    async def close(self) -> None:
        """Put back what :meth:`apply` changed (each step tried, failures logged)."""
        if self.masquerading:
            try:
                await self._run(forwarding.NFT_APPLY, stdin=forwarding.nat_delete_script())
                self.masquerading = False
            except HostNetworkError as e:
                self.log.error("cannot delete the masquerade table", error=str(e))
        for key in list(self.turned_on):
            try:
                await self._run(forwarding.set_forwarding(key, False))
                self.turned_on.remove(key)
                self.log.info("IP forwarding turned off again", sysctl=key)
            except HostNetworkError as e:
                self.log.error("cannot turn IP forwarding off again", sysctl=key, error=str(e))
