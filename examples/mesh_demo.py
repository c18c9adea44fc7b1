"""`make demo`: a wgpy mesh in network namespaces.

A coordination server (`wgpy server`, SQLite) runs in one namespace; three nodes, each in a
namespace of its own on one bridged LAN, join it with `wgpy up --login-server --auth-key`.
The server only hands out keys, addresses and the policy: the nodes then ping each other
directly over WireGuard. The demo prints the server's view of the mesh (`wgpy admin nodes
list`), one node's view of it (`wgpy status`) and each node's WireGuard state (`wgpy show`),
then removes everything, also on Ctrl-C or a failure. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
WGPY = str(BIN / "wgpy")
TAG = f"{os.getpid() % 100000}"
LAN = "10.98.0"  # the underlay: the server on .1, the nodes on .11, .12, .13
SERVER_URL = f"http://{LAN}.1:8080"
NODES = ["laptop", "nas", "pi"]


def step(text: str) -> None:
    # output piped into `head` must not stop the demo before its cleanup
    with contextlib.suppress(BrokenPipeError):
        print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def say(text: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        print(text, flush=True)


def sh(*args: str, check: bool = True, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, text=True, capture_output=quiet, timeout=120)
    if check and result.returncode:
        detail = (result.stderr or "").strip() if quiet else ""
        raise SystemExit(f"demo: `{' '.join(args)}` failed with status {result.returncode}"
                         + (f": {detail}" if detail else ""))  # fmt: skip
    return result


def in_ns(ns: str, *args: str, check: bool = True, quiet: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check, quiet=quiet).stdout or ""


class Demo:
    def __init__(self) -> None:
        self.hub = f"wgpy-mesh-{TAG}-hub"
        self.spaces = {name: f"wgpy-mesh-{TAG}-{name}" for name in NODES}
        self.ifnames = {name: f"wgm{TAG}{name[0]}" for name in NODES}
        self.workdir = Path(tempfile.mkdtemp(prefix="wgpy-mesh-demo-"))
        self.created: list[str] = []
        self.server: subprocess.Popen[bytes] | None = None
        self.api_key = ""

    def admin(self, *args: str, quiet: bool = True) -> str:
        return in_ns(self.hub, WGPY, "admin", "--server", SERVER_URL, "--api-key", self.api_key,
                     *args, quiet=quiet)  # fmt: skip

    def build_lan(self) -> None:
        step("a LAN: the server's namespace and three node namespaces on one bridge")
        for ns in [self.hub, *self.spaces.values()]:
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "addr", "add", f"{LAN}.1/24", "dev", "br0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        say(f"  server   {LAN}.1")
        for i, name in enumerate(NODES):
            ns = self.spaces[name]
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", f"port{i}",
               "netns", self.hub)  # fmt: skip
            sh("ip", "-n", self.hub, "link", "set", f"port{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{LAN}.{11 + i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            say(f"  {name:8s} {LAN}.{11 + i}")

    def start_server(self) -> None:
        step(f"the coordination server: wgpy server --listen {LAN}.1:8080")
        state = self.workdir / "server"
        self.api_key = sh(WGPY, "server", "--state-dir", str(state), "apikey", "create").stdout
        self.api_key = self.api_key.strip()
        say("  an admin API key, made in the database directly (wgpy server apikey create)")
        log = self.workdir / "server.log"
        with open(log, "wb") as out:
            self.server = subprocess.Popen(
                ["ip", "netns", "exec", self.hub, WGPY, "server", "--listen", f"{LAN}.1:8080",
                 "--state-dir", str(state)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        for _ in range(150):
            if "listening on" in log.read_text(errors="replace"):
                break
            if self.server.poll() is not None:
                raise SystemExit(f"demo: the server exited:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise SystemExit("demo: the server did not start listening within 15 s")
        say(f"  listening, SQLite in {state}")

    def join(self) -> None:
        step("a user and a reusable pre-auth key (wgpy admin)")
        self.admin("users", "create", "demo")
        key = self.admin("preauthkeys", "create", "--user", "demo", "--reusable").strip()
        say(f"  key {key.split('_')[2]}... for user demo (shown once, stored hashed)")
        step("each node joins: wgpy up --login-server URL --auth-key KEY")
        for name in NODES:
            out = in_ns(self.spaces[name], WGPY, "up", "--login-server", SERVER_URL,
                        "--auth-key", key, "--hostname", name, "--interface", self.ifnames[name],
                        "--state-dir", str(self.workdir / name))  # fmt: skip
            say(f"  {name:8s} {out.strip()}")

    def addresses(self) -> dict[str, str]:
        table = self.admin("nodes", "list")
        found: dict[str, str] = {}
        for line in table.splitlines()[1:]:
            m = re.match(r"\s*\d+\s+(\S+)\s+\S+\s+(100\.\S+)", line)
            if m:
                found[m.group(1)] = m.group(2)
        return found

    def ping_all(self) -> bool:
        step("every node pings every other over the mesh (direct WireGuard, not the server)")
        addresses = self.addresses()
        ok = True
        for name in NODES:
            for other in NODES:
                if other == name:
                    continue
                target = addresses.get(other, "?")
                result = None
                for _ in range(10):  # the first ping starts the handshake
                    result = sh("ip", "netns", "exec", self.spaces[name], "ping", "-c", "2",
                                "-i", "0.2", "-W", "2", target, check=False)  # fmt: skip
                    if result.returncode == 0:
                        break
                    time.sleep(0.5)
                assert result is not None
                summary = [ln for ln in result.stdout.splitlines() if "packets transmitted" in ln]
                say(f"  {name:8s} -> {other:8s} {target:12s} "
                    f"{summary[0] if summary else result.stderr.strip()}")  # fmt: skip
                ok = ok and result.returncode == 0
        return ok

    def show_state(self) -> None:
        step("the mesh as the server sees it: wgpy admin nodes list")
        self.admin("nodes", "list", quiet=False)
        step("the mesh as laptop sees it: wgpy status")
        in_ns(self.spaces["laptop"], WGPY, "status", "--state-dir", str(self.workdir / "laptop"),
              quiet=False)  # fmt: skip
        for name in NODES:
            step(f"{name}'s WireGuard interface: wgpy show {self.ifnames[name]}")
            in_ns(self.spaces[name], WGPY, "show", self.ifnames[name], quiet=False)

    def clean_up(self) -> None:
        step("cleaning up")
        for name in NODES:
            if (self.workdir / name).exists() and self.spaces[name] in self.created:
                in_ns(self.spaces[name], WGPY, "down", "--state-dir", str(self.workdir / name),
                      check=False)  # fmt: skip
        if self.server is not None and self.server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(timeout=10)
        for ns in self.created:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():  # only what runs in our own namespaces
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        for name in NODES:
            with contextlib.suppress(FileNotFoundError):
                Path(f"/var/run/wireguard/{self.ifnames[name]}.sock").unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)
        say("  namespaces, processes and files removed")


def main() -> int:
    if os.geteuid() != 0:
        print("demo: this creates namespaces and interfaces; run it as root", file=sys.stderr)
        return 1
    demo = Demo()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        demo.build_lan()
        demo.start_server()
        demo.join()
        ok = demo.ping_all()
        demo.show_state()
        step("the mesh works" if ok else "some pings failed")
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        demo.clean_up()


if __name__ == "__main__":
    sys.exit(main())
