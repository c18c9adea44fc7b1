"""Mesh names and the node's resolver: ``names`` (the name table), ``resolver`` (the sans-IO
core that answers one query), ``ratelimit`` (per-source token buckets), ``upstreams`` (the
host's resolvers, from resolv.conf) and ``server`` (the asyncio UDP and TCP shell that
forwards everything else upstream).

Imports point one way: ``server -> resolver -> names``; nothing here imports ``mesh`` or
``host`` (the mesh server and client import this package).
"""
