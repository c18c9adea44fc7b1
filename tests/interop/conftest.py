"""Fixtures for the interop tests: a Lab per test, a hard timeout, logs on failure.

The tests need root, network namespaces, `wg`, `wireguard-go`, `ip`, `nft`, `ping`, `iperf3`
(`make setup` installs them). Without root they are skipped; a missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .coturn import Coturn, start_coturn
from .netns import Lab

REQUIRED_TOOLS = ("ip", "wg", "wireguard-go", "nft", "ping", "iperf3", "ss")
TIMEOUT = 150  # seconds, per test
SLOW_TIMEOUT = 420


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "control: interop test whose sides are all wireguard-go (the harness control)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here not in Path(str(item.path)).parents:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        impls = [v for k, v in callspec.params.items() if k in ("impl", "impl_a", "impl_b")]
        if impls and all(v == "wireguard-go" for v in impls):
            item.add_marker(pytest.mark.control)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _interop_preconditions() -> None:
    if os.geteuid() != 0:
        pytest.skip("interop tests need root (network namespaces)")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools for interop tests: {missing} (run `make setup`)")


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """Namespaces, links and WireGuard processes of one test, all removed afterwards.

    The test body runs under a hard timeout (SIGALRM raises TimeoutError in it); the timer is
    disarmed before the teardown starts, so the teardown is never interrupted.
    """
    seconds = SLOW_TIMEOUT if request.node.get_closest_marker("slow") else TIMEOUT

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"interop test exceeded its hard timeout of {seconds} s")

    with Lab(tmp_path / "lab") as lab:
        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield lab
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            rep = getattr(request.node, "rep_call", None)
            if rep is None or rep.failed:
                print(f"\n===== interop logs ({tmp_path / 'lab'})\n{lab.logs()}")


@pytest.fixture
def coturn(lab: Lab) -> Coturn:
    """A coturn relay on loopback (free UDP/TCP and TLS ports, REST-credential secret,
    loopback peers allowed), owned by the test's lab; coturn.py documents what it offers."""
    return start_coturn(lab)
