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

A new TUN device gets a transmit queue of 500 packets (the kernel's TUN_READQ_SIZE): the
packets the host's stack has routed to the interface that wgpy has not read yet. A TCP
stream's bursts overflow it (about 2,200 drops in 7 s of one stream here, each one a
retransmit), so the device is made with :data:`TXQUEUELEN` instead. Only a queue the kernel
just gave its default is changed: a persistent device the user set up keeps its length, and
``ip link set dev IF txqueuelen N`` afterwards (a wg-quick PostUp) wins.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Iterable

import pytun

from .offload import VNET_HDR_LEN, OffloadError, coalesce, split

MAX_PACKET = 65535
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
TUN_F_USO4, TUN_F_USO6 = 0x20, 0x40
SIOCGIFTXQLEN, SIOCSIFTXQLEN = 0x8942, 0x8943
KERNEL_TXQUEUELEN = 500
"""The transmit queue the kernel gives a new TUN device."""
TXQUEUELEN = 5000
"""The transmit queue wgpy gives the devices it makes: no drops under one TCP stream."""
_IFREQ_QLEN = struct.Struct("16si20x")  # struct ifreq: the name, then ifr_qlen


class TunError(OSError):
    """The TUN device could not be created; the message says why and what to do."""


class TunDevice:
    """One TUN interface. The interface lives as long as this object keeps its fd open."""

    def __init__(
        self,
        name: str,
        mtu: int,
        *,
        offload: bool = True,
        tso: bool = False,
        txqueuelen: int = TXQUEUELEN,
    ) -> None:
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
        if txqueuelen > 0:
            with contextlib.suppress(OSError):  # a queue too short costs speed, not function
                if get_txqueuelen(self.name) == KERNEL_TXQUEUELEN:
                    set_txqueuelen(self.name, txqueuelen)
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


def get_txqueuelen(name: str) -> int:
    """The transmit queue length of interface ``name`` (in this namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        answer = fcntl.ioctl(s, SIOCGIFTXQLEN, _IFREQ_QLEN.pack(name.encode(), 0))
    return int(_IFREQ_QLEN.unpack(answer)[1])


def set_txqueuelen(name: str, length: int) -> None:
    """Set the transmit queue length of interface ``name``; needs CAP_NET_ADMIN."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFTXQLEN, _IFREQ_QLEN.pack(name.encode(), length))
