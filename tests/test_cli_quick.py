"""`wgpy up`, `down` and `save`, run as root in fresh network namespaces and checked against
what wg-quick itself does (with wireguard-go as the userspace implementation for now).

Each test creates its own namespace (unique name) and interfaces (unique names, since the
control sockets in /var/run/wireguard are shared by all namespaces), and in the end deletes
them and stops the daemons that are still in its namespace, which it started.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgpy import keys
from wgpy.cli import Environment, ExitStatus, main
from wgpy.cli import quick as quick_module
from wgpy.config import parse
from wgpy.protocol import crypto

WGPY = Path(sys.executable).parent / "wgpy"
SOCKET_DIR = Path("/var/run/wireguard")
TOOLS = ("ip", "wg", "wg-quick", "wireguard-go", "nft")
_missing = [tool for tool in TOOLS if shutil.which(tool) is None]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or bool(_missing) or not Path("/dev/net/tun").exists(),
    reason=f"needs root, /dev/net/tun and {', '.join(TOOLS)} (missing: {_missing})",
)
# wgpy's own daemon by default; set WGPY_USERSPACE_IMPLEMENTATION=wireguard-go to check that
# `wgpy up` drives any implementation of the control protocol the same way.
USERSPACE = {
    "WGPY_USERSPACE_IMPLEMENTATION": os.environ.get("WGPY_USERSPACE_IMPLEMENTATION")
    or str(Path(sys.executable).parent / "wgpy-userspace")
}


def new_key() -> str:
    return keys.key_to_base64(crypto.generate_private_key(os.urandom))


def public_of(private: str) -> str:
    return keys.key_to_base64(crypto.public_key(keys.key_from_base64(private)))


def unique_name(prefix: str = "wgq") -> str:
    name = f"{prefix}{secrets.token_hex(4)}"
    assert len(name) <= 15
    return name


def write_conf(directory: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = directory / f"{name}.conf"
    path.write_text(text)
    path.chmod(mode)
    return path


class Netns:
    """A network namespace of our own, and the WireGuard interfaces made in it."""

    def __init__(self) -> None:
        self.name = f"wgpyt-{secrets.token_hex(5)}"
        self.interfaces: set[str] = set()
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=30)
        self.ip("link", "set", "lo", "up", check=True)

    def run(
        self, *argv: str | Path, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        inherited = {
            k: v for k, v in os.environ.items() if k not in ("WG_COLOR_MODE", "WG_HIDE_KEYS")
        }
        environment = {**inherited, **USERSPACE, **(env or {})}
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *map(str, argv)],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            check=check,
        )

    def wgpy(
        self, *argv: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        if argv and argv[0] == "up" and len(argv) > 1:
            self.interfaces.add(Path(argv[1]).name.removesuffix(".conf"))
        return self.run(WGPY, *argv, env=env)

    def wg(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.run("wg", *argv)

    def ip(self, *argv: str, check: bool = False) -> str:
        result = subprocess.run(
            ["ip", "-n", self.name, *argv], capture_output=True, text=True, timeout=30, check=check
        )
        return result.stdout

    def nft_tables(self) -> str:
        return self.run("nft", "list", "tables", check=True).stdout

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30
        ).stdout
        return [int(p) for p in out.split()]

    def wait_no_processes(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        for name in self.interfaces:
            self.ip("link", "delete", "dev", name)
        # Whatever still runs in the namespace was started by this test (the daemons).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if self.wait_no_processes(2.0):
                break
        subprocess.run(["ip", "netns", "delete", self.name], timeout=30, check=False)
        for name in self.interfaces:
            (SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)


@pytest.fixture
def netns() -> Iterator[Netns]:
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


def last_line(stderr: str) -> str:
    lines = stderr.strip("\n").split("\n")
    return lines[-1]


def assert_one_sentence_failure(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == ExitStatus.ERROR, result.stderr
    assert last_line(result.stderr) == message, result.stderr


def _is_peer_block(block: str) -> bool:
    return block.startswith(("peer: ", "[Peer]\n", "\x1b[33m\x1b[1mpeer"))


def canonical(text: str) -> str:
    """`wg show`/`showconf` output with its peers in a fixed order. wireguard-go lists peers
    in Go map order, which changes from one request to the next, and `wg` keeps that order
    among peers that never had a handshake; so those peer blocks (and the lines of the
    one-line-per-peer outputs) are sorted, and everything else stays where it is."""
    if not text.startswith(("interface: ", "[Interface]\n", "\x1b[0m")):
        return "".join(sorted(text.splitlines(keepends=True)))
    out: list[str] = []
    pending: list[str] = []
    for block in text.rstrip("\n").split("\n\n"):
        if _is_peer_block(block) and "latest handshake" not in block:
            pending.append(block)
        else:
            out += [*sorted(pending), block]
            pending = []
    return "\n\n".join(out + sorted(pending)) + "\n"


def basic_conf(private: str, peer: str, port: int | None = None, extra: str = "") -> str:
    port_line = f"ListenPort = {port}\n" if port is not None else ""
    return (
        f"[Interface]\nPrivateKey = {private}\n{port_line}"
        "Address = 10.71.0.1/24, fd71::1/64\n"
        f"{extra}"
        f"\n[Peer]\nPublicKey = {peer}\n"
        "AllowedIPs = 10.72.0.0/16, fd72::/48, 10.71.0.2/32\n"
        "Endpoint = 127.0.0.1:51000\n"
    )


# ----------------------------------------------------------------------------------------
# In-process: the checks before anything is touched


def run_main(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    environment = Environment(stdin=io.BytesIO(), stdout=stdout, stderr=stderr, env=env or {})
    status = main(list(argv), environment)
    return status, stdout.getvalue(), stderr.getvalue()


@pytest.mark.parametrize("command", ["up", "down", "save"])
def test_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    path = write_conf(tmp_path, "wg0", "[Interface]\n")
    assert run_main(command, str(path)) == (
        ExitStatus.ERROR,
        "",
        f"wgpy {command}: `wgpy {command}' must be run as root; try it with sudo\n",
    )


def test_up_needs_dev_net_tun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(quick_module, "TUN_PATH", tmp_path / "no-tun")
    path = write_conf(tmp_path, "wg0", f"[Interface]\nPrivateKey = {new_key()}\n")
    status, out, err = run_main("up", str(path))
    assert (status, out) == (ExitStatus.ERROR, "")
    assert err == (
        f"wgpy up: {tmp_path}/no-tun does not exist, so no TUN interface can be created; "
        "load the tun kernel module (modprobe tun) or give the container the device\n"
    )


def test_up_reports_a_bad_key_with_file_and_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    path = write_conf(tmp_path, "wg0", "[Interface]\n\nPrivateKey = abc\n")
    assert run_main("up", str(path)) == (
        ExitStatus.ERROR,
        "",
        f"wgpy up: {path} line 3: PrivateKey is not a valid key: "
        "expected 44 characters of base64 encoding 32 bytes, got 3\n",
    )


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("/nonexistent/wg0.conf", "`/nonexistent/wg0.conf' does not exist"),
        ("surely-not-here", "`/etc/wireguard/surely-not-here.conf' does not exist"),
    ],
)
def test_up_missing_file(monkeypatch: pytest.MonkeyPatch, argument: str, message: str) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert run_main("up", argument) == (ExitStatus.ERROR, "", f"wgpy up: {message}\n")


def test_up_bad_file_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    path = tmp_path / "not a name.conf"
    path.write_text("")
    status, _, err = run_main("up", str(path))
    assert status == ExitStatus.ERROR
    assert err.startswith(f"wgpy up: the name of the configuration file `{path}' must be")


def test_world_accessible_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    tmp_path.chmod(0o755)
    path = write_conf(tmp_path, "wg0", "[Interface]\nMTU = 1\n", mode=0o644)
    status, _, err = run_main("up", str(path))
    assert status == ExitStatus.ERROR
    assert err.split("\n")[0] == f"wgpy up: warning: `{path}' is world accessible"


# ----------------------------------------------------------------------------------------
# In namespaces


def wait_until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@needs_root
@pytest.mark.root
def test_up_and_down(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    log = tmp_path / "hooks.log"
    private, peer = new_key(), public_of(new_key())
    hooks = (
        f"PreUp = echo pre-up %i >> {log}\n"
        f"PostUp = echo post-up %i >> {log}\n"
        f"PostUp = echo 'second post-up' >> {log}\n"
        f"PreDown = echo pre-down %i >> {log}\n"
        f"PostDown = echo post-down %i >> {log}\n"
    )
    path = write_conf(tmp_path, name, basic_conf(private, peer, 51820, hooks))
    result = netns.wgpy("up", path)
    assert result.returncode == 0, result.stderr
    assert f"[#] {USERSPACE['WGPY_USERSPACE_IMPLEMENTATION']} {name}\n" in result.stderr
    assert f"[#] ip -4 address add 10.71.0.1/24 dev {name}\n" in result.stderr
    assert f"[#] ip -6 address add fd71::1/64 dev {name}\n" in result.stderr
    assert log.read_text() == f"pre-up {name}\npost-up {name}\nsecond post-up\n"

    # The interface works, as `wg` sees it.
    shown = netns.wg("show", name)
    assert shown.returncode == 0, shown.stderr
    assert f"interface: {name}\n" in shown.stdout
    assert f"public key: {public_of(private)}\n" in shown.stdout
    assert "listening port: 51820\n" in shown.stdout
    assert netns.wg("show", name, "allowed-ips").stdout == (
        f"{peer}\t10.72.0.0/16 fd72::/48 10.71.0.2/32\n"
    )
    # Addresses, MTU (the loopback route to the endpoint: 65536 - 80), up.
    link = netns.ip("link", "show", "dev", name)
    assert "mtu 65456 " in link and ",UP," in link
    addresses = netns.ip("address", "show", "dev", name)
    assert "inet 10.71.0.1/24 " in addresses and "inet6 fd71::1/64 " in addresses
    # A route per allowed IP that the addresses' routes do not already cover.
    routes4 = netns.ip("-4", "route", "show", "dev", name)
    routes6 = netns.ip("-6", "route", "show", "dev", name)
    assert "10.72.0.0/16 scope link" in routes4
    assert "10.71.0.2" not in routes4  # 10.71.0.0/24 from the address covers it, as in wg-quick
    assert "fd72::/48 metric 1024" in routes6
    assert netns.ip("rule", "show").count("lookup") == 3  # local, main, default: no policy
    assert name not in netns.nft_tables()

    # `wgpy show` and `wgpy showconf` print what `wg` prints.
    assert netns.wgpy("show", name).stdout == shown.stdout
    assert netns.wgpy("showconf", name).stdout == netns.wg("showconf", name).stdout

    result = netns.wgpy("down", path)
    assert result.returncode == 0, result.stderr
    assert f"[#] ip link delete dev {name}\n" in result.stderr
    assert log.read_text().endswith(f"pre-down {name}\npost-down {name}\n")
    assert netns.ip("link", "show", "dev", name) == ""
    assert "10.72.0.0/16" not in netns.ip("-4", "route", "show")
    assert not (SOCKET_DIR / f"{name}.sock").exists()
    assert netns.wait_no_processes(), "the daemon did not exit"
    assert netns.wg("show", name).returncode != 0


@needs_root
@pytest.mark.root
def test_down_by_interface_name_without_a_file(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    path = write_conf(tmp_path, name, basic_conf(new_key(), public_of(new_key())))
    assert netns.wgpy("up", path).returncode == 0
    result = netns.wgpy("down", name)  # no /etc/wireguard/NAME.conf
    assert result.returncode == 0, result.stderr
    assert netns.ip("link", "show", "dev", name) == ""
    assert netns.wait_no_processes()


def normalized_state(ns: Netns, name: str) -> str:
    """Routes, rules, nftables, addresses and link of an interface, with its name, its
    link-local address (random per namespace) and rule priorities made comparable."""
    parts = [
        ns.ip("-4", "rule", "show"),
        ns.ip("-6", "rule", "show"),
        ns.ip("-4", "route", "show", "table", "all"),
        ns.ip("-6", "route", "show", "table", "all"),
        ns.ip("address", "show", "dev", name),
        ns.ip("link", "show", "dev", name),
        ns.run("nft", "list", "ruleset").stdout,
        ns.run("sysctl", "net.ipv4.conf.all.src_valid_mark").stdout,
        ns.wg("showconf", name).stdout,
        ns.wg("show", name, "fwmark").stdout,
    ]
    text = "\n".join(parts).replace(name, "IFNAME")
    text = re.sub(r"fe80::[0-9a-f:]+", "fe80::LL", text)
    text = re.sub(r"^\d+: ", "N: ", text, flags=re.M)  # interface indexes
    text = re.sub(r"valid_lft \S+ preferred_lft \S+", "", text)
    return text


@needs_root
@pytest.mark.root
@pytest.mark.parametrize(
    ("allowed_ips", "extra"),
    [
        ("0.0.0.0/0, ::/0, 10.73.0.0/16", ""),
        ("0.0.0.0/0", "MTU = 1400\n"),
        ("::/0, 10.73.1.0/24, 10.73.0.0/24", ""),
        ("0.0.0.0/0, 10.73.0.0/16", "Table = 1234\n"),
        ("0.0.0.0/0, ::/0", "Table = off\n"),
        ("10.73.0.0/16, 10.73.1.0/24", "FwMark = 0x1234\n"),
    ],
)
def test_same_state_as_wg_quick(tmp_path: Path, allowed_ips: str, extra: str) -> None:
    """wg-quick in one namespace and wgpy in another, from the same file, leave the same
    routes, rules, nftables tables, sysctl, addresses, MTU and device configuration."""
    private, peer = new_key(), public_of(new_key())
    text = (
        f"[Interface]\nPrivateKey = {private}\nListenPort = 51820\n"
        f"Address = 10.74.0.1/24, fd74::1/64\n{extra}"
        f"[Peer]\nPublicKey = {peer}\nAllowedIPs = {allowed_ips}\nEndpoint = 127.0.0.1:51000\n"
    )
    theirs, ours = Netns(), Netns()
    try:
        name_a, name_b = unique_name("wgr"), unique_name("wgp")
        theirs.interfaces.add(name_a)
        (tmp_path / "a").mkdir(mode=0o700)
        (tmp_path / "b").mkdir(mode=0o700)
        path_a = write_conf(tmp_path / "a", name_a, text)
        path_b = write_conf(tmp_path / "b", name_b, text)
        result = theirs.run(
            "wg-quick", "up", path_a, env={"WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go"}
        )
        assert result.returncode == 0, result.stderr
        result = ours.wgpy("up", path_b)
        assert result.returncode == 0, result.stderr
        state, reference = normalized_state(ours, name_b), normalized_state(theirs, name_a)
        # the one intended difference: wgpy gives its TUN a transmit queue of 5,000 packets
        assert " qlen 5000\n" in state and " qlen 500\n" in reference
        assert state.replace(" qlen 5000\n", " qlen 500\n") == reference
        assert ours.wgpy("show", name_b).stdout == ours.wg("show", name_b).stdout

        # And down leaves both namespaces alike again, with nothing of the interface left.
        result = theirs.run("wg-quick", "down", path_a)
        assert result.returncode == 0, result.stderr
        result = ours.wgpy("down", path_b)
        assert result.returncode == 0, result.stderr
        assert normalized_state(ours, name_b) == normalized_state(theirs, name_a)
        assert "suppress_prefixlength" not in ours.ip("rule", "show")
        assert "suppress_prefixlength" not in ours.ip("-6", "rule", "show")
        assert "wg-quick" not in ours.nft_tables()
        assert ours.wait_no_processes()
    finally:
        theirs.close()
        ours.close()


@needs_root
@pytest.mark.root
def test_default_route(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    text = (
        f"[Interface]\nPrivateKey = {new_key()}\nAddress = 10.75.0.1/24, fd75::1/64\n"
        f"[Peer]\nPublicKey = {public_of(new_key())}\nAllowedIPs = 0.0.0.0/0, ::/0\n"
        "Endpoint = 127.0.0.1:51000\n"
    )
    path = write_conf(tmp_path, name, text)
    result = netns.wgpy("up", path)
    assert result.returncode == 0, result.stderr
    assert netns.wg("show", name, "fwmark").stdout == "0xca6c\n"
    for proto in ("-4", "-6"):
        rules = netns.ip(proto, "rule", "show")
        assert "not from all fwmark 0xca6c lookup 51820" in rules
        assert "from all lookup main suppress_prefixlength 0" in rules
        assert f"default dev {name}" in netns.ip(proto, "route", "show", "table", "51820")
    tables = netns.nft_tables()
    assert f"table ip wg-quick-{name}\n" in tables
    assert f"table ip6 wg-quick-{name}\n" in tables
    ruleset = netns.run("nft", "list", "table", "ip", f"wg-quick-{name}").stdout
    assert f'iifname != "{name}" ip daddr 10.75.0.1 fib saddr type != local drop' in ruleset
    assert "meta l4proto udp meta mark 0x0000ca6c ct mark set meta mark" in ruleset
    sysctl = netns.run("sysctl", "-n", "net.ipv4.conf.all.src_valid_mark").stdout
    assert sysctl.strip() == "1"
    assert netns.wgpy("show", name).stdout == netns.wg("show", name).stdout

    assert netns.wgpy("down", path).returncode == 0
    for proto in ("-4", "-6"):
        rules = netns.ip(proto, "rule", "show")
        assert "51820" not in rules and "suppress_prefixlength" not in rules
    assert name not in netns.nft_tables()
    assert netns.wait_no_processes()


@needs_root
@pytest.mark.root
def test_table_number_and_off(netns: Netns, tmp_path: Path) -> None:
    numbered, off = unique_name(), unique_name()
    peer = public_of(new_key())
    text = "[Interface]\nPrivateKey = {}\nTable = {}\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\n"
    path = write_conf(tmp_path, numbered, text.format(new_key(), 4321, peer, "10.76.0.0/16"))
    assert netns.wgpy("up", path).returncode == 0
    assert f"10.76.0.0/16 dev {numbered}" in netns.ip("route", "show", "table", "4321")
    assert "10.76.0.0/16" not in netns.ip("route", "show")
    path = write_conf(tmp_path, off, text.format(new_key(), "off", peer, "10.77.0.0/16, ::/0"))
    assert netns.wgpy("up", path).returncode == 0
    assert "10.77.0.0/16" not in netns.ip("route", "show", "table", "all")
    assert "lookup" not in netns.ip("-6", "rule", "show").replace("lookup local", "").replace(
        "lookup main", ""
    )


@needs_root
@pytest.mark.root
def test_host_name_endpoint_is_resolved_at_up(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    text = f"[Interface]\nPrivateKey = {new_key()}\n[Peer]\nPublicKey = {public_of(new_key())}\n"
    path = write_conf(tmp_path, name, text + "Endpoint = localhost:51005\n")
    assert netns.wgpy("up", path).returncode == 0
    endpoint = netns.wg("show", name, "endpoints").stdout.split("\t")[1]
    assert endpoint in ("127.0.0.1:51005\n", "[::1]:51005\n")


@needs_root
@pytest.mark.root
def test_dns_without_resolvconf_warns(netns: Netns, tmp_path: Path) -> None:
    if shutil.which("resolvconf"):
        pytest.skip("resolvconf is installed; this test must not change the host's DNS")
    name = unique_name()
    path = write_conf(tmp_path, name, f"[Interface]\nPrivateKey = {new_key()}\nDNS = 10.0.0.53\n")
    result = netns.wgpy("up", path)
    assert result.returncode == 0, result.stderr
    assert (
        "wgpy up: warning: resolvconf is not installed, so the DNS servers 10.0.0.53 are not "
        "set up\n"
    ) in result.stderr


@needs_root
@pytest.mark.root
def test_save_config_at_down_and_save(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    private, peer_private = new_key(), new_key()
    peer = public_of(peer_private)
    text = (
        "# this comment goes\n"
        f"[Interface]\nPrivateKey = {private}\nListenPort = 51830\nAddress = 10.78.0.1/24\n"
        "MTU = 1400\nDNS = 10.0.0.53, corp.example\nSaveConfig = true\nPostUp = true %i\n"
        f"[Peer]\nPublicKey = {peer}\nAllowedIPs = 10.78.0.2/32\nEndpoint = localhost:51006\n"
    )
    path = write_conf(tmp_path, name, text, mode=0o640)
    assert netns.wgpy("up", path).returncode == 0
    new_peer = public_of(new_key())
    changed = netns.wg(
        "set", name, "listen-port", "51831", "peer", new_peer, "allowed-ips", "10.78.0.3/32"
    )
    assert changed.returncode == 0, changed.stderr
    netns.ip("address", "add", "10.79.0.1/24", "dev", name, check=True)

    result = netns.wgpy("save", path)
    assert result.returncode == 0, result.stderr
    saved = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    endpoints = dict(
        line.split("\t") for line in netns.wg("show", name, "endpoints").stdout.splitlines()
    )
    endpoint = endpoints[peer]
    expected_head = (
        "[Interface]\nAddress = 10.78.0.1/24\nAddress = 10.79.0.1/24\n"
        "DNS = 10.0.0.53\nDNS = corp.example\nMTU = 1400\nSaveConfig = true\n"
        "PostUp = true %i\n"
    )
    showconf = netns.wg("showconf", name).stdout
    expected = expected_head + showconf.removeprefix("[Interface]\n").rstrip("\n") + "\n"
    assert canonical(saved) == canonical(expected)
    assert f"Endpoint = {endpoint}\n" in saved  # the name was resolved at up
    assert "ListenPort = 51831\n" in saved and new_peer in saved

    netns.wg("set", name, "peer", new_peer, "remove")
    assert netns.wgpy("down", path).returncode == 0
    config = parse(path.read_text())
    assert [p.public_key for p in config.peers] == [keys.key_from_base64(peer)]
    assert config.interface.listen_port == 51831
    assert config.interface.save_config
    assert path.stat().st_mode & 0o777 == 0o600


# ----------------------------------------------------------------------------------------
# Failures: one sentence, exit 1, nothing left behind


@needs_root
@pytest.mark.root
def test_bad_key_reports_file_and_line(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    path = write_conf(
        tmp_path, name, f"[Interface]\nAddress = 10.0.0.1/24\nPrivateKey = {new_key()[:-2]}\n"
    )
    result = netns.wgpy("up", path)
    assert_one_sentence_failure(
        result,
        f"wgpy up: {path} line 3: PrivateKey is not a valid key: "
        "expected 44 characters of base64 encoding 32 bytes, got 42",
    )
    assert result.stderr.count("\n") == 1
    assert netns.ip("link", "show", "dev", name) == ""


@needs_root
@pytest.mark.root
def test_interface_exists(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    path = write_conf(tmp_path, name, basic_conf(new_key(), public_of(new_key())))
    assert netns.wgpy("up", path).returncode == 0
    result = netns.wgpy("up", path)
    assert_one_sentence_failure(result, f"wgpy up: `{name}' already exists")
    assert "[#]" not in result.stderr
    assert netns.wg("show", name).returncode == 0  # the first one is untouched
    # A non-WireGuard link of that name counts too.
    other = unique_name()
    netns.ip("link", "add", other, "type", "veth", "peer", "name", unique_name(), check=True)
    path = write_conf(tmp_path, other, basic_conf(new_key(), public_of(new_key())))
    assert_one_sentence_failure(netns.wgpy("up", path), f"wgpy up: `{other}' already exists")


@needs_root
@pytest.mark.root
def test_port_in_use(netns: Netns, tmp_path: Path) -> None:
    first, second = unique_name(), unique_name()
    peer = public_of(new_key())
    assert (
        netns.wgpy("up", write_conf(tmp_path, first, basic_conf(new_key(), peer, 51840))).returncode
        == 0
    )
    text = f"[Interface]\nPrivateKey = {new_key()}\nListenPort = 51840\nAddress = 10.80.0.1/24\n"
    result = netns.wgpy("up", write_conf(tmp_path, second, text))
    assert_one_sentence_failure(
        result,
        f"wgpy up: the listen port 51840 of {second} is already in use; "
        "choose another ListenPort or stop what uses it",
    )
    assert f"[#] ip link delete dev {second}\n" in result.stderr  # rolled back
    assert netns.ip("link", "show", "dev", second) == ""
    assert wait_until(lambda: not (SOCKET_DIR / f"{second}.sock").exists())
    assert netns.wg("show", first).returncode == 0


@needs_root
@pytest.mark.root
def test_failing_hook_rolls_back(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    text = basic_conf(new_key(), public_of(new_key()), extra="PostUp = exit 3\n")
    text = text.replace("AllowedIPs = ", "AllowedIPs = 0.0.0.0/0, ")
    result = netns.wgpy("up", write_conf(tmp_path, name, text))
    assert_one_sentence_failure(
        result, "wgpy up: the PostUp hook `exit 3' failed with exit status 3"
    )
    assert netns.ip("link", "show", "dev", name) == ""
    assert "suppress_prefixlength" not in netns.ip("rule", "show")
    assert name not in netns.nft_tables()
    assert netns.wait_no_processes()


@needs_root
@pytest.mark.root
def test_failing_command_rolls_back(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    text = basic_conf(new_key(), public_of(new_key()), extra="Table = no-such-table\n")
    result = netns.wgpy("up", write_conf(tmp_path, name, text))
    assert result.returncode == ExitStatus.ERROR
    assert last_line(result.stderr).startswith(
        f"wgpy up: `ip -6 route add fd72::/48 dev {name} table no-such-table' failed: Error: "
    )
    assert netns.ip("link", "show", "dev", name) == ""
    assert netns.wait_no_processes()


@needs_root
@pytest.mark.root
def test_failing_userspace_implementation(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    path = write_conf(tmp_path, name, f"[Interface]\nPrivateKey = {new_key()}\n")
    result = netns.wgpy("up", path, env={"WGPY_USERSPACE_IMPLEMENTATION": "false"})
    assert_one_sentence_failure(
        result, f"wgpy up: the userspace implementation `false {name}' failed with exit status 1"
    )


@needs_root
@pytest.mark.root
def test_down_of_something_that_is_not_up(netns: Netns, tmp_path: Path) -> None:
    name = unique_name()
    path = write_conf(tmp_path, name, "[Interface]\n")
    assert_one_sentence_failure(
        netns.wgpy("down", path), f"wgpy down: `{name}' is not a WireGuard interface"
    )
    assert_one_sentence_failure(
        netns.wgpy("down", name), f"wgpy down: `{name}' is not a WireGuard interface"
    )
