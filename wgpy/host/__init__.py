"""The host's network configuration, as wg-quick does it: addresses, links, routes, policy
rules, nftables, sysctl, resolvconf, systemd-resolved (resolved.py, split DNS) and
/etc/resolv.conf itself (resolvfile.py, the mesh node's "direct" DNS mode).

Each module builds the commands (argv lists, and the scripts some of them read on stdin) from
plain values, and runs nothing: ``wgpy up CONFIG`` (:mod:`wgpy.cli.quick`) and the mesh
node (:mod:`wgpy.mesh.client.system`) run them with :mod:`wgpy.host.run`, and tests read
them. Subnet routes and exit nodes are built from the same pieces (a route in a table, the
fwmark rules, the nftables table, a sysctl).

Imports point down only: the command line and the mesh client import this package; it
imports nothing of theirs.
"""

from __future__ import annotations

from .run import HostNetworkError

__all__ = ["HostNetworkError"]
