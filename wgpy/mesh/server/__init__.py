"""The mesh coordination server (``wgpy server``): the HTTP API of docs/mesh-api.md over a
SQLite or PostgreSQL store, with map streams pushed to nodes as deltas.

| module | concept |
| --- | --- |
| ``errors`` | the 4xx errors every layer raises, one sentence each |
| ``auth`` | credentials (``wgpy_<kind>_<id>_<secret>``), hashing, rate limits |
| ``schemas`` | request bodies: JSON objects with known fields of checked types |
| ``policy`` | the ACL document: parse, validate, evaluate (pure) |
| ``models`` | users, nodes, keys as records, and their JSON |
| ``db`` | SQLite and PostgreSQL behind one transaction interface; change notification |
| ``migrations`` | numbered schema migrations, recorded in the database |
| ``store`` | the data model: repositories (users, keys, policy, nodes, ice, streams) over one db |
| ``netmap`` | the in-memory index of nodes: full maps and per-change deltas (pure) |
| ``hub`` | open map streams, change batching, expiry timers, ephemeral grace |
| ``web`` | what every route shares: request context, JSON replies, bodies, credential checks |
| ``app``, ``admin`` | the routes: nodes (and the app joining all routes), admins |
| ``stun`` | the STUN responder: Binding requests answered, hostile datagrams counted |
| ``nat`` | what ``/node/nat`` says: STUN addresses, TURN relays and credentials (coturn's) |
| ``dns_api`` | what ``/node/dns`` says: the base domain and the admin's split DNS domains |
| ``service`` | configuration and the server's life cycle |
"""

from .config import ServerConfig
from .service import MeshServer

__all__ = ["MeshServer", "ServerConfig"]
