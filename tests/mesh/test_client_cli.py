"""``wgpy up --login-server`` (its checks, before the daemon), ``down --state-dir`` and
``logout``, in-process against the fake server."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wgpy.cli import main, mesh, mesh_daemon
from wgpy.cli.environment import CommandError, Environment, ExitStatus
from wgpy.mesh.client import daemon
from wgpy.mesh.client import state as state_module
from wgpy.mesh.client.node import NodeConfig
from wgpy.mesh.client.state import Settings, StateDir, register_interface

from .fakes import FakeServer, new_keypair


def environment(env: dict[str, str] | None = None) -> Environment:
    return Environment(
        stdin=io.BytesIO(), stdout=io.StringIO(), stderr=io.StringIO(), env=env or {}
    )


def up_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mesh.add_up_arguments(parser)
    return parser.parse_args(list(argv))


def run(*argv: str) -> tuple[ExitStatus, str, str]:
    env = environment()
    status = main(list(argv), env)
    return status, env.stdout.getvalue(), env.stderr.getvalue()  # type: ignore[attr-defined]


# ------------------------------------------------------------------ up, before the daemon


def test_up_makes_the_state_and_key_and_fills_in_defaults(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    args = up_args(
        "--login-server", "https://mesh.example/", "--auth-key", "wgpy_auth_a_b",
        "--state-dir", str(state_dir),
    )  # fmt: skip
    options, state = mesh.prepare_up(args, environment())
    assert state.read_key() is not None
    assert (
        os.stat(state_dir).st_mode & 0o777,
        os.stat(state.file("node.key")).st_mode & 0o777,
    ) == (
        0o700,
        0o600,
    )
    assert options.server_url == "https://mesh.example"
    assert options.node.interface == "wgpy0" and options.node.listen_port == 41641
    assert options.node.auth_key == "wgpy_auth_a_b"
    assert options.node.hostname == mesh.default_hostname()  # this machine's name
    assert options.ca_cert is None
    # the next up remembers what the last one was run with
    state.write_token("wgpy_node_1_x")
    state.write_settings(Settings("https://mesh.example", "wgm7", 5000, "box", None))
    options, _ = mesh.prepare_up(
        up_args("--login-server", "https://mesh.example", "--state-dir", str(state_dir)),
        environment(),
    )
    assert (options.node.interface, options.node.listen_port, options.node.hostname) == (
        "wgm7",
        5000,
        "box",
    )
    assert options.node.auth_key is None  # log in again with the token


def test_up_reads_the_auth_key_from_a_file_or_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("wgpy_auth_f_g\n")
    base = ["--login-server", "http://127.0.0.1:1", "--state-dir", str(tmp_path / "s")]
    options, _ = mesh.prepare_up(up_args(*base, "--auth-key", f"file:{key_file}"), environment())
    assert options.node.auth_key == "wgpy_auth_f_g"
    options, _ = mesh.prepare_up(up_args(*base), environment({"WGPY_AUTH_KEY": "wgpy_auth_e"}))
    assert options.node.auth_key == "wgpy_auth_e"
    with pytest.raises(CommandError, match="cannot read the pre-auth key"):
        mesh.prepare_up(up_args(*base, "--auth-key", "file:/nonexistent"), environment())


def test_up_refuses_clearly(tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    base = ["--login-server", "https://mesh.example", "--state-dir", str(state_dir)]
    # no auth key and no token: prepared for an interactive login (wgpy/cli/mesh_login.py)
    options, state = mesh.prepare_up(up_args(*base), environment())
    assert options.node.auth_key is None and state.read_token() is None
    assert state.read_key() is not None
    with pytest.raises(CommandError, match=r"--login-server: 'mesh\.example' is not an http"):
        mesh.prepare_up(up_args("--login-server", "mesh.example", "--auth-key", "k"), environment())
    state = StateDir(state_dir)
    state.write_token("wgpy_node_1_x")
    state.write_settings(Settings("https://other.example", "wgpy0", 41641, "box"))
    with pytest.raises(CommandError, match=r"the node token in .* is for https://other\.example"):
        mesh.prepare_up(up_args(*base), environment())
    # a daemon already runs on this state dir
    state.write_pid(os.getpid())
    with pytest.raises(CommandError, match=rf"already runs on {state_dir} \(pid {os.getpid()}"):
        mesh.prepare_up(up_args(*base, "--auth-key", "k"), environment())
    state.remove_pid(os.getpid())
    with pytest.raises(CommandError, match="is not a valid interface name"):
        mesh.prepare_up(up_args(*base, "--auth-key", "k", "--interface", "x" * 16), environment())
    with pytest.raises(CommandError, match=r"the CA certificate .* does not exist"):
        mesh.prepare_up(up_args(*base, "--auth-key", "k", "--ca-cert", "/nope.pem"), environment())
    status, _, err = run("up", "--login-server", "https://mesh.example", "--listen-port", "0")
    assert status == ExitStatus.USAGE and "is not a port" in err
    status, _, err = run("up", "--login-server", "https://mesh.example", "--nat-keepalive", "0")
    assert status == ExitStatus.USAGE and "is not a number of seconds from 1 to 3600" in err


def test_up_takes_a_shorter_nat_keepalive(tmp_path: Path) -> None:
    base = ["--login-server", "https://mesh.example", "--state-dir", str(tmp_path / "s")]
    options, _ = mesh.prepare_up(up_args(*base, "--auth-key", "k"), environment())
    assert options.node.nat_keepalive == 25.0  # under the usual ~30 s mapping lifetimes
    assert options.node.measure_lifetime  # or less, when the node measures less
    args = up_args(*base, "--auth-key", "k", "--nat-keepalive", "2.5")
    options, _ = mesh.prepare_up(args, environment())
    assert options.node.nat_keepalive == 2.5
    assert not options.node.measure_lifetime  # the user's interval wins


def test_up_accepts_dns_unless_told_not_to_and_remembers(tmp_path: Path) -> None:
    base = ["--login-server", "https://mesh.example", "--state-dir", str(tmp_path / "s")]
    cases: list[tuple[list[str], bool]] = [
        ([], True),
        (["--accept-dns"], True),
        (["--accept-dns=false"], False),
        (["--accept-dns", "no"], False),
        (["--accept-dns=1"], True),
    ]
    for given, expected in cases:
        options, _ = mesh.prepare_up(up_args(*base, "--auth-key", "k", *given), environment())
        assert options.node.accept_dns is expected, given
    # kept for the next up, which is told nothing
    StateDir(tmp_path / "s").write_settings(
        Settings("https://mesh.example", "wgm7", 5000, "box", accept_dns=False)
    )
    options, _ = mesh.prepare_up(up_args(*base, "--auth-key", "k"), environment())
    assert options.node.accept_dns is False
    assert Settings.from_json({"server_url": "u", "interface": "i", "listen_port": 1,
                               "hostname": "h"}).accept_dns  # fmt: skip
    with pytest.raises(SystemExit):
        up_args(*base, "--accept-dns=maybe")


def test_up_keeps_the_metrics_listener_for_the_next_up(tmp_path: Path) -> None:
    base = ["--login-server", "https://mesh.example", "--state-dir", str(tmp_path / "s")]
    options, _ = mesh.prepare_up(up_args(*base, "--auth-key", "k"), environment())
    assert options.metrics_listen is None  # off by default
    given = up_args(*base, "--auth-key", "k", "--metrics-listen", "[::1]:9191")
    assert mesh.prepare_up(given, environment())[0].metrics_listen == ("::1", 9191)
    assert daemon._listen_text(("::1", 9191)) == "[::1]:9191"
    state = StateDir(tmp_path / "s")
    state.write_settings(
        Settings("https://mesh.example", "wgm7", 5000, "box", metrics_listen="127.0.0.1:9191")
    )
    options, _ = mesh.prepare_up(up_args(*base), environment())  # told nothing: as last time
    assert options.metrics_listen == ("127.0.0.1", 9191)
    options, _ = mesh.prepare_up(up_args(*base, "--metrics-listen="), environment())
    assert options.metrics_listen is None  # stopped
    assert state.read_settings() is not None


# ------------------------------------------------------------------ down and logout


def registered(server: FakeServer, directory: Path, *, ephemeral: bool = False) -> StateDir:
    """A state dir as `up` leaves it, for a node the server knows."""
    state = StateDir(directory)
    state.load_or_create_key()
    _, public = new_keypair()
    auth = server.add_auth_key(ephemeral=ephemeral)

    def create() -> str:
        node = server._create("box", public, "alice", ephemeral=ephemeral)
        return node.token

    token = server.call(create)
    del auth
    state.write_token(token)
    state.write_settings(Settings(server.url, "wgm9", 41641, "box"))
    state.write_node({"ephemeral": ephemeral})
    return state


def test_logout_logs_out_and_forgets(tmp_path: Path) -> None:
    with FakeServer() as server:
        state = registered(server, tmp_path / "s")
        token = state.read_token()
        status, _, err = run("logout", "--state-dir", str(state.path))
        assert status == ExitStatus.SUCCESS, err
        (logout,) = server.requests_to("POST", "/api/v1/logout")
        assert logout.authorization == f"Bearer {token}" and logout.body == b"{}"
        assert not state.file("node.key").exists() and not state.file("node.token").exists()
        assert not state.file("state.json").exists()
        assert f"[#] log out at {server.url}\n" in err
        status, _, err = run("logout", "--state-dir", str(state.path))
        assert status == ExitStatus.ERROR
        assert err == f"wgpy logout: there is no mesh node in {state.path} to forget\n"


def test_logout_forgets_even_when_the_server_is_away(tmp_path: Path) -> None:
    with FakeServer() as server:
        state = registered(server, tmp_path / "s")
    status, _, err = run("logout", "--state-dir", str(state.path))
    assert status == ExitStatus.SUCCESS
    assert "wgpy logout: warning: the node was not logged out at the server: cannot reach" in err
    assert not state.file("node.key").exists()


def test_down_without_a_running_node_says_so_and_changes_nothing(tmp_path: Path) -> None:
    with FakeServer() as server:
        state = registered(server, tmp_path / "s")
        status, _, err = run("down", "--state-dir", str(state.path))
        assert status == ExitStatus.ERROR
        assert err == f"wgpy down: no mesh node is up on {state.path}\n"
        assert server.requests_to("POST", "/api/v1/logout") == []
        assert state.read_token() is not None and state.read_key() is not None
    empty = tmp_path / "empty"
    status, _, err = run("down", "--state-dir", str(empty))
    assert status == ExitStatus.ERROR and err == f"wgpy down: no mesh node is up on {empty}\n"


def test_down_stops_the_daemon_of_the_state_dir(tmp_path: Path) -> None:
    with FakeServer() as server:
        state = registered(server, tmp_path / "s")
        # a stand-in daemon that takes a moment to go on SIGTERM
        daemon = subprocess.Popen(
            [sys.executable, "-c", "import signal, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.1), exit(0)))\n"
             "print('ready', flush=True)\ntime.sleep(30)"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert daemon.stdout is not None and daemon.stdout.readline() == b"ready\n"
            state.write_pid(daemon.pid)
            status, _, err = run("down", "--state-dir", str(state.path))
            assert status == ExitStatus.SUCCESS, err
            assert daemon.wait(5) == 0
            assert f"[#] stop the mesh daemon of wgm9 (kill -TERM {daemon.pid})\n" in err
            # as `tailscale down`: stopped, still logged in (no logout, the token kept)
            assert server.requests_to("POST", "/api/v1/logout") == []
            assert "log out" not in err
            assert state.read_token() is not None and state.read_settings() is not None
            assert state.read_key() is not None
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGKILL)
                daemon.wait()


def test_down_by_interface_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "RUN_DIR", tmp_path / "run")
    with FakeServer() as server:
        state = registered(server, tmp_path / "s")
        name = f"wgm{os.getpid() % 10000}"
        assert not mesh.wants_mesh_down(argparse.Namespace(config=name, state_dir=None))
        register_interface(name, state.path)
        assert mesh.wants_mesh_down(argparse.Namespace(config=name, state_dir=None))
        assert mesh.wants_mesh_down(argparse.Namespace(config="wg0", state_dir=tmp_path))
        status, _, err = run("down", name)  # found its state dir: nothing runs there
        assert status == ExitStatus.ERROR
        assert err == f"wgpy down: no mesh node is up on {state.path}\n"


def test_default_hostname_is_a_dns_label(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, label in [
        ("Laptop.example.com", "laptop"),
        ("my_box", "my-box"),
        ("-x-", "x"),
        ("___", "node"),
        ("a" * 80, "a" * 63),
    ]:
        monkeypatch.setattr(mesh.socket, "gethostname", lambda name=name: name)
        assert mesh.default_hostname() == label


def test_foreground_up_reports_like_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--foreground runs daemon.serve in this process: its report becomes the output."""
    calls: list[object] = []

    async def serve(options: object, report: Callable[[str | None, str], None]) -> int:
        calls.append(options)
        report(None, "wgm0 is up as 100.64.0.1 with 0 peers")
        return 0

    async def failing(options: object, report: Callable[[str | None, str], None]) -> int:
        report("the server refused to register this node: no.", "")
        return 1

    monkeypatch.setattr(mesh.daemon, "serve", serve)
    monkeypatch.setattr(
        mesh_daemon.log, "configure", lambda *a, **k: None
    )  # keep the test's logging
    # the key from the environment: on the command line it would make `up` exec the
    # daemon's own program (tests/interop/test_mesh_life.py)
    argv = ["up", "--login-server", "http://127.0.0.1:9", "--foreground",
            "--state-dir", str(tmp_path / "s"), "--interface", "wgm0"]  # fmt: skip

    def run(*argv: str) -> tuple[ExitStatus, str, str]:
        env = environment({"WGPY_AUTH_KEY": "k"})
        status = main(list(argv), env)
        return status, env.stdout.getvalue(), env.stderr.getvalue()  # type: ignore[attr-defined]

    status, out, err = run(*argv)
    assert status == ExitStatus.SUCCESS, err
    assert out == "wgm0 is up as 100.64.0.1 with 0 peers\n"
    assert len(calls) == 1
    monkeypatch.setattr(mesh.daemon, "serve", failing)
    status, out, err = run(*argv)
    assert status == ExitStatus.ERROR
    assert err.endswith("wgpy up: the server refused to register this node: no.\n")


def test_up_refuses_an_interface_that_exists_in_one_whole_sentence(tmp_path: Path) -> None:
    """Checked before anything is registered: a served control socket, or a link of the
    name (a kernel interface such as lo or eth0, where no TUN can be made)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to serve a control socket in /var/run/wireguard")
    base = ["--login-server", "https://mesh.example", "--state-dir", str(tmp_path / "s")]
    name = f"wgc{os.getpid() % 100000}"
    path = mesh.uapi_client.socket_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as served:
        served.bind(str(path))
        served.listen()
        try:
            args = up_args(*base, "--auth-key", "k", "--interface", name)
            with pytest.raises(CommandError) as e:
                mesh.prepare_up(args, environment())
        finally:
            path.unlink()
    assert e.value.message == (
        f"the interface `{name}' already exists: another process serves its control socket "
        f"{path}; take it down first (wgpy down {name}) or choose another --interface"
    )
    with pytest.raises(CommandError) as e:
        mesh.prepare_up(up_args(*base, "--auth-key", "k", "--interface", "lo"), environment())
    assert e.value.message == (
        "the interface `lo' already exists on this host; choose another --interface"
    )


def test_up_tightens_a_loose_state_dir_and_says_so(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    state.write_token("wgpy_node_1_secret")
    state.write_settings(Settings("https://mesh.example", "wgpy0", 41641, "box"))
    os.chmod(state.path, 0o755)
    os.chmod(state.file("node.token"), 0o644)
    env = environment()
    mesh.prepare_up(up_args("--login-server", "https://mesh.example", "--state-dir",
                            str(state.path)), env)  # fmt: skip
    assert os.stat(state.path).st_mode & 0o777 == 0o700
    assert os.stat(state.file("node.token")).st_mode & 0o777 == 0o600
    err = env.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"wgpy up: warning: {state.file('node.token')} had mode 0644" in err
    assert err.count("\n") == 2  # the directory and the token


def test_up_warns_of_plain_http_off_this_host(tmp_path: Path) -> None:
    def warning(url: str) -> str:
        env = environment()
        args = up_args("--login-server", url, "--auth-key", "k", "--state-dir",
                       str(tmp_path / "s"))  # fmt: skip
        mesh.prepare_up(args, env)
        return env.stderr.getvalue()  # type: ignore[attr-defined,no-any-return]

    said = warning("http://192.0.2.7:8080")
    assert said == (
        "wgpy up: warning: http://192.0.2.7:8080 is plain http:// on an address that is not "
        "loopback: the pre-auth key and the node token cross the network in clear text; "
        "use https://\n"
    )
    assert "is plain http://" in warning("http://mesh.example")
    for quiet in ("https://mesh.example", "http://127.0.0.1:8080", "http://[::1]:8080",
                  "http://localhost:8080", "http://127.3.4.5"):  # fmt: skip
        assert warning(quiet) == "", quiet


# ------------------------------------------------------------------ the daemon's process


def test_the_daemon_program_never_imports_code_from_the_working_directory(
    tmp_path: Path,
) -> None:
    """`python -m` would put the working directory first on the module path: root running
    `wgpy up` in /tmp would import a planted wgpy/ or json.py."""
    cwd = tmp_path / "cwd"
    marker = tmp_path / "imported"
    plant = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (cwd / "wgpy").mkdir(parents=True)
    (cwd / "wgpy" / "__init__.py").write_text(plant)
    (cwd / "json.py").write_text(plant)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"{}")  # not the options: the daemon says so and exits 1
    os.close(write_fd)
    try:
        result = subprocess.run(
            daemon.command(read_fd),
            cwd=cwd,
            pass_fds=(read_fd,),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.close(read_fd)
    assert not marker.exists(), f"imported from the working directory: {marker.read_text()}"
    assert result.returncode == 1
    assert "the mesh daemon cannot start: the daemon's options are incomplete" in result.stderr


def test_foreground_node_interrupted_before_it_is_up_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same exit, whether `up --foreground` runs the node itself (key from the
    environment) or execs the daemon's program (key on its command line)."""

    async def interrupted(options: object, report: Callable[[str | None, str], None]) -> int:
        report("the mesh node was stopped before it was up", "")
        return daemon.INTERRUPTED

    monkeypatch.setattr(daemon, "serve", interrupted)
    monkeypatch.setattr(mesh_daemon.log, "configure", lambda *a, **k: None)
    options = daemon.DaemonOptions(
        state_dir=tmp_path, server_url="http://127.0.0.1:9", node=NodeConfig("wgm0", 0, "n", "k")
    )
    out, err = io.StringIO(), io.StringIO()
    assert mesh_daemon.foreground(options, "info", out, err) == ExitStatus.INTERRUPTED
    assert out.getvalue() == "" and err.getvalue() == ""
    env = environment({"WGPY_AUTH_KEY": "k"})
    argv = ["up", "--login-server", "http://127.0.0.1:9", "--foreground",
            "--state-dir", str(tmp_path / "s"), "--interface", "wgm0"]  # fmt: skip
    assert main(argv, env) == ExitStatus.INTERRUPTED


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is gone, only not reaped
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _fake_daemon(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str
) -> tuple[daemon.DaemonOptions, StateDir, Path]:
    """`wgpy up`'s real start of a child, the child a small program: it writes its pid, then
    runs ``script`` with ``fd`` the report pipe."""
    pidfile = tmp_path / "child.pid"

    def command(options_fd: int, *, report_fd: int | None = None) -> list[str]:
        code = (
            "import os, sys, time\n"
            f"open({str(pidfile)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
            f"os.rename({str(pidfile)!r} + '.tmp', {str(pidfile)!r})\n"
            f"fd = {report_fd}\n" + script
        )
        return [sys.executable, "-c", code]

    monkeypatch.setattr(daemon, "command", command)
    state = StateDir(tmp_path / "state")
    state.ensure()
    options = daemon.DaemonOptions(
        state_dir=state.path, server_url="http://127.0.0.1:9", node=NodeConfig("wgm0", 0, "n", "k")
    )
    return options, state, pidfile


def _child_pid(pidfile: Path) -> int:
    for _ in range(300):
        if pidfile.exists():
            return int(pidfile.read_text())
        time.sleep(0.01)
    raise AssertionError("the child did not start")


def test_up_stops_a_daemon_that_lingers_after_saying_why_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options, state, pidfile = _fake_daemon(
        monkeypatch, tmp_path, "os.write(fd, b'no.'); os.close(fd); time.sleep(60)\n"
    )
    monkeypatch.setattr(daemon, "STOP_TIMEOUT", 0.5)
    env = environment()
    before = _open_fds()
    with pytest.raises(CommandError, match=r"^no\.$"):
        mesh._up_daemon(options, state, env)
    assert not _pid_alive(_child_pid(pidfile)), "the daemon was left running"
    assert _open_fds() == before


def test_ctrl_c_as_soon_as_the_daemon_started_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C right after the daemon was started, before `up` waits for its report."""
    options, state, pidfile = _fake_daemon(monkeypatch, tmp_path, "time.sleep(60)\n")

    def ctrl_c(*args: object) -> str:
        _child_pid(pidfile)
        raise KeyboardInterrupt

    monkeypatch.setattr(daemon, "await_report", ctrl_c)
    env = environment()
    before = _open_fds()
    with pytest.raises(KeyboardInterrupt):
        mesh._up_daemon(options, state, env)
    assert not _pid_alive(_child_pid(pidfile)), "the daemon was left running"
    assert _open_fds() == before
    assert "interrupted: stop the mesh daemon" in env.stderr.getvalue()  # type: ignore[attr-defined]


def test_up_closes_what_it_opened_when_the_daemon_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options, state, _ = _fake_daemon(monkeypatch, tmp_path, "")

    def too_large(*args: object) -> int:
        raise ValueError("the mesh daemon's options are too large for its pipe")

    monkeypatch.setattr(daemon, "options_pipe", too_large)
    before = _open_fds()
    with pytest.raises(ValueError) as raised:  # its traceback keeps `up`'s frame alive
        mesh._up_daemon(options, state, environment())
    assert _open_fds() == before, "the log file is open until the garbage collector runs"
    del raised
