"""Super-packets written into a real TUN reach real sockets whole and in order.

The TCP side is exercised end to end by every TCP test through a wgpy receiver (the 50 MiB
transfer checks a SHA-256); this checks the UDP side, which only kernels with USO take."""

from __future__ import annotations

import json

import pytest

from .netns import PYTHON, Lab, unique_ifname

pytestmark = pytest.mark.root

SCRIPT = r"""
import json, os, socket, struct, subprocess, sys
from wgpy.device.tun import TunDevice
from wgpy.device.offload import coalesce

def csum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return 0xFFFF - total

def udp_packet(payload, ip_id):
    src, dst = bytes([10, 9, 0, 2]), bytes([10, 9, 0, 1])
    udp = struct.pack("!HHHH", 1234, 9999, 8 + len(payload), 0)
    c = csum(src + dst + struct.pack("!xBH", 17, 8 + len(payload)) + udp + payload) or 0xFFFF
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 28 + len(payload), ip_id, 0x4000, 64, 17, 0)
    ip = ip[:10] + struct.pack("!H", csum(ip + src + dst)) + src + dst
    return ip + udp[:6] + struct.pack("!H", c) + payload

name = sys.argv[1]
tun = TunDevice(name, 1420)
subprocess.run(["ip", "addr", "add", "10.9.0.1/24", "dev", name], check=True)
subprocess.run(["ip", "link", "set", name, "up"], check=True)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("10.9.0.1", 9999))
sock.settimeout(2)
payloads = [os.urandom(1200) for _ in range(20)] + [os.urandom(300)]
packets = [udp_packet(p, i) for i, p in enumerate(payloads)]
frames = coalesce(packets, udp=tun.uso)
tun.write_batch(packets)
got = []
try:
    while len(got) < len(payloads):
        got.append(sock.recv(65535))
except socket.timeout:
    pass
print(json.dumps({"uso": tun.uso, "frames": len(frames), "same": got == payloads,
                  "got": len(got), "write_errors": tun.write_errors}))
"""


def test_a_udp_run_written_as_one_frame_arrives_as_its_datagrams(lab: Lab) -> None:
    ns = lab.namespace("tun")
    result = ns.run([PYTHON, "-c", SCRIPT, unique_ifname("wo")], timeout=30)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["uso"], "this kernel has no USO (Linux >= 6.2): the run was not merged"
    assert report["frames"] == 1
    assert report["got"] == 21 and report["same"] and report["write_errors"] == 0
