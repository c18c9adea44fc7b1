"""``wgpy-userspace``'s command line, where it needs no interface."""

from __future__ import annotations

import os
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


def test_a_bad_poll_setting_is_refused_before_anything_is_made(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WGPY_POLL_US", "fast")
    assert userspace.main(["-f", "wgpollbad0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wgpy-userspace: WGPY_POLL_US='fast' is not a number of microseconds")
    assert "set 0 to turn polling off" in err
    assert not os.path.exists("/sys/class/net/wgpollbad0")
