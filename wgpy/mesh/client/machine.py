"""The node's machine identity: its machine key and certificate (``wgpy admin machines issue``,
or ``wgpy machine csr`` then issue), loaded once, and the proof of possession it sends when it
registers or logs in (wgpy/machinecert.py; MeshNode sends it with a fresh server challenge).

The key file must be the owner's alone (mode 0600 or tighter), as ssh requires of its keys."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from wgpy import machinecert

from .api import Client

__all__ = ["MachineIdentity"]


@dataclass(frozen=True)
class MachineIdentity:
    key: machinecert.SigningKey
    certificate: x509.Certificate

    @property
    def machine(self) -> machinecert.Machine:
        return machinecert.machine_of(self.certificate)

    @classmethod
    def load(cls, key_path: Path, cert_path: Path) -> MachineIdentity:
        """Read and check the pair; MachineCertError with a sentence when it is unusable."""
        try:
            info = os.stat(key_path)
            key_data = key_path.read_bytes()
            cert_data = cert_path.read_bytes()
        except OSError as e:
            name = e.filename or key_path
            raise machinecert.MachineCertError(f"cannot read {name}: {e.strerror or e}") from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise machinecert.MachineCertError(
                f"the machine key {key_path} can be read by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run chmod 600 {key_path}"
            )
        key = machinecert.load_private_key(key_data, f"the machine key {key_path}")
        cert = machinecert.load_certificate(cert_data, f"the machine certificate {cert_path}")
        if cert.public_key() != key.public_key():
            raise machinecert.MachineCertError(
                f"the machine certificate {cert_path} is not for the key {key_path}; give the "
                "pair that `wgpy admin machines issue` wrote"
            )
        return cls(key, cert)

    async def proof(self, client: Client, node_key: bytes) -> dict[str, str]:
        """The machine fields of a registration, login or login start: a fresh challenge
        from the server (``client``) and the proof over it and the node's WireGuard public
        key (32 raw bytes)."""
        challenge = await client.machine_challenge()
        return {
            "challenge": base64.b64encode(challenge).decode(),
            **self.prove(challenge, node_key),
        }

    def prove(self, challenge: bytes, node_key: bytes) -> dict[str, str]:
        """The proof's JSON fields for this challenge and the node's WireGuard public key
        (32 raw bytes)."""
        signature = machinecert.sign_proof(self.key, challenge, node_key)
        return machinecert.encode_proof(self.certificate, signature)
