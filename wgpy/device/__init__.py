"""The asyncio shell around the sans-IO core: TUN, UDP, the control socket, the interface."""
