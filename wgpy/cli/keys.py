"""``wgpy genkey``, ``wgpy genpsk`` and ``wgpy pubkey``, which behave as ``wg``'s commands do.

``pubkey`` accepts exactly what ``wg pubkey`` accepts: the key at the very start of the input,
then nothing but ASCII whitespace and NUL bytes up to the end of the input.
"""

from __future__ import annotations

import argparse
import os
import stat
from typing import BinaryIO

from wgpy import keys
from wgpy.protocol import crypto

from .environment import PROG, CommandError, Environment, ExitStatus

# What `wg pubkey` skips after the key: C's isspace() in the "C" locale, and NUL bytes.
_BLANK = b"\0\t\n\v\f\r "
_BLANK_CHARS = frozenset(_BLANK.decode("ascii"))
_CHUNK = 4096
_KEEP = 4096  # of input read in full; past it, only whether the rest is blank matters


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the key commands to the ``wgpy`` parser."""
    genkey_parser = commands.add_parser(
        "genkey",
        help="print a new private key",
        description="Print a new random private key in base64, clamped for X25519, "
        "like `wg genkey`.",
    )
    genkey_parser.set_defaults(handler=genkey)
    genpsk_parser = commands.add_parser(
        "genpsk",
        help="print a new preshared key",
        description="Print a new random preshared key (32 bytes) in base64, like `wg genpsk`.",
    )
    genpsk_parser.set_defaults(handler=genpsk)
    pubkey_parser = commands.add_parser(
        "pubkey",
        help="read a private key from stdin and print its public key",
        description="Read a base64 private key from standard input and print its public key "
        "in base64, like `wg pubkey`.",
    )
    pubkey_parser.set_defaults(handler=pubkey)


def genkey(args: argparse.Namespace, env: Environment) -> ExitStatus:
    _print_secret(args, env, crypto.generate_private_key(env.rng))
    return ExitStatus.SUCCESS


def genpsk(args: argparse.Namespace, env: Environment) -> ExitStatus:
    _print_secret(args, env, env.rng(keys.KEY_LEN))
    return ExitStatus.SUCCESS


def pubkey(args: argparse.Namespace, env: Environment) -> ExitStatus:
    try:
        private = key_from_input(read_input(env.stdin))
    except ValueError as e:
        raise CommandError(f"the input is not a valid WireGuard key: {e}") from None
    env.stdout.write(keys.key_to_base64(crypto.public_key(private)) + "\n")
    return ExitStatus.SUCCESS


def read_input(stream: BinaryIO) -> bytes:
    """All of ``stream`` up to its end, except that past the first few KiB blank chunks are
    dropped and a non-blank one ends the reading (the input is then invalid anyway)."""
    data = bytearray()
    while chunk := stream.read(_CHUNK):
        if len(data) < _KEEP:
            data += chunk
        elif chunk.strip(_BLANK):
            data += chunk
            break
    return bytes(data)


def key_from_input(data: bytes) -> bytes:
    """The private key in ``data`` as ``wg pubkey`` reads it from stdin; ValueError if none."""
    text = data.rstrip(_BLANK).decode("utf-8", errors="replace")
    if _BLANK_CHARS.intersection(text):
        raise ValueError(
            f"expected {keys.KEY_LEN_BASE64} characters of base64 encoding {keys.KEY_LEN} "
            "bytes and then only whitespace, but there is whitespace before or inside the key"
        )
    return keys.key_from_base64(text)


def _print_secret(args: argparse.Namespace, env: Environment, key: bytes) -> None:
    if _is_world_accessible_file(env):
        env.stderr.write(
            f"{PROG} {args.command}: warning: writing a secret key to a world-accessible file; "
            "consider setting the umask to 077 and trying again\n"
        )
    env.stdout.write(keys.key_to_base64(key) + "\n")


def _is_world_accessible_file(env: Environment) -> bool:
    """Whether stdout is a regular file others may access (``wg`` warns about it too)."""
    try:
        mode = os.fstat(env.stdout.fileno()).st_mode
    except (OSError, ValueError):  # no file descriptor (io.UnsupportedOperation), or closed
        return False
    return stat.S_ISREG(mode) and bool(mode & stat.S_IRWXO)
