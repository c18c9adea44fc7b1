"""The exit node on the node's side without root: which peer ``--exit-node`` names
(wgpy/mesh/client/exitnode.py), how the reconcile step gives it the default routes, and the
order in which ExitRouting adds and deletes the host's policy routing (its commands recorded
by a runner that answers as ``ip`` does; tests/interop/test_exit_node.py runs them for real)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from wgpy.cli import main, mesh
from wgpy.cli.environment import CommandError, Environment
from wgpy.host.run import HostNetworkError
from wgpy.keys import key_from_base64, key_to_base64
from wgpy.mesh.client import daemon, reconcile
from wgpy.mesh.client.api import NodeClient
from wgpy.mesh.client.exitnode import check_exit_node, choose
from wgpy.mesh.client.exitroute import ExitRouting, control_plane_hosts, put_back, resolve
from wgpy.mesh.client.netmap import PeerRecord, parse_peer
from wgpy.mesh.client.node import MeshError, MeshNode, NodeConfig
from wgpy.mesh.client.reconcile import Current, DevicePeer, SendStaged, SetAllowedIPs
from wgpy.mesh.client.state import Settings, StateDir

from .fakes import FakeHost, FakeInterface, FakeServer, new_keypair, until

ME = bytes([1]) * 32
DEFAULTS = {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}


def key(i: int) -> bytes:
    return bytes([i]) * 32


def peer(i: int, hostname: str, **fields: Any) -> PeerRecord:
    return parse_peer(
        {
            "public_key": key_to_base64(key(i)),
            "hostname": hostname,
            "user": "alice",
            "name": f"{hostname}.alice.mesh.internal",
            "addresses": [f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"],
            "can_reach": True,
            "reachable_from": True,
            **fields,
        }
    )


def peers(*records: PeerRecord) -> dict[bytes, PeerRecord]:
    return {r.public_key: r for r in records}


# ------------------------------------------------------------------ choosing the peer


def test_the_map_field_is_read_and_defaults_to_false() -> None:
    assert peer(2, "exit", exit_node=True).exit_node
    assert not peer(2, "exit").exit_node
    with pytest.raises(ValueError, match="exit_node"):
        peer(2, "exit", exit_node="yes")


def test_an_exit_node_is_named_by_full_or_short_name_host_name_or_address() -> None:
    exit_peer = peer(2, "exit", exit_node=True)
    mesh = peers(exit_peer, peer(3, "laptop"))
    for wanted in (
        "exit.alice.mesh.internal",
        "EXIT.alice.mesh.internal.",
        "exit",
        "exit.alice",
        "100.64.0.2",
        "fd7a:115c:a1e0::2",
    ):
        choice = choose(check_exit_node(wanted), mesh)
        assert choice.public_key == key(2) and choice.problem is None, wanted
        assert choice.name == "exit.alice.mesh.internal"
    assert choose("", mesh).public_key is None and choose("", mesh).problem is None


def test_a_peer_that_is_missing_ambiguous_or_no_exit_node_is_refused_with_a_sentence() -> None:
    mesh = peers(peer(2, "exit", exit_node=True), peer(3, "laptop"))
    missing = choose("nosuch", mesh)
    assert missing.public_key is None
    assert missing.problem is not None and "no peer called nosuch" in missing.problem
    assert choose("100.64.0.9", mesh).problem is not None
    # a trailing part of a name is no name of a peer
    assert "no peer called alice.mesh.internal" in str(choose("alice.mesh.internal", mesh).problem)
    not_exit = choose("laptop", mesh)
    assert not_exit.public_key is None and "is not an exit node" in str(not_exit.problem)
    twins = peers(peer(2, "box", exit_node=True), peer(3, "box", user="bob"))
    assert "more than one" in str(choose("box", twins).problem)


def test_the_option_takes_a_name_or_an_address() -> None:
    assert check_exit_node(" Exit.Alice. ") == "exit.alice"
    assert check_exit_node("fd7a:115c:a1e0:0::2") == "fd7a:115c:a1e0::2"
    assert check_exit_node("") == ""
    for bad in ("exit node", "-exit", "a..b", "x" * 300):
        with pytest.raises(ValueError, match="neither a peer's name nor an IP address"):
            check_exit_node(bad)


# ------------------------------------------------------------------ the device's allowed IPs


def current(records: dict[bytes, PeerRecord], exit_node: bytes | None, **device: Any) -> Current:
    return Current(
        public_key=ME,
        peers=records,
        device={
            k: DevicePeer(device.get(f"p{k[0]}", frozenset(r.allowed_ips)), reply_only=False)
            for k, r in records.items()
        },
        exit_node=exit_node,
    )


def test_the_exit_node_gains_the_default_routes_and_loses_them_again() -> None:
    records = peers(peer(2, "exit", exit_node=True), peer(3, "other", exit_node=True))
    plan = reconcile.exit_node_changed(None, current(records, key(2)))
    assert plan.operations[1] == SendStaged(key(2))
    op = plan.operations[0]
    assert isinstance(op, SetAllowedIPs) and op.public_key == key(2)
    assert set(op.allowed_ips) == set(records[key(2)].allowed_ips) | DEFAULTS
    # from one exit node to another: the old one loses them, the new one gains them
    with_defaults = frozenset(op.allowed_ips)
    moved = reconcile.exit_node_changed(key(2), current(records, key(3), p2=with_defaults))
    changed = {
        o.public_key: set(o.allowed_ips) for o in moved.operations if isinstance(o, SetAllowedIPs)
    }
    assert changed == {
        key(2): set(records[key(2)].allowed_ips),
        key(3): set(records[key(3)].allowed_ips) | DEFAULTS,
    }
    # nothing to do when the device already has it so
    assert not reconcile.exit_node_changed(
        key(2), current(records, key(2), p2=with_defaults)
    ).operations


def test_a_map_update_of_the_exit_node_keeps_its_default_routes() -> None:
    records = peers(peer(2, "exit", exit_node=True))
    with_defaults = frozenset(records[key(2)].allowed_ips) | DEFAULTS
    now = current(records, key(2), p2=with_defaults)
    same = {"type": "peer_upsert", "peer": {**_entry(2), "online": True}}
    ops = reconcile.peer_upsert(same, now).operations
    assert not [o for o in ops if isinstance(o, SetAllowedIPs)]
    # a change of its addresses keeps them too
    moved = {"type": "peer_upsert", "peer": {**_entry(2), "addresses": ["100.64.0.9/32"]}}
    changed = [
        o for o in reconcile.peer_upsert(moved, now).operations if isinstance(o, SetAllowedIPs)
    ]
    assert set(changed[0].allowed_ips) == {ipaddress.ip_network("100.64.0.9/32")} | DEFAULTS
    # a new peer that is the exit node is added with them
    fresh = reconcile.full_map({"type": "full", "peers": [_entry(2)]}, current({}, key(2)))
    added = [o for o in fresh.operations if isinstance(o, reconcile.AddPeer)]
    assert set(added[0].allowed_ips) >= DEFAULTS


def _entry(i: int) -> dict[str, Any]:
    return {
        "public_key": key_to_base64(key(i)),
        "hostname": "exit",
        "name": "exit.alice.mesh.internal",
        "addresses": [f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"],
        "exit_node": True,
    }


def test_the_map_can_never_hand_out_a_default_route_itself() -> None:
    with pytest.raises(ValueError, match="default route"):
        parse_peer({**_entry(2), "addresses": ["0.0.0.0/0"]})


# ------------------------------------------------------------------ the host's routing


class FakeIp:
    """Answers the reading commands as ``ip -json`` does on a host with one LAN link; records
    the changing ones."""

    def __init__(self, fail: str | None = None, nft: bool = True) -> None:
        self.calls: list[list[str]] = []
        self.scripts: list[str] = []  # what nft read on stdin
        self.fail = fail
        self.nft = nft

    async def __call__(self, argv: Sequence[str], stdin: str | None = None) -> str:
        argv = list(argv)
        text = " ".join(argv)
        if self.fail is not None and self.fail in text:
            raise HostNetworkError(f"`{text}' failed: RTNETLINK answers: File exists")
        if argv[0] == "nft" and not self.nft:
            raise HostNetworkError("cannot run `nft': No such file or directory")
        if argv[:3] == ["ip", "-o", "address"]:
            return "7: wgpy0    inet 100.64.0.2/32 scope global wgpy0\n"
        if "show" in argv:
            if "rule" in argv and "-json" not in argv:
                return "0:\tfrom all lookup local\n5330:\tnot from all fwmark 0x1 lookup 7\n"
            if "all" in argv and "route" in argv:
                return json.dumps([{"dst": "default", "dev": "x", "table": "51820"}])
            if "main" in argv:
                return json.dumps(
                    [
                        {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0"},
                        {
                            "dst": "192.168.1.0/24",
                            "dev": "eth0",
                            "protocol": "kernel",
                            "scope": "link",
                        },
                    ]
                )
            return "[]"
        self.calls.append(argv)
        if stdin is not None:
            self.scripts.append(stdin)
        return ""


class Marks:
    def __init__(self) -> None:
        self.marks: list[int] = []

    def __call__(self, mark: int) -> None:
        self.marks.append(mark)


def sysctl_tree(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "net/ipv4/conf/all/src_valid_mark"
    path.parent.mkdir(parents=True)
    path.write_text(value + "\n")
    return tmp_path


async def test_routing_is_added_in_order_and_deleted_exactly_in_reverse(tmp_path: Path) -> None:
    ip, marks = FakeIp(), Marks()
    proc = sysctl_tree(tmp_path, "0")
    routing = ExitRouting("wgpy0", marks, structlog.get_logger(), run=ip, proc_sys=proc)
    server = ipaddress.ip_network("10.0.0.1/32")
    routes = await routing.apply((4,), [server], allow_lan=False)
    assert routing.active and routes.table == 51821  # 51820 holds a route
    assert marks.marks == [51821]
    assert (proc / "net/ipv4/conf/all/src_valid_mark").read_text() == "1\n"
    added = [" ".join(argv) for argv in ip.calls]
    assert added == [
        "ip -4 rule del pref 5330 not from all fwmark 0x1 lookup 7",  # a killed node's
        "nft -f /dev/stdin",  # wg-quick's table: the replies' mark, the overlay's addresses
        "ip -4 route add default dev wgpy0 table 51821",
        "ip -4 rule add pref 5300 to 10.0.0.1/32 lookup main",
        "ip -4 rule add pref 5305 fwmark 51821 lookup main",
        "ip -4 rule add pref 5310 to 192.168.1.0/24 lookup 51821",
        "ip -4 rule add pref 5320 lookup main suppress_prefixlength 0",
        "ip -4 rule add pref 5330 not fwmark 51821 lookup 51821",
    ]
    table = ip.scripts[0]
    assert table.startswith("add table ip wg-quick-wgpy0\n")
    assert "ip daddr 100.64.0.2 fib saddr type != local drop" in table
    assert "meta l4proto udp mark 51821 ct mark set mark" in table
    ip.calls.clear()
    await routing.remove()
    assert [" ".join(argv) for argv in ip.calls] == [
        a.replace(" add ", " del ") for a in reversed(added[1:])
    ]
    assert ip.scripts[-1] == "delete table ip wg-quick-wgpy0\n"
    assert not routing.active and marks.marks == [51821, 0]
    assert (proc / "net/ipv4/conf/all/src_valid_mark").read_text() == "0\n"
    ip.calls.clear()
    await routing.remove()  # twice: nothing more
    assert ip.calls == []


async def test_the_src_valid_mark_before_is_written_down_while_it_is_changed(
    tmp_path: Path,
) -> None:
    proc = sysctl_tree(tmp_path / "proc", "0")
    record = tmp_path / "exit-routing.json"
    log = structlog.get_logger()
    routing = ExitRouting("wgpy0", Marks(), log, run=FakeIp(), proc_sys=proc, record=record)
    await routing.apply((4,), [], allow_lan=False)
    assert json.loads(record.read_text()) == {"src_valid_mark": "0"}
    assert record.stat().st_mode & 0o777 == 0o600
    await routing.remove()
    assert not record.exists()
    assert (proc / "net/ipv4/conf/all/src_valid_mark").read_text() == "0\n"
    # already on: not ours, nothing written down
    (proc / "net/ipv4/conf/all/src_valid_mark").write_text("1\n")
    routing = ExitRouting("wgpy0", Marks(), log, run=FakeIp(), proc_sys=proc, record=record)
    await routing.apply((4,), [], allow_lan=False)
    assert not record.exists()
    await routing.remove()
    assert (proc / "net/ipv4/conf/all/src_valid_mark").read_text() == "1\n"


async def test_a_killed_runs_src_valid_mark_is_put_back_from_its_record(tmp_path: Path) -> None:
    proc = sysctl_tree(tmp_path / "proc", "0")
    record = tmp_path / "exit-routing.json"
    routing = ExitRouting(
        "wgpy0", Marks(), structlog.get_logger(), run=FakeIp(), proc_sys=proc, record=record
    )
    await routing.apply((4,), [], allow_lan=False)  # and never removed: killed
    assert (proc / "net/ipv4/conf/all/src_valid_mark").read_text() == "1\n"
    assert put_back(record, proc) == "0"
    assert (proc / "net/ipv4/conf/all/src_valid_mark").read_text() == "0\n"
    assert not record.exists()
    assert put_back(record, proc) is None  # once
    for junk in ("{", '{"src_valid_mark": "7"}', '{"src_valid_mark": 0}', "[]"):
        record.write_text(junk)
        (proc / "net/ipv4/conf/all/src_valid_mark").write_text("1\n")
        assert put_back(record, proc) is None
        assert not record.exists()
        assert (proc / "net/ipv4/conf/all/src_valid_mark").read_text() == "1\n"


async def test_a_failure_half_way_undoes_what_was_added(tmp_path: Path) -> None:
    ip = FakeIp(fail="pref 5320")
    proc = sysctl_tree(tmp_path, "1")
    routing = ExitRouting("wgpy0", Marks(), structlog.get_logger(), run=ip, proc_sys=proc)
    with pytest.raises(HostNetworkError, match="File exists"):
        await routing.apply((4,), [], allow_lan=True)
    assert not routing.active
    deleted = [" ".join(a) for a in ip.calls if " del " in " ".join(a)]
    assert deleted[-2:] == [
        "ip -4 rule del pref 5300 to 192.168.1.0/24 lookup main",
        "ip -4 route del default dev wgpy0 table 51821",
    ]
    assert (proc / "net/ipv4/conf/all/src_valid_mark").read_text() == "1\n"  # not ours


async def test_without_nft_the_routing_is_set_up_all_the_same(tmp_path: Path) -> None:
    ip = FakeIp(nft=False)
    proc = sysctl_tree(tmp_path, "1")
    routing = ExitRouting("wgpy0", Marks(), structlog.get_logger(), run=ip, proc_sys=proc)
    await routing.apply((4, 6), [], allow_lan=True)
    assert routing.active and not ip.scripts
    assert [a[1] for a in ip.calls if "route" in a] == ["-4", "-6"]
    await routing.remove()
    assert not routing.active


async def test_the_control_plane_hosts_are_resolved_to_host_prefixes() -> None:
    hosts = control_plane_hosts(
        "https://localhost:8443/", ["10.0.0.2", "10.0.0.2"], ["turn.invalid"]
    )
    assert hosts == ["localhost", "10.0.0.2", "turn.invalid"]
    found = await resolve(["10.0.0.2", "[2001:db8::1]", "localhost", "turn.invalid"], timeout=2)
    assert found == [ipaddress.ip_network("10.0.0.2/32"), ipaddress.ip_network("2001:db8::1/128")]


# ------------------------------------------------------------------ the options


def up_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mesh.add_up_arguments(parser)
    return parser.parse_args(list(argv))


def environment() -> Environment:
    return Environment(stdin=io.BytesIO(), stdout=io.StringIO(), stderr=io.StringIO(), env={})


def test_the_options_are_kept_for_the_next_up_and_cleared_with_an_empty_value(
    tmp_path: Path,
) -> None:
    server = ["--login-server", "https://mesh.example", "--state-dir", str(tmp_path / "s")]
    args = up_args(*server, "--exit-node", "Exit.Alice", "--exit-node-allow-lan-access")
    options, state = mesh.prepare_up(args, environment())
    node = options.node
    assert (node.exit_node, node.exit_node_allow_lan_access, node.advertise_exit_node) == (
        "exit.alice",
        True,
        False,
    )
    assert daemon.DaemonOptions.from_json(options.to_json()) == options
    settings = Settings("https://mesh.example", "wgpy0", 41641, "box", exit_node="exit.alice")
    state.write_settings(dataclasses.replace(settings, exit_node_allow_lan_access=True))
    again, _ = mesh.prepare_up(up_args(*server), environment())
    assert again.node.exit_node == "exit.alice" and again.node.exit_node_allow_lan_access
    cleared, _ = mesh.prepare_up(
        up_args(*server, "--exit-node=", "--exit-node-allow-lan-access=false"), environment()
    )
    assert cleared.node.exit_node == "" and not cleared.node.exit_node_allow_lan_access
    offer = up_args(*server, "--advertise-exit-node", "--exit-node=")
    assert mesh.prepare_up(offer, environment())[0].node.advertise_exit_node
    # offering and using at once: refused, also when one of them is kept from the last up
    with pytest.raises(CommandError, match="cannot offer to be an exit node and use one"):
        mesh.prepare_up(
            up_args(*server, "--advertise-exit-node", "--exit-node", "x"), environment()
        )
    state.write_settings(dataclasses.replace(settings, advertise_exit_node=True))
    with pytest.raises(CommandError, match="--advertise-exit-node=false or --exit-node="):
        mesh.prepare_up(up_args(*server), environment())
    # settings written before these options existed
    old = {"server_url": "https://x", "interface": "wg0", "listen_port": 1, "hostname": "h"}
    assert Settings.from_json(old).exit_node == ""


def test_bad_option_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--exit-node", "two words"], ["--advertise-exit-node=maybe"]):
        with pytest.raises(SystemExit):
            up_args(*argv)
    assert "is neither true nor false" in capsys.readouterr().err


# ------------------------------------------------------------------ the node, end to end


def test_the_node_routes_through_the_exit_node_while_the_map_offers_it(tmp_path: Path) -> None:
    """Against the fake server, a real Device, recorded host commands: the exit peer gets
    the default routes on the device (never as routes in the main table), the policy routing
    is set up; when the map stops offering it, both go; a first map that does not offer it
    stops the node in one sentence."""
    with FakeServer() as server:
        _, pub_exit = new_keypair()
        exit_node = server.add_node("exit", pub_exit, ["192.0.2.2:41641"])
        exit_node.exit_node = True
        auth = server.add_auth_key()
        ip = FakeIp()
        proc = sysctl_tree(tmp_path, "0")

        async def main() -> None:
            state = StateDir(tmp_path / "state")
            private = state.load_or_create_key()
            config = NodeConfig(
                "wgtest0", 41641, "a", auth_key=auth, exit_node="exit", endpoint_interval=0.05
            )
            host = FakeHost()

            async def factory(name: str, key: bytes, port: int) -> FakeInterface:
                return FakeInterface(name, key, port)

            client = NodeClient(server.url, timeout=2.0)
            node = MeshNode(
                config, client, state, private, interface_factory=factory, host=host,
                exit_runner=ip,
            )  # fmt: skip
            node_module_proc(node, proc)
            task = asyncio.create_task(node.run())
            try:
                await asyncio.wait_for(node.ready.wait(), 5)
                exit_key = key_from_base64(pub_exit)
                prefixes = set(node.device.allowed_ips.prefixes(node.device.peers[exit_key]))
                assert prefixes >= DEFAULTS and node.exit_key == exit_key
                assert node.exit_routing is not None and node.exit_routing.active
                assert all(n.prefixlen for n in node.hostnet.routes)  # type: ignore[union-attr]
                assert "ip -4 rule add pref 5330 not fwmark 51821 lookup 51821" in [
                    " ".join(a) for a in ip.calls
                ]
                # the approval is revoked: the map no longer offers it
                exit_node.exit_node = False
                me = server.node_by_key(key_to_base64(node.public_key))
                server.push(me.id, {"type": "peer_upsert", "peer": exit_node.peer_json()})
                await until(lambda: not node.exit_routing.active, 2.0)  # type: ignore[union-attr]
                prefixes = set(node.device.allowed_ips.prefixes(node.device.peers[exit_key]))
                assert not prefixes & DEFAULTS and node.exit_key is None
                assert node.exit_problem is not None and "not an exit node" in node.exit_problem
                # this server has no routes API: the empty list was sent once, not again
                await asyncio.sleep(0.2)
                assert len(server.requests_to("POST", "/api/v1/node/routes")) == 1
            finally:
                node.stop()
                await asyncio.wait_for(task, 5)
                await client.close()
            # the node down: every rule and route it added deleted, in reverse
            ours = [" ".join(a) for a in ip.calls if "51821" in a or "wgtest0" in a]
            added = [a for a in ours if " add " in a]
            deleted = [a for a in ours if " del " in a]
            assert deleted == [a.replace(" add ", " del ") for a in reversed(added)]

            def restart(wait: float) -> MeshNode:
                again = MeshNode(
                    dataclasses.replace(config, auth_key=None, exit_node_wait=wait), NodeClient(
                        server.url, token=state.read_token(), timeout=2.0
                    ), state, private, interface_factory=factory, host=FakeHost(), exit_runner=ip,
                )  # fmt: skip
                node_module_proc(again, proc)
                return again

            # a first map that does not offer it: the node does not start
            refused = restart(0.3)
            with pytest.raises(MeshError, match="cannot use the exit node: the peer exit"):
                await asyncio.wait_for(refused.run(), 10)
            await refused.client.close()
            # offered just after the first map: the start waits for it
            waiting = restart(5.0)
            up = asyncio.Event()
            task = asyncio.create_task(waiting.run(lambda _: up.set()))
            await asyncio.wait_for(waiting.ready.wait(), 5)
            assert not up.is_set() and waiting.exit_key is None
            exit_node.exit_node = True
            me = server.node_by_key(key_to_base64(waiting.public_key))
            server.push(me.id, {"type": "peer_upsert", "peer": exit_node.peer_json()})
            await asyncio.wait_for(up.wait(), 3)
            assert waiting.exit_routing is not None and waiting.exit_routing.active
            waiting.stop()
            await asyncio.wait_for(task, 5)
            await waiting.client.close()

        asyncio.run(asyncio.wait_for(main(), 30))


class HangingIp(FakeIp):
    """Once ``hang`` is set, hangs on every deletion, as a command stuck on a wedged host
    would without its own timeout."""

    hang = False

    async def __call__(self, argv: Sequence[str], stdin: str | None = None) -> str:
        if self.hang and " del " in f" {' '.join(argv)} ":
            await asyncio.Event().wait()
        return await super().__call__(argv, stdin)


def test_a_stop_step_that_hangs_is_cut_short_and_logged(tmp_path: Path) -> None:
    """The exit routing's removal hangs: the node stops all the same, within its bound, and
    says which step it left unfinished."""
    with FakeServer() as server:
        _, pub_exit = new_keypair()
        server.add_node("exit", pub_exit, ["192.0.2.2:41641"]).exit_node = True
        auth = server.add_auth_key()
        proc = sysctl_tree(tmp_path, "0")

        async def main() -> None:
            state = StateDir(tmp_path / "state")
            config = NodeConfig("wgtest0", 41641, "a", auth_key=auth, exit_node="exit")

            async def factory(name: str, key: bytes, port: int) -> FakeInterface:
                return FakeInterface(name, key, port)

            client, ip = NodeClient(server.url, timeout=2.0), HangingIp()
            node = MeshNode(
                config, client, state, state.load_or_create_key(), interface_factory=factory,
                host=FakeHost(), exit_runner=ip,
            )  # fmt: skip
            node.stop_step_timeout = 0.3
            node_module_proc(node, proc)
            task = asyncio.create_task(node.run())
            try:
                await asyncio.wait_for(node.ready.wait(), 5)
                assert node.exit_routing is not None and node.exit_routing.active
                ip.hang = True
                with structlog.testing.capture_logs() as logs:
                    node.stop()
                    await asyncio.wait_for(task, 2)
            finally:
                task.cancel()
                await client.close()
            unfinished = [e for e in logs if e["event"].startswith("a step of the node's stop")]
            assert [e["step"] for e in unfinished] == ["the exit routing removed"]
            assert node.iface is not None and node.iface.closed.is_set()

        asyncio.run(asyncio.wait_for(main(), 20))


def node_module_proc(node: MeshNode, proc: Path) -> None:
    """Let the node's exit routing write the src_valid_mark of ``proc``, not the host's."""
    make = node._exit_routing

    def with_proc(iface: Any) -> ExitRouting:
        routing = make(iface)
        routing.proc_sys = proc
        return routing

    node._exit_routing = with_proc  # type: ignore[method-assign]


def test_status_says_which_peer_is_the_exit_node(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.write_settings(Settings("https://mesh.example", "wgpy0", 41641, "laptop"))
    state.write_node({"hostname": "laptop", "user": "alice", "ipv4": "100.64.0.1"})
    peer = {"user": "alice", "online": True, "can_reach": True, "reachable_from": True}
    state.write_peers(
        [
            {**peer, "public_key": "A" * 43 + "=", "hostname": "exit",
             "addresses": ["100.64.0.2/32"], "exit_node": True, "exit_node_in_use": True},
            {**peer, "public_key": "B" * 43 + "=", "hostname": "other",
             "addresses": ["100.64.0.3/32"], "exit_node": True},
            {**peer, "public_key": "C" * 43 + "=", "hostname": "pi",
             "addresses": ["100.64.0.4/32"]},
        ]
    )  # fmt: skip
    out = io.StringIO()
    env = Environment(stdin=io.BytesIO(), stdout=out, stderr=io.StringIO(), env={})
    assert main(["status", "--state-dir", str(state.path)], env) == 0
    lines = {line.split()[1]: line for line in out.getvalue().splitlines()[1:]}
    assert "exit node: all traffic goes through it" in lines["exit"]
    assert "offers to be an exit node" in lines["other"]
    assert "exit node" not in lines["pi"]
    out.seek(0)
    out.truncate()
    assert main(["status", "--json", "--state-dir", str(state.path)], env) == 0
    rows = {p["hostname"]: p for p in json.loads(out.getvalue())["peers"]}
    assert (rows["exit"]["exit_node"], rows["exit"]["exit_node_in_use"]) == (True, True)
    assert (rows["pi"]["exit_node"], rows["pi"]["exit_node_in_use"]) == (False, False)
