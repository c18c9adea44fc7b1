"""wgpy.mesh.client.daemon's process side: the options pipe, the daemon's command line and
environment, its log file, and `wgpy up`'s wait for its report (with real pipes and
processes; tests/mesh/test_client_cli.py drives the same through `wgpy up`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.cli import mesh_daemon
from wgpy.mesh.client import daemon
from wgpy.mesh.client.node import NodeConfig
from wgpy.mesh.client.state import StateDir


def options(tmp_path: Path) -> daemon.DaemonOptions:
    return daemon.DaemonOptions(
        state_dir=tmp_path,
        server_url="https://mesh.example",
        node=NodeConfig(
            "wgm0", 41641, "box", "wgpy_auth_secret", nat_keepalive=3.0, measure_lifetime=False
        ),
        ca_cert="/etc/ca.pem",
    )


def pipe_with(data: bytes) -> int:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    return read_fd


def test_the_options_cross_the_pipe_whole(tmp_path: Path) -> None:
    fd = daemon.options_pipe(options(tmp_path), "debug")
    assert daemon.read_options(fd) == (options(tmp_path), "debug")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "the mesh daemon's options are not JSON"),
        (b"[1]", "the mesh daemon's options are not a JSON object"),
        (b'{"options": {"node": {}}}', "the daemon's options are incomplete"),
    ],
)
def test_bad_options_are_one_sentence(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        daemon.read_options(pipe_with(data))


def test_the_daemon_program_says_why_it_cannot_start_through_its_report_pipe() -> None:
    report_read, report_write = os.pipe()
    try:
        argv = ["--options-fd", str(pipe_with(b"{")), "--report-fd", str(report_write)]
        assert mesh_daemon.main(argv) == 1
        os.close(report_write)
        assert os.read(report_read, 4096) == (
            b"the mesh daemon cannot start: the mesh daemon's options are not JSON"
        )
    finally:
        os.close(report_read)


def test_the_daemons_command_line_and_environment_hold_no_secret() -> None:
    argv = daemon.command(7, report_fd=9)
    assert argv == [
        sys.executable, "-P", "-m", "wgpy.cli.mesh_daemon", "--options-fd", "7", "--report-fd", "9"
    ]  # fmt: skip
    assert daemon.command(7)[-2:] == ["--options-fd", "7"]
    environ = {"PATH": "/usr/bin", "WGPY_AUTH_KEY": "k", "WGPY_API_KEY": "a", "LOG_LEVEL": "x"}
    assert daemon.clean_environment(environ) == {"PATH": "/usr/bin", "LOG_LEVEL": "x"}


def test_the_daemon_program_is_importable_as_its_command_line_names_it() -> None:
    result = subprocess.run(
        [*daemon.command(0)[:4], "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "--options-fd FD" in result.stdout


def test_the_log_is_private_appended_and_rotated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wgpy.log"
    with daemon.open_log(path) as log:
        log.write("one\n")
    with daemon.open_log(path) as log:
        log.write("two\n")
    assert path.read_text() == "one\ntwo\n"
    assert path.stat().st_mode & 0o777 == 0o600
    monkeypatch.setattr(daemon, "MAX_LOG_BYTES", 4)
    with daemon.open_log(path) as log:
        log.write("three\n")
    assert (path.read_text(), (tmp_path / "wgpy.log.1").read_text()) == ("three\n", "one\ntwo\n")
    link = tmp_path / "link.log"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        daemon.open_log(link)


def child(write_fd: int, code: str) -> subprocess.Popen[bytes]:
    """A stand-in for the daemon: ``code`` with ``fd`` its end of the report pipe."""
    return subprocess.Popen(
        [sys.executable, "-c", f"fd = {write_fd}\n" + code], pass_fds=(write_fd,)
    )


def test_up_waits_for_the_report_and_says_so_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "PROGRESS_INTERVAL", 0.1)
    read_fd, write_fd = os.pipe()
    process = child(
        write_fd, "import os, time\ntime.sleep(0.5)\nos.write(fd, b'ok\\nwgm0 is up')\n"
    )
    os.close(write_fd)
    said: list[str] = []
    try:
        message = daemon.await_report(read_fd, process, "https://mesh.example", said.append)
    finally:
        os.close(read_fd)
        process.wait(30)
    assert message == "ok\nwgm0 is up"
    assert 2 <= len(said) <= 6
    assert said[0] == "waiting for the login server at https://mesh.example (0 s)..."


def test_a_daemon_that_does_not_come_up_in_time_is_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(daemon, "READY_TIMEOUT", 0.3)
    monkeypatch.setattr(daemon, "PROGRESS_INTERVAL", 10.0)
    read_fd, write_fd = os.pipe()
    process = child(write_fd, "import time\ntime.sleep(60)\n")
    os.close(write_fd)
    said: list[str] = []
    try:
        message = daemon.await_report(read_fd, process, "https://mesh.example", said.append)
    finally:
        os.close(read_fd)
    assert message == "the mesh daemon did not come up within 0.3 seconds"
    assert process.poll() is not None, "the daemon was left running"
    assert said == [f"it did not come up in time: stop the mesh daemon (kill -TERM {process.pid})"]


def test_stop_says_whether_a_daemon_ran(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    said: list[str] = []
    assert daemon.stop(state, None, said.append) is False
    assert said == []


HUNG_DAEMON = """
import asyncio, signal, sys
from wgpy.cli.stacks import install

install(sys.stderr)

async def a_close_that_never_returns():
    await asyncio.Event().wait()

async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: None)
    print("up", flush=True)
    await a_close_that_never_returns()

asyncio.run(main())
"""


def test_a_daemon_that_does_not_stop_writes_where_it_hangs_before_it_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    program = tmp_path / "hung.py"
    program.write_text(HUNG_DAEMON)
    log = state.file("wgpy.log")
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(program)], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        assert process.stdout is not None and process.stdout.readline() == "up\n"
        state.write_pid(process.pid)
        monkeypatch.setattr(daemon, "STOP_TIMEOUT", 0.3)
        monkeypatch.setattr(daemon, "STACKS_WAIT", 2.0)
        said: list[str] = []
        assert daemon.stop(state, None, said.append) is True
        assert state.daemon_pid() is None  # SIGTERM ignored: killed
    finally:
        process.kill()
        process.communicate()
    assert said[-1] == (
        f"the mesh daemon did not stop in time: kill -KILL {process.pid} (where it was is in {log})"
    )
    written = log.read_text()
    assert "Task" in written and "in a_close_that_never_returns" in written
