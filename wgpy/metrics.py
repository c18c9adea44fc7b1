"""Serving Prometheus metrics: ``GET /metrics`` from a registry, on a listener of its own.

The server (wgpy/mesh/server/metrics.py) and the mesh node (wgpy/mesh/client/metrics.py)
each fill a registry; this module only serves one. It imports nothing of wgpy.
"""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["ListenError", "serve", "url_of"]


class ListenError(Exception):
    """The metrics cannot be served where asked; the message is one sentence for the user."""


REGISTRY = web.AppKey("wgpy_metrics_registry", CollectorRegistry)


async def _scrape(request: web.Request) -> web.Response:
    text = generate_latest(request.app[REGISTRY])
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Serve ``GET /metrics`` on ``host:port`` (0: any free port) until the runner's
    cleanup(); ListenError if it cannot listen there."""
    app = web.Application()
    app[REGISTRY] = registry
    app.router.add_get("/metrics", _scrape)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        why = os.strerror(e.errno) if e.errno else str(e)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ListenError(
            f"cannot serve metrics on {where}: {why}; choose another --metrics-listen address"
        ) from None
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def url_of(runner: web.AppRunner) -> str:
    """Where the runner's first listener is scraped, e.g. ``http://127.0.0.1:9090/metrics``."""
    host, port = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/metrics"
