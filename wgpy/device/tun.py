"""The TUN device (IFF_TUN | IFF_NO_PI) through python-pytun, read and written in batches.

python-pytun opens the fd blocking and inheritable; both are fixed here. Reads go through
``os.read`` on the fd (pytun's own ``read`` raises ``pytun.Error`` instead of
BlockingIOError on an empty non-blocking fd).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

import pytun

MAX_PACKET = 65535


class TunError(OSError):
    """The TUN device could not be created; the message says why and what to do."""


class TunDevice:
    """One TUN interface. The interface lives as long as this object keeps its fd open."""

    def __init__(self, name: str, mtu: int) -> None:
        if not os.path.exists("/dev/net/tun"):
            raise TunError(
                errno.ENODEV,
                "/dev/net/tun does not exist; load the tun module (modprobe tun) or run "
                "where TUN devices are available",
            )
        try:
            self._tun = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
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

    def fileno(self) -> int:
        return self._fd

    def set_mtu(self, mtu: int) -> None:
        self._tun.mtu = mtu

    @property
    def mtu(self) -> int:
        return int(self._tun.mtu)

    def read_batch(self, limit: int = 128) -> list[bytes]:
        """Up to ``limit`` packets, as many as are waiting. Raises OSError if the device is
        gone (EBADFD once the interface has been deleted)."""
        read = os.read
        fd = self._fd
        packets = []
        for _ in range(limit):
            try:
                packets.append(read(fd, MAX_PACKET))
            except BlockingIOError:
                break
        return packets

    def write_batch(self, packets: Iterable[bytes]) -> None:
        write = os.write
        fd = self._fd
        for packet in packets:
            try:
                write(fd, packet)
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
