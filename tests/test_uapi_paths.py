"""Where control sockets live (wgpy/uapi/paths.py): one directory and suffix for the server
that creates them and the client that finds and lists them, as ``wg`` expects them."""

from __future__ import annotations

from pathlib import Path

import pytest

from wgpy.uapi import client, paths
from wgpy.uapi.paths import SOCKET_DIR, interface_of, socket_path


def test_the_default_is_where_wg_looks() -> None:
    assert Path("/var/run/wireguard") == SOCKET_DIR
    assert socket_path("wg0") == Path("/var/run/wireguard/wg0.sock")


def test_a_directory_as_str_or_path(tmp_path: Path) -> None:
    assert socket_path("wg0", tmp_path) == tmp_path / "wg0.sock"
    assert socket_path("wg0", str(tmp_path)) == tmp_path / "wg0.sock"


def test_the_directory_is_looked_up_when_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "SOCKET_DIR", tmp_path)
    assert socket_path("wg0") == tmp_path / "wg0.sock"
    assert client.socket_path("wg0") == tmp_path / "wg0.sock"  # the client's is this one


@pytest.mark.parametrize(
    ("entry", "name"),
    [
        ("wg0.sock", "wg0"),
        ("a.b.sock", "a.b"),
        (".sock", None),
        ("wg0.sock.old", None),
        ("wg0", None),
        ("", None),
    ],
)
def test_interface_of_a_directory_entry(entry: str, name: str | None) -> None:
    assert interface_of(entry) == name
    if name is not None:
        assert socket_path(name).name == entry
