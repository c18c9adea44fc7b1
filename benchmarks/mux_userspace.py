"""`wgpy-userspace` with the STUN demultiplexer installed on its bind, as a mesh node has it.

    python benchmarks/mux_userspace.py [-f] IFNAME

The same program as `wgpy-userspace` (its command line, its UAPI socket, its data path),
except that every interface it makes gets a :class:`wgpy.nat.stunmux.StunMux` on its bind
(``bind.demux``), as `wgpy up` installs it on a mesh node's WireGuard port: a datagram that
does not start as a WireGuard message goes to the mux. Nothing else changes (no ICE, no
relay, roaming as usual). `benchmarks/ab.py --mux` runs it to measure what the demux costs
the data path; it imports wgpy from PYTHONPATH, so it runs against the revision ab.py
checked out too, where that revision has wgpy.nat.stunmux.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def main(argv: list[str]) -> int:
    import wgpy.cli.userspace as userspace
    from wgpy.nat.stunmux import StunMux

    plain = userspace.Interface

    class MuxedInterface(plain):  # type: ignore[misc, valid-type]
        """An Interface whose bind hands everything that is not WireGuard to a StunMux."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.stun_mux = StunMux(self.bind, asyncio.get_running_loop())

    userspace.Interface = MuxedInterface  # what serve() creates
    return userspace.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
