"""Split DNS through systemd-resolved's per-link settings (``resolvectl``), as Tailscale sets
them on hosts that run it: only the routing domains (``~mesh.internal``, and any the admin
lists) go to the link's DNS server; the host's other names resolve as before. ``revert``
undoes all of it (resolved also forgets a link's settings when the link goes away).

Which path a host takes: :func:`manages_resolv_conf` reads /etc/resolv.conf; a host whose
resolv.conf points at resolved's stub takes this module, any other takes resolvconf
(:mod:`wgpy.host.resolvconf`, as wg-quick).
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["RESOLVECTL", "default_route", "dns", "domains", "manages_resolv_conf", "revert"]

RESOLVECTL = "resolvectl"
# resolved's stub listeners (127.0.0.53; 127.0.0.54 is its proxy-only one since v251)
STUB_ADDRESSES = ("127.0.0.53", "127.0.0.54")
_NAMESERVER = re.compile(r"^\s*nameserver\s+(\S+)", re.MULTILINE)


def manages_resolv_conf(resolv_conf: str) -> bool:
    """Whether ``resolv_conf`` (the text of /etc/resolv.conf) sends lookups to resolved's
    stub: then per-link settings are what the host's own resolution follows."""
    servers = _NAMESERVER.findall(resolv_conf)
    return bool(servers) and all(s in STUB_ADDRESSES for s in servers)


def dns(
    link: str, server: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int = 53
) -> list[str]:
    """``resolvectl dns LINK ADDR[:PORT]``: the link's DNS server."""
    if port == 53:
        text = str(server)
    elif server.version == 4:
        text = f"{server}:{port}"
    else:
        text = f"[{server}]:{port}"
    return [RESOLVECTL, "dns", link, text]


def domains(link: str, routing: list[str], search: list[str] | None = None) -> list[str]:
    """``resolvectl domain LINK D ... ~R ...``: the ``search`` domains (a search domain is a
    routing domain too, so ``laptop`` and ``laptop.mesh.internal`` both go to the link's
    server, as Tailscale sets its base domain) and routing-only domains (a ``~`` before
    each): these names, and only these, go to the link's server."""
    plain = [d.strip("~").rstrip(".") for d in search or []]
    # "." routes every name to the link (``~.``: an exit node's resolver takes them all)
    tilde = [
        f"~{d.strip('~').rstrip('.') or '.'}"
        for d in routing
        if d.strip("~").rstrip(".") not in plain
    ]
    if not plain and not tilde:
        raise ValueError("Split DNS needs at least one domain to route; give the base domain.")
    return [RESOLVECTL, "domain", link, *plain, *tilde]


def default_route(link: str, on: bool = False) -> list[str]:
    """``resolvectl default-route LINK false``: the link is no default route for lookups
    outside its domains (systemd 240 and later)."""
    return [RESOLVECTL, "default-route", link, "true" if on else "false"]


def revert(link: str) -> list[str]:
    """``resolvectl revert LINK``: the link's DNS settings back to none."""
    return [RESOLVECTL, "revert", link]
