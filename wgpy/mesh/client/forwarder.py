"""The node as a router (subnet routes; an exit node too): IP forwarding on for the families
it routes, the ``wgpy-nat`` masquerade (wgpy/host/forwarding.py) when asked, and at the end
everything it changed put back: a forwarding switch it turned on is turned off again, one that
was on stays on; the table is deleted.

What it changed is also written down (``record``, a file in the node's state directory,
mode 0600) and the file removed once it is put back, so a node that was killed (SIGKILL, a
crash) puts the host back at its next start: the next router's forwarder reads the file and
takes what it lists as its own, and a node that no longer routes undoes it at once.

The commands run through ``run`` (wgpy.host.run.run_async by default), so a test can record
them; a failing command is a HostNetworkError with the command and the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from ...host import forwarding
from ...host.run import HostNetworkError, run_async

__all__ = ["Forwarder"]

Runner = Callable[..., Awaitable[str]]  # run_async(argv, stdin=...)


class Forwarder:
    def __init__(
        self, interface: str, log: Any, run: Runner = run_async, record: Path | None = None
    ) -> None:
        self.interface = interface
        self.log = log
        self._run = run
        self.record = record
        self.turned_on: list[str] = []  # sysctl keys this node turned on, to turn off at close
        self.masquerading = False
        self.filtering = False  # the wgpy-filter table is there
        self._grants: list[tuple[list[Any], list[Any]]] | None = None  # as last applied
        self._load()

    def _load(self) -> None:
        """What a run that did not put the host back left in ``record``."""
        if self.record is None:
            return
        try:
            data = json.loads(self.record.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            self.log.warning("cannot read what an earlier run changed", error=str(e))
            return
        known = (forwarding.IPV4_FORWARD, forwarding.IPV6_FORWARD)
        if isinstance(data, dict):
            keys = data.get("turned_on")
            self.turned_on = [k for k in keys if k in known] if isinstance(keys, list) else []
            self.masquerading = data.get("masquerading") is True
            self.filtering = data.get("filtering") is True
        if self.turned_on or self.masquerading or self.filtering:
            self.log.info(
                "an earlier run did not put the host back; doing it",
                turned_on=self.turned_on,
                masquerading=self.masquerading,
            )

    def _save(self) -> None:
        if self.record is None:
            return
        try:
            if not self.turned_on and not self.masquerading and not self.filtering:
                with contextlib.suppress(FileNotFoundError):
                    self.record.unlink()
                return
            data = json.dumps(
                {
                    "turned_on": self.turned_on,
                    "masquerading": self.masquerading,
                    "filtering": self.filtering,
                }
            )
            temporary = self.record.with_name(f".{self.record.name}.{os.getpid()}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data + "\n")
            os.replace(temporary, self.record)
        except OSError as e:
            self.log.warning("cannot write down what this run changed", error=str(e))

    async def apply(
        self, versions: Collection[int], *, masquerade: bool, out_interfaces: Sequence[str] = ()
    ) -> None:
        """Forward the IP ``versions`` (4, 6) and masquerade what leaves the mesh (out of
        ``out_interfaces`` only, when given), or stop masquerading; a switch turned on
        earlier for a version no longer routed is turned off again."""
        try:
            await self._apply(versions, masquerade, out_interfaces)
        finally:
            self._save()

    async def _apply(
        self, versions: Collection[int], masquerade: bool, out_interfaces: Sequence[str]
    ) -> None:
        wanted = forwarding.forwarding_keys(sorted(set(versions)))
        for key in [k for k in self.turned_on if k not in wanted]:
            await self._run(forwarding.set_forwarding(key, False))
            self.turned_on.remove(key)
        for key in wanted:
            if key in self.turned_on:
                continue
            value = (await self._run(forwarding.read_forwarding(key))).strip()
            if value != "1":
                self.turned_on.append(key)  # written down before it is done
                self._save()
                await self._run(forwarding.set_forwarding(key, True))
                self.log.info("IP forwarding turned on", sysctl=key)
        if masquerade and wanted:
            script = forwarding.nat_script(self.interface, out_interfaces)
            if not self.masquerading:
                self.masquerading = True
                self._save()
                self.log.info("masquerading what leaves the mesh", table=forwarding.NAT_TABLE)
            await self._run(forwarding.NFT_APPLY, stdin=script)
        elif self.masquerading:
            await self._run(forwarding.NFT_APPLY, stdin=forwarding.nat_delete_script())
            self.masquerading = False

    async def restrict(self, grants: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> None:
        """Forward from the mesh only what ``grants`` allow: (a peer's overlay addresses, the
        prefixes it may use through this node), from the map; the rest is dropped. Nothing
        is run when the grants are as last applied. HostNetworkError if nft fails."""
        wanted = sorted(
            ([*map(str, sorted(a, key=str))], [*map(str, sorted(p, key=str))]) for a, p in grants
        )
        if wanted == self._grants:
            return
        script = forwarding.filter_script(self.interface, [(list(a), list(p)) for a, p in grants])
        if not self.filtering:
            self.filtering = True
            self._save()
        await self._run(forwarding.NFT_APPLY, stdin=script)
        self._grants = wanted
        self.log.info(
            "forwarding from the mesh limited to what the policy grants",
            table=forwarding.FILTER_TABLE,
            peers=len(wanted),
        )

    async def close(self) -> None:
        """Put back what :meth:`apply` changed (each step tried, failures logged)."""
        if self.filtering:
            try:
                await self._run(forwarding.NFT_APPLY, stdin=forwarding.filter_delete_script())
                self.filtering = False
                self._grants = None
            except HostNetworkError as e:
                self.log.error("cannot delete the forwarding filter table", error=str(e))
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
        self._save()
