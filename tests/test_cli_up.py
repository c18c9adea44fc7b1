"""``wgpy up`` and ``wgpy down`` decide between wg-quick and a mesh node (wgpy.cli.up) before
anything is touched: these run in-process, without root."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from wgpy.cli import main
from wgpy.cli.environment import CommandError, Environment, ExitStatus
from wgpy.cli.up import wants_mesh_up


def run(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(list(argv), Environment(io.BytesIO(), stdout, stderr, env={}))
    return status, stdout.getvalue(), stderr.getvalue()


def namespace(**given: object) -> argparse.Namespace:
    options = ("config", "login_server", "auth_key", "hostname", "state_dir", "interface")
    values: dict[str, object] = dict.fromkeys(options)
    values |= {"listen_port": None, "ca_cert": None, "foreground": False, **given}
    return argparse.Namespace(**values)


def test_a_config_means_wg_quick_and_a_login_server_a_mesh() -> None:
    assert wants_mesh_up(namespace(config="wg0")) is False
    assert wants_mesh_up(namespace(login_server="https://mesh.example")) is True
    assert wants_mesh_up(namespace(login_server="https://m", auth_key="k", hostname="h"))


@pytest.mark.parametrize(
    ("given", "option"),
    [
        ({"auth_key": "k"}, "--auth-key"),
        ({"hostname": "box"}, "--hostname"),
        ({"state_dir": Path("/s")}, "--state-dir"),
        ({"listen_port": 5000}, "--listen-port"),
        ({"foreground": True}, "--foreground"),
        ({"machine_cert": "desk.crt"}, "--machine-cert"),
        ({"machine_key": "desk.key"}, "--machine-key"),
        ({"advertise_routes": ("10.0.0.0/8",)}, "--advertise-routes"),
        ({"accept_routes": True}, "--accept-routes"),
    ],
)
def test_a_mesh_option_without_a_login_server_is_refused(
    given: dict[str, object], option: str
) -> None:
    with pytest.raises(CommandError, match=f"^{option} is for joining a mesh") as raised:
        wants_mesh_up(namespace(config="wg0", **given))
    assert raised.value.status == ExitStatus.ERROR


def test_up_and_down_say_what_to_give_in_one_sentence() -> None:
    assert run("up") == (
        ExitStatus.USAGE,
        "",
        "wgpy up: give a configuration file, or --login-server URL to join a mesh\n",
    )
    assert run("up", "wg0", "--login-server", "https://mesh.example") == (
        ExitStatus.ERROR,
        "",
        "wgpy up: give either a configuration file or --login-server, not both\n",
    )
    assert run("up", "--hostname", "box") == (
        ExitStatus.ERROR,
        "",
        "wgpy up: --hostname is for joining a mesh: give --login-server too\n",
    )
    assert run("down") == (
        ExitStatus.USAGE,
        "",
        "wgpy down: give a configuration file or interface name, or --state-dir of a mesh node\n",
    )
