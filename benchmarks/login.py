"""`make bench-login`: how long joining a wgpy mesh takes, by each way to join.

The mesh lab of the tests in network namespaces (tests/interop/auth_lab.py: a hub with a
real `wgpy server`, nodes on a bridge) with every way to join set up once: the operator's
machine CA (`wgpy admin ca init`, `--machine-ca`), single sign-on through the real OpenID
provider of tests/oidc (oidc-provider from npm, on the hub's loopback), a policy that lets
every node reach every other and requires a machine certificate of user secure's nodes, and
one peer node (auth key). Then N trials of each way, interleaved, each a fresh node in a new
namespace (new keys and state directory):

- password: `wgpy up --login-server URL` prints a URL; a person (tests/interop/login_walk.py,
  headless, in the hub) signs in with a password, enrols TOTP (a new user each trial: the
  first sign-in), connects the device;
- oidc: the same, the person signing in at the provider (alice, a headless walk of its
  login and consent forms);
- admin: the URL printed, an admin approves it (`wgpy admin login approve ID --user ops`);
- machine: `wgpy up --auth-key KEY --machine-cert FILE --machine-key FILE`, the certificate
  issued beforehand for a request made on the node (`wgpy machine csr`; untimed).

From the start of `wgpy up`: (a) the URL printed (polled every 10 ms), (b) `wgpy up`
returned (the node is up), (c) the first echo reply the node gets from the peer's mesh
address (`ping -D -i 0.02`, started before `wgpy up`). Also the person's part: from the URL
printed to the walk (or the admin's command) done. Afterwards the node goes down and is
deleted, so every trial joins a mesh of the same size.

Prints a line per trial, then the table; writes benchmarks/results/login-<time>.{json,md}
(login-latest.* link to the newest). Asserts nothing about speed. Everything it starts goes
when it ends, also on Ctrl-C or SIGTERM. Needs root and `make setup` (the provider).

    .venv/bin/python benchmarks/login.py [--trials 5] [--methods password,oidc,admin,machine]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/interop imports tests/oidc as "oidc"
sys.path.insert(0, str(ROOT / "benchmarks"))

from login_figures import METHODS, markdown, summarize  # noqa: E402
from report import RESULTS, first_reply, header, ping_replies, say, stop_on_sigterm, write  # noqa: E402

from tests.interop.auth_lab import AuthMesh, browse, login_url  # noqa: E402
from tests.interop.mesh_lab import HUB4, MeshNode  # noqa: E402
from tests.interop.netns import CommandError, Lab, Process  # noqa: E402

PING_INTERVAL = 0.02  # seconds between the node's echo requests: the resolution of (c)
URL_POLL = 0.01  # seconds between looks at `wgpy up`'s output for the URL
UP_TIMEOUT = 60.0  # seconds for `wgpy up` to return
PING_TIMEOUT = 20.0  # seconds after `wgpy up` returned without a reply: the trial failed
PASSWORD = "a long bench passphrase"


class TrialFailed(RuntimeError):
    pass


class Bench:
    """The lab, the provider and the server, built once (inside :meth:`AuthMesh.sso`)."""

    def __init__(self, mesh: AuthMesh, trials: int) -> None:
        self.mesh = mesh
        for user in ("peer", "ops", "secure"):
            mesh.create_user(user)
        for i in range(1, trials + 1):
            mesh.create_user(f"pw{i}", PASSWORD)
        mesh.set_policy(
            {
                "acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}],
                "machineCertificates": {"require": ["user:secure"]},
            }
        )
        self.machine_key = mesh.admin("preauthkeys", "create", "--user", "secure", "--reusable")[
            "key"
        ]
        self.peer = mesh.add_node("peer")
        mesh.up(self.peer, auth_key=mesh.auth_key("peer"))

    def trial(self, method: str, i: int) -> dict[str, Any]:
        mesh = self.mesh
        node = mesh.add_node(f"{method[:2]}{i}")
        # the requests to the peer go somewhere until the mesh route is there (ping gives up
        # at once when it has no route at all)
        node.ns.ip("route", "add", "default", "via", HUB4)
        extra: list[str] = []
        if method == "machine":
            cert, key = mesh.machine_cert(node)
            extra = ["--auth-key", self.machine_key, "--machine-cert", str(cert),
                     "--machine-key", str(key)]  # fmt: skip
        figures: dict[str, Any] = {}
        pinger = node.ns.spawn(
            ["ping", "-n", "-D", "-i", f"{PING_INTERVAL:g}", "-W", "1", "-c",
             str(int(2 * UP_TIMEOUT / PING_INTERVAL)), self.peer.ipv4],
            log="ping",
        )  # fmt: skip
        up: Process | None = None
        try:
            time.sleep(0.1)  # the pinger runs before `wgpy up` starts
            start_wall, start = time.time(), time.monotonic()
            up = mesh.spawn_up(node, *extra)
            returned: list[float] = []
            waiter = threading.Thread(target=_stamp_exit, args=(up, returned), daemon=True)
            waiter.start()
            if METHODS[method].url:
                url, request_id = login_url(up, interval=URL_POLL)
                figures["url_s"] = time.monotonic() - start
                self.person(method, i, url, request_id)
                figures["act_s"] = time.monotonic() - start - figures["url_s"]
            waiter.join(UP_TIMEOUT)
            if not returned:
                raise TrialFailed(f"`wgpy up` did not return within {UP_TIMEOUT:g} s")
            if up.returncode != 0:
                raise TrialFailed(f"`wgpy up` failed: {up.output().strip()[-300:]}")
            figures["up_s"] = returned[0] - start
            node.joined = True
            deadline = time.monotonic() + PING_TIMEOUT
            while (reply := first_reply(ping_replies(pinger.output()))) is None:
                if time.monotonic() > deadline:
                    raise TrialFailed(f"no reply from the peer within {PING_TIMEOUT:g} s")
                time.sleep(0.05)
            figures["ping_s"] = reply.received - start_wall
        except (TrialFailed, AssertionError, TimeoutError, CommandError, OSError) as e:
            figures["error"] = self.scrub(str(e).strip().splitlines() or [type(e).__name__])
        except subprocess.SubprocessError as e:
            figures["error"] = self.scrub([str(e)])
        finally:
            pinger.stop()
            if up is not None:
                up.stop()
            self.forget(node)
        return figures

    def scrub(self, lines: list[str]) -> str:
        """An error's first line for the results, without the admin API key (a failed
        command names its arguments)."""
        return lines[0].replace(self.mesh.api_key, "API-KEY")[:300]

    def person(self, method: str, i: int, url: str, request_id: str) -> None:
        """Who acts on the URL: a person at the pages or the provider, or an admin."""
        if method == "password":
            status, walked = self.mesh.walk(url, f"pw{i}", PASSWORD)
            if status != 0:
                raise TrialFailed(f"the walk of the pages failed: {walked.get('error')}")
        elif method == "oidc":
            seen = browse(self.mesh, request_id, "alice")
            done = seen.get("done")
            if not isinstance(done, dict) or done.get("title") != "Device connected":
                raise TrialFailed(f"the single sign-on ended at {seen}")
        else:
            self.mesh.admin("login", "approve", "--user", "ops", "--", request_id)

    def forget(self, node: MeshNode) -> None:
        """`wgpy down`, then the node deleted on the server: the next trial's mesh is the
        same size."""
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            if node.daemon_pid() is not None:
                self.mesh.down(node)
        with contextlib.suppress(AssertionError, subprocess.SubprocessError, KeyError):
            record = self.mesh.server_nodes().get(node.name)
            if record is not None:
                self.mesh.admin("nodes", "delete", str(record["id"]))


def _stamp_exit(up: Process, returned: list[float]) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        up.popen.wait(UP_TIMEOUT)
        returned.append(time.monotonic())


def describe(figures: dict[str, Any]) -> str:
    if figures.get("error"):
        return f"failed: {figures['error']}"
    labels = (("url_s", "URL"), ("act_s", "person"), ("up_s", "up"), ("ping_s", "first ping"))
    return ", ".join(f"{label} {figures[k]:.2f} s" for k, label in labels if k in figures)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="per way to join (default 5)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of: {', '.join(METHODS)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if unknown := [m for m in methods if m not in METHODS]:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if not 1 <= args.trials <= 50:
        parser.error("--trials must be from 1 to 50")
    if os.geteuid() != 0:
        print("bench-login: this creates network namespaces; run it as root", file=sys.stderr)
        return 1
    stop_on_sigterm()
    command = "make bench-login" if not argv else "benchmarks/login.py " + " ".join(argv)
    started = datetime.datetime.now(datetime.UTC)
    trials: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    total, done = len(methods) * args.trials, 0
    with tempfile.TemporaryDirectory(prefix="wgpy-bench-login-") as tmp:
        try:
            with Lab(Path(tmp)) as lab:
                say("building the lab: wgpy server with a machine CA, the OpenID provider")
                mesh = AuthMesh(lab)
                with mesh.sso():
                    bench = Bench(mesh, args.trials)
                    for i in range(1, args.trials + 1):
                        for method in methods:
                            done += 1
                            figures = {"trial": i, **bench.trial(method, i)}
                            trials[method].append(figures)
                            say(f"[{done}/{total}] {method} trial {i}: {describe(figures)}")
        except KeyboardInterrupt:
            say("interrupted: cleaned up, nothing written")
            return 130
    result: dict[str, Any] = {
        **header(started, command, args.trials),
        "settings": {"ping_interval_s": PING_INTERVAL, "url_poll_s": URL_POLL},
        "methods": {m: summarize(m, t) for m, t in trials.items()},
        "per_trial": trials,
    }
    write(args.out, "login", started, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
