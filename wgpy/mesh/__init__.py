"""The mesh: a coordination server (``wgpy.mesh.server``) that hands WireGuard nodes each
other's public keys, addresses and endpoints under a policy, and the node side that follows
it (``wgpy.mesh.client``). The API between them: docs/mesh-api.md."""
