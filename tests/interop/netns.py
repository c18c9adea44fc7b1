"""A network-namespace lab for interop tests: namespaces, veth links, a NAT router, and
userspace WireGuard interfaces (wireguard-go or wgpy-userspace) configured with the real `wg`.

Everything here is a context manager or is owned by a `Lab` (an ExitStack): whatever a test
creates is removed when it ends, failing or not. Processes are started in their own session
and killed by id; before a namespace is deleted, whatever is still running inside it (and only
inside it) is killed. Every wait polls with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
TRAFFIC = HERE / "traffic.py"  # helper programs (stdlib + cryptography) run in namespaces
PYTHON = sys.executable
SOCKET_DIR = Path("/var/run/wireguard")
STACKS_WAIT = 3.0  # seconds for a hung wgpy process to write its stacks after SIGUSR1
STACKS_DONE = "asyncio tasks ("  # what wgpy/cli/stacks.py writes last (the loop still runs)

# The command that starts each implementation; both take wireguard-go's command line.
IMPLEMENTATIONS: dict[str, str] = {
    "wireguard-go": "wireguard-go",
    "wgpy": str(Path(sys.executable).parent / "wgpy-userspace"),
}
PAIRS = [
    ("wgpy", "wgpy"),
    ("wgpy", "wireguard-go"),
    ("wireguard-go", "wgpy"),
    ("wireguard-go", "wireguard-go"),  # the harness's own control
]
WGPY_PAIRS = [p for p in PAIRS if "wgpy" in p]

# Addresses inside the tunnel of a standard pair: side A gets index 0, side B index 1.
TUN4 = ("10.77.0.1", "10.77.0.2")
TUN6 = ("fd77::1", "fd77::2")
LISTEN_PORTS = (51820, 51821)
DEFAULT_MTU = 1420

_counter = itertools.count(1)


def unique_name(role: str) -> str:
    """A namespace name unique to this process and call: wgpy-PID-N-ROLE."""
    return f"wgpy-{os.getpid()}-{next(_counter)}-{role}"


def unique_ifname(prefix: str = "wg") -> str:
    """An interface name unique on this machine (the UAPI socket path is global): <= 15 chars."""
    name = f"{prefix}{os.getpid():x}x{next(_counter):x}"
    assert len(name) <= 15, name
    return name


class CommandError(AssertionError):
    pass


class ImplementationFailed(AssertionError):
    """A WireGuard implementation did not start or died."""


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (killed at the timeout), capturing its output."""
    result = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise CommandError(
            f"{' '.join(cmd)} exited {result.returncode}\n"
            f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
        )
    return result


def run_program(
    cmd: Sequence[str], *, timeout: float
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run a program to completion (killed at the timeout); its result and its PID, after
    which labs and demos name the namespaces and interfaces they make."""
    process = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), process.pid


def namespaces_matching(predicate: Callable[[str], bool]) -> list[str]:
    """The network namespaces on this machine whose names satisfy ``predicate``."""
    return [n for n in run(["ip", "netns", "list"]).stdout.split() if predicate(n)]


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "a condition",
) -> T:
    """Poll `predicate` until it returns something truthy; bounded in time and in count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- processes


class Process:
    """A background process in its own session, output to a log file, killed by id on stop.

    Signals go to its process group only while the process is unreaped (so the group id
    cannot have been reused by anyone else).
    """

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None):
        self.args = list(args)
        self.log = log
        with open(log, "ab") as logfile:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self.pid = self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.returncode is None:  # not reaped: the group id is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def wait_stopped(self, timeout: float) -> int:
        """The exit status of a wgpy node's process once it stops, within ``timeout``
        seconds. If it does not: SIGUSR1 to it alone (it writes where each thread and task
        is, wgpy/cli/stacks.py), then an AssertionError with that dump, where it hangs; the
        process is killed when the namespace goes."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        before = len(self.output())
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)  # not reaped: the pid is still ours
        deadline = time.monotonic() + STACKS_WAIT
        while STACKS_DONE not in self.output()[before:] and time.monotonic() < deadline:
            time.sleep(0.1)
        raise AssertionError(
            f"{' '.join(self.args[-12:])} did not stop within {timeout} s; where it was "
            f"(SIGUSR1):\n{self.output()[before:][-20000:] or '(nothing written)'}\n"
            f"----- its output before\n{self.output()[:before][-4000:]}"
        )

    def stop(self, timeout: float = 5) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps; returns the exit status."""
        if self.popen.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        return self.popen.returncode


# --------------------------------------------------------------------------- namespaces


class Namespace:
    """A network namespace that exists between __enter__ and __exit__."""

    def __init__(self, role: str, logdir: Path):
        self.role = role
        self.name = unique_name(role)
        self.logdir = logdir
        self.processes: list[Process] = []
        self._created = False

    def __repr__(self) -> str:
        return f"Namespace({self.name})"

    def __enter__(self) -> Namespace:
        run(["ip", "netns", "add", self.name])
        self._created = True
        self.ip("link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exec_args(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self,
        cmd: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run(self.exec_args(cmd), check=check, timeout=timeout, input=input)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check, timeout=15)

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a (per-namespace) sysctl by writing /proc/sys from inside the namespace."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.run(["sh", "-c", f'printf "%s\\n" "$1" > {path}', "sh", str(value)], timeout=10)

    def add_bridge(self, name: str) -> None:
        """A bridge with an address of its own: one that has none takes the lowest of its
        ports' and changes it as ports come and go, and neighbours that cached the old one
        lose their packets (a host added mid-test would cut the gateway off for a while)."""
        mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))
        self.ip("link", "add", name, "address", mac, "type", "bridge")

    BRIDGE_NF_OFF = (
        "for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e $f ] && echo 0 > $f; done"
    )
    """Shell: bridged frames skip netfilter in the namespace it runs in. Where br_netfilter
    is loaded (a Docker host), they would otherwise pass the namespace's IP hooks: a bridge
    loses routed replies now and then, and firewall rules see traffic between its ports."""

    def bridges_skip_netfilter(self) -> None:
        """Run :attr:`BRIDGE_NF_OFF` here (before bridges carry traffic)."""
        self.run(["sh", "-c", self.BRIDGE_NF_OFF], timeout=10)

    def spawn(self, cmd: Sequence[str], *, log: str, env: dict[str, str] | None = None) -> Process:
        """Start `cmd` in the background inside the namespace; it is killed when we close."""
        path = self.logdir / f"{self.role}-{log}-{next(_counter)}.log"
        env_args = ["env", *(f"{k}={v}" for k, v in (env or {}).items())] if env else []
        proc = Process(self.exec_args([*env_args, *cmd]), path)
        self.processes.append(proc)
        return proc

    def ping(
        self,
        address: str,
        *,
        count: int = 1,
        wait: float = 2,
        interval: float = 0.2,
        source: str | None = None,
    ) -> int:
        """Ping `address` `count` times; returns how many replies came back."""
        cmd = ["ping", "-n", "-q", "-c", str(count), "-W", f"{wait:g}", "-i", f"{interval:g}"]
        if source:
            cmd += ["-I", source]
        result = self.run(
            [*cmd, address], check=False, timeout=count * (interval + wait) + wait + 10
        )
        m = re.search(r"(\d+) received", result.stdout)
        if m is None:
            raise CommandError(f"ping {address}: {result.stdout!r} {result.stderr!r}")
        return int(m.group(1))

    def tcp_listening(self, port: int) -> bool:
        out = self.run(["ss", "-Hltn", f"sport = :{port}"], timeout=10).stdout
        return bool(out.strip())

    def pids(self) -> list[int]:
        if not self._created:
            return []
        out = run(["ip", "netns", "pids", self.name], check=False, timeout=10).stdout
        return [int(p) for p in out.split()]

    def close(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop()
        if not self._created:
            return
        # Stragglers still inside this namespace (only ever ours to kill).
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        run(["ip", "netns", "del", self.name], check=False, timeout=15)
        self._created = False


@dataclass
class Link:
    """A veth pair between namespaces a and b with IPv4 and IPv6 addresses on each end."""

    a: Namespace
    b: Namespace
    a_dev: str
    b_dev: str
    a4: str
    b4: str
    a6: str
    b6: str
    prefix4: int = 24
    prefix6: int = 64

    def addr(self, side: str, family: int) -> str:
        return {("a", 4): self.a4, ("b", 4): self.b4, ("a", 6): self.a6, ("b", 6): self.b6}[
            (side, family)
        ]

    def wait_reachable(self, timeout: float = 10) -> None:
        """Both families answer both ways (IPv6 on a fresh veth can take a moment)."""

        def answers(ns: Namespace, dst: str) -> Callable[[], bool]:
            return lambda: ns.ping(dst, count=1, wait=1) == 1

        for ns, dst in ((self.a, self.b4), (self.b, self.a4), (self.a, self.b6), (self.b, self.a6)):
            wait_for(
                answers(ns, dst),
                timeout=timeout,
                interval=0.05,
                what=f"{dst} reachable from {ns.name}",
            )


def endpoint_str(address: str, port: int) -> str:
    """An endpoint as `wg show` prints it."""
    if ipaddress.ip_address(address).version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


# --------------------------------------------------------------------------- keys


def clamp(raw: bytes) -> bytes:
    b = bytearray(raw)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


@dataclass(frozen=True)
class Key:
    private: bytes

    @classmethod
    def generate(cls) -> Key:
        return cls(clamp(os.urandom(32)))

    @property
    def public(self) -> bytes:
        return X25519PrivateKey.from_private_bytes(self.private).public_key().public_bytes_raw()

    @property
    def private_b64(self) -> str:
        return base64.b64encode(self.private).decode()

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --------------------------------------------------------------------------- WireGuard


@dataclass
class PeerInfo:
    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: list[str]
    latest_handshake: int
    rx: int
    tx: int
    keepalive: int | None


@dataclass
class Dump:
    private_key: str | None
    public_key: str | None
    listen_port: int
    fwmark: str
    peers: dict[str, PeerInfo] = field(default_factory=dict)


def parse_dump(text: str) -> Dump:
    lines = [line.split("\t") for line in text.splitlines() if line]
    if not lines:
        raise CommandError(f"empty `wg show dump`: {text!r}")

    def opt(v: str) -> str | None:
        return None if v == "(none)" else v

    priv, pub, port, fwmark = lines[0]
    dump = Dump(opt(priv), opt(pub), int(port), fwmark)
    for f in lines[1:]:
        pk, psk, ep, aips, hs, rx, tx, ka = f
        dump.peers[pk] = PeerInfo(
            public_key=pk,
            preshared_key=opt(psk),
            endpoint=opt(ep),
            allowed_ips=[] if aips == "(none)" else aips.split(","),
            latest_handshake=int(hs),
            rx=int(rx),
            tx=int(tx),
            keepalive=None if ka == "off" else int(ka),
        )
    return dump


class WgInterface:
    """A userspace WireGuard interface inside a namespace, driven with `wg` and `ip`."""

    def __init__(
        self,
        ns: Namespace,
        impl: str,
        workdir: Path,
        *,
        key: Key | None = None,
        listen_port: int | None = None,
        name: str | None = None,
        log_level: str = "verbose",
        pythonpath: str | None = None,
    ):
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {impl!r}")
        self.ns = ns
        self.impl = impl
        self.workdir = workdir
        self.key = key or Key.generate()
        self.listen_port = listen_port
        self.name = name or unique_ifname()
        self.socket = SOCKET_DIR / f"{self.name}.sock"
        self.proc: Process | None = None
        self.log_level = log_level
        self.pythonpath = pythonpath

    def __repr__(self) -> str:
        return f"WgInterface({self.impl} {self.name} in {self.ns.name})"

    # lifecycle

    def __enter__(self) -> WgInterface:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, startup_timeout: float = 20) -> None:
        if self.socket.exists():
            raise ImplementationFailed(f"{self.socket} exists before start")
        exe = IMPLEMENTATIONS[self.impl]
        self.proc = self.ns.spawn(
            [exe, "-f", self.name],
            log=f"{self.impl}-{self.name}",
            env={
                "WG_PROCESS_FOREGROUND": "1",
                "LOG_LEVEL": self.log_level,
                # wgpy from another source tree (benchmarks/ab.py compares two revisions)
                **({"PYTHONPATH": self.pythonpath} if self.pythonpath else {}),
            },
        )

        def ready() -> bool:
            assert self.proc is not None
            if not self.proc.alive:
                raise ImplementationFailed(
                    f"{self.impl} ({exe} -f {self.name}) exited with status "
                    f"{self.proc.returncode} before its UAPI socket appeared; output:\n"
                    f"{tail(self.proc.log)}"
                )
            return (
                self.socket.exists()
                and self.ns.ip("link", "show", self.name, check=False).returncode == 0
            )

        try:
            wait_for(
                ready,
                timeout=startup_timeout,
                interval=0.05,
                what=f"{self.impl} to create {self.name} and {self.socket}",
            )
        except TimeoutError as e:
            raise ImplementationFailed(f"{e}; output:\n{tail(self.proc.log)}") from None
        args = ["private-key", self.key_file(self.key)]
        if self.listen_port is not None:
            args += ["listen-port", str(self.listen_port)]
        self.set(*args)
        self.ns.ip("link", "set", self.name, "mtu", str(DEFAULT_MTU), "up")

    def stop(self, timeout: float = 5) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL); returns its exit status."""
        if self.proc is None:
            return None
        return self.proc.stop(timeout)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive

    def log(self, lines: int = 80) -> str:
        return tail(self.proc.log, lines) if self.proc else ""

    # configuration

    def key_file(self, key: Key | bytes) -> str:
        raw = key.private if isinstance(key, Key) else key
        path = self.workdir / f"key-{next(_counter)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(b64(raw) + "\n")
        return str(path)

    def wg(
        self, *args: str, check: bool = True, timeout: float = 15
    ) -> subprocess.CompletedProcess[str]:
        return self.ns.run(["wg", *args], check=check, timeout=timeout)

    def set(self, *args: str) -> None:
        self.wg("set", self.name, *args)

    def set_private_key(self, key: Key | bytes) -> None:
        self.set("private-key", self.key_file(key))
        if isinstance(key, Key):
            self.key = key

    def set_listen_port(self, port: int) -> None:
        self.set("listen-port", str(port))
        self.listen_port = port

    def add_address(self, cidr: str) -> None:
        net = ipaddress.ip_interface(cidr)
        extra = ["nodad"] if net.version == 6 else []
        self.ns.ip("addr", "add", cidr, "dev", self.name, *extra)

    def add_route(self, prefix: str) -> None:
        self.ns.ip("route", "replace", prefix, "dev", self.name)

    def add_peer(
        self,
        public_key: str | bytes | Key | WgInterface,
        *,
        allowed_ips: Iterable[str] = (),
        endpoint: str | None = None,
        psk: bytes | None = None,
        keepalive: int | None = None,
        routes: bool = True,
    ) -> str:
        """Add or update a peer with `wg set`; adds routes for its allowed IPs. Returns its key."""
        pub = _public_b64(public_key)
        allowed = list(allowed_ips)
        args = ["peer", pub]
        if allowed:
            args += ["allowed-ips", ",".join(allowed)]
        if endpoint:
            args += ["endpoint", endpoint]
        if psk is not None:
            args += ["preshared-key", self.key_file(psk)]
        if keepalive is not None:
            args += ["persistent-keepalive", str(keepalive) if keepalive else "off"]
        self.set(*args)
        if routes:
            for prefix in allowed:
                self.add_route(prefix)
        return pub

    def remove_peer(self, public_key: str | bytes | Key | WgInterface) -> None:
        self.set("peer", _public_b64(public_key), "remove")

    # state

    def dump(self) -> Dump:
        return parse_dump(self.wg("show", self.name, "dump").stdout)

    def peer(self, public_key: str | bytes | Key | WgInterface) -> PeerInfo:
        pub = _public_b64(public_key)
        peers = self.dump().peers
        if pub not in peers:
            raise AssertionError(f"{self}: no peer {pub}; peers: {list(peers)}")
        return peers[pub]

    def wait_handshake(
        self,
        public_key: str | bytes | Key | WgInterface,
        *,
        timeout: float = 10,
        newer_than: int = 0,
    ) -> int:
        """Poll `wg show` until the peer's latest handshake is > newer_than; returns it."""

        def check() -> int:
            hs = self.peer(public_key).latest_handshake
            return hs if hs > newer_than else 0

        return wait_for(check, timeout=timeout, interval=0.1, what=f"a handshake on {self}")


def _public_b64(k: str | bytes | Key | WgInterface) -> str:
    if isinstance(k, WgInterface):
        return k.key.public_b64
    if isinstance(k, Key):
        return k.public_b64
    if isinstance(k, bytes):
        return b64(k)
    return k


# --------------------------------------------------------------------------- lab


class Lab(contextlib.ExitStack):
    """Owns everything a test builds; closing it tears it all down in reverse order."""

    def __init__(self, workdir: Path):
        super().__init__()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.namespaces: list[Namespace] = []
        self.interfaces: list[WgInterface] = []
        self._subnet = itertools.count(1)
        self.log_level = "verbose"  # of the WireGuard daemons; benchmarks want "error"
        self.pythonpath: str | None = None  # wgpy daemons import wgpy from here if set

    def namespace(self, role: str) -> Namespace:
        ns = self.enter_context(Namespace(role, self.workdir))
        self.namespaces.append(ns)
        return ns

    def veth(self, a: Namespace, b: Namespace, *, wait: bool = True) -> Link:
        """A veth pair a <-> b with 10.N.0.1|2/24 and fd00:N::1|2/64 (N unique in this lab)."""
        n = next(self._subnet)
        a_dev, b_dev = f"v{n}{a.role[:5]}", f"v{n}{b.role[:5]}"
        if a_dev == b_dev:
            a_dev, b_dev = a_dev + "a", b_dev + "b"
        veth = ["ip", "link", "add", a_dev, "netns", a.name, "type", "veth"]
        run([*veth, "peer", "name", b_dev, "netns", b.name])
        link = Link(
            a, b, a_dev, b_dev, f"10.{n}.0.1", f"10.{n}.0.2", f"fd00:{n}::1", f"fd00:{n}::2"
        )
        for ns, dev, v4, v6 in ((a, a_dev, link.a4, link.a6), (b, b_dev, link.b4, link.b6)):
            ns.ip("addr", "add", f"{v4}/{link.prefix4}", "dev", dev)
            ns.ip("addr", "add", f"{v6}/{link.prefix6}", "dev", dev, "nodad")
            ns.ip("link", "set", dev, "up")
        if wait:
            link.wait_reachable()
        return link

    def wg(
        self,
        ns: Namespace,
        impl: str,
        *,
        key: Key | None = None,
        listen_port: int | None = None,
    ) -> WgInterface:
        iface = self.enter_context(
            WgInterface(
                ns,
                impl,
                self.workdir,
                key=key,
                listen_port=listen_port,
                log_level=self.log_level,
                pythonpath=self.pythonpath,
            )
        )
        self.interfaces.append(iface)
        return iface

    def spawn_python(self, ns: Namespace, *args: str, log: str) -> Process:
        """Run tests/interop/traffic.py with this venv's Python inside `ns`."""
        return ns.spawn([PYTHON, str(TRAFFIC), *args], log=log)

    def logs(self, lines: int = 80) -> str:
        """The tail of every log written in this lab, for failure reports."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"----- {path.name}\n{tail(path, lines)}")
        return "\n".join(parts)


# --------------------------------------------------------------------------- topologies


@dataclass
class Pair:
    """Two WireGuard interfaces, side A and side B, peered over one veth link."""

    a: WgInterface
    b: WgInterface
    link: Link
    underlay: int

    def side(self, name: str) -> WgInterface:
        return self.a if name == "a" else self.b

    def other(self, name: str) -> WgInterface:
        return self.b if name == "a" else self.a

    def underlay_addr(self, name: str) -> str:
        return self.link.addr(name, self.underlay)

    def endpoint(self, name: str) -> str:
        """Where side `name` listens, as `wg show` prints it."""
        port = self.side(name).listen_port
        assert port is not None
        return endpoint_str(self.underlay_addr(name), port)


def make_pair(
    lab: Lab,
    impl_a: str,
    impl_b: str,
    *,
    underlay: int = 4,
    a_knows_b: bool = True,
    b_knows_a: bool = True,
    psk_a: bytes | None = None,
    psk_b: bytes | None = None,
) -> Pair:
    """Namespaces A and B joined by a veth; wg on each with tunnel addresses TUN4/TUN6[0|1].

    Each side's peer entry for the other allows exactly the other's /32 and /128 tunnel
    addresses; an endpoint is configured only where `x_knows_y`.
    """
    ns_a, ns_b = lab.namespace("a"), lab.namespace("b")
    link = lab.veth(ns_a, ns_b)
    a = lab.wg(ns_a, impl_a, listen_port=LISTEN_PORTS[0])
    b = lab.wg(ns_b, impl_b, listen_port=LISTEN_PORTS[1])
    pair = Pair(a, b, link, underlay)
    for i, (me, other, other_name, knows, psk) in enumerate(
        ((a, b, "b", a_knows_b, psk_a), (b, a, "a", b_knows_a, psk_b))
    ):
        me.add_address(f"{TUN4[i]}/32")
        me.add_address(f"{TUN6[i]}/128")
        me.add_peer(
            other,
            allowed_ips=[f"{TUN4[1 - i]}/32", f"{TUN6[1 - i]}/128"],
            endpoint=pair.endpoint(other_name) if knows else None,
            psk=psk,
        )
    return pair


@dataclass
class NatTopology:
    """inside --lan-- router (masquerade) --wan-- outside.

    `inside` has a default route via the router; `outside` has no route to the inside
    network at all, so it can reach `inside` only through a mapping the NAT holds.
    """

    inside: Namespace
    router: Namespace
    outside: Namespace
    lan: Link  # inside (a) <-> router (b)
    wan: Link  # router (a) <-> outside (b)


def make_nat(lab: Lab, *, udp_timeout: int = 5) -> NatTopology:
    inside, router, outside = lab.namespace("in"), lab.namespace("nat"), lab.namespace("out")
    lan = lab.veth(inside, router)
    wan = lab.veth(router, outside)
    inside.ip("route", "add", "default", "via", lan.b4)
    router.sysctl("net.ipv4.ip_forward", 1)
    ruleset = f"""
table ip wgpy_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{wan.a_dev}" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{lan.b_dev}" oifname "{wan.a_dev}" accept
    }}
}}
"""
    router.run(["nft", "-f", "-"], input=ruleset, timeout=15)
    # Per-namespace conntrack timeouts; a UDP flow seen both ways for 2 s becomes a "stream".
    router.sysctl("net.netfilter.nf_conntrack_udp_timeout", udp_timeout)
    router.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", udp_timeout)
    return NatTopology(inside, router, outside, lan, wan)


def iperf3_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError as e:
        raise CommandError(f"iperf3 output is not JSON ({e}): {result.stdout[-2000:]!r}") from None
    return data


IPERF3_PORT = 5201


def iperf3_run(
    client: Namespace,
    server: Namespace,
    address: str,
    seconds: float,
    *extra: str,
    port: int = IPERF3_PORT,
) -> dict[str, Any]:
    """`iperf3 -c address` from ``client`` against a one-shot `iperf3 -s` bound to ``address``
    in ``server``: the client's parsed JSON report (``extra``: more client options, e.g.
    ``-P 4`` or ``-u``). Raises RuntimeError when iperf3 reports a failure."""
    process = server.spawn(["iperf3", "-s", "-1", "-B", address, "-p", str(port)], log="iperf3")
    try:
        wait_for(lambda: server.tcp_listening(port), timeout=10, what="iperf3 -s to listen")
        result = client.run(
            ["iperf3", "-c", address, "-p", str(port), "-t", f"{seconds:g}", "-J",
             "--connect-timeout", "5000", *extra],
            check=False,
            timeout=seconds + 60,
        )  # fmt: skip
        data = iperf3_json(result)
        if result.returncode != 0 or "error" in data:
            raise RuntimeError(f"iperf3 failed: {data.get('error', result.stderr)}")
        return data
    finally:
        process.stop()


def received_mbits(data: dict[str, Any]) -> float:
    """Mbit/s as the receiver counted them, from iperf3's JSON report ("sum" is the sender's)."""
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e6


def iperf3_mbits(client: Namespace, server: Namespace, address: str, seconds: float) -> float:
    """One TCP stream from ``client`` to ``address`` (served in ``server``): Mbit/s received."""
    return received_mbits(iperf3_run(client, server, address, seconds))
