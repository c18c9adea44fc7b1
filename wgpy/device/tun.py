"""The TUN device (IFF_TUN | IFF_NO_PI) through python-pytun, read and written in batches.

python-pytun opens the fd blocking and inheritable; both are fixed here. Reads go through
``os.read`` on the fd (pytun's own ``read`` raises ``pytun.Error`` instead of
BlockingIOError on an empty non-blocking fd).

By default the device is opened with IFF_VNET_HDR (see offload.py) and runs of TCP segments
are written as one super-packet: one write, and one pass through the receiving TCP stack, for
up to 64 KiB. Reads stay one packet each unless ``tso=True`` asks the kernel for TCP
super-packets too (TUNSETOFFLOAD): cutting them up costs a checksum per segment in Python,
more than the reads it saves (measured in benchmarks/README.md). ``offload=False`` opens the
device without virtio headers at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterable

import pytun

from .offload import VNET_HDR_LEN, OffloadError, coalesce, split

MAX_PACKET = 65535
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
TUN_F_USO4, TUN_F_USO6 = 0x20, 0x40


class TunError(OSError):
    """The TUN device could not be created; the message says why and what to do."""


class TunDevice:
    """One TUN interface. The interface lives as long as this object keeps its fd open."""

    def __init__(self, name: str, mtu: int, *, offload: bool = True, tso: bool = False) -> None:
        if not os.path.exists("/dev/net/tun"):
            raise TunError(
                errno.ENODEV,
                "/dev/net/tun does not exist; load the tun module (modprobe tun) or run "
                "where TUN devices are available",
            )
        try:
            flags = pytun.IFF_TUN | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if offload else 0)
            self._tun = pytun.TunTapDevice(name=name, flags=flags)
        except pytun.Error as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
            if code == errno.EBUSY:
                raise TunError(code, f"interface {name} already exists; pick another name") from e
            if code == errno.EPERM:
                raise TunError(code, "creating a TUN device needs root (CAP_NET_ADMIN)") from e
            raise TunError(code, f"cannot create TUN device {name}: {e}") from e
        self.name: str = self._tun.name
        self._fd: int = self._tun.fileno()
        os.set_blocking(self._fd, False)
        os.set_inheritable(self._fd, False)
        self.set_mtu(mtu)
        self.write_errors = 0
        self.read_errors = 0  # frames that could not be split
        self.vnet = offload  # every frame starts with a virtio-net header; we write runs
        self.tso = False  # the kernel may send us TCP super-packets
        self.uso = False  # the kernel knows UDP super-packets (Linux 6.2): we write those too
        if offload:
            # the kernel takes UDP_L4 frames where it could also send them: ask, then undo
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6)
                self.uso = True
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, 0)
        if offload and tso:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                self.tso = True

    def fileno(self) -> int:
        return self._fd

    def set_mtu(self, mtu: int) -> None:
        self._tun.mtu = mtu

    @property
    def mtu(self) -> int:
        return int(self._tun.mtu)

    def read_batch(self, limit: int = 128) -> list[bytes]:
        """Packets until ``limit`` are read (a super-packet brings up to ~45 at once, so a
        batch may end a little above it) or none are left. Raises OSError if the device is
        gone (EBADFD once the interface has been deleted)."""
        read = os.read
        fd = self._fd
        packets: list[bytes] = []
        if not self.vnet:
            for _ in range(limit):
                try:
                    packets.append(read(fd, MAX_PACKET))
                except BlockingIOError:
                    break
            return packets
        for _ in range(limit):
            if len(packets) >= limit:
                break
            try:
                frame = read(fd, VNET_HDR_LEN + MAX_PACKET)
            except BlockingIOError:
                break
            if len(frame) > VNET_HDR_LEN and not frame[1] and not frame[0] & 1:
                # no GSO, checksum complete: the common case, and the only one without tso
                packets.append(frame[VNET_HDR_LEN:])
                continue
            try:
                packets += split(frame)
            except OffloadError:
                self.read_errors += 1
        return packets

    def write_batch(self, packets: Iterable[bytes]) -> None:
        if self.vnet:
            frames: Iterable[bytes] = coalesce(packets, udp=self.uso)
        else:
            frames = packets
        write = os.write
        fd = self._fd
        for frame in frames:
            try:
                write(fd, frame)
            except BlockingIOError:
                self.write_errors += 1
            except OSError as e:
                if e.errno in (errno.EIO, errno.EINVAL, errno.ENOBUFS):
                    # EIO while the interface is down; EINVAL for a malformed packet
                    self.write_errors += 1
                else:
                    raise

    def close(self) -> None:
        if self._fd >= 0:
            self._tun.close()
            self._fd = -1
