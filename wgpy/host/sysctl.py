"""Kernel settings through ``sysctl``, or through /proc/sys when it is not installed."""

from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")
# policy routing by fwmark (wg-quick's default route) needs the mark to count in the
# reverse-path check
SRC_VALID_MARK = "net.ipv4.conf.all.src_valid_mark"

__all__ = ["SRC_VALID_MARK", "proc_path", "set_value"]


def set_value(key: str, value: str) -> list[str]:
    """``sysctl -q KEY=VALUE``."""
    return ["sysctl", "-q", f"{key}={value}"]


def proc_path(key: str) -> Path:
    """The file under /proc/sys that holds ``key``, for a host without ``sysctl``."""
    return PROC_SYS.joinpath(*key.split("."))
