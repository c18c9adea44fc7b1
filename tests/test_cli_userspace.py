"""``wgpy-userspace``'s command line, where it needs no interface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wgpy import __version__
from wgpy.cli import userspace


def test_version_is_printed_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        userspace.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"wgpy-userspace v{__version__}\n"


def test_version_from_the_installed_command() -> None:
    command = Path(sys.executable).parent / "wgpy-userspace"
    if not command.exists():
        pytest.skip("wgpy-userspace is not installed beside this Python")
    result = subprocess.run(
        [str(command), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"wgpy-userspace v{__version__}\n")
