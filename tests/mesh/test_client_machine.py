"""wgpy.mesh.client.machine: the node loads its machine key and certificate (files as the
admin commands write them) and answers a challenge with fields the server's side accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509

from wgpy import machinecert
from wgpy.mesh.client.machine import MachineIdentity

NOW = 1_800_000_000.0


def write_pair(directory: Path, mode: int = 0o600) -> tuple[Path, Path, x509.Certificate]:
    ca_key, ca = machinecert.create_ca("ops", now=NOW, lifetime=86400, serial=1)
    key = machinecert.new_private_key()
    cert = machinecert.issue(ca_key, ca, key.public_key(), "pi", now=NOW, lifetime=3600, serial=2)
    key_path, cert_path = directory / "pi.key", directory / "pi.crt"
    key_path.write_bytes(machinecert.private_key_pem(key))
    key_path.chmod(mode)
    cert_path.write_bytes(machinecert.certificate_pem(cert))
    return key_path, cert_path, ca


def test_load_and_prove(tmp_path: Path) -> None:
    key_path, cert_path, ca = write_pair(tmp_path)
    identity = MachineIdentity.load(key_path, cert_path)
    assert identity.machine.name == "pi"
    challenge, node_key = os.urandom(32), os.urandom(32)
    fields = identity.prove(challenge, node_key)
    cert, signature = machinecert.decode_proof(
        fields["machine_certificate"], fields["machine_signature"]
    )
    machine = machinecert.verify_proof(ca, cert, challenge, node_key, signature, now=NOW)
    assert machine.serial == "2"


def test_unusable_files_are_refused_in_a_sentence(tmp_path: Path) -> None:
    key_path, cert_path, _ = write_pair(tmp_path, mode=0o640)
    with pytest.raises(machinecert.MachineCertError, match=r"can be read by others.*chmod 600"):
        MachineIdentity.load(key_path, cert_path)
    key_path.chmod(0o600)
    with pytest.raises(machinecert.MachineCertError, match=r"cannot read .*missing"):
        MachineIdentity.load(key_path, tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    _, other_cert, _ = write_pair(other)
    with pytest.raises(machinecert.MachineCertError, match="is not for the key"):
        MachineIdentity.load(key_path, other_cert)
