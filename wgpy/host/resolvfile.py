"""/etc/resolv.conf written directly, as Tailscale's "direct" mode does on hosts with neither
systemd-resolved nor resolvconf: the node's resolver becomes the host's only nameserver (it
answers mesh names and forwards the rest to the servers the file named before), and the mesh's
base domain is searched first, so that a short name (``laptop``) resolves.

Pure: these functions read and make the file's text; the mesh node writes it, keeps the text
it replaced (in its state directory, byte for byte) and puts that back at ``wgpy down``, or at
the next ``wgpy up`` after a crash. The first line says which interface wrote the file
(:func:`writer`), so that a second node on the same host leaves a file it did not write alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

__all__ = ["PATH", "render", "search_domains", "writer"]

PATH = "/etc/resolv.conf"
MAX_SEARCH = 6  # glibc before 2.26 read at most six search domains; keep the first six
_HEADER = "# resolv.conf(5) written by wgpy for {interface}; `wgpy down` puts the previous back\n"
_WRITER = re.compile(r"\A# resolv\.conf\(5\) written by wgpy for (\S+);")
_SEARCH = re.compile(r"^\s*(search|domain)\s+(.*)$", re.MULTILINE)
_OPTIONS = re.compile(r"^\s*options\s+.*$", re.MULTILINE)


def writer(text: str) -> str | None:
    """The interface whose node wrote ``text`` (the file's content), or None if wgpy did not."""
    match = _WRITER.match(text)
    return match.group(1) if match else None


def search_domains(text: str) -> list[str]:
    """The search list of ``text``: as glibc, the last ``search`` or ``domain`` line wins."""
    found = _SEARCH.findall(text)
    if not found:
        return []
    return [d.rstrip(".") for d in found[-1][1].split() if d.rstrip(".")]


def render(
    interface: str,
    servers: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    search: Sequence[str],
    previous: str,
) -> str:
    """The file that sends every lookup to ``servers`` (the node's resolver) and searches
    ``search`` (the base domain) before the previous file's search list; the previous file's
    ``options`` lines are kept."""
    if not servers:
        raise ValueError("The resolver has no address to put in resolv.conf; this is a bug.")
    lines = [_HEADER.format(interface=interface)]
    lines += [f"nameserver {server}\n" for server in servers]
    domains: list[str] = []
    for domain in [*search, *search_domains(previous)]:
        if domain.lower() not in (d.lower() for d in domains):
            domains.append(domain)
    if domains:
        lines.append(f"search {' '.join(domains[:MAX_SEARCH])}\n")
    lines += [f"{line.strip()}\n" for line in _OPTIONS.findall(previous)]
    return "".join(lines)
