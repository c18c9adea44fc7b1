"""``wgpy up`` and ``wgpy down``: a wg-quick configuration or a mesh node.

``up CONFIG`` and ``down CONFIG|IFNAME`` are wg-quick's (:mod:`wgpy.cli.quick`);
``up --login-server URL``, ``down --state-dir DIR`` and ``down IFNAME`` of a running mesh
interface are the mesh node's (:mod:`wgpy.cli.mesh`). This module owns both parsers, decides
which one a command line means, and hands it off.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

from . import mesh, quick
from .environment import CommandError, Environment, ExitStatus

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# the mesh options of `up` that mean nothing without --login-server
_MESH_UP_OPTIONS = (
    "auth_key",
    "hostname",
    "state_dir",
    "interface",
    "listen_port",
    "ca_cert",
    "machine_cert",
    "machine_key",
    "advertise_routes",
    "snat_subnet_routes",
    "accept_routes",
)


def register(commands: Subparsers) -> None:
    """Add ``up`` and ``down`` to the ``wgpy`` parser."""
    up = commands.add_parser(
        "up",
        help="create and configure an interface from a wg-quick file, as `wg-quick up`",
        description="Create a userspace WireGuard interface from a wg-quick configuration "
        f"file, with its addresses, routes, DNS and hooks, as `wg-quick up` does. {quick.WHAT}",
    )
    up.add_argument("config", metavar="CONFIG", nargs="?")
    mesh.add_up_arguments(up)
    up.set_defaults(handler=up_command)
    down = commands.add_parser(
        "down",
        help="remove an interface brought up by `wgpy up`, as `wg-quick down`",
        description="Remove an interface and what `wgpy up` set up for it, as `wg-quick down` "
        f"does. {quick.WHAT} If there is no such file, IFNAME is taken down without hooks.",
    )
    down.add_argument("config", metavar="CONFIG|IFNAME", nargs="?")
    mesh.add_down_arguments(down)
    down.set_defaults(handler=down_command)


def up_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if wants_mesh_up(args):
        return mesh.mesh_up(args, env)
    return quick.quick_up(args.config, env)


def down_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if mesh.wants_mesh_down(args):
        return mesh.mesh_down(args, env)
    if getattr(args, "config", None) is None:
        raise CommandError(
            "give a configuration file or interface name, or --state-dir of a mesh node",
            ExitStatus.USAGE,
        )
    return quick.quick_down(args.config, env)


def wants_mesh_up(args: argparse.Namespace) -> bool:
    """Whether ``wgpy up`` means joining a mesh (``--login-server``) or wg-quick's ``up
    CONFIG``; CommandError if it means neither or both."""
    if getattr(args, "login_server", None) is None:
        given = [f"--{o.replace('_', '-')}" for o in _MESH_UP_OPTIONS if getattr(args, o, None)]
        if getattr(args, "foreground", False):
            given.append("--foreground")
        if given:
            raise CommandError(f"{given[0]} is for joining a mesh: give --login-server too")
        if getattr(args, "config", None) is None:
            raise CommandError(
                "give a configuration file, or --login-server URL to join a mesh",
                ExitStatus.USAGE,
            )
        return False
    if getattr(args, "config", None) is not None:
        raise CommandError("give either a configuration file or --login-server, not both")
    return True
