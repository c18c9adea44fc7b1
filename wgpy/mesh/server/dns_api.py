"""What ``GET /api/v1/node/dns`` tells a node: the base domain of the mesh's names and the
admin's split DNS domains (``wgpy server --dns-domain DOMAIN=ADDRESS,...``): names under each
such domain are resolved by its resolvers (a company's DNS server, say, behind a subnet router),
through every node's resolver, and the hosts send those names to the node's resolver as they
send mesh names. The settings are the server's configuration: a node reads them as it starts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from wgpy.dns.names import check_name

from .web import context, node_of, reply

__all__ = ["MAX_DOMAINS", "MAX_RESOLVERS", "add_routes", "parse_dns_domain"]

MAX_DOMAINS = 32
MAX_RESOLVERS = 3  # per domain, as glibc's MAXNS

DnsDomains = tuple[tuple[str, tuple[str, ...]], ...]


def parse_dns_domain(text: str, base_domain: str) -> tuple[str, tuple[str, ...]]:
    """``DOMAIN=ADDRESS[,ADDRESS...]`` as (canonical domain, addresses); ValueError saying what
    is wrong."""
    domain, sep, resolvers = text.partition("=")
    if not sep or not resolvers.strip():
        raise ValueError(
            f"{text!r} names no resolver; give DOMAIN=ADDRESS[,ADDRESS...], e.g. "
            "corp.example=10.1.0.53"
        )
    try:
        name = check_name(domain.strip())
    except ValueError as e:
        raise ValueError(str(e)) from None
    if name == base_domain or name.endswith("." + base_domain):
        raise ValueError(
            f"{name} is the mesh's base domain or under it, which every node answers itself; "
            "give another domain"
        )
    addresses: list[str] = []
    for part in resolvers.split(","):
        try:
            address = ipaddress.ip_address(part.strip())
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not an IP address of a resolver") from None
        if address.is_unspecified or address.is_multicast:
            raise ValueError(f"{address} cannot be a resolver")
        if str(address) not in addresses:
            addresses.append(str(address))
    if len(addresses) > MAX_RESOLVERS:
        raise ValueError(f"{name} has more than {MAX_RESOLVERS} resolvers; give at most three")
    return name, tuple(addresses)


def check_dns_domains(domains: Sequence[tuple[str, tuple[str, ...]]]) -> DnsDomains:
    """ValueError if a domain is given twice or there are more than MAX_DOMAINS."""
    if len(domains) > MAX_DOMAINS:
        raise ValueError(f"at most {MAX_DOMAINS} split DNS domains can be given")
    seen = [d for d, _ in domains]
    for domain in seen:
        if seen.count(domain) > 1:
            raise ValueError(f"{domain} is given twice; give its resolvers in one --dns-domain")
    return tuple(domains)


async def dns_config(request: web.Request) -> web.Response:
    ctx = context(request)
    await node_of(request)
    return reply(
        {
            "base_domain": ctx.config.base_domain,
            "domains": {domain: list(resolvers) for domain, resolvers in ctx.config.dns_domains},
        }
    )


def add_routes(app: web.Application, api: str) -> None:
    app.router.add_get(f"{api}/node/dns", dns_config)
