"""Exit nodes on this host: using one (``wgpy up --exit-node``: the policy routing, set up
while the exit peer is in the map, taken away when it leaves it and at ``wgpy down``) and
being one (``--advertise-exit-node``: :func:`check_exit_node_host`; subnets.py forwards).

:class:`ExitRouting` runs the commands :mod:`wgpy.host.policyroute` builds: it picks a free
table, marks the WireGuard socket with it (the relays follow the mark), turns on
``src_valid_mark`` (the reverse-path check then sees the mark, as wg-quick does) and
wg-quick's nftables table (the replies get the mark back), deletes rules a killed node left
at its priorities, adds the default routes and the rules, and remembers each deletion, so
that :meth:`ExitRouting.remove` takes away exactly what was added: ``ip rule`` and every
routing table are then as they were. Commands go through a runner (``run``,
:func:`wgpy.host.run.run_async` by default) that tests replace.

The rules a killed node left are found by their priorities; the ``src_valid_mark`` it turned
on is not, so its value before is written down first (``record``, :data:`EXIT_ROUTING_FILE`
in the state directory, mode 0600) and the file removed once it is put back: after a crash
the next ``wgpy up``, ``wgpy down`` or ``wgpy logout`` puts it back (:func:`put_back`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...host import firewall, ip, policyroute, sysctl
from ...host.policyroute import ExitRoutes, IPNetwork
from ...host.run import HostNetworkError, run_async

__all__ = [
    "EXIT_ROUTING_FILE",
    "ExitRouting",
    "Runner",
    "check_exit_node_host",
    "control_plane_hosts",
    "put_back",
    "resolve",
    "versions_of",
]

Runner = Callable[..., Awaitable[str]]  # run_async(argv, stdin=...)
RESOLVE_TIMEOUT = 5.0  # seconds to resolve the control plane's names
EXIT_ROUTING_FILE = "exit-routing.json"  # in the state directory: what to put back
_SYSCTL_VALUE = frozenset("01")  # src_valid_mark is 0 or 1; anything else is no record of ours


async def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    return await run_async(argv, stdin=stdin)


def control_plane_hosts(server_url: str, stun: Iterable[str], turn: Iterable[str]) -> list[str]:
    """The hosts (names or addresses) the node talks to outside the tunnel: the coordination
    server's, the STUN servers', the relays'."""
    hosts = [urlsplit(server_url).hostname or "", *stun, *turn]
    return [host for host in dict.fromkeys(hosts) if host]


async def resolve(hosts: Iterable[str], timeout: float = RESOLVE_TIMEOUT) -> list[IPNetwork]:
    """Each host's addresses as host prefixes, the names looked up together within
    ``timeout`` seconds; a name that does not resolve in time is left out (its traffic is
    still marked if it is a relay's or a probe's)."""
    loop = asyncio.get_running_loop()

    async def lookup(host: str) -> list[str]:
        network = policyroute.host_network(host)
        if network is not None:
            return [str(network.network_address)]
        with contextlib.suppress(OSError, TimeoutError, UnicodeError):
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, None)
            return [str(info[4][0]) for info in infos]
        return []

    found: list[IPNetwork] = []
    for addresses in await asyncio.gather(*(lookup(host) for host in hosts)):
        for address in addresses:
            network = policyroute.host_network(address)
            if network is not None and network not in found:
                found.append(network)
    return found


class ExitRouting:
    """The policy routing of one interface; see the module docstring."""

    def __init__(
        self,
        interface: str,
        set_fwmark: Callable[[int], None],
        log: Any,
        *,
        run: Runner = _run,
        proc_sys: Path = sysctl.PROC_SYS,
        record: Path | None = None,
    ) -> None:
        self.interface = interface
        self.set_fwmark = set_fwmark
        self.log = log
        self.run = run
        self.proc_sys = proc_sys
        self.record = record  # the src_valid_mark before, while this has it changed
        self.routes: ExitRoutes | None = None  # what is set up now
        # deletions (argv, stdin), in the order they are to run
        self._undo: list[tuple[list[str], str | None]] = []
        self._src_valid_mark: str | None = None  # its value before, when this changed it

    @property
    def active(self) -> bool:
        return self.routes is not None

    async def apply(
        self, versions: tuple[int, ...], bypass: Sequence[IPNetwork], allow_lan: bool
    ) -> ExitRoutes:
        """Send everything through the interface but the exceptions; HostNetworkError if
        that fails (what was done is undone)."""
        if self.routes is not None:
            return self.routes
        try:
            routes = await self._plan(versions, bypass, allow_lan)
            self.set_fwmark(routes.table)
            self._set_src_valid_mark()
            await self._firewall(routes)
            for _version, add, delete in routes.routes():
                await self.run(add)
                self._undo.insert(0, (delete, None))
            for rule in routes.rules():
                await self.run(rule.add())
                self._undo.insert(0, (rule.delete(), None))
        except (HostNetworkError, OSError) as e:
            await self.remove()
            if isinstance(e, OSError):
                raise HostNetworkError(f"cannot set up the exit node's routing: {e}") from None
            raise
        self.routes = routes
        self.log.info(
            "all traffic goes through the exit node",
            table=routes.table,
            bypass=[str(n) for n in routes.bypass],
            lan=[str(n) for n in routes.lan],
            lan_access=allow_lan,
        )
        return routes

    async def _plan(
        self, versions: tuple[int, ...], bypass: Sequence[IPNetwork], allow_lan: bool
    ) -> ExitRoutes:
        used_routes, used_rules, lan = [], [], []
        for version in versions:
            for stale in policyroute.stale_rules(
                version, await self.run(["ip", f"-{version}", "rule", "show"])
            ):
                self.log.warning("deleting a rule a stopped node left", rule=" ".join(stale[6:]))
                with contextlib.suppress(HostNetworkError):
                    await self.run(stale)
            used_routes.append(await self.run(policyroute.routes_show(version)))
            used_rules.append(await self.run(policyroute.rules_show(version)))
            main = await self.run(["ip", "-json", f"-{version}", "route", "show", "table", "main"])
            lan += policyroute.connected_prefixes(main, self.interface)
        table = policyroute.free_table(policyroute.used_tables(used_routes, used_rules))
        return ExitRoutes(
            self.interface,
            table,
            versions,
            bypass=tuple(n for n in bypass if n.version in versions),
            lan=tuple(lan),
            allow_lan=allow_lan,
        )

    async def _firewall(self, routes: ExitRoutes) -> None:
        """wg-quick's ``wg-quick-IFNAME`` nftables table (:mod:`wgpy.host.firewall`): the
        replies to WireGuard's marked packets get the mark back from their connection, so
        that a strict reverse-path check (``rp_filter=1``) finds them on the host's routes,
        not in the tunnel; and packets to the overlay addresses from outside are dropped.
        Without ``nft`` this is skipped with a warning (hosts with a loose or no reverse-path
        check do not need it)."""
        shown = await self.run(["ip", "-o", "address", "show", "dev", self.interface])
        addresses = ip.parse_addresses(shown)
        for version in routes.versions:
            mine = [a for a in addresses if ipaddress.ip_address(a).version == version]
            script = firewall.nft_table(self.interface, routes.table, mine, v6=version == 6)
            try:
                await self.run(firewall.NFT_APPLY, stdin=script)
            except HostNetworkError as e:
                if "cannot run" not in str(e):
                    raise
                self.log.warning("no nft: replies are not marked for the reverse-path check")
                return
            family = "ip6" if version == 6 else "ip"
            delete = f"delete table {family} {firewall.table_name(self.interface)}\n"
            self._undo.insert(0, (firewall.NFT_APPLY, delete))

    def _set_src_valid_mark(self) -> None:
        path = _src_valid_mark_path(self.proc_sys)
        before = path.read_text().strip()
        if before != "1":
            if self.record is not None:  # written down before it is done
                _write_record(self.record, before)
            path.write_text("1\n")
            self._src_valid_mark = before

    async def remove(self) -> None:
        """Take away what :meth:`apply` added, in the reverse order; a deletion that fails is
        logged (an interface already gone takes its routes with it)."""
        undo, self._undo = self._undo, []
        for argv, stdin in undo:
            try:
                if stdin is None:
                    await self.run(argv)
                else:
                    await self.run(argv, stdin=stdin)
            except HostNetworkError as e:
                if " route del " not in f" {' '.join(argv)} ":
                    self.log.warning("cannot delete the exit node's routing", error=str(e))
        if self._src_valid_mark is not None:
            with contextlib.suppress(OSError):
                _src_valid_mark_path(self.proc_sys).write_text(self._src_valid_mark + "\n")
                if self.record is not None:
                    self.record.unlink(missing_ok=True)
            self._src_valid_mark = None
        if self.routes is not None:
            self.log.info("traffic no longer goes through the exit node")
        self.routes = None
        with contextlib.suppress(Exception):
            self.set_fwmark(0)


def put_back(record: Path, proc_sys: Path = sysctl.PROC_SYS) -> str | None:
    """Put back the ``src_valid_mark`` a node that did not stop cleanly turned on, as
    ``record`` holds it, and remove the file; the value put back, or None when there was no
    record (one that holds no such value is removed, nothing written). OSError if the
    setting cannot be written."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = None
    value = data.get("src_valid_mark") if isinstance(data, dict) else None
    if isinstance(value, str) and len(value) == 1 and value in _SYSCTL_VALUE:
        _src_valid_mark_path(proc_sys).write_text(value + "\n")
    else:
        value = None
    record.unlink(missing_ok=True)
    return value


def _src_valid_mark_path(proc_sys: Path) -> Path:
    return proc_sys.joinpath(sysctl.proc_path(sysctl.SRC_VALID_MARK).relative_to(sysctl.PROC_SYS))


def _write_record(record: Path, before: str) -> None:
    temporary = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps({"src_valid_mark": before}) + "\n")
    os.replace(temporary, record)


async def check_exit_node_host(name: str) -> None:
    """HostNetworkError unless the host has a default route (out of an interface other than
    the mesh's ``name``) for what it forwards as an exit node; forwarding and masquerade are
    the subnet router's (subnets.py), for both default routes."""
    for version in (4, 6):
        text = await run_async(policyroute.default_route_show(version))
        if policyroute.default_interfaces(text, name):
            return
    raise HostNetworkError(
        "this host has no default route, so it cannot be an exit node; give it one or "
        "leave out --advertise-exit-node"
    )


def versions_of(
    addresses: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface],
) -> tuple[int, ...]:
    """The address families the node has an overlay address in (IPv6 only where the host has
    IPv6 at all)."""
    found = {a.version for a in addresses}
    if not os.path.exists("/proc/sys/net/ipv6"):
        found.discard(6)
    return tuple(sorted(found))
