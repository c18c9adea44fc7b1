"""``wgpy machine csr NAME [--key FILE] [--out FILE]``: on a device, make its machine key
(once; mode 0600) and a certificate signing request for it, so that the key never leaves the
device: an admin signs the request with ``wgpy admin machines issue NAME --csr FILE``.

Also the file handling the machine-certificate commands share (here and in admin.py): new
files are written whole, never over an existing one, secrets with mode 0600 in a directory
made 0700.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from wgpy import machinecert
from wgpy.mesh.client.state import DEFAULT_STATE_DIR

from .environment import PROG, CommandError, Environment, ExitStatus

DEFAULT_MACHINE_KEY = DEFAULT_STATE_DIR / "machine.key"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``machine csr`` to the ``wgpy`` parser."""
    machine = commands.add_parser(
        "machine",
        help="this device's machine key and certificate request",
        description="This device's machine key: the key its machine certificate certifies.",
    )
    actions = machine.add_subparsers(dest="machine_action", metavar="ACTION", required=True)
    csr = actions.add_parser(
        "csr",
        help="make the machine key (once) and print a certificate request for it",
        description="Make this device's machine key if it has none (mode 0600) and print a "
        "certificate signing request for it. Give the request to an admin: "
        "`wgpy admin machines issue NAME --csr FILE`. The key never leaves the device.",
    )
    csr.add_argument("name", metavar="NAME", help="the machine's name")
    csr.add_argument(
        "--key",
        type=Path,
        default=DEFAULT_MACHINE_KEY,
        metavar="FILE",
        help=f"the machine key (default {DEFAULT_MACHINE_KEY}; made if missing)",
    )
    csr.add_argument(
        "--out", type=Path, metavar="FILE", help="write the request here (default: stdout)"
    )
    csr.set_defaults(handler=csr_command)


def csr_command(args: argparse.Namespace, env: Environment) -> ExitStatus:
    try:
        machinecert.check_machine_name(args.name)
        key_path: Path = args.key
        if key_path.exists():
            key = machinecert.load_private_key(read_file(key_path), f"the machine key {key_path}")
            made = False
        else:
            key = machinecert.new_private_key()
            write_new_file(key_path, machinecert.private_key_pem(key), secret=True)
            made = True
        pem = machinecert.create_csr(key, args.name).public_bytes(serialization.Encoding.PEM)
    except machinecert.MachineCertError as e:
        raise CommandError(str(e)) from None
    if args.out is None:
        env.stdout.write(pem.decode())
    else:
        write_new_file(args.out, pem, secret=False)
    if made:
        env.stderr.write(
            f"{PROG} machine: made the machine key {key_path} (keep it on this device)\n"
        )
    return ExitStatus.SUCCESS


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}") from None


def write_new_file(path: Path, data: bytes, *, secret: bool) -> None:
    """Write ``path`` whole (mode 0600 if ``secret``, else 0644); refuse to replace a file.
    A missing parent directory is made, mode 0700."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600 if secret else 0o644
        )
    except FileExistsError:
        raise CommandError(f"{path} already exists; move it away or choose another path") from None
    except OSError as e:
        raise CommandError(f"cannot create {path}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o600 if secret else 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
