"""The node's forwarder (wgpy/mesh/client/forwarder.py) against a recording runner that holds
sysctl values: it turns on only what is off, masquerades when asked, and puts back exactly
what it changed."""

from __future__ import annotations

from collections.abc import Sequence

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


class _Log:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def info(self, event: str, **fields: object) -> None:
        pass

    def error(self, event: str, **fields: object) -> None:
        self.errors.append(event)
