"""Reading a secret the operator keeps in a file (the TURN secret, the OIDC client secret):
the file must be a regular file that is the owner's alone (mode 0600 or 0400), since whoever
reads it can act as this server; one sentence for the operator when it is not."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SECRET = 4096  # bytes in a secret's file


def read_secret_file(path: Path, what: str, error: type[Exception]) -> bytes:
    """The bytes of the ``what`` file ``path`` (``what``: "TURN secret"), surrounding
    whitespace stripped; ``error`` with one sentence if it cannot be read, is not a regular
    file, others may read or write it, or it is longer than MAX_SECRET bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise error(f"cannot read the {what} file {path}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"the {what} file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise error(
                f"the {what} file {path} can be read or written by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); make it the owner's alone: chmod 600 {path}"
            )
        data = os.read(fd, MAX_SECRET + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET:
        raise error(f"the {what} file {path} is longer than {MAX_SECRET} bytes")
    return data.strip()
