"""A TUN device wgpy makes gets a transmit queue long enough for a TCP stream's bursts; a queue
the user set keeps its length."""

from __future__ import annotations

import json

import pytest

from .netns import PYTHON, Lab, unique_ifname

pytestmark = pytest.mark.root

SCRIPT = r"""
import json, subprocess, sys
from wgpy.device.tun import TunDevice

def qlen(name):
    shown = subprocess.run(["ip", "-j", "link", "show", name], check=True,
                           capture_output=True, text=True).stdout
    return json.loads(shown)[0]["txqlen"]

fresh, kept, off = sys.argv[1:4]
out = {}
tun = TunDevice(fresh, 1420)
out["fresh"] = qlen(fresh)
tun.close()
subprocess.run(["ip", "tuntap", "add", "dev", kept, "mode", "tun"], check=True)
subprocess.run(["ip", "link", "set", kept, "txqueuelen", "1234"], check=True)
tun = TunDevice(kept, 1420)
out["kept"] = qlen(kept)
tun.close()
tun = TunDevice(off, 1420, txqueuelen=0)
out["off"] = qlen(off)
tun.close()
print(json.dumps(out))
"""


def test_a_new_device_gets_a_long_queue_and_the_users_own_length_is_kept(lab: Lab) -> None:
    ns = lab.namespace("tunq")
    names = [unique_ifname(p) for p in ("tqa", "tqb", "tqc")]
    result = ns.run([PYTHON, "-c", SCRIPT, *names], timeout=30)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"fresh": 5000, "kept": 1234, "off": 500}
