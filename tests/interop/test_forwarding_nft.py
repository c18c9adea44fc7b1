"""The ``wgpy-nat`` scripts (wgpy/host/forwarding.py) applied by the real ``nft`` in a
namespace of their own: accepted, replaced rather than doubled, and deleted without a trace."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from wgpy.host import forwarding

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="needs root, nft"),
]


def test_nft_takes_the_scripts_and_the_delete_is_the_whole_undo() -> None:
    ns = f"wgpyfw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:

        def nft(script: str) -> None:
            argv = ["ip", "netns", "exec", ns, *forwarding.NFT_APPLY]
            subprocess.run(argv, input=script, text=True, check=True)

        def ruleset() -> str:
            argv = ["ip", "netns", "exec", ns, "nft", "list", "ruleset"]
            return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

        before = ruleset()
        nft(forwarding.nat_delete_script())  # nothing there: still fine
        nft(forwarding.nat_script("wgpy0"))
        nft(forwarding.nat_script("wgpy0", ["eth0"]))  # again: replaced, not doubled
        listed = ruleset()
        assert listed.count("masquerade") == 1 and 'oifname "eth0"' in listed
        nft(forwarding.nat_delete_script())
        assert ruleset() == before
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
