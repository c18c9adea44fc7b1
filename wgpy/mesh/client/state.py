"""A mesh node's state directory (default ``/var/lib/wgpy``, mode 0700).

=================  ====  ==========================================================
file               mode  holds
=================  ====  ==========================================================
``node.key``       0600  the WireGuard private key, base64 as ``wg genkey`` writes it;
                         made here, never sent anywhere
``node.token``     0600  the node token the server gave at registration
``state.json``     0600  the server URL, interface name, listen port, hostname, CA file
``node.json``      0600  this node's record as the server last described it
``peers.json``     0600  the peers as the daemon last applied them (``wgpy status``)
``control.json``   0600  the control plane as the daemon last saw it (``wgpy status``):
                         ``{"state", "since", "error", "server", "relay"}``, the state
                         one of connecting, connected, unreachable, refused, expired;
                         ``relay``: the relays (wgpy.nat.relay.RelayManager.status)
``daemon.pid``     0644  ``PID START`` of the running daemon (START: its start time in
                         clock ticks, so a recycled PID is never mistaken for it)
``wgpy.log``       0600  the daemon's log
``dns.json``       0600  the node's resolver as the daemon runs it (``wgpy status``):
                         ``{"listening", "base_domain", "split_domains", "host"}``
``resolv.conf.pre-wgpy``
                   0600  /etc/resolv.conf as it was before the node wrote it (direct DNS
                         mode, :mod:`wgpy.mesh.client.hostdns`); put back and removed at
                         ``wgpy down``, or at the next ``wgpy up`` after a crash
=================  ====  ==========================================================

Files are written whole (a temporary file, then a rename), created with their final mode.
A directory or file found with a looser mode (0755, 0644: made by hand, or by another tool)
is tightened by :meth:`StateDir.ensure`, which says which; a symbolic link in their place is
refused.
While a daemon runs, ``/run/wgpy/mesh/IFNAME`` names the state directory of the interface,
so ``wgpy down IFNAME`` finds it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...keys import key_from_base64, key_to_base64
from ...protocol.crypto import generate_private_key

__all__ = [
    "DEFAULT_STATE_DIR",
    "RUN_DIR",
    "Settings",
    "StateDir",
    "StateError",
    "interface_state_dir",
    "process_start_time",
    "register_interface",
    "unregister_interface",
]

DEFAULT_STATE_DIR = Path("/var/lib/wgpy")
RUN_DIR = Path("/run/wgpy/mesh")

KEY_FILE = "node.key"
TOKEN_FILE = "node.token"
SETTINGS_FILE = "state.json"
NODE_FILE = "node.json"
PEERS_FILE = "peers.json"  # the netmap's peers as the daemon last applied them (wgpy status)
CONTROL_FILE = "control.json"  # the control plane's state as the daemon last saw it
NAT_FILE = "nat.json"  # the NAT's mapping lifetime, the keepalive, the STUN mux's "drops"
DNS_FILE = "dns.json"  # the node's resolver: where it answers, and how the host points at it
PID_FILE = "daemon.pid"
LOG_FILE = "wgpy.log"
RESOLV_BACKUP_FILE = "resolv.conf.pre-wgpy"  # not forgotten by logout: it is the host's
_FORGET = (KEY_FILE, TOKEN_FILE, SETTINGS_FILE, NODE_FILE, PEERS_FILE, CONTROL_FILE, PID_FILE,
           NAT_FILE, DNS_FILE)  # fmt: skip
_PRIVATE = (KEY_FILE, TOKEN_FILE, SETTINGS_FILE, NODE_FILE, PEERS_FILE, CONTROL_FILE, LOG_FILE,
            NAT_FILE, DNS_FILE)  # fmt: skip

# the control plane's states (control.json)
CONNECTING = "connecting"  # logging in, before the first map
CONNECTED = "connected"  # the map stream is open
UNREACHABLE = "unreachable"  # no answer, or an error answer: reconnecting with backoff
REFUSED = "refused"  # the server refuses the node's token: the node was deleted there
EXPIRED = "expired"  # the node's key has expired at the server


class StateError(Exception):
    """The state directory cannot be used; the message is one sentence for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Settings:
    """What ``wgpy up`` was last run with, so that the next ``up``, ``down`` and ``logout``
    need not be told again."""

    server_url: str
    interface: str
    listen_port: int
    hostname: str
    ca_cert: str | None = None
    # the machine certificate and key (absolute paths) the node proves itself with
    machine_cert: str | None = None
    machine_key: str | None = None
    accept_dns: bool = True  # the host resolves mesh names through the node's resolver
    # subnet routes (wgpy up --advertise-routes, --snat-subnet-routes, --accept-routes)
    advertise_routes: tuple[str, ...] = ()
    snat_subnet_routes: bool = True
    accept_routes: bool = True
    # exit nodes: offer to be one; the peer to send all traffic through ("": none), and
    # whether the local networks stay reachable meanwhile
    advertise_exit_node: bool = False
    exit_node: str = ""
    exit_node_allow_lan_access: bool = False
    metrics_listen: str = ""  # HOST:PORT of the node's Prometheus metrics ("": none)

    @classmethod
    def from_json(cls, data: Any) -> Settings:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        ca_cert = data.get("ca_cert")
        machine_cert, machine_key = data.get("machine_cert"), data.get("machine_key")
        return cls(
            server_url=str(data["server_url"]),
            interface=str(data["interface"]),
            listen_port=int(data["listen_port"]),
            hostname=str(data["hostname"]),
            ca_cert=None if ca_cert is None else str(ca_cert),
            machine_cert=None if machine_cert is None else str(machine_cert),
            machine_key=None if machine_key is None else str(machine_key),
            accept_dns=bool(data.get("accept_dns", True)),
            advertise_routes=tuple(str(r) for r in data.get("advertise_routes") or ()),
            snat_subnet_routes=bool(data.get("snat_subnet_routes", True)),
            accept_routes=bool(data.get("accept_routes", True)),
            advertise_exit_node=data.get("advertise_exit_node") is True,
            exit_node=str(data.get("exit_node") or ""),
            exit_node_allow_lan_access=data.get("exit_node_allow_lan_access") is True,
            metrics_listen=str(data.get("metrics_listen") or ""),
        )


def _write_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``; the file never exists with a looser mode."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (None if there is none, or
    if it has exited and waits to be reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces or parentheses
    fields = text[text.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):  # field 3, the state: a zombie, or dead
        return None
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def _tightened(path: Path, mode: int, new: int) -> str:
    return f"{path} had mode {stat.S_IMODE(mode):04o}, which others could read: made it {new:04o}"


class StateDir:
    """One node's state directory; nothing is touched until a method is called."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"StateDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # -------------------------------------------------------------- the directory

    def ensure(self) -> list[str]:
        """Create the directory (0700) if needed, or tighten an existing one to 0700 and
        its private files to 0600; a sentence for each one tightened."""
        tightened = self._ensure_directory()
        for name in _PRIVATE:
            path = self.file(name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise StateError(
                        f"{path} is a symbolic link; remove it (the node writes its own file)"
                    ) from None
                raise StateError(f"cannot use {path}: {e.strerror or e}") from None
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_IMODE(mode) & 0o077:
                    os.fchmod(fd, 0o600)
                    tightened.append(_tightened(path, mode, 0o600))
            except OSError as e:
                raise StateError(f"cannot tighten the mode of {path}: {e.strerror or e}") from None
            finally:
                os.close(fd)
        return tightened

    def _ensure_directory(self) -> list[str]:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(self.path)
            if not stat.S_ISDIR(st.st_mode):
                raise StateError(f"the state directory {self.path} is not a directory")
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.chmod(self.path, 0o700)
                return [_tightened(self.path, st.st_mode, 0o700)]
        except OSError as e:
            raise StateError(
                f"cannot use the state directory {self.path}: {e.strerror or e}"
            ) from None
        return []

    def exists(self) -> bool:
        return self.path.is_dir()

    # -------------------------------------------------------------- the node key

    def read_key(self) -> bytes | None:
        """The private key, or None if there is none yet."""
        path = self.file(KEY_FILE)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateError(f"cannot read the node key {path}: {e.strerror or e}") from None
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                os.fchmod(fd, 0o600)
            text = os.read(fd, 4096).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        try:
            return key_from_base64(text)
        except ValueError as e:
            raise StateError(f"{path} is not a valid WireGuard key: {e}") from None

    def load_or_create_key(self, rng: Callable[[int], bytes] = os.urandom) -> bytes:
        """The node's private key, made and stored (0600) on first use."""
        key = self.read_key()
        if key is not None:
            return key
        self.ensure()
        key = generate_private_key(rng)
        try:
            _write_file(self.file(KEY_FILE), (key_to_base64(key) + "\n").encode())
        except OSError as e:
            raise StateError(
                f"cannot write the node key to {self.file(KEY_FILE)}: {e.strerror or e}"
            ) from None
        return key

    # -------------------------------------------------------------- token, settings, node

    def read_token(self) -> str | None:
        try:
            token = self.file(TOKEN_FILE).read_text(encoding="ascii", errors="replace").strip()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateError(
                f"cannot read the node token {self.file(TOKEN_FILE)}: {e.strerror or e}"
            ) from None
        return token or None

    def write_token(self, token: str) -> None:
        self._write_private(TOKEN_FILE, (token + "\n").encode(), "the node token")

    def read_settings(self) -> Settings | None:
        data = self._read_json(SETTINGS_FILE)
        if data is None:
            return None
        try:
            return Settings.from_json(data)
        except (KeyError, TypeError, ValueError):
            raise StateError(
                f"{self.file(SETTINGS_FILE)} is damaged; remove it or run `wgpy logout`"
            ) from None

    def write_settings(self, settings: Settings) -> None:
        data = json.dumps(asdict(settings), indent=2).encode() + b"\n"
        self._write_private(SETTINGS_FILE, data, "the settings")

    def read_node(self) -> dict[str, Any] | None:
        data = self._read_json(NODE_FILE)
        return data if isinstance(data, dict) else None

    def write_node(self, node: dict[str, Any]) -> None:
        data = json.dumps(node, indent=2).encode() + b"\n"
        self._write_private(NODE_FILE, data, "the node record")

    def read_peers(self) -> list[dict[str, Any]]:
        data = self._read_json(PEERS_FILE)
        return [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []

    def write_peers(self, peers: list[dict[str, Any]]) -> None:
        data = json.dumps(peers, indent=1).encode() + b"\n"
        self._write_private(PEERS_FILE, data, "the peer list")

    def read_control(self) -> dict[str, Any] | None:
        data = self._read_json(CONTROL_FILE)
        return data if isinstance(data, dict) else None

    def write_control(self, control: dict[str, Any]) -> None:
        data = json.dumps(control, indent=1).encode() + b"\n"
        self._write_private(CONTROL_FILE, data, "the control state")

    def read_nat(self) -> dict[str, Any] | None:
        data = self._read_json(NAT_FILE)
        return data if isinstance(data, dict) else None

    def write_nat(self, nat: dict[str, Any]) -> None:
        data = json.dumps(nat, indent=1).encode() + b"\n"
        self._write_private(NAT_FILE, data, "the NAT state")

    def read_dns(self) -> dict[str, Any] | None:
        data = self._read_json(DNS_FILE)
        return data if isinstance(data, dict) else None

    def write_dns(self, dns: dict[str, Any]) -> None:
        data = json.dumps(dns, indent=1).encode() + b"\n"
        self._write_private(DNS_FILE, data, "the resolver's state")

    def read_resolv_backup(self) -> bytes | None:
        """The host's resolv.conf as it was before the node wrote it (None: not written)."""
        try:
            return self.file(RESOLV_BACKUP_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateError(
                f"cannot read {self.file(RESOLV_BACKUP_FILE)}: {e.strerror or e}"
            ) from None

    def write_resolv_backup(self, data: bytes) -> None:
        self._write_private(RESOLV_BACKUP_FILE, data, "the host's previous resolv.conf")

    def remove_resolv_backup(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.file(RESOLV_BACKUP_FILE).unlink()

    def _read_json(self, name: str) -> Any:
        try:
            text = self.file(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateError(f"cannot read {self.file(name)}: {e.strerror or e}") from None
        try:
            return json.loads(text)
        except ValueError:
            raise StateError(
                f"{self.file(name)} is damaged; remove it or run `wgpy logout`"
            ) from None

    def _write_private(self, name: str, data: bytes, what: str) -> None:
        self._ensure_directory()
        try:
            _write_file(self.file(name), data)
        except OSError as e:
            raise StateError(
                f"cannot write {what} to {self.file(name)}: {e.strerror or e}"
            ) from None

    # -------------------------------------------------------------- the daemon

    def write_pid(self, pid: int) -> None:
        start = process_start_time(pid)
        self._ensure_directory()
        _write_file(self.file(PID_FILE), f"{pid} {start or 0}\n".encode(), mode=0o644)

    def daemon_pid(self) -> int | None:
        """The PID of the daemon running on this state directory, if it still runs."""
        try:
            text = self.file(PID_FILE).read_text()
        except OSError:
            return None
        try:
            pid_text, start_text = text.split()
            pid, start = int(pid_text), int(start_text)
        except ValueError:
            return None
        if pid <= 0 or process_start_time(pid) != start:
            return None
        return pid

    def remove_pid(self, pid: int) -> None:
        """Remove the PID file if it names ``pid``."""
        path = self.file(PID_FILE)
        with contextlib.suppress(OSError, ValueError):
            if int(path.read_text().split()[0]) == pid:
                path.unlink()

    # -------------------------------------------------------------- forgetting

    def forget(self) -> list[Path]:
        """Delete the key, token, settings, node record and PID file; the files deleted."""
        removed = []
        for name in _FORGET:
            path = self.file(name)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StateError(f"cannot delete {path}: {e.strerror or e}") from None
            removed.append(path)
        return removed


# ------------------------------------------------------------------ interface registry


def _registry_file(name: str, run_dir: Path | None) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid interface name {name!r}")
    return (run_dir or RUN_DIR) / name


def register_interface(name: str, state_dir: Path, run_dir: Path | None = None) -> None:
    """Record that interface ``name`` is the mesh node of ``state_dir``."""
    path = _registry_file(name, run_dir)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    encoded = base64.b64encode(os.fsencode(state_dir.resolve())) + b"\n"
    _write_file(path, encoded, mode=0o644)


def interface_state_dir(name: str, run_dir: Path | None = None) -> Path | None:
    """The state directory of mesh interface ``name``, if a daemon registered it."""
    try:
        data = _registry_file(name, run_dir).read_bytes()
        return Path(os.fsdecode(base64.b64decode(data.strip(), validate=True)))
    except (OSError, ValueError):
        return None


def unregister_interface(name: str, state_dir: Path, run_dir: Path | None = None) -> None:
    """Forget ``name`` if it still names ``state_dir``."""
    with contextlib.suppress(OSError, ValueError):
        if interface_state_dir(name, run_dir) == state_dir.resolve():
            _registry_file(name, run_dir).unlink()
