"""`make demo`: a wgpy mesh across NATs, in network namespaces.

    the internet (a bridge, 203.0.113.0/24)
      +-- server host 203.0.113.2: `wgpy server` (HTTP :8080, STUN :3478 and :3479, TURN
      |     credentials for the relay)
      +-- relay host  203.0.113.3: coturn (examples/coturn.conf: UDP/TCP 3478, TLS 443)
      +-- cloud       203.0.113.5: a node on an open network
      +-- home router 203.0.113.101, an "easy" NAT (keeps a socket's public port)
      |     +-- home    192.168.1.10 (a subnet router for its LAN)
      |     +-- printer 192.168.1.11 (no wgpy)
      +-- phone router 203.0.113.102, a "hard" NAT (a new public port for every destination)
            +-- phone   192.168.2.10

Each node joins with `wgpy up --login-server --auth-key`, learns where it is with STUN from
its WireGuard port, reports its candidates, and runs ICE checks with every peer. The demo
then shows which path each node chose for each peer (direct, relay, or none yet), pings over
every pair that has a path, calls nodes by their names (HOST.USER.mesh.internal through each
node's resolver, `ping home`, `wgpy ping phone`), shows a subnet route (home advertises its
LAN; cloud reaches the printer once an admin approves it, not before) and prints `wgpy status`
on each node. cloud-home and
cloud-phone end direct; home-phone cannot (the hard NAT's ports cannot be predicted and
both routers drop what they did not ask for): it goes through the relay where the node
speaks TURN, and is shown as without a path otherwise. Everything is removed at the end,
also on Ctrl-C or a failure. Needs root.

The lab (namespaces, routers' nftables rules, coturn) is the one the tests use
(tests/interop/nat_lab.py and coturn.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from interop.nat_lab import NatLab  # noqa: E402
from interop.netns import Lab, Namespace, Process, wait_for  # noqa: E402

BIN = Path(sys.executable).parent
WGPY = str(BIN / "wgpy")
TAG = f"{os.getpid() % 100000}"
HTTP_PORT = 8080
STUN_PORTS = (3478, 3479)
NODE_PORT = 41641
NODES = ("cloud", "home", "phone")
PATH_WAIT = 8.0  # seconds to wait for the pairs' paths to settle
EXPECTED_DIRECT = {("cloud", "home"), ("cloud", "phone")}
BASE_DOMAIN = "mesh.internal"  # wgpy server's default --base-domain
ROUTE_WAIT = 10.0  # seconds for an approved route to reach a map


def step(text: str) -> None:
    # output piped into `head` must not stop the demo before its cleanup
    with contextlib.suppress(BrokenPipeError):
        print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def say(text: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        print(text, flush=True)


class Demo:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.nat = NatLab(lab, ipv6=False)  # IPv4: the NATs are on the way
        self.server: Process | None = None
        self.api_key = ""
        self.spaces: dict[str, Namespace] = {}
        self.ifnames = {name: f"wgm{TAG}{name[0]}" for name in NODES}
        self.addresses: dict[str, str] = {}
        self.states = {name: lab.workdir / name for name in NODES}
        self.printer = ""  # the LAN host behind home, which runs no wgpy
        self.lan = ""  # home's LAN, which home routes for the mesh
        self.ids: dict[str, str] = {}
        self.ipv6: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://{self.nat.server.ipv4}:{HTTP_PORT}"

    def run(self, ns: Namespace, *args: str, check: bool = True, timeout: float = 60) -> str:
        result = ns.run(list(args), check=False, timeout=timeout)
        if check and result.returncode:
            raise SystemExit(
                f"demo: `{' '.join(args)}` failed with status {result.returncode}: "
                f"{result.stderr.strip()[-1500:]}"
            )
        return result.stdout

    def admin(self, *args: str) -> Any:
        out = self.run(self.nat.server.ns, WGPY, "admin", "--server", self.url,
                       "--api-key", self.api_key, "--json", *args)  # fmt: skip
        return json.loads(out) if out.strip() else None

    # ------------------------------------------------------------------ building

    def build(self) -> None:
        step("an internet with a server host, a relay host, an open host and two home routers")
        nat = self.nat
        cloud = nat.host("cloud")
        home_router, phone_router = nat.router("easy"), nat.router("hard")
        home, phone = nat.node("home", home_router), nat.node("phone", phone_router)
        printer = nat.node("printer", home_router)
        self.spaces = {"cloud": cloud.ns, "home": home.ns, "phone": phone.ns}
        self.printer, self.lan = printer.ipv4, str(home_router.lan4)
        for ns in self.spaces.values():
            self.own_resolv_conf(ns)
        say(f"  server   {nat.server.ipv4}")
        say(f"  relay    {nat.relay.ipv4}")
        say(f"  cloud    {cloud.ipv4} (open network)")
        say(f"  home     {home.ipv4} behind {home_router.wan4} (easy NAT: masquerade)")
        say(f"  phone    {phone.ipv4} behind {phone_router.wan4} "
            "(hard NAT: masquerade fully-random)")  # fmt: skip
        say(f"  printer  {printer.ipv4} on home's LAN (runs no wgpy)")

    def own_resolv_conf(self, ns: Namespace) -> None:
        """/etc/netns/NS/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf: the
        node's own, for it to point at its resolver (without it the node leaves DNS alone,
        as that file would be the host's); removed at the end."""
        directory = Path("/etc/netns") / ns.name
        directory.mkdir(parents=True, exist_ok=True)
        self.lab.callback(shutil.rmtree, directory, True)
        (directory / "resolv.conf").write_text("# the demo's namespace: no resolver of its own\n")

    def start_relay_and_server(self) -> None:
        step("coturn on the relay host (examples/coturn.conf, REST credentials)")
        relay = self.nat.coturn()
        say(f"  turnserver on {relay.addresses[0]}: UDP/TCP {relay.port}, TLS {relay.tls_port}")
        host = self.nat.server
        secret = self.lab.workdir / "turn-secret"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(relay.secret + "\n")
        r = f"{relay.addresses[0]}:{relay.port}"
        turn = ["--turn", f"turn:{r}?transport=udp", "--turn", f"turn:{r}?transport=tcp",
                "--turn-secret", str(secret)]  # fmt: skip
        stun = [a for port in STUN_PORTS for a in ("--stun-listen", f"{host.ipv4}:{port}")]
        listen = f"{host.ipv4}:{HTTP_PORT}"
        step(f"the coordination server: wgpy server --listen {listen} --stun-listen ... "
             "--turn ... --turn-secret FILE")  # fmt: skip
        state = str(self.lab.workdir / "server")
        self.api_key = self.run(host.ns, WGPY, "server", "--state-dir", state, "apikey",
                                "create").strip()  # fmt: skip
        server = self.server = host.ns.spawn(
            [WGPY, "server", "--listen", listen, "--state-dir", state, *stun, *turn],
            log="server",
        )
        wait_for(lambda: "listening on" in server.output() or not server.alive, timeout=20,
                 what="the server to listen")  # fmt: skip
        if not server.alive:
            raise SystemExit(f"demo: the server exited:\n{server.output()[-2000:]}")
        say(f"  listening; STUN on UDP {', '.join(map(str, STUN_PORTS))}; "
            "short-lived TURN credentials for enrolled nodes")  # fmt: skip

    def join(self) -> None:
        step("a user and a reusable pre-auth key (wgpy admin)")
        self.admin("users", "create", "demo")
        key = self.admin("preauthkeys", "create", "--user", "demo", "--reusable")["key"]
        say(f"  key {key.split('_')[2]}... for user demo (shown once, stored hashed)")
        step("each node joins: wgpy up --login-server URL --auth-key KEY")
        for name in NODES:
            routes = ["--advertise-routes", self.lan] if name == "home" else []
            out = self.run(self.spaces[name], WGPY, "up", "--login-server", self.url,
                           "--auth-key", key, "--hostname", name, "--interface",
                           self.ifnames[name], "--state-dir", str(self.states[name]),
                           "--listen-port", str(NODE_PORT), *routes)  # fmt: skip
            say(f"  {name:6s} {out.strip()}")
        say(f"  (home: wgpy up ... --advertise-routes {self.lan})")
        found = {n["hostname"]: n for n in self.admin("nodes", "list")}
        self.addresses = {name: str(found[name]["ipv4"]) for name in NODES}
        self.ipv6 = {name: str(found[name].get("ipv6")) for name in NODES}
        self.ids = {name: str(found[name]["id"]) for name in NODES}

    # ------------------------------------------------------------------ paths

    def path(self, name: str, other: str) -> dict[str, Any]:
        """The path ``name`` chose for ``other`` (its peers.json, as `wgpy status` reads)."""
        with contextlib.suppress(OSError, ValueError):
            for peer in json.loads((self.states[name] / "peers.json").read_text()):
                if peer.get("hostname") == other and isinstance(peer.get("path"), dict):
                    return dict(peer["path"])
        return {"kind": "none", "endpoint": None}

    def pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for i, a in enumerate(NODES) for b in NODES[i + 1 :]]

    def settled(self, a: str, b: str) -> bool:
        kinds = {self.path(a, b)["kind"], self.path(b, a)["kind"]}
        return kinds == {"direct"} if (a, b) in EXPECTED_DIRECT else "none" not in kinds

    def wait_paths(self) -> None:
        step("ICE checks on each node's WireGuard port: waiting for the paths")
        start = time.monotonic()
        pending = set(self.pairs())
        while pending and time.monotonic() - start < PATH_WAIT:
            for a, b in sorted(pending):
                if self.settled(a, b):
                    pending.discard((a, b))
                    kind = self.path(a, b)["kind"]
                    say(f"  {a} <-> {b}: {kind} after {time.monotonic() - start:.1f} s")
            time.sleep(0.2)
        for a, b in sorted(pending):
            say(f"  {a} <-> {b}: no path after {PATH_WAIT:g} s")

    def show_paths(self) -> None:
        step("the path each node chose for each peer (what wgpy status shows)")
        for a in NODES:
            for b in NODES:
                if a != b:
                    p = self.path(a, b)
                    where = f" {p['endpoint']}" if p.get("endpoint") else ""
                    rtt = f", rtt {p['rtt_ms']} ms" if p.get("rtt_ms") is not None else ""
                    say(f"  {a:6s} -> {b:6s} path {p['kind']}{where}{rtt}")

    def ping_all(self) -> bool:
        step("pings over every pair with a path (the mesh, not the server)")
        ok = True
        for a, b in self.pairs():
            kinds = {self.path(a, b)["kind"], self.path(b, a)["kind"]}
            if kinds == {"none"}:
                say(f"  {a} <-> {b}: no path, no ping: a hard NAT against a NAT that filters "
                    "needs the TURN relay")  # fmt: skip
                ok = ok and (a, b) not in EXPECTED_DIRECT
                continue
            for src, dst in ((a, b), (b, a)):
                got = self.spaces[src].ping(self.addresses[dst], count=3, wait=1, interval=0.2)
                path = self.path(src, dst)["kind"]
                say(f"  {src:6s} -> {dst:6s} {self.addresses[dst]:12s} {got}/3 replies, "
                    f"path {path}")  # fmt: skip
                ok = ok and got == 3
            ok = ok and ((a, b) not in EXPECTED_DIRECT or self.settled(a, b))
        return ok

    # ------------------------------------------------------------------ names and routes

    def names(self) -> bool:
        step(f"names: every node is HOST.USER.{BASE_DOMAIN}, answered by each node's resolver")
        cloud = self.spaces["cloud"]
        ok = True
        for name in ("home", "phone"):
            full = f"{name}.demo.{BASE_DOMAIN}"
            out = self.run(cloud, "getent", "hosts", full, check=False).split()
            got = out[0] if out else "nothing"
            say(f"  cloud$ getent hosts {full:28s} -> {got}")
            ok = ok and got in (self.addresses[name], self.ipv6[name])
        got = cloud.run(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", "home"], check=False)
        match = re.search(r"PING [^\s(]+ ?\(([\da-f.:]+)\)", got.stdout)
        replies = re.search(r"(\d+) received", got.stdout)
        received = int(replies.group(1)) if replies else 0
        say(f"  cloud$ ping home -> {match.group(1) if match else '?'}: {received}/2 replies "
            "(the short name, through the search domain)")  # fmt: skip
        ok = ok and received == 2
        out = self.run(cloud, WGPY, "ping", "--state-dir", str(self.states["cloud"]),
                       "-c", "2", "phone", check=False)  # fmt: skip
        for line in out.strip().splitlines()[:2]:
            say(f"  cloud$ wgpy ping phone: {line}")
        return ok

    def routes_of(self, name: str, peer: str) -> list[str]:
        with contextlib.suppress(OSError, ValueError):
            for entry in json.loads((self.states[name] / "peers.json").read_text()):
                if entry.get("hostname") == peer:
                    return [str(r) for r in entry.get("routes") or []]
        return []

    def subnet_route(self) -> bool:
        step(f"a subnet route: home advertises its LAN {self.lan}; the printer runs no wgpy")
        cloud = self.spaces["cloud"]
        before = cloud.ping(self.printer, count=2, wait=1, interval=0.2)
        say(f"  before approval: cloud -> printer {self.printer}: {before}/2 replies")
        listed = self.admin("routes", "list") or []
        for route in listed if isinstance(listed, list) else []:
            state = "approved" if route.get("approved") else "awaiting approval"
            say(f"  wgpy admin routes list: {route.get('name')} {route.get('prefix')}: {state}")
        step(f"wgpy admin routes approve {self.ids['home']} {self.lan}")
        self.admin("routes", "approve", self.ids["home"], self.lan)
        start = time.monotonic()
        while self.lan not in self.routes_of("cloud", "home"):
            if time.monotonic() - start > ROUTE_WAIT:
                say(f"  the route did not reach cloud's map in {ROUTE_WAIT:g} s")
                return False
            time.sleep(0.1)
        say(f"  in cloud's map after {time.monotonic() - start:.2f} s: home routes {self.lan}")
        after = cloud.ping(self.printer, count=3, wait=2, interval=0.2)
        say(f"  cloud -> printer {self.printer}: {after}/3 replies, through home "
            "(forwarding on, masqueraded: the printer needs no route back)")  # fmt: skip
        return before == 0 and after == 3

    def show_status(self) -> None:
        for name in NODES:
            step(f"{name}: wgpy status")
            out = self.run(self.spaces[name], WGPY, "status", "--state-dir",
                           str(self.states[name]), check=False)  # fmt: skip
            say(out.rstrip())

    # ------------------------------------------------------------------ cleanup

    def take_down(self) -> None:
        step("cleaning up")
        for name, ns in self.spaces.items():
            if (self.states[name] / "node.key").exists():
                ns.run([WGPY, "down", "--state-dir", str(self.states[name])], check=False,
                       timeout=30)  # fmt: skip
        for name in NODES:
            with contextlib.suppress(FileNotFoundError):
                Path(f"/var/run/wireguard/{self.ifnames[name]}.sock").unlink()


def main() -> int:
    if os.geteuid() != 0:
        print("demo: this creates namespaces and interfaces; run it as root", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wgpy-mesh-demo-"))
    try:
        with Lab(workdir) as lab:
            demo = Demo(lab)
            try:
                demo.build()
                demo.start_relay_and_server()
                demo.join()
                demo.wait_paths()
                demo.show_paths()
                ok = demo.ping_all()
                ok = demo.names() and ok
                ok = demo.subnet_route() and ok
                demo.show_status()
                step("the mesh works" if ok else "some pairs failed")
                return 0 if ok else 1
            finally:
                demo.take_down()
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        say(f"  namespaces, processes and files removed ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
