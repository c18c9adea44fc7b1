"""The admin endpoints of docs/mesh-api.md as typed calls (``wgpy admin`` is built on them).

Answers are taken as the server gives them: a list is found whether it comes bare or in an
object (``{"users": [...]}``), a single record whether it comes bare or in an object
(``{"user": {...}}``). Names and ids are quoted as one path segment each.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .api import ApiError, Client

__all__ = ["AdminClient"]

Record = dict[str, Any]


def _segment(value: str) -> str:
    return quote(value, safe="")


def _items(reply: Any, key: str) -> list[Record]:
    """The list of records in an answer: the answer itself, or its ``key`` member (or its
    only list member)."""
    if isinstance(reply, dict):
        reply = reply.get(key, next((v for v in reply.values() if isinstance(v, list)), []))
    if not isinstance(reply, list):
        return []
    return [item for item in reply if isinstance(item, dict)]


def _one(reply: Any, key: str) -> Record:
    """The record in an answer: its ``key`` member, or the answer itself."""
    if isinstance(reply, dict) and isinstance(reply.get(key), dict):
        return dict(reply[key])
    return dict(reply) if isinstance(reply, dict) else {}


def _created(reply: Any, prefix: str, name: str, what: str) -> tuple[str, Record]:
    """A new credential's secret (shown once) and its record without it."""
    secret = _find_secret(reply, prefix)
    if secret is None:
        raise ApiError(200, f"the server's answer holds no {what}")
    record = _one(reply, name)
    record.pop("key", None)
    return secret, record


def _find_secret(value: Any, prefix: str) -> str | None:
    """The first string in ``value`` (searched through) that starts with ``prefix``."""
    if isinstance(value, str):
        return value if value.startswith(prefix) else None
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        found = _find_secret(child, prefix)
        if found is not None:
            return found
    return None


class AdminClient(Client):
    """The admin API with an admin API key as ``token``."""

    async def call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        """``method`` on ``/api/v1`` + ``path``; the decoded answer."""
        return await self.request(method, "/api/v1" + path, body, params=params)

    # -- users

    async def create_user(self, name: str, password: str | None = None) -> Record:
        body: Record = {"name": name}
        if password is not None:
            body["password"] = password
        return _one(await self.call("POST", "/users", body), "user")

    async def set_password(self, name: str, password: str) -> None:
        await self.call("POST", f"/users/{_segment(name)}/password", {"password": password})

    async def reset_totp(self, name: str) -> None:
        await self.call("POST", f"/users/{_segment(name)}/totp/reset", {})

    async def enrol_totp(self, name: str) -> Record:
        """An admin's TOTP enrolment of user ``name``: {"user", "secret", "uri"}."""
        reply = await self.call("POST", f"/users/{_segment(name)}/totp/enrol", {})
        return dict(reply) if isinstance(reply, dict) else {}

    async def list_users(self) -> list[Record]:
        return _items(await self.call("GET", "/users"), "users")

    async def delete_user(self, name: str) -> None:
        await self.call("DELETE", f"/users/{_segment(name)}")

    # -- pre-auth keys

    async def create_preauthkey(
        self,
        *,
        user: str | None = None,
        reusable: bool = False,
        ephemeral: bool = False,
        expiration_seconds: int | None = None,
        tags: list[str] | None = None,
    ) -> tuple[str, Record]:
        """A new pre-auth key (its secret, shown once) and its record. Only the options that
        are set are sent; the server fills in its defaults."""
        body: Record = {"reusable": reusable, "ephemeral": ephemeral}
        if user is not None:
            body["user"] = user
        if expiration_seconds is not None:
            body["expiration_seconds"] = expiration_seconds
        if tags is not None:
            body["tags"] = tags
        reply = await self.call("POST", "/preauthkeys", body)
        return _created(reply, "wgpy_auth_", "preauthkey", "pre-auth key")

    async def list_preauthkeys(self) -> list[Record]:
        return _items(await self.call("GET", "/preauthkeys"), "preauthkeys")

    async def expire_preauthkey(self, key_id: str) -> None:
        await self.call("POST", f"/preauthkeys/{_segment(key_id)}/expire", {})

    # -- nodes

    async def list_nodes(self, user: str | None = None) -> list[Record]:
        params = {"user": user} if user else None
        return _items(await self.call("GET", "/nodes", params=params), "nodes")

    async def expire_node(self, node_id: str) -> None:
        await self.call("POST", f"/nodes/{_segment(node_id)}/expire", {})

    async def set_node_expiry(self, node_id: str, seconds: int | None) -> Record:
        """The node's key expires ``seconds`` from now (None: never)."""
        body: Record = {"expiry": "never" if seconds is None else seconds}
        return _one(await self.call("POST", f"/nodes/{_segment(node_id)}/expiry", body), "node")

    async def delete_node(self, node_id: str) -> None:
        await self.call("DELETE", f"/nodes/{_segment(node_id)}")

    async def rename_node(self, node_id: str, hostname: str) -> Record:
        reply = await self.call(
            "POST", f"/nodes/{_segment(node_id)}/rename", {"hostname": hostname}
        )
        return _one(reply, "node")

    async def tag_node(self, node_id: str, tags: list[str]) -> Record:
        reply = await self.call("POST", f"/nodes/{_segment(node_id)}/tags", {"tags": tags})
        return _one(reply, "node")

    # -- subnet and exit routes

    async def list_routes(self, node_id: str | None = None) -> list[Record]:
        params = {"node": node_id} if node_id else None
        return _items(await self.call("GET", "/routes", params=params), "routes")

    async def approve_routes(self, node_id: str, prefixes: list[str]) -> list[Record]:
        path = f"/nodes/{_segment(node_id)}/routes/approve"
        return _items(await self.call("POST", path, {"routes": prefixes}), "routes")

    async def revoke_routes(self, node_id: str, prefixes: list[str]) -> list[Record]:
        """Take back the approval of ``prefixes`` (all of the node's when empty)."""
        path = f"/nodes/{_segment(node_id)}/routes/revoke"
        return _items(await self.call("POST", path, {"routes": prefixes}), "routes")

    # -- login requests (nodes waiting for a person to approve them)

    async def list_login_requests(self, every: bool = False) -> list[Record]:
        params = {"all": "1"} if every else None
        return _items(await self.call("GET", "/login-requests", params=params), "login_requests")

    async def approve_login(self, request_id: str, user: str) -> Record:
        reply = await self.call(
            "POST", f"/login-requests/{_segment(request_id)}/approve", {"user": user}
        )
        return _one(reply, "node")

    async def refuse_login(self, request_id: str, message: str | None = None) -> Record:
        body: Record = {} if message is None else {"message": message}
        reply = await self.call("POST", f"/login-requests/{_segment(request_id)}/refuse", body)
        return _one(reply, "login_request")

    # -- policy

    async def get_policy(self) -> tuple[Any, Any]:
        """The policy document (None: the default policy) and its version."""
        reply = await self.call("GET", "/policy")
        if isinstance(reply, dict) and "policy" in reply:
            return reply["policy"], reply.get("version")
        return reply, None

    async def set_policy(self, document: Any) -> Any:
        """Replace the policy; the new version if the server says it."""
        reply = await self.call("PUT", "/policy", document)
        return reply.get("version") if isinstance(reply, dict) else None

    async def check_policy(self, document: Any) -> None:
        await self.call("POST", "/policy/check", document)

    async def delete_policy(self) -> Any:
        """Back to the default policy; the new version if the server says it."""
        reply = await self.call("DELETE", "/policy")
        return reply.get("version") if isinstance(reply, dict) else None

    # -- admin API keys

    async def list_api_keys(self) -> list[Record]:
        return _items(await self.call("GET", "/apikeys"), "apikeys")

    async def create_api_key(self, expiration_seconds: int | None = None) -> tuple[str, Record]:
        """A new admin API key (its secret, shown once) and its record."""
        body: Record = {}
        if expiration_seconds is not None:
            body["expiration_seconds"] = expiration_seconds
        reply = await self.call("POST", "/apikeys", body)
        return _created(reply, "wgpy_api_", "apikey", "API key")

    async def expire_api_key(self, key_id: str) -> Record:
        return _one(await self.call("POST", f"/apikeys/{_segment(key_id)}/expire", {}), "apikey")

    # -- machine certificates

    async def list_machines(self) -> list[Record]:
        return _items(await self.call("GET", "/machines"), "machines")

    async def add_machine(self, certificate_pem: str) -> Record:
        """Record a certificate the server's machine CA issued (the server checks it)."""
        return _one(
            await self.call("POST", "/machines", {"certificate": certificate_pem}), "machine"
        )

    async def revoke_machine(self, name: str, serial: str | None = None) -> list[Record]:
        body: Record = {} if serial is None else {"serial": serial}
        reply = await self.call("POST", f"/machines/{_segment(name)}/revoke", body)
        return _items(reply, "machines")

    # -- the audit log

    async def list_audit(
        self, *, limit: int | None = None, since: float | None = None, user: str | None = None
    ) -> list[Record]:
        """Audit events, oldest first: the newest ``limit``, at or after ``since`` (seconds
        since the epoch), of ``user``."""
        params: dict[str, str] = {}
        if limit is not None:
            params["limit"] = str(limit)
        if since is not None:
            params["since"] = f"{since:.3f}"
        if user is not None:
            params["user"] = user
        return _items(await self.call("GET", "/audit", params=params), "events")
