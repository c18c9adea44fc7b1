"""The library API, for real: examples/library.py makes two namespaces, runs an interface in
each through ``wgpy.open_interface`` and pings across (root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import wgpy

ROOT = Path(__file__).resolve().parent.parent


def test_keys_match_wg_format() -> None:
    key = wgpy.generate_private_key()
    assert len(key) == 44 and key.endswith("=")
    assert wgpy.public_key(key) == wgpy.public_key(key + "\n")
    assert len(wgpy.generate_preshared_key()) == 44


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and TUN")
def test_library_example_pings_across() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 received" in result.stdout
    assert "latest handshake" in result.stdout
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "wgpy-example-" not in leftovers
