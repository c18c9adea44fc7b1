"""The asyncio shell around the sans-IO core: TUN, UDP, the interface (its control socket:
wgpy.uapi)."""
