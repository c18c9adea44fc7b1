"""The mesh lab (mesh_lab.py) with every way to join: a `wgpy server` with the operator's
machine CA (`wgpy admin ca init`, `--machine-ca`) and, inside :meth:`AuthMesh.sso`, single
sign-on through the real OpenID provider of tests/oidc on the hub's loopback; machine
certificates made the way a device gets one (`wgpy machine csr` on the node, `wgpy admin
machines issue --csr` by the admin); `wgpy up` in the background, the login URL it prints,
and a person at the pages (login_walk.py) or at the provider (test_oidc_login.browse).
tests/interop/test_auth_e2e.py and `make bench-login` (benchmarks/login.py) use it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oidc.provider import OidcClient, OidcProvider, start_provider

from .mesh_lab import HUB4, NODE_ENV, SERVER_PORT, WGPY, Mesh, MeshNode
from .netns import Process, run, wait_for
from .test_oidc_login import browse

__all__ = ["AuthMesh", "browse", "login_url"]

TESTS = Path(__file__).resolve().parents[1]
URL = re.compile(r"(http://\S+/login/([A-Za-z0-9_-]+))\s")
UP = re.compile(r" is up as ([\d.]+), ([0-9a-f:]+)")
OIDC_DOMAINS = "example.com"  # the provider's alice may join, its bob (other.test) not


class AuthMesh(Mesh):
    """The lab's mesh whose server has the operator's machine CA and, within :meth:`sso`,
    single sign-on (``oidc_args``)."""

    oidc_args: tuple[str, ...] = ()
    client: OidcClient | None = None

    def start_server(self, replica: int = 0) -> Process:
        ca_dir = self.workdir / "ca"
        if not (ca_dir / "ca.crt").exists():
            run([WGPY, "admin", "ca", "init", "--dir", str(ca_dir), "--name", "lab ops"])
        process = self.hub.spawn(
            [WGPY, "server", "--listen", f"{HUB4}:{SERVER_PORT + replica}",
             "--state-dir", str(self.server_state), "--machine-ca", str(ca_dir / "ca.crt"),
             *self.oidc_args],
            log=f"server{replica}",
        )  # fmt: skip
        self.servers[replica] = process
        wait_for(
            lambda: "listening on" in process.output() or not process.alive,
            timeout=30,
            what="the server to listen",
        )
        assert process.alive, process.output()[-3000:]
        return process

    @contextmanager
    def sso(self) -> Iterator[OidcProvider]:
        """The OpenID provider runs in the hub (its issuer on 127.0.0.1) and the server is
        started again with it until the block ends."""
        self.client = OidcClient.new(f"{self.url()}/oidc/callback")
        with start_provider(
            self.workdir / "oidc", [self.client], host="127.0.0.1", wrap=self.hub.exec_args([])
        ) as provider:
            secret_file = self.workdir / "oidc-secret"
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.client.client_secret)
            self.stop_server(0)
            self.oidc_args = (
                *("--oidc-issuer", provider.issuer, "--oidc-client-id", self.client.client_id),
                *("--oidc-client-secret", str(secret_file)),
                *("--oidc-allowed-domains", OIDC_DOMAINS),
            )
            self.start_server(0)
            yield provider

    def create_user(self, name: str, password: str | None = None) -> None:
        extra = ["--password", "--password-stdin"] if password is not None else []
        self.hub.run(
            [WGPY, "admin", "--server", self.url(), "--api-key", self.api_key,
             "users", "create", name, *extra],
            input=None if password is None else password + "\n",
            timeout=30,
        )  # fmt: skip

    def set_policy(self, document: object) -> None:
        path = self.workdir / "policy.json"
        path.write_text(json.dumps(document))
        self.admin("policy", "set", str(path))

    def machine_cert(self, node: MeshNode) -> tuple[Path, Path]:
        """A machine key made on ``node`` (`wgpy machine csr`, in its namespace) and the
        certificate the admin signs for its request; (certificate, key)."""
        key = node.state_dir / "machine.key"
        csr = self.workdir / f"{node.name}.csr"
        node.ns.run([WGPY, "machine", "csr", node.name, "--key", str(key), "--out", str(csr)])
        issued = self.workdir / "issued"
        self.hub.run(
            [WGPY, "admin", "--server", self.url(), "--api-key", self.api_key, "machines",
             "issue", node.name, "--csr", str(csr), "--ca-dir", str(self.workdir / "ca"),
             "--out", str(issued)],
            timeout=30,
        )  # fmt: skip
        mine = sorted(p.name for p in issued.iterdir() if p.stem == node.name)
        assert mine == [f"{node.name}.crt"], f"the admin holds the certificate only, not {mine}"
        assert key.stat().st_mode & 0o777 == 0o600
        return issued / f"{node.name}.crt", key

    def spawn_up(self, node: MeshNode, *extra: str) -> Process:
        """`wgpy up --login-server URL` on ``node`` in the background (``extra``: an auth key,
        a machine certificate)."""
        return node.ns.spawn(
            [WGPY, "up", "--login-server", self.url(), "--state-dir", str(node.state_dir),
             "--interface", node.ifname, "--hostname", node.name, *extra],
            log=f"up-{node.name}",
            env=NODE_ENV,
        )  # fmt: skip

    def came_up(self, node: MeshNode, up: Process, timeout: float = 60) -> None:
        """``up`` exited 0: record the node's addresses, key and id."""
        assert up.wait(timeout) == 0, up.output()
        m = UP.search(up.output())
        assert m, up.output()
        node.joined, node.ipv4, node.ipv6 = True, m[1], m[2]
        me = self.server_nodes()[node.name]
        node.public_key, node.id = me["public_key"], me["id"]

    def walk(self, url: str, name: str, password: str, *options: str) -> tuple[int, dict[str, Any]]:
        """A person at the pages (login_walk.py, in the server's namespace): its exit status
        and what it printed."""
        path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
        result = self.hub.run(
            ["env", f"PYTHONPATH={path}", sys.executable, "-m", "interop.login_walk", url, name,
             *options],
            input=password + "\n",
            check=False,
            timeout=60,
        )  # fmt: skip
        walked: dict[str, Any] = json.loads(result.stdout or "{}")
        return result.returncode, walked


def login_url(up: Process, interval: float = 0.05) -> tuple[str, str]:
    """The URL ``up`` printed and the login request's id in it."""
    wait_for(
        lambda: URL.search(up.output()) is not None or not up.alive,
        timeout=30,
        interval=interval,
        what="`wgpy up` to print the login URL",
    )
    m = URL.search(up.output())
    assert m is not None, up.output()
    return m[1], m[2]
