"""Mesh names and the node's resolver: ``names`` (the name table), ``resolver`` (the sans-IO
core that answers one query), ``ratelimit`` (per-source token buckets) and ``server`` (the
asyncio UDP and TCP shell that forwards everything else upstream).

Imports point one way: ``server -> resolver -> names``; nothing here imports ``mesh``.
"""
