"""wgpy: a userspace WireGuard implementation and mesh VPN in Python.

The library face: :func:`open_interface` creates and configures an interface (an async
context manager); :func:`generate_private_key` and :func:`public_key` work on the base64 keys
that ``wg genkey`` and ``wg pubkey`` print. The sans-IO protocol core is
:mod:`wgpy.protocol`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["generate_preshared_key", "generate_private_key", "open_interface", "public_key"]

if TYPE_CHECKING:
    from .api import open_interface


def generate_private_key() -> str:
    """A new private key, base64, as `wg genkey` prints it."""
    from .keys import key_to_base64
    from .protocol.crypto import generate_private_key as _gen

    return key_to_base64(_gen(os.urandom))


def generate_preshared_key() -> str:
    from .keys import key_to_base64

    return key_to_base64(os.urandom(32))


def public_key(private_key: str) -> str:
    """The base64 public key of a base64 private key, as `wg pubkey` prints it."""
    from .keys import key_from_base64, key_to_base64
    from .protocol.crypto import public_key as _pub

    return key_to_base64(_pub(key_from_base64(private_key.strip())))


def __getattr__(name: str) -> Any:
    # the interface API pulls in asyncio, pytun and the shell: load it only when asked for
    if name == "open_interface":
        from .api import open_interface

        return open_interface
    raise AttributeError(f"module 'wgpy' has no attribute {name!r}")
