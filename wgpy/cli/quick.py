"""``wgpy up``, ``wgpy down`` and ``wgpy save``: wg-quick for the userspace implementation.

They do what ``wg-quick up|down|save`` (the bash script) does, in the same order and with the
same ``ip``, ``nft`` and ``sysctl`` commands, echoed to stderr as ``[#] ...`` lines:

``up CONFIG``
    PreUp hooks; start the userspace daemon (``wgpy-userspace IFNAME`` from this Python's bin
    directory, or ``$WGPY_USERSPACE_IMPLEMENTATION IFNAME``) and wait for its control socket;
    configure it (endpoints resolved now); add the addresses; set the MTU (the configured one,
    or the largest route MTU towards the endpoints or the default route, minus 80) and bring
    the link up; DNS through resolvconf; a route per allowed IP, most specific first (in
    ``Table`` if given, none if ``Table = off``), and for a default route (``/0``) with no
    Table the fwmark/policy-routing setup of wg-quick: fwmark 51820 (or the next free table),
    ``ip rule add not fwmark T table T``, ``ip rule add table main suppress_prefixlength 0``,
    the ``wg-quick-IFNAME`` nftables table against spoofed packets to the interface's
    addresses and for the connection mark, and ``net.ipv4.conf.all.src_valid_mark=1``;
    PostUp hooks. Whatever fails, what was done is undone and one sentence says why.

``down CONFIG|IFNAME``
    PreDown hooks; SaveConfig; the policy rules, the interface (which stops the daemon; its
    socket is removed if it lingers), DNS, the nftables table; PostDown hooks.

``save CONFIG|IFNAME``
    Write the running configuration back to the file, as SaveConfig does at ``down``.

``%i`` in a hook is the interface name; hooks run with bash, as in wg-quick.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from wgpy import config as wgconfig
from wgpy.config import Config, ConfigError, Endpoint, Peer
from wgpy.host import firewall, ip, resolvconf, sysctl
from wgpy.host import run as host
from wgpy.uapi import client as uapi_client
from wgpy.uapi.client import DeviceState, UapiError

from .environment import PROG, CommandError, Environment, ExitStatus

TUN_PATH = Path("/dev/net/tun")
DEFAULT_TABLE = 51820
DAEMON_TIMEOUT = 10.0  # seconds for the userspace daemon to serve its control socket
SOCKET_GONE_TIMEOUT = 2.0  # seconds for the daemon to go once its interface is deleted
USERSPACE_ENV = "WGPY_USERSPACE_IMPLEMENTATION"
USERSPACE_PROGRAM = "wgpy-userspace"
RESOLVCONF_ORDER = Path("/etc/resolvconf/interface-order")


WHAT = (
    "CONFIG is a configuration file whose name is the interface name followed by "
    "`.conf'; a bare interface name means /etc/wireguard/IFNAME.conf."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``save`` to the ``wgpy`` parser (``up`` and ``down`` are :mod:`wgpy.cli.up`'s)."""
    save = commands.add_parser(
        "save",
        help="write an interface's running configuration to its file, as `wg-quick save`",
        description=f"Save the running configuration of an interface to its file. {WHAT}",
    )
    save.add_argument("config", metavar="CONFIG|IFNAME")
    save.set_defaults(handler=save_command)


# ----------------------------------------------------------------------------------------
# Commands


def quick_up(config: str, env: Environment) -> ExitStatus:
    """``wgpy up CONFIG``."""
    _check_root("up")
    quick = Quick.from_argument("up", config, env)
    if not TUN_PATH.exists():
        raise CommandError(
            f"{TUN_PATH} does not exist, so no TUN interface can be created; "
            "load the tun kernel module (modprobe tun) or give the container the device"
        )
    quick.up()
    return ExitStatus.SUCCESS


def quick_down(config: str, env: Environment) -> ExitStatus:
    """``wgpy down CONFIG|IFNAME``."""
    _check_root("down")
    Quick.from_argument("down", config, env, allow_missing=True).down()
    return ExitStatus.SUCCESS


def save_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    _check_root("save")
    Quick.from_argument("save", args.config, env).save()
    return ExitStatus.SUCCESS


def _check_root(command: str) -> None:
    if os.geteuid() != 0:
        raise CommandError(f"`{PROG} {command}' must be run as root; try it with sudo")


# ----------------------------------------------------------------------------------------
# Running commands


class CommandFailed(Exception):
    def __init__(self, argv: Sequence[str], status: int, output: str) -> None:
        super().__init__(argv, status, output)
        self.argv = argv
        self.status = status
        self.output = output

    def sentence(self) -> str:
        command = " ".join(self.argv)
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        first = lines[0] if lines else ""
        if self.status < 0:
            return f"`{command}' was killed by signal {-self.status}"
        detail = f": {first}" if first else f" with exit status {self.status}"
        return f"`{command}' failed{detail}"


def _fd(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError):
        return None


class Quick:
    """One wg-quick run on one interface: its configuration and what has been done so far."""

    def __init__(
        self, command: str, env: Environment, path: Path | None, name: str, config: Config
    ) -> None:
        self.command = command
        self.env = env
        self.path = path  # None: down by interface name, without a configuration file
        self.name = name
        self.config = config
        self.have_set_dns = False
        self.have_set_firewall = False
        bin_dir = str(Path(sys.executable).parent)
        child_env = {**env.env, "LC_ALL": "C"}
        child_env["PATH"] = os.pathsep.join(filter(None, (bin_dir, child_env.get("PATH"))))
        self.child_env = child_env

    @classmethod
    def from_argument(
        cls, command: str, argument: str, env: Environment, allow_missing: bool = False
    ) -> Quick:
        """Find, check and parse the configuration ``argument`` names (see wg-quick's
        parse_options); with ``allow_missing``, a bare interface name whose file does not
        exist stands for that interface with an empty configuration."""
        path = wgconfig.CONFIG_DIR / f"{argument}.conf"
        if allow_missing and wgconfig.valid_interface_name(argument) and not path.exists():
            return cls(command, env, None, argument, Config())
        try:
            path = wgconfig.resolve_config_path(argument)
            name = wgconfig.interface_name(path)
            real = Path(os.path.realpath(path))
            if wgconfig.is_world_accessible(real):
                _warn(env, command, f"warning: `{real}' is world accessible")
            config = wgconfig.load(real, source=str(path))
        except ConfigError as e:
            raise CommandError(e.message) from None
        except OSError as e:
            raise CommandError(f"cannot read `{path}': {e.strerror or e}") from None
        for warning in config.warnings:
            _warn(env, command, f"warning: {warning}")
        return cls(command, env, real, name, config)

    # Output and processes ------------------------------------------------------------------

    def warn(self, message: str) -> None:
        _warn(self.env, self.command, message)

    def echo(self, text: str) -> None:
        self.env.stdout.flush()
        self.env.stderr.write(f"[#] {text}\n")
        self.env.stderr.flush()

    def run(
        self, *argv: str, input: str | None = None, echo: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as wg-quick's cmd() does (echoed); CommandFailed if it fails."""
        if echo:
            self.echo(" ".join(argv))
        try:
            result = host.run(argv, input=input, env=self.child_env)
        except FileNotFoundError:
            raise CommandFailed(argv, 127, f"{argv[0]}: command not found") from None
        if echo and result.stdout:
            self.env.stdout.write(result.stdout)
        if check and result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stderr)
        if echo and result.stderr:
            self.env.stderr.write(result.stderr)
        return result

    def query(self, *argv: str) -> str:
        """The output of a quiet query (not echoed; empty if it fails), as ``$(...)``."""
        return self.run(*argv, echo=False, check=False).stdout

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=self.child_env.get("PATH"))

    def hooks(self, phase: str, hooks: list[str]) -> None:
        for hook in hooks:
            hook = hook.replace("%i", self.name)
            self.echo(hook)
            self.env.stdout.flush()
            self.env.stderr.flush()
            out, err = _fd(self.env.stdout), _fd(self.env.stderr)
            result = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-O", "extglob", "-c", hook],
                stdin=subprocess.DEVNULL,
                stdout=out if out is not None else subprocess.PIPE,
                stderr=err if err is not None else subprocess.PIPE,
                text=True,
                env=self.child_env,
                check=False,
            )
            if result.stdout:
                self.env.stdout.write(result.stdout)
            if result.stderr:
                self.env.stderr.write(result.stderr)
            if result.returncode != 0:
                raise CommandError(
                    f"the {phase} hook `{hook}' failed with exit status {result.returncode}"
                )

    # up ------------------------------------------------------------------------------------

    def up(self) -> None:
        if self.link_exists():
            raise CommandError(f"`{self.name}' already exists")
        if uapi_client.has_interface(self.name):
            raise CommandError(
                f"`{self.name}' already exists: {uapi_client.socket_path(self.name)} "
                "is served by another process"
            )
        iface = self.config.interface
        try:
            self.hooks("PreUp", iface.pre_up)
            self.add_if()
            self.set_config()
            for address in iface.addresses:
                self.add_addr(address)
            self.set_mtu_up()
            self.set_dns()
            for cidr in self.routes_to_add():
                self.add_route(cidr)
            self.hooks("PostUp", iface.post_up)
        except BaseException as e:
            # As wg-quick's trap: undo it all, whatever failed (the rollback's own failures
            # would only hide the first one).
            with contextlib.suppress(Exception):
                self.del_if(quiet=True)
            if isinstance(e, CommandFailed):
                raise CommandError(e.sentence()) from None
            raise

    def link_exists(self) -> bool:
        return bool(self.query(*ip.link_show(self.name)).strip())

    def userspace_command(self) -> str:
        override = self.env.env.get(USERSPACE_ENV)
        if override:
            return override
        return str(Path(sys.executable).parent / USERSPACE_PROGRAM)

    def add_if(self) -> None:
        """Start the userspace daemon and wait until it serves its control socket."""
        program = self.userspace_command()
        argv = [program, self.name]
        self.echo(" ".join(argv))
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    env=self.child_env,
                    start_new_session=True,
                )
            except OSError as e:
                raise CommandError(
                    f"cannot run the userspace implementation `{program}': {e.strerror or e}"
                ) from None
            try:
                self.wait_for_daemon(process, program)
            finally:
                output.seek(0)
                text = output.read()
                if text:
                    self.env.stderr.write(text if text.endswith("\n") else text + "\n")

    def wait_for_daemon(self, process: subprocess.Popen[bytes], program: str) -> None:
        deadline = time.monotonic() + DAEMON_TIMEOUT
        while True:
            status = process.poll()
            if status is not None and status != 0:
                raise CommandError(
                    f"the userspace implementation `{program} {self.name}' failed "
                    f"with exit status {status}"
                )
            if uapi_client.has_interface(self.name, remove_stale=False):
                return
            if time.monotonic() > deadline:
                if status is None:
                    process.kill()
                    process.wait()
                raise CommandError(
                    f"the userspace implementation `{program}' did not serve "
                    f"{uapi_client.socket_path(self.name)} within {DAEMON_TIMEOUT:g} seconds"
                )
            time.sleep(0.02)

    def resolve(self, endpoint: Endpoint) -> Endpoint:
        retries_text = self.env.env.get("WG_ENDPOINT_RESOLUTION_RETRIES", "15")
        if retries_text == "infinity":
            retries = -1
        elif retries_text.isascii() and retries_text.isdigit():
            retries = int(retries_text)
        else:
            raise CommandError(
                f"WG_ENDPOINT_RESOLUTION_RETRIES is neither a number nor infinity: `{retries_text}'"
            )
        try:
            return wgconfig.resolve_endpoint(
                endpoint, retries, on_retry=lambda message: self.warn(message)
            )
        except OSError as e:
            raise CommandError(
                f"cannot resolve the endpoint `{endpoint}': {e.strerror or e}"
            ) from None

    def set_config(self) -> None:
        config = self.config.with_resolved_endpoints(self.resolve)
        self.echo(f"configure {self.name} through {uapi_client.socket_path(self.name)}")
        try:
            uapi_client.uapi_set(self.name, config.to_uapi_set())
        except UapiError as e:
            port = config.interface.listen_port
            if e.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"the listen port {port} of {self.name} is already in use; "
                    "choose another ListenPort or stop what uses it"
                ) from None
            raise CommandError(e.message) from None

    def device(self) -> DeviceState:
        try:
            return uapi_client.uapi_get(self.name)
        except UapiError as e:
            raise CommandError(e.message) from None

    def add_addr(self, address: wgconfig.IPInterface) -> None:
        self.run(*ip.address_add(self.name, address))

    def set_mtu_up(self) -> None:
        if self.config.interface.mtu is not None:
            mtu = self.config.interface.mtu
            self.run(*ip.link_up(self.name, mtu))
            return
        best = 0
        for peer in self.device().peers:
            match = re.fullmatch(r"\[?([a-z0-9:.]+)\]?:[0-9]+", peer.endpoint or "")
            if match is None:
                continue
            best = max(best, self.route_mtu(self.query(*ip.route_get(match.group(1)))))
        if best == 0:
            lines = self.query(*ip.route_show_default()).splitlines()
            best = self.route_mtu(lines[0] if lines else "")
        mtu = (best or 1500) - 80
        self.run(*ip.link_up(self.name, mtu))

    def route_mtu(self, route: str) -> int:
        """The MTU of a route: its own ``mtu``, or its device's (0 if neither is known)."""
        match = re.search(r"mtu ([0-9]+)", route)
        if match is None:
            dev = re.search(r"dev ([^ ]+)", route)
            if dev is None:
                return 0
            match = re.search(r"mtu ([0-9]+)", self.query(*ip.link_show(dev[1])))
        return int(match.group(1)) if match else 0

    def resolvconf_name(self) -> str:
        order = None
        with contextlib.suppress(OSError):
            order = RESOLVCONF_ORDER.read_text()
        return resolvconf.interface_name(self.name, order)

    def set_dns(self) -> None:
        iface = self.config.interface
        if not iface.dns:
            return
        servers = [wgconfig.format_address(a) for a in iface.dns]
        if self.which("resolvconf") is None:
            self.warn(
                f"warning: resolvconf is not installed, so the DNS servers {', '.join(servers)} "
                "are not set up",
            )
            return
        text = resolvconf.records(servers, iface.dns_search)
        self.run(*resolvconf.add(self.resolvconf_name()), input=text)
        self.have_set_dns = True

    def unset_dns(self) -> None:
        if self.config.interface.dns and self.which("resolvconf") is not None:
            self.run(*resolvconf.delete(self.resolvconf_name()))

    def routes_to_add(self) -> list[str]:
        """The allowed IPs, most specific first, as wg-quick sorts them (``sort -nr -k 2 -t /``
        in the C locale: by prefix length, then by the whole text, both descending)."""
        cidrs = [
            wgconfig.format_network(network)
            for peer in self.device().peers
            for network in peer.allowed_ips
        ]
        cidrs = [c for c in cidrs if re.fullmatch(r"[0-9a-z:.]+/[0-9]+", c)]
        return sorted(cidrs, key=lambda c: (int(c.split("/")[1]), c.encode()), reverse=True)

    def table(self) -> str | None:
        return self.config.interface.table

    def add_route(self, cidr: str) -> None:
        table = self.table()
        if table == "off":
            return
        if table is not None and table != "auto":
            self.run(*ip.route_add(self.name, cidr, table))
        elif cidr.endswith("/0"):
            self.add_default(cidr)
        elif not self.query(*ip.route_show_match(self.name, cidr)).strip():
            self.run(*ip.route_add(self.name, cidr))

    def get_fwmark(self) -> int | None:
        try:
            fwmark = uapi_client.uapi_get(self.name).fwmark
        except UapiError:
            return None
        return fwmark or None

    def add_default(self, cidr: str) -> None:
        table = self.get_fwmark()
        if table is None:
            table = DEFAULT_TABLE
            while self.query(*ip.route_show_table("-4", table)).strip() or (
                self.query(*ip.route_show_table("-6", table)).strip()
            ):
                table += 1
            self.echo(f"set fwmark {table} on {self.name} through its control socket")
            try:
                uapi_client.uapi_set(self.name, f"set=1\nfwmark={table}\n\n")
            except UapiError as e:
                raise CommandError(e.message) from None
        v6 = ":" in cidr
        for argv in ip.default_route(self.name, cidr, table):
            self.run(*argv)
        addresses = ip.parse_addresses(self.query(*ip.address_show(self.name, ip.family(cidr))))
        nft = firewall.nft_table(self.name, table, addresses, v6=v6)
        restore = firewall.iptables_restore(self.name, table, addresses)
        iptables = firewall.iptables_program(v6=v6)
        if not v6:
            self.set_src_valid_mark()
        if self.which("nft") is not None:
            self.run(*firewall.NFT_APPLY, input=nft)
        elif self.which(f"{iptables}-restore") is not None:
            self.run(f"{iptables}-restore", "-n", input=restore)
        else:
            raise CommandError(
                f"neither nft nor {iptables}-restore is installed, so the default route "
                f"through {self.name} cannot be protected against spoofed packets"
            )
        self.have_set_firewall = True

    def set_src_valid_mark(self) -> None:
        if self.which("sysctl") is not None:
            self.run(*sysctl.set_value(sysctl.SRC_VALID_MARK, "1"))
            return
        path = sysctl.proc_path(sysctl.SRC_VALID_MARK)
        self.echo(f"echo 1 > {path}")
        path.write_text("1\n")

    # down ----------------------------------------------------------------------------------

    def is_wireguard_interface(self) -> bool:
        return uapi_client.has_interface(self.name)

    def down(self) -> None:
        if not self.is_wireguard_interface():
            raise CommandError(f"`{self.name}' is not a WireGuard interface")
        iface = self.config.interface
        try:
            self.hooks("PreDown", iface.pre_down)
            if iface.save_config:
                self.save_config()
            self.del_if()
            with contextlib.suppress(CommandFailed):
                self.unset_dns()
            with contextlib.suppress(CommandFailed):
                self.remove_firewall()
            self.hooks("PostDown", iface.post_down)
        except CommandFailed as e:
            raise CommandError(e.sentence()) from None

    def del_if(self, quiet: bool = False) -> None:
        """Remove the interface and what up added for it (wg-quick's del_if)."""
        if self.have_set_dns:
            self.unset_dns()
        if self.have_set_firewall:
            self.remove_firewall()
        table = self.get_fwmark()
        if self.table() in (None, "auto") and table is not None and self.has_default_route():
            for proto in ("-4", "-6"):
                while (
                    argv := ip.rules_delete(proto, table, self.query(*ip.rule_show(proto)))
                ) is not None:
                    self.run(*argv)
        if quiet and not self.link_exists():
            pass  # the daemon never created it
        else:
            self.run(*ip.link_delete(self.name))
        self.stop_daemon()

    def has_default_route(self) -> bool:
        try:
            state = uapi_client.uapi_get(self.name)
        except UapiError:
            return False
        return any(n.prefixlen == 0 for p in state.peers for n in p.allowed_ips)

    def stop_daemon(self) -> None:
        """Wait for the daemon to remove its socket, and remove it if it does not (a
        userspace implementation stops when its socket file goes)."""
        path = uapi_client.socket_path(self.name)
        deadline = time.monotonic() + SOCKET_GONE_TIMEOUT
        while uapi_client.has_interface(self.name):
            if time.monotonic() > deadline:
                self.echo(f"rm -f {path}")
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return
            time.sleep(0.02)

    def remove_firewall(self) -> None:
        if self.which("nft") is not None:
            commands = firewall.nft_delete(self.name, self.query(*firewall.NFT_LIST_TABLES))
            if commands:
                self.run(*firewall.NFT_APPLY, input=commands)
        if self.which("iptables") is not None:
            for iptables in ("iptables", "ip6tables"):
                restore = firewall.iptables_delete(self.name, self.query(f"{iptables}-save"))
                if restore is not None:
                    self.run(f"{iptables}-restore", "-n", input=restore)

    # save ----------------------------------------------------------------------------------

    def save(self) -> None:
        if not self.is_wireguard_interface():
            raise CommandError(f"`{self.name}' is not a WireGuard interface")
        try:
            self.save_config()
        except CommandFailed as e:
            raise CommandError(e.sentence()) from None

    def running_config(self) -> Config:
        """What SaveConfig writes: the addresses on the link now (not the link-local ones
        the kernel made), DNS, MTU (the link's, if the file sets one), Table, SaveConfig and
        the hooks from the file, and the device's configuration from its control socket."""
        iface = self.config.interface
        addresses: list[wgconfig.IPInterface] = []
        brief = self.query(*ip.address_brief(self.name))
        match = re.match(rf"{re.escape(self.name)} +[A-Z]+ +(.+)$", brief.strip())
        for text in match.group(1).split() if match else []:
            with contextlib.suppress(ValueError):
                address = ipaddress.ip_interface(text)
                if address.is_link_local and address not in iface.addresses:
                    continue
                addresses.append(address)
        mtu = None
        if iface.mtu is not None:
            link = re.search(r"mtu ([0-9]+)", self.query(*ip.link_show(self.name)))
            mtu = int(link.group(1)) if link else iface.mtu
        state = self.device()
        peers = [
            Peer(
                public_key=p.public_key,
                preshared_key=p.preshared_key,
                endpoint=Endpoint.parse(p.endpoint) if p.endpoint else None,
                allowed_ips=list(p.allowed_ips),
                persistent_keepalive=p.persistent_keepalive_interval or None,
            )
            for p in state.peers
        ]
        interface = wgconfig.Interface(
            private_key=state.private_key,
            listen_port=state.listen_port or None,
            fwmark=state.fwmark or None,
            addresses=addresses,
            mtu=mtu,
            dns=list(iface.dns),
            dns_search=list(iface.dns_search),
            table=iface.table,
            pre_up=list(iface.pre_up),
            post_up=list(iface.post_up),
            pre_down=list(iface.pre_down),
            post_down=list(iface.post_down),
            save_config=iface.save_config,
        )
        return Config(interface, peers)

    def save_config(self) -> None:
        if self.path is None:
            raise CommandError(f"there is no configuration file to save `{self.name}' to")
        text = self.running_config().to_wg_quick()
        self.echo(f"save the configuration of {self.name} to {self.path}")
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)
                data = text.encode("utf-8", errors="surrogateescape")
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise CommandError(
                f"cannot write the configuration file `{self.path}': {e.strerror or e}"
            ) from None


def _warn(env: Environment, command: str, message: str) -> None:
    env.stdout.flush()
    env.stderr.write(f"{PROG} {command}: {message}\n")
    env.stderr.flush()
