"""The node's forwarder (wgpy/mesh/client/forwarder.py) against a recording runner that holds
sysctl values: it turns on only what is off, masquerades when asked, and puts back exactly
what it changed."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from wgpy.host.run import HostNetworkError
from wgpy.mesh.client.forwarder import Forwarder


class Host:
    """sysctl and nft as far as the forwarder uses them: values kept, each command recorded."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.commands: list[tuple[str, ...]] = []
        self.fail: str | None = None

    async def __call__(self, argv: Sequence[str], stdin: str | None = None) -> str:
        self.commands.append((*argv, *([stdin] if stdin is not None else [])))
        if self.fail is not None and self.fail in " ".join(argv):
            raise HostNetworkError(f"`{' '.join(argv)}' failed: no")
        if argv[:2] == ["sysctl", "-n"]:
            return self.values[argv[2]] + "\n"
        if argv[:2] == ["sysctl", "-q"]:
            key, value = argv[2].split("=")
            self.values[key] = value
        return ""


V4, V6 = "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"


async def test_turns_on_what_is_off_and_back_off_at_close() -> None:
    host = Host()
    host.values = {V4: "0", V6: "1"}
    fw = Forwarder("wgpy0", _Log(), run=host)
    await fw.apply({4, 6}, masquerade=True)
    assert host.values == {V4: "1", V6: "1"}
    assert fw.turned_on == [V4]  # v6 was on already: left as it was, also at close
    nft = [c for c in host.commands if c[0] == "nft"]
    assert len(nft) == 1 and 'iifname "wgpy0" oifname != "wgpy0" masquerade' in nft[0][-1]
    await fw.apply({4, 6}, masquerade=True)  # again: no sysctl written twice
    assert sum(c[:2] == ("sysctl", "-q") for c in host.commands) == 1
    await fw.close()
    assert host.values == {V4: "0", V6: "1"}
    assert host.commands[-2][-1].endswith("delete table inet wgpy-nat\n")


async def test_without_snat_no_table_and_a_version_dropped_is_turned_off() -> None:
    host = Host()
    host.values = {V4: "0", V6: "0"}
    fw = Forwarder("wgpy0", _Log(), run=host)
    await fw.apply({4, 6}, masquerade=False)
    assert not any(c[0] == "nft" for c in host.commands)
    await fw.apply({6}, masquerade=False)
    assert host.values == {V4: "0", V6: "1"}
    await fw.close()
    assert host.values == {V4: "0", V6: "0"}


async def test_a_failing_undo_is_logged_and_the_rest_still_put_back() -> None:
    host = Host()
    host.values = {V4: "0", V6: "0"}
    log = _Log()
    fw = Forwarder("wgpy0", log, run=host)
    await fw.apply({4, 6}, masquerade=True)
    host.fail = "nft"
    await fw.close()
    assert host.values == {V4: "0", V6: "0"}
    assert log.errors == ["cannot delete the masquerade table"]
    host.fail = "sysctl -n"
    with pytest.raises(HostNetworkError):
        await Forwarder("wgpy0", _Log(), run=host).apply({4}, masquerade=False)


async def test_a_killed_run_is_put_back_at_the_next_start(tmp_path: Path) -> None:
    host = Host()
    host.values = {V4: "0", V6: "0"}
    record = tmp_path / "forwarding.json"
    fw = Forwarder("wgpy0", _Log(), run=host, record=record)
    await fw.apply({4}, masquerade=True)
    assert json.loads(record.read_text()) == {
        "turned_on": [V4],
        "masquerading": True,
        "filtering": False,
    }
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    # killed here: nothing put back. The next run takes over what the file lists...
    again = Forwarder("wgpy0", _Log(), run=host, record=record)
    assert (again.turned_on, again.masquerading) == ([V4], True)
    await again.apply({4}, masquerade=True)
    # ...so that its close puts the host back as it was before the first run
    await again.close()
    assert host.values == {V4: "0", V6: "0"} and not record.exists()
    assert host.commands[-2][-1].endswith("delete table inet wgpy-nat\n")
    # a damaged record is ignored (said in the log), not a failure
    record.write_text("{")
    log = _Log()
    assert Forwarder("wgpy0", log, run=host, record=record).turned_on == []
    assert log.warnings == ["cannot read what an earlier run changed"]


async def test_forwarding_from_the_mesh_only_as_granted_and_the_filter_removed(
    tmp_path: Path,
) -> None:
    """What a peer may send through the router: its overlay addresses to the prefixes the
    map grants it, the rest dropped; nothing re-run for the same grants; the table deleted
    at close, and by the next run after a kill."""
    host = Host()
    host.values = {V4: "0", V6: "0"}
    record = tmp_path / "forwarding.json"
    fw = Forwarder("wgpy0", _Log(), run=host, record=record)
    await fw.restrict([])  # before the first map: nothing from the mesh is forwarded
    script = host.commands[-1][-1]
    assert script.endswith('add rule inet wgpy-filter forward iifname "wgpy0" counter drop\n')
    assert " accept\n" not in script  # no rule lets anything through
    c4, c6 = ipaddress.ip_address("100.64.0.3"), ipaddress.ip_address("fd7a:115c:a1e0::3")
    lan, lan6 = ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("fd00:1::/64")
    await fw.restrict([([c4, c6], [lan, lan6])])
    script = host.commands[-1][-1]
    assert 'iifname "wgpy0" ip saddr { 100.64.0.3 } ip daddr { 192.168.1.0/24 } accept\n' in script
    assert "ip6 saddr { fd7a:115c:a1e0::3 } ip6 daddr { fd00:1::/64 } accept\n" in script
    assert script.index(" accept\n") < script.index("counter drop")
    runs = len(host.commands)
    await fw.restrict([([c6, c4], [lan6, lan])])  # the same grants: nothing run
    assert len(host.commands) == runs
    assert json.loads(record.read_text())["filtering"] is True
    again = Forwarder("wgpy0", _Log(), run=host, record=record)  # after a kill
    assert again.filtering
    await again.close()
    assert host.commands[-1][-1].endswith("delete table inet wgpy-filter\n")
    assert not record.exists()


class _Log:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def warning(self, event: str, **fields: object) -> None:
        self.warnings.append(event)

    def info(self, event: str, **fields: object) -> None:
        pass

    def error(self, event: str, **fields: object) -> None:
        self.errors.append(event)
