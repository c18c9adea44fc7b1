"""The node's state directory: modes, the key, token, settings, PID file, forgetting."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from wgpy.keys import key_from_base64
from wgpy.mesh.client import state as state_module
from wgpy.mesh.client.state import (
    Settings,
    StateDir,
    StateError,
    interface_state_dir,
    process_start_time,
    register_interface,
    unregister_interface,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_directory_and_key_are_private_whatever_the_umask(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "a" / "b")
    old = os.umask(0)
    try:
        key = state.load_or_create_key()
        state.write_token("wgpy_node_1_secret")
        state.write_settings(Settings("https://mesh.example", "wgpy0", 41641, "laptop"))
    finally:
        os.umask(old)
    assert mode(state.path) == 0o700
    for name in ("node.key", "node.token", "state.json"):
        assert mode(state.file(name)) == 0o600, name
    # the key is stored as `wg genkey` prints it, and clamped
    text = state.file("node.key").read_text()
    assert text.endswith("\n") and key_from_base64(text.strip()) == key
    assert key[0] & 7 == 0 and key[31] & 0x80 == 0 and key[31] & 0x40
    assert state.load_or_create_key() == key  # made once
    assert not [p for p in state.path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_an_existing_directory_and_a_loose_key_are_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    state = StateDir(directory)
    key = state.load_or_create_key()
    assert mode(directory) == 0o700
    os.chmod(state.file("node.key"), 0o644)
    assert state.read_key() == key
    assert mode(state.file("node.key")) == 0o600


def test_unusable_state_is_one_sentence(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(StateError, match=r"is not a directory|cannot use the state directory"):
        StateDir(not_a_dir).ensure()
    state = StateDir(tmp_path / "s")
    state.ensure()
    state.file("node.key").write_text("not a key\n")
    with pytest.raises(StateError, match=r"node.key is not a valid WireGuard key: expected 44"):
        state.read_key()
    state.file("state.json").write_text("{")
    with pytest.raises(StateError, match=r"state.json is damaged; remove it or run `wgpy logout`"):
        state.read_settings()
    state.file("state.json").write_text('{"server_url": 1}')
    with pytest.raises(StateError, match="damaged"):
        state.read_settings()


def test_token_settings_node_round_trip(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    assert state.read_token() is None and state.read_settings() is None
    assert state.read_node() is None
    state.write_token("wgpy_node_1_abc")
    assert state.read_token() == "wgpy_node_1_abc"
    settings = Settings("http://127.0.0.1:8080", "wgm0", 5000, "box", "/etc/ca.pem")
    state.write_settings(settings)
    assert state.read_settings() == settings
    state.write_node({"id": 3, "ephemeral": True})
    assert state.read_node() == {"id": 3, "ephemeral": True}


def test_forget_deletes_the_secrets_and_keeps_the_log(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    state.load_or_create_key()
    state.write_token("t")
    state.write_node({})
    state.file("wgpy.log").write_text("log\n")
    removed = state.forget()
    assert {p.name for p in removed} == {"node.key", "node.token", "node.json"}
    assert [p.name for p in state.path.iterdir()] == ["wgpy.log"]
    assert state.forget() == []


def test_pid_file_names_a_live_process_only(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    assert state.daemon_pid() is None
    state.write_pid(os.getpid())
    assert state.daemon_pid() == os.getpid()
    assert mode(state.file("daemon.pid")) == 0o644
    # a recycled PID (another start time) is not our daemon
    pid, start = state.file("daemon.pid").read_text().split()
    state.file("daemon.pid").write_text(f"{pid} {int(start) + 1}\n")
    assert state.daemon_pid() is None
    # a process that has exited
    proc = subprocess.Popen(["true"])
    proc.wait()
    state.write_pid(proc.pid)
    assert state.daemon_pid() is None
    # a process that has exited and waits to be reaped (a zombie) is gone too
    zombie = subprocess.Popen(["sleep", "0.1"])
    try:
        state.write_pid(zombie.pid)
        assert state.daemon_pid() == zombie.pid
        deadline = time.monotonic() + 5
        while " Z " not in Path(f"/proc/{zombie.pid}/stat").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert state.daemon_pid() is None
    finally:
        zombie.wait()
    state.file("daemon.pid").write_text("garbage")
    assert state.daemon_pid() is None
    state.write_pid(os.getpid())
    state.remove_pid(os.getpid() + 1)  # not ours: kept
    assert state.file("daemon.pid").exists()
    state.remove_pid(os.getpid())
    assert not state.file("daemon.pid").exists()


def test_process_start_time() -> None:
    assert process_start_time(os.getpid()) == process_start_time(os.getpid())
    assert process_start_time(2**22 + 12345) is None


def test_interface_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.setattr(state_module, "RUN_DIR", run_dir)
    state_dir = tmp_path / "odd name\nwith newline"
    state_dir.mkdir()
    assert interface_state_dir("wgm0") is None
    register_interface("wgm0", state_dir)
    assert interface_state_dir("wgm0") == state_dir.resolve()
    unregister_interface("wgm0", tmp_path)  # another state dir: kept
    assert interface_state_dir("wgm0") == state_dir.resolve()
    unregister_interface("wgm0", state_dir)
    assert interface_state_dir("wgm0") is None
    assert interface_state_dir("../etc") is None


def test_loose_files_of_an_existing_state_dir_are_tightened_and_said(tmp_path: Path) -> None:
    """A state dir made by hand or copied with 0755/0644: every private file is made 0600
    (the token, settings, node record, peers, control state and log, not only the key)."""
    state = StateDir(tmp_path / "state")
    state.load_or_create_key()
    state.write_token("wgpy_node_1_secret")
    state.write_settings(Settings("https://mesh.example", "wgpy0", 41641, "laptop"))
    state.write_node({"hostname": "laptop"})
    state.write_peers([])
    state.write_control({"state": "connected"})
    state.file("wgpy.log").write_text("a log line\n")
    names = ["node.key", "node.token", "state.json", "node.json", "peers.json"]
    names += ["control.json", "wgpy.log"]
    os.chmod(state.path, 0o755)
    for name in names:
        os.chmod(state.file(name), 0o644)
    said = state.ensure()
    assert mode(state.path) == 0o700
    for name in names:
        assert mode(state.file(name)) == 0o600, name
    assert said[0] == f"{state.path} had mode 0755, which others could read: made it 0700"
    assert f"{state.file('node.token')} had mode 0644, which others could read: made it 0600" in (
        said
    )
    assert len(said) == 1 + len(names)
    assert state.ensure() == []  # once tight, nothing more to say
    # a symbolic link where a private file belongs is refused, never followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("x")
    os.chmod(elsewhere, 0o644)
    state.file("node.token").unlink()
    state.file("node.token").symlink_to(elsewhere)
    with pytest.raises(StateError, match=r"node\.token is a symbolic link; remove it"):
        state.ensure()
    assert mode(elsewhere) == 0o644
