"""This node as a subnet router (``wgpy up --advertise-routes``): the prefixes it advertises
(``POST /api/v1/node/routes`` once it is logged in, the whole list each start: an empty one
withdraws the last), then the forwarding they need on the host (:mod:`.forwarder`: IP
forwarding for the families advertised, the masquerade unless ``--snat-subnet-routes=false``),
put back when the node stops (or, after a crash, at its next start: ``forwarding.json`` in the
state directory lists what is to be put back). The server checks the prefixes and says why
it refuses one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...host.run import run_async
from .api import ApiError, NodeClient
from .forwarder import Forwarder, Runner

__all__ = ["FORWARDING_FILE", "SubnetRoutes"]

FORWARDING_FILE = "forwarding.json"  # in the state directory: what to put back

NOT_FOUND = 404


class SubnetRoutes:
    def __init__(
        self,
        interface: str,
        routes: Sequence[str],
        *,
        snat: bool,
        log: Any,
        run: Runner | None = None,
        record: Path | None = None,
    ) -> None:
        self.routes = list(routes)
        self.snat = snat
        self.log = log
        self.forwarder = Forwarder(interface, log, run or run_async, record)

    @property
    def versions(self) -> set[int]:
        """The IP versions of the advertised prefixes (those to forward)."""
        return {ipaddress.ip_network(r, strict=False).version for r in self.routes}

    async def start(self, client: NodeClient) -> None:
        """Advertise the routes, then forward (and masquerade) for them: a list the server
        refuses leaves the host as it was. ApiError if the server refuses the list (a server
        without routes is only an error when there are some); HostNetworkError if the host
        cannot forward."""
        try:
            reply = await client.advertise_routes(self.routes)
        except ApiError as e:
            if e.status == NOT_FOUND and not self.routes:
                return  # a server before routes: nothing to withdraw there
            raise
        if not self.routes:
            await self.forwarder.close()  # what a killed run left, if anything
            return
        # nothing from the mesh is forwarded until the map says who may use which route
        await self.forwarder.restrict([])
        await self.forwarder.apply(self.versions, masquerade=self.snat)
        pending = [r.get("prefix") for r in reply if not r.get("approved")]
        self.log.info("routes advertised", routes=self.routes, awaiting_approval=pending)

    async def restrict(self, grants: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> None:
        """Forward from each peer only to the prefixes the map grants it (PEER
        ``routed_for``); nothing for a node that advertises no routes."""
        if self.routes:
            await self.forwarder.restrict(grants)

    async def close(self) -> None:
        await self.forwarder.close()
