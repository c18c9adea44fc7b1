"""The cross-platform configuration protocol (UAPI) that ``wg`` speaks to a userspace
WireGuard: the sans-IO protocol, the daemon's control socket, and the command line's client."""
