"""NAT traversal, the node's side: STUN and TURN ChannelData on the WireGuard port
(:mod:`.stunmux`), where this node is as others see it (:mod:`.discovery`), and ICE.

Imports point one way: this package uses :mod:`wgpy.endpoint`, :mod:`wgpy.log`,
:mod:`wgpy.device` (the bind) and :mod:`wgpy.protocol`; the mesh client and the command line
use it. aioice (STUN messages, candidates) is kept at this edge.
"""
