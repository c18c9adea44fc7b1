"""`make demo`: wgpy beside wireguard-go, each in its own network namespace.

Two namespaces joined by a veth pair. In one, `wgpy up` brings up a wgpy interface from a
wg-quick config; in the other, wireguard-go runs under the same config format (through
`wg-quick` with WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go) and a third namespace runs a
second wgpy node. They ping each other over the tunnels and `wg show` prints every side.
Everything is removed at the end, also on Ctrl-C. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
WGPY = str(BIN / "wgpy")
TAG = f"{os.getpid() % 100000}"
NODES = [
    # name, implementation, underlay address, tunnel address
    ("alice", "wgpy", "192.0.2.1", "10.77.0.1"),
    ("bob", "wgpy", "192.0.2.2", "10.77.0.2"),
    ("carol", "wireguard-go", "192.0.2.3", "10.77.0.3"),
]


def step(text: str) -> None:
    # output piped into `head` must not stop the demo before its cleanup
    with contextlib.suppress(BrokenPipeError):
        print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def sh(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, text=True, capture_output=quiet)
    if check and result.returncode:
        raise SystemExit(f"demo: `{' '.join(args)}` failed with status {result.returncode}")
    return result


def keypair() -> tuple[str, str]:
    private = sh(WGPY, "genkey", quiet=True).stdout.strip()
    public = subprocess.run(
        [WGPY, "pubkey"], input=private, text=True, capture_output=True, check=True
    ).stdout.strip()
    return private, public


def main() -> int:
    if os.geteuid() != 0:
        print("demo: this creates namespaces and interfaces; run it as root", file=sys.stderr)
        return 1
    bridge_ns = f"wgpy-demo-{TAG}-lan"
    spaces = {name: f"wgpy-demo-{TAG}-{name}" for name, *_ in NODES}
    ifnames = {name: f"wgd{TAG}{name[0]}" for name, *_ in NODES}
    keys = {name: keypair() for name, *_ in NODES}
    workdir = Path(tempfile.mkdtemp(prefix="wgpy-demo-"))
    try:
        step("a LAN: three namespaces on one bridge")
        sh("ip", "netns", "add", bridge_ns)
        sh("ip", "-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", bridge_ns, "link", "set", "br0", "up")
        for i, (name, impl, underlay, _) in enumerate(NODES):
            ns = spaces[name]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", f"eth{i}", "netns", ns, "type", "veth", "peer", f"port{i}",
               "netns", bridge_ns)  # fmt: skip
            sh("ip", "-n", bridge_ns, "link", "set", f"port{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{underlay}/24", "dev", f"eth{i}")
            sh("ip", "-n", ns, "link", "set", f"eth{i}", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            print(f"  {name:6s} {impl:13s} underlay {underlay}")

        step("wg-quick configs; `wgpy up` for wgpy, wg-quick + wireguard-go for carol")
        for name, impl, _underlay, tunnel in NODES:
            lines = [
                "[Interface]",
                f"PrivateKey = {keys[name][0]}",
                f"Address = {tunnel}/24",
                "ListenPort = 51820",
            ]
            for other, _, other_underlay, other_tunnel in NODES:
                if other != name:
                    lines += [
                        "",
                        "[Peer]",
                        f"PublicKey = {keys[other][1]}",
                        f"AllowedIPs = {other_tunnel}/32",
                        f"Endpoint = {other_underlay}:51820",
                    ]
            conf = workdir / f"{ifnames[name]}.conf"
            conf.write_text("\n".join(lines) + "\n")
            conf.chmod(0o600)
            if impl == "wgpy":
                sh("ip", "netns", "exec", spaces[name], WGPY, "up", str(conf))
            else:
                env = {**os.environ, "WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go"}
                subprocess.run(
                    ["ip", "netns", "exec", spaces[name], "wg-quick", "up", str(conf)],
                    env=env, check=True, capture_output=True,
                )  # fmt: skip
            print(f"  {name}: {ifnames[name]} up, {tunnel}/24")

        step("everyone pings everyone through the tunnels")
        ok = True
        for name, _, _, _ in NODES:
            for other, _, _, other_tunnel in NODES:
                if other == name:
                    continue
                r = sh("ip", "netns", "exec", spaces[name], "ping", "-c", "2", "-i", "0.2",
                       "-W", "2", other_tunnel, check=False, quiet=True)  # fmt: skip
                summary = [ln for ln in r.stdout.splitlines() if "packets transmitted" in ln]
                print(f"  {name:6s} -> {other:6s} {summary[0] if summary else r.stderr.strip()}")
                ok = ok and r.returncode == 0

        for name, impl, _, _ in NODES:
            step(f"wg show on {name} ({impl})")
            sh("ip", "netns", "exec", spaces[name], "wg", "show", ifnames[name])
        return 0 if ok else 1
    finally:
        step("cleaning up")
        for name, impl, *_ in NODES:
            conf = workdir / f"{ifnames[name]}.conf"
            if impl == "wgpy":
                sh("ip", "netns", "exec", spaces[name], WGPY, "down", str(conf), check=False,
                   quiet=True)  # fmt: skip
            else:
                subprocess.run(["ip", "netns", "exec", spaces[name], "wg-quick", "down",
                                str(conf)], capture_output=True, check=False)  # fmt: skip
        for ns in [*spaces.values(), bridge_ns]:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                subprocess.run(["kill", pid], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
