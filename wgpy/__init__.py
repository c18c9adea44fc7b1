"""wgpy: a userspace WireGuard implementation and mesh VPN in Python."""

__version__ = "0.1.0"
