"""`make demo-login`: a node joins by interactive login, as `tailscale up` does.

    this machine 10.99.0.254 --+
                               +-- br0 in the hub namespace: `wgpy server` on 10.99.0.1:8080
    node "cloud"  10.99.0.11 --+     (joined with a pre-auth key, to have a peer)
    node "laptop" 10.99.0.12 --+     `wgpy up --login-server URL`, no auth key

The laptop's `wgpy up` prints a URL and waits. Open it in a browser on this machine (the
demo gives this machine an address on the hub's bridge), sign in as the user the demo shows,
enrol TOTP (scan the QR code with an authenticator app, or compute the code with the line the
demo prints), and press Connect: `wgpy up` returns, the laptop is up as that user's node and
pings cloud over the mesh. With --auto (AUTO=1; also when there is no terminal) the demo
walks the pages itself (tests/interop/login_walk.py). It prints the seconds from `wgpy up`
to the URL and from Connect to the node being up. Everything is removed at the end, also on
Ctrl-C or a failure. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from interop.mesh_lab import NODE_ENV, WGPY, Mesh  # noqa: E402
from interop.netns import Lab, Process, run, wait_for  # noqa: E402

HOST4 = "10.99.0.254"  # this machine's address on the hub's bridge
USER = "demo"
WAIT = 600.0  # seconds a person has (the server's login request lifetime)
URL = re.compile(r"(http://\S+/login/[A-Za-z0-9_-]+)")


def step(text: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def say(text: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        print(text, flush=True)


def reach_from_this_machine(lab: Lab, mesh: Mesh) -> None:
    """A veth from this machine's namespace onto the hub's bridge, so a browser here can
    open the server's pages."""
    host_dev, hub_dev = f"wgl{os.getpid() % 100000}", f"hl{os.getpid() % 100000}"
    run(["ip", "link", "add", host_dev, "type", "veth", "peer", "name", hub_dev,
         "netns", mesh.hub.name])  # fmt: skip
    lab.callback(lambda: run(["ip", "link", "del", host_dev], check=False))
    mesh.hub.ip("link", "set", hub_dev, "master", "br0", "up")
    run(["ip", "addr", "add", f"{HOST4}/24", "dev", host_dev])
    run(["ip", "link", "set", host_dev, "up"])

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy

    def answers() -> bool:
        try:
            with direct.open(mesh.url() + "/", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(answers, timeout=10, interval=0.2, what="the server's pages to answer this machine")


def walk(mesh: Mesh, url: str, password: str) -> None:
    """The person's part, done by the demo: the pages without a browser."""
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    result = mesh.hub.run(
        ["env", f"PYTHONPATH={path}", sys.executable, "-m", "interop.login_walk", url, USER],
        input=password + "\n",
        check=False,
        timeout=60,
    )
    walked = json.loads(result.stdout or "{}")
    if result.returncode != 0:
        raise SystemExit(f"demo: the walk through the pages failed: {walked} {result.stderr}")
    for title in walked["titles"]:
        say(f"  page: {title}")
    say(f"  TOTP key enrolled: {walked['secret']} (the pages took {walked['seconds']} s)")


def wait_for_person(up: Process, url: str, password: str) -> None:
    say(f"  open {url} in a browser on this machine")
    say(f"  sign in as {USER} with the password {password}")
    say("  then scan the QR code with an authenticator app, or compute the code from the key")
    say(f"  the page shows: {sys.executable} -c \"import pyotp; print(pyotp.TOTP('KEY').now())\"")
    say(f"  and press Connect (the demo waits up to {WAIT / 60:.0f} minutes; Ctrl-C stops it)")
    wait_for(lambda: not up.alive, timeout=WAIT, interval=0.2, what="the sign-in")


def demo(lab: Lab, auto: bool) -> bool:
    step("the coordination server in the hub namespace: wgpy server --listen 10.99.0.1:8080")
    mesh = Mesh(lab)
    reach_from_this_machine(lab, mesh)
    say(f"  {mesh.url()} (this machine is {HOST4} on its bridge)")
    password = secrets.token_urlsafe(9)
    step(f"a user with a password: wgpy admin users create {USER} --password")
    mesh.hub.run(
        [WGPY, "admin", "--server", mesh.url(), "--api-key", mesh.api_key,
         "users", "create", USER, "--password", "--password-stdin"],
        input=password + "\n",
    )  # fmt: skip
    step("node cloud joins with a pre-auth key, to be the laptop's peer")
    (cloud,) = mesh.join("cloud", auth_key=mesh.auth_key(USER))
    say(f"  cloud is up as {cloud.ipv4}")
    step("node laptop: wgpy up --login-server URL (no auth key)")
    laptop = mesh.add_node("laptop")
    started = time.monotonic()
    up = laptop.ns.spawn(
        [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(laptop.state_dir),
         "--interface", laptop.ifname, "--hostname", "laptop"],
        log="up",
        env=NODE_ENV,
    )  # fmt: skip
    wait_for(lambda: URL.search(up.output()) is not None or not up.alive, timeout=30,
             what="wgpy up to print the URL")  # fmt: skip
    match = URL.search(up.output())
    if match is None:
        raise SystemExit(f"demo: wgpy up printed no URL:\n{up.output()[-2000:]}")
    printed = time.monotonic() - started
    for line in up.output().splitlines():
        say(f"  | {line}")
    step("a person signs in at the URL" + (" (done by the demo: --auto)" if auto else ""))
    if auto:
        walk(mesh, match[1], password)
    else:
        wait_for_person(up, match[1], password)
    connected = time.monotonic()
    status = up.wait(timeout=60)
    up_after = time.monotonic() - connected
    for line in up.output().splitlines()[-3:]:
        say(f"  | {line}")
    if status != 0:
        say(f"  wgpy up exited with status {status}")
        return False
    laptop.joined = True
    record = mesh.server_nodes()["laptop"]
    laptop.public_key, laptop.id = record["public_key"], record["id"]
    say(f"  laptop is {record['user']}'s node, {record['ipv4']}, expires {record['expires_at']}")
    step("laptop pings cloud over the mesh")
    mesh.wait_peers(laptop, {cloud}, timeout=15)
    got = laptop.ns.ping(cloud.ipv4, count=3, wait=1, interval=0.2)
    say(f"  laptop -> cloud {cloud.ipv4}: {got}/3 replies")
    step("figures")
    say(f"  wgpy up -> URL printed: {printed:.2f} s")
    say(f"  Connect -> wgpy up returned, node up: {up_after:.2f} s")
    step("laptop: wgpy status")
    say(laptop.ns.run([WGPY, "status", "--state-dir", str(laptop.state_dir)], check=False).stdout)
    return got == 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--auto", action="store_true", help="walk the pages without a person")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("demo: this creates namespaces and interfaces; run it as root", file=sys.stderr)
        return 1
    auto = args.auto or not sys.stdin.isatty()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wgpy-login-demo-"))
    try:
        with Lab(workdir) as lab:
            ok = demo(lab, auto)
            step("the node joined by interactive login" if ok else "the demo failed")
            return 0 if ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        say(f"  namespaces, processes and files removed ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
