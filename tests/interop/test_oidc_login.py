"""A node joins by single sign-on, end to end in network namespaces: a real `wgpy server
--oidc-issuer ...` in the hub namespace, the real OpenID provider beside it (on the hub's
loopback, as a provider on the same host would be: the server accepts plain HTTP only
there), and a node in a namespace of its own running `wgpy up --login-server URL` without an
auth key. The person's browser (headless: the provider's forms walked with aiohttp, in the
hub namespace where both the server and the provider are reachable) opens the URL the node
printed, signs in at the provider as alice, confirms, and the node comes up as alice's and
reaches her other node. A person the rules do not allow (another email domain) is refused
with a page, and that node stays waiting with nothing registered.

Needs the node side of the interactive login (i12-flow: `wgpy up --login-server` without a
key, `/api/v1/login/start`); skipped on a tree without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oidc.provider import OidcClient, start_provider

from .mesh_lab import HUB4, NODE_ENV, SERVER_PORT, WGPY, Mesh, MeshNode
from .netns import PYTHON, Lab, Process, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("wgpy.mesh.client.login") is None,
        reason="the node side of the interactive login (wgpy up without a key) is not here",
    ),
]

TESTS = Path(__file__).resolve().parents[1]
URL = re.compile(r"(http://\S+/login/([A-Za-z0-9_-]+))\s")

# The person's browser: /oidc/start for the request, the provider's login and consent
# forms, the callback, the confirmation. Prints the titles of the pages it ended on.
BROWSER = """
import asyncio, json, sys
import aiohttp
from oidc.forms import sign_in
from mesh.webpages import parse

async def main(server, request_id, login):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{server}/oidc/start?request={request_id}",
                            allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            authorize = r.headers["Location"]
        landing, _ = await sign_in(http, authorize, login=login,
                                   stop_at=f"{server}/oidc/callback")
        async with http.get(landing, allow_redirects=False) as r:
            page = parse(r.status, await r.text(), r.headers)
        out = {"status": page.status, "title": page.title, "message": page.message}
        if page.status == 200:
            form = page.form(f"/oidc/approve/{request_id}")
            async with http.post(server + form.action, data={**form.fields, "answer": "connect"},
                                 allow_redirects=False) as r:
                done = parse(r.status, await r.text(), r.headers)
            out["done"] = {"status": done.status, "title": done.title, "message": done.message}
        print(json.dumps(out))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
def mesh(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    mesh = Mesh(lab)
    yield mesh
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== node logs\n{mesh.logs()}")


def restart_with_oidc(mesh: Mesh, issuer: str, client: OidcClient, *extra: str) -> None:
    """The hub's server again, now with single sign-on through ``issuer``."""
    secret = mesh.workdir / "oidc-secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(client.client_secret)
    mesh.stop_server(0)
    listen = f"{HUB4}:{SERVER_PORT}"
    process = mesh.hub.spawn(
        [WGPY, "server", "--listen", listen, "--state-dir", str(mesh.server_state),
         "--oidc-issuer", issuer, "--oidc-client-id", client.client_id,
         "--oidc-client-secret", str(secret), *extra],
        log="server-oidc",
    )  # fmt: skip
    mesh.servers[0] = process
    wait_for(
        lambda: "listening on" in process.output() or not process.alive,
        timeout=30,
        what="the server with OIDC to listen",
    )
    assert process.alive, process.output()[-3000:]


def spawn_up(mesh: Mesh, node: MeshNode) -> Process:
    return node.ns.spawn(
        [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(node.state_dir),
         "--interface", node.ifname, "--hostname", node.name],
        log=f"up-{node.name}",
        env=NODE_ENV,
    )  # fmt: skip


def login_url(up: Process) -> tuple[str, str]:
    wait_for(
        lambda: URL.search(up.output()) is not None or not up.alive,
        timeout=30,
        what="`wgpy up` to print the login URL",
    )
    m = URL.search(up.output())
    assert m is not None, up.output()
    return m.group(1), m.group(2)


def browse(mesh: Mesh, request_id: str, login: str) -> dict[str, object]:
    pythonpath = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    result = mesh.hub.run(
        ["env", f"PYTHONPATH={pythonpath}", PYTHON, "-c", BROWSER, mesh.url(), request_id, login],
        timeout=60,
    )
    seen: dict[str, object] = json.loads(result.stdout)
    return seen


def test_a_node_joins_by_oidc_and_a_disallowed_person_is_refused(mesh: Mesh) -> None:
    client = OidcClient.new(f"{mesh.url()}/oidc/callback")
    with start_provider(
        mesh.workdir / "oidc", [client], host="127.0.0.1", wrap=mesh.hub.exec_args([])
    ) as provider:
        restart_with_oidc(mesh, provider.issuer, client, "--oidc-allowed-domains", "example.com")
        # A server of the ops team (an auth key); the policy lets the eng group reach it.
        b = mesh.join("b", auth_key=mesh.auth_key("ops"))[0]
        policy = mesh.workdir / "policy.json"
        policy.write_text(
            json.dumps({"acls": [{"action": "accept", "src": ["group:eng"], "dst": ["user:ops"]}]})
        )
        mesh.admin("policy", "set", str(policy))

        # alice@example.com (groups eng, admins at the provider) connects her laptop.
        a = mesh.add_node("a")
        started = time.monotonic()
        up = spawn_up(mesh, a)
        _, request_id = login_url(up)
        shown = time.monotonic() - started
        assert "a" not in mesh.server_nodes()  # nothing registered before she confirms
        browsing = time.monotonic()
        seen = browse(mesh, request_id, "alice")
        assert (seen["status"], seen["title"]) == (200, "Connect this device?"), seen
        done = seen["done"]
        assert isinstance(done, dict) and done["title"] == "Device connected", seen
        assert up.wait(60) == 0, up.output()
        up_done = time.monotonic() - browsing
        me = mesh.server_nodes()["a"]
        assert me["user"] == "alice" and me["expires_at"]  # an OIDC node expires (180 d)
        m = re.search(r" is up as ([\d.]+), ([0-9a-f:]+)", up.output())
        assert m, up.output()
        a.joined, a.ipv4, a.ipv6 = True, m.group(1), m.group(2)
        a.public_key, a.id = me["public_key"], me["id"]
        mesh.wait_ping(a, b)  # group:eng (from her ID token) -> user:ops
        connected = time.monotonic() - browsing
        print(
            f"\nOIDC login figures: URL shown {shown:.2f} s after `up` started; `up` done "
            f"{up_done:.2f} s and first ping over the mesh {connected:.2f} s after the browser "
            "opened /oidc/start (sign-in at the provider and confirmation included)"
        )

        # bob@other.test: refused with a page; his node keeps waiting, nothing registered.
        c = mesh.add_node("c")
        up_c = spawn_up(mesh, c)
        _, other_id = login_url(up_c)
        seen = browse(mesh, other_id, "bob")
        assert (seen["status"], seen["title"]) == (403, "Sign-in refused"), seen
        assert 'domain "other.test" may not join' in str(seen["message"])
        assert "c" not in mesh.server_nodes()
        assert "bob" not in {u["name"] for u in mesh.admin("users", "list")}
        assert up_c.alive  # still waiting for someone allowed
        up_c.stop()
