"""The host's resolver pointed at the node's, and put back: the three ways Tailscale and
wg-quick know, chosen by :func:`choose_mode` from what the host has.

- ``resolved``: /etc/resolv.conf sends lookups to systemd-resolved's stub. Split DNS through
  the interface's per-link settings (:mod:`wgpy.host.resolved`): the base domain (searched,
  and routed to the node's resolver), the link no default route; ``resolvectl revert`` at
  down. Every other name resolves as before.
- ``resolvconf``: the host has a ``resolvconf`` program (as wg-quick uses it,
  :mod:`wgpy.host.resolvconf`): the node's resolver is registered for the interface,
  exclusive, with the base domain to search; it takes all queries and forwards the rest to the
  servers the host had. ``resolvconf -d`` at down.
- ``direct``: neither. /etc/resolv.conf is rewritten in place (:mod:`wgpy.host.resolvfile`;
  in place, since ``ip netns exec`` bind-mounts a namespace's own file there), the previous
  bytes kept in the state directory first and written back at down, or, after a crash, at
  the next up (:meth:`HostDNS.recover`). A file that another node wrote (its first line
  names another interface) is left alone: one node at a time owns it.

A node in a named network namespace (``ip netns exec NS``) whose /etc/resolv.conf is the
host's (there is no /etc/netns/NS/resolv.conf to bind-mount over it) changes nothing: what it
would change is every namespace's resolver (:func:`shared_with_host`).

What fails is logged, never fatal: the node works without names on the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from ...host import resolvconf, resolved, resolvfile
from ...host.run import HostNetworkError, run_async
from .state import StateDir, StateError

__all__ = ["RESOLV_CONF", "HostDNS", "Mode", "choose_mode", "put_back", "shared_with_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Runner = Callable[..., Awaitable[str]]
INTERFACE_ORDER = Path("/etc/resolvconf/interface-order")
RESOLV_CONF = Path(resolvfile.PATH)


class Mode(StrEnum):
    RESOLVED = "resolved"
    RESOLVCONF = "resolvconf"
    DIRECT = "direct"


def choose_mode(resolv_conf: str, *, resolvectl: bool, resolvconf_program: bool) -> Mode:
    """How to point this host at the node's resolver, from the text of /etc/resolv.conf and
    which programs it has."""
    if resolvectl and resolved.manages_resolv_conf(resolv_conf):
        return Mode.RESOLVED
    if resolvconf_program:
        return Mode.RESOLVCONF
    return Mode.DIRECT


def shared_with_host(
    path: Path, *, netns_dir: Path = Path("/run/netns"), etc_netns: Path = Path("/etc/netns")
) -> str | None:
    """The name of the ``ip netns`` namespace this process runs in when ``path`` (resolv.conf)
    is not that namespace's own file (``/etc/netns/NAME/resolv.conf``, which ``ip netns
    exec`` mounts over it) but the host's; None otherwise (not in a named namespace, or its
    own file)."""
    try:
        ours = os.stat("/proc/self/ns/net")
        names = sorted(os.listdir(netns_dir))
    except OSError:
        return None
    for name in names:
        try:
            theirs = os.stat(netns_dir / name)
        except OSError:
            continue
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            continue
        try:
            current, own = os.stat(path), os.stat(etc_netns / name / path.name)
        except OSError:
            return name  # no file of its own: the host's
        same = (current.st_dev, current.st_ino) == (own.st_dev, own.st_ino)
        return None if same else name
    return None


def put_back(state: StateDir, interface: str, path: Path, log: Any | None = None) -> bool:
    """After a node that did not stop cleanly: write back the resolv.conf it kept in
    ``state`` if the file is still the one it wrote (a file changed since is left as it is),
    and forget the copy; whether there was one. OSError or StateError if that fails."""
    backup = state.read_resolv_backup()
    if backup is None:
        return False
    mine = resolvfile.writer(_read(path) or "") == interface
    if mine:
        _write_in_place(path, backup)
    if log is not None:
        log.warning(
            "resolv.conf put back as it was before a node that did not stop cleanly"
            if mine
            else "resolv.conf was changed since the node wrote it: left as it is",
            path=str(path),
        )
    state.remove_resolv_backup()
    return True


class HostDNS:
    """One interface's DNS settings on the host; :meth:`apply` once, :meth:`revert` at the
    end."""

    def __init__(
        self,
        interface: str,
        state: StateDir,
        log: Any,
        *,
        path: Path = RESOLV_CONF,
        run: Runner = run_async,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.interface = interface
        self.state = state
        self.log = log
        self.path = path
        self.run = run
        self.which = which
        self.mode: Mode | None = None  # what apply did (None: nothing to undo)
        self._resolvconf_name = interface

    # -------------------------------------------------------------- before

    def read(self) -> str:
        """The text of resolv.conf ("" if there is none or it cannot be read)."""
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    async def recover(self) -> None:
        """Undo what a node of this state directory left when it crashed: the previous
        resolv.conf written back (if the file is still the one it wrote), a resolvconf
        registration dropped."""
        try:
            put_back(self.state, self.interface, self.path, self.log)
        except (OSError, StateError) as e:
            self.log.warning(
                "cannot put back the previous resolv.conf",
                error=getattr(e, "message", None) or str(e),
            )
        if self.which(resolvconf.RESOLVCONF):
            name = resolvconf.interface_name(self.interface, _read(INTERFACE_ORDER))
            with contextlib.suppress(HostNetworkError):  # nothing registered: the usual case
                await self.run(resolvconf.delete(name))

    # -------------------------------------------------------------- apply and revert

    async def apply(
        self,
        servers: Sequence[IPAddress],
        domains: Sequence[str],
        routing: Sequence[str] = (),
        *,
        route_all: bool = False,
    ) -> Mode | None:
        """Send the host's lookups of ``domains`` (the base domain, searched) and ``routing``
        (the admin's split domains, not searched) to ``servers`` (the node's resolver), and
        with ``route_all`` (an exit node in use) every lookup; the mode used, or None if
        nothing was changed. With resolvconf and direct the node takes every lookup, so
        ``routing`` and ``route_all`` need nothing there."""
        namespace = shared_with_host(self.path)
        if namespace is not None:
            self.log.warning(
                "this network namespace has no resolv.conf of its own: the host's DNS is left "
                f"alone (create /etc/netns/{namespace}/resolv.conf to give it one)",
                path=str(self.path),
            )
            return None
        text = self.read()
        mode = choose_mode(
            text,
            resolvectl=self.which(resolved.RESOLVECTL) is not None,
            resolvconf_program=self.which(resolvconf.RESOLVCONF) is not None,
        )
        try:
            if mode is Mode.RESOLVED:
                everything = [*routing, "."] if route_all else routing
                await self._apply_resolved(servers[0], domains, everything, route_all)
            elif mode is Mode.RESOLVCONF:
                await self._apply_resolvconf(servers, domains)
            elif not self._apply_direct(servers, domains, text):
                return None
        except (HostNetworkError, OSError, StateError) as e:
            self.log.error(
                "cannot point the host's resolver at the node's: mesh names resolve only "
                "through it",
                mode=str(mode),
                error=getattr(e, "message", None) or str(e),
            )
            self.mode = mode  # undo what was done
            await self.revert()
            return None
        self.mode = mode
        self.log.info(
            "host DNS set",
            mode=str(mode),
            servers=[str(s) for s in servers],
            domains=list(domains),
            routing=list(routing),
        )
        return mode

    async def revert(self) -> None:
        """Undo :meth:`apply` (failures are logged)."""
        mode, self.mode = self.mode, None
        try:
            if mode is Mode.RESOLVED:
                await self.run(resolved.revert(self.interface))
            elif mode is Mode.RESOLVCONF:
                await self.run(resolvconf.delete(self._resolvconf_name))
            elif mode is Mode.DIRECT:
                backup = self.state.read_resolv_backup()
                if backup is not None:
                    if resolvfile.writer(self.read()) == self.interface:
                        _write_in_place(self.path, backup)
                    else:
                        self.log.warning(
                            "resolv.conf was changed since the node wrote it: left as it is",
                            path=str(self.path),
                        )
                    self.state.remove_resolv_backup()
        except (HostNetworkError, OSError, StateError) as e:
            self.log.error(
                "cannot put the host's DNS settings back",
                mode=str(mode),
                error=getattr(e, "message", None) or str(e),
            )
            return
        if mode is not None:
            self.log.info("host DNS put back", mode=str(mode))

    async def _apply_resolved(
        self,
        server: IPAddress,
        domains: Sequence[str],
        routing: Sequence[str],
        default_route: bool = False,
    ) -> None:
        await self.run(resolved.dns(self.interface, server))
        await self.run(resolved.domains(self.interface, list(routing), list(domains)))
        await self.run(resolved.default_route(self.interface, default_route))

    async def _apply_resolvconf(self, servers: Sequence[IPAddress], domains: Sequence[str]) -> None:
        self._resolvconf_name = resolvconf.interface_name(self.interface, _read(INTERFACE_ORDER))
        records = resolvconf.records([str(s) for s in servers], list(domains))
        await self.run(resolvconf.add(self._resolvconf_name), stdin=records)

    def _apply_direct(
        self, servers: Sequence[IPAddress], domains: Sequence[str], text: str
    ) -> bool:
        owner = resolvfile.writer(text)
        if owner is not None and owner != self.interface:
            self.log.warning(
                "resolv.conf belongs to another wgpy node: left alone",
                path=str(self.path),
                interface=owner,
            )
            return False
        previous = self.path.read_bytes()
        self.state.write_resolv_backup(previous)  # first: a crash after it is undone
        _write_in_place(
            self.path, resolvfile.render(self.interface, servers, domains, text).encode()
        )
        return True


def _write_in_place(path: Path, data: bytes) -> None:
    """Replace the file's bytes, keeping the file (a bind mount, a link's target, its mode and
    owner)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
