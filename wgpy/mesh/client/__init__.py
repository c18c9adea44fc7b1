"""The mesh node: joins a coordination server and keeps a WireGuard interface in step with
its map (docs/mesh-api.md).

| module | concept |
| --- | --- |
| ``state`` | the state directory: node key and token (0600), settings, PID file |
| ``api`` | the HTTP client and the node endpoints; errors as sentences |
| ``admin`` | the admin endpoints as typed calls |
| ``netmap`` | the server's NODE, PEER (ICE candidates too) and NAT settings, checked and typed |
| ``backoff`` | exponential backoff with jitter for reconnecting |
| ``system`` | the host's side: addresses, routes and local endpoints (``wgpy.host``'s ``ip``) |
| ``reconcile`` | a map message and the node's state in, the operations to apply out (no I/O) |
| ``node`` | the running node: login, interface, the map stream, the operations applied |
| ``daemon`` | the node as a process (interface, control socket, signals); starting it, its report |
"""

from .admin import AdminClient
from .api import ApiError, MeshClientError, NodeClient, ServerUnreachable
from .backoff import Backoff
from .node import MeshError, MeshNode, NodeConfig
from .state import DEFAULT_STATE_DIR, StateDir, StateError

__all__ = [
    "DEFAULT_STATE_DIR",
    "AdminClient",
    "ApiError",
    "Backoff",
    "MeshClientError",
    "MeshError",
    "MeshNode",
    "NodeClient",
    "NodeConfig",
    "ServerUnreachable",
    "StateDir",
    "StateError",
]
