"""Writing the audit log from a request: :func:`note` records one authentication event
(store/audit.py) with the client's address as its source.

The audit log is a record, not a gate: a database that fails to take an event is logged
(error) and the request goes on as it would have, so a node registered at that moment still
gets its token. Callers pass no secret: name a credential by its id, never its text.
"""

from __future__ import annotations

from aiohttp import web

from .web import context

OK = "ok"
REFUSED = "refused"  # the credentials or the policy said no
FAILED = "failed"  # an authorised request that failed (an unknown node, a bad body)


async def note(
    request: web.Request,
    event: str,
    *,
    result: str,
    method: str | None = None,
    user: str | None = None,
    node_id: int | None = None,
    detail: str | None = None,
) -> None:
    """Record ``event`` from ``request``'s client (see store/audit.py for the fields)."""
    ctx = context(request)
    ctx.metrics.noted(event, method, result)
    try:
        await ctx.store.audit.record(
            event,
            result=result,
            method=method,
            user=user,
            node_id=node_id,
            source=request.remote,
            detail=detail,
        )
    except Exception as e:  # the database failed: the request's own work stands
        ctx.metrics.database_errors.labels("audit").inc()
        ctx.log.error("could not write the audit log", audit_event=event, error=str(e))
