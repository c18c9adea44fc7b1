"""`make bench` in its smoke form: every pairing is measured, the three outputs are written,
and nothing is left behind. No figure is judged here: benchmarks are read as ratios from one
run on a quiet machine, never asserted in a test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .netns import namespaces_matching, run_program

pytestmark = [pytest.mark.root, pytest.mark.slow]

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "tunnel.py"
METRICS = {
    "tcp1_mbps", "tcp4_mbps", "udp_mbps", "udp_loss_pct", "added_latency_p50_ms",
    "added_latency_p99_ms", "cpu_s_per_gb", "peak_rss_mb", "tcp1_retransmits",
    "tcp1_tun_drops", "tcp4_retransmits", "tcp4_tun_drops",
}  # fmt: skip
# A second wireguard-go "built from source": Debian's own under the second label is enough to
# check the harness (the real one is not in Debian).
NEWEST = shutil.which("wireguard-go") or "/usr/bin/wireguard-go"
NEWEST_ENV = "WIREGUARD_GO_NEWEST"
DEBIANS = ("wgpy/wgpy", "wireguard-go/wireguard-go", "wgpy/wireguard-go")


def environment_without_the_newest() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != NEWEST_ENV}


def test_the_harness_measures_every_pairing_and_cleans_up(tmp_path: Path) -> None:
    result, pid = run_program(
        [sys.executable, str(HARNESS), "--quick", "--out", str(tmp_path), "--newest", NEWEST],
        timeout=500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[3/5] round 1: wgpy/wireguard-go" in result.stdout  # progress was shown
    assert "[5/5] round 1: wgpy/wireguard-go-newest" in result.stdout
    result = json.loads((tmp_path / "latest.json").read_text())
    for pairing in (
        *DEBIANS,
        "wireguard-go-newest/wireguard-go-newest",
        "wgpy/wireguard-go-newest",
    ):
        figures = result["per_round"][0][pairing]
        assert set(figures) == METRICS
        assert figures["tcp1_mbps"] > 0 and figures["tcp4_mbps"] > 0 and figures["udp_mbps"] > 0
        assert figures["peak_rss_mb"] > 0
        assert figures["tcp1_tun_drops"] >= 0 and figures["tcp1_retransmits"] >= 0
    assert set(result["ratios"]) == {
        "wgpy/wgpy", "wgpy/wireguard-go", "wireguard-go-newest/wireguard-go-newest",
        "wgpy/wireguard-go-newest",
    }  # fmt: skip
    assert "wgpy/wgpy" in result["ratios_newest"]
    assert {m["peers"] for m in result["many_peers"].values()} == {1000}
    assert set(result["many_peers"]) == {"wgpy", "wireguard-go", "wireguard-go-newest"}
    versions = result["versions"]
    assert versions[f"wireguard-go-newest ({Path(NEWEST).resolve()})"].startswith("wireguard-go v")
    assert versions["wgpy"].startswith("wgpy-userspace v")
    assert result["core"]["full_handshakes_per_s"]["median"] > 0
    markdown = (tmp_path / "latest.md").read_text()
    assert "| TCP, 1 stream (Mbit/s) |" in markdown
    assert "Ratios to wireguard-go-newest/wireguard-go-newest" in markdown
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the lab names its namespaces wgpy-PID-N-ROLE after the harness's own PID
    assert namespaces_matching(lambda n: n.startswith(f"wgpy-{pid}-")) == []


@pytest.mark.parametrize("program", [HARNESS, HARNESS.parent / "ab.py"])
def test_a_second_wireguard_go_that_is_not_one_is_refused_at_once(
    tmp_path: Path, program: Path
) -> None:
    result = subprocess.run(
        [sys.executable, str(program)],
        env={**os.environ, NEWEST_ENV: str(tmp_path / "nothing-here")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{tmp_path / 'nothing-here'} is not an executable file" in result.stdout + result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_harness_removes_what_it_made(tmp_path: Path, sig: str) -> None:
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, str(HARNESS), "--quick", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=environment_without_the_newest(),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # "[1/3] round 1: wgpy/wgpy"
        assert first.startswith("[1/3]"), first
        deadline = time.monotonic() + 30
        ours = lambda n: n.startswith(f"wgpy-{process.pid}-")  # noqa: E731
        while time.monotonic() < deadline and not namespaces_matching(ours):
            time.sleep(0.1)
        time.sleep(2)  # in the middle of a measurement
        process.send_signal(getattr(signal, sig))
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, out
    assert "interrupted: cleaned up, nothing written" in out
    assert namespaces_matching(ours) == []
    assert not list(tmp_path.iterdir())


AB = HARNESS.parent / "ab.py"


def test_ab_compares_a_revision_with_the_working_tree_and_cleans_up() -> None:
    root = AB.parents[1]
    worktrees_before = subprocess.run(
        ["git", "-C", str(root), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    result, pid = run_program(
        [sys.executable, str(AB), "--base", "HEAD", "--rounds", "1", "--tests", "latency,tcp1",
         "--seconds", "1", "--pings", "10", "--newest", NEWEST],
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "wireguard-go and wireguard-go-newest for reference" in result.stdout
    for test in ("latency", "tcp1"):
        line = next(x for x in result.stdout.splitlines() if x.startswith(test))
        measured = line.split(";")[0]  # then the ratios: new/base, new/each reference
        figures = dict(re.findall(r"(base|new|wireguard-go-newest|wireguard-go)\s+(-?[\d.]+)",
                                  measured))  # fmt: skip
        assert set(figures) == {"base", "new", "wireguard-go", "wireguard-go-newest"}, line
        assert "new/base" in line and "new/wireguard-go " in line
        assert "new/wireguard-go-newest" in line
        if test == "tcp1":
            assert all(float(v) > 0 for v in figures.values()), line
    drops = next(x for x in result.stdout.splitlines() if "tcp1 TUN drops" in x)
    assert re.search(r"wireguard-go-newest \d+", drops), drops
    assert namespaces_matching(lambda n: n.startswith(f"wgpy-{pid}-")) == []
    worktrees_after = subprocess.run(
        ["git", "-C", str(root), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert worktrees_after == worktrees_before


def test_ab_measures_the_tree_without_and_with_the_stun_demux() -> None:
    result, pid = run_program(
        [sys.executable, str(AB), "--mux", "compare", "--rounds", "1", "--tests", "tcp1",
         "--seconds", "1", "--pings", "10"],
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "without the STUN demux and with it" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("tcp1"))
    figures = dict(re.findall(r"(new\+mux|new|wireguard-go)\s+(-?[\d.]+)", line.split(";")[0]))
    assert set(figures) == {"new", "new+mux", "wireguard-go"}, line
    assert all(float(v) > 0 for v in figures.values()), line
    assert "new+mux/new" in line
    assert namespaces_matching(lambda n: n.startswith(f"wgpy-{pid}-")) == []


NAT = HARNESS.parent / "nat.py"


def test_bench_nat_measures_a_cell_writes_its_figures_and_cleans_up(tmp_path: Path) -> None:
    result, pid = run_program(
        [sys.executable, str(NAT), "--trials", "1", "--cells", "easy/easy", "--seconds", "1",
         "--out", str(tmp_path)],
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[1/1] easy/easy trial 1: " in result.stdout  # progress was shown
    figures = json.loads((tmp_path / "nat-latest.json").read_text())
    trial = figures["per_trial"]["easy/easy"][0]
    assert "error" not in trial, trial
    assert trial["first_packet_s"] is not None and trial["path_a"] == trial["path_b"] == "direct"
    assert trial["throughput_mbps"] > 0 and trial["throughput_path"] == "direct"
    assert figures["cells"]["easy/easy"]["target"]["text"].startswith("100 % direct")
    assert "| easy/easy | 1/1 | 100% |" in (tmp_path / "nat-latest.md").read_text()
    # the lab names its namespaces wgpy-PID-N-ROLE after the harness's own PID
    assert namespaces_matching(lambda n: n.startswith(f"wgpy-{pid}-")) == []


def test_an_interrupted_bench_nat_removes_what_it_made(tmp_path: Path) -> None:
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, str(NAT), "--trials", "3", "--cells", "hard/hard", "--out",
         str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # "building the lab: ..."
        assert first.startswith("building the lab"), first
        ours = lambda n: n.startswith(f"wgpy-{process.pid}-")  # noqa: E731
        time.sleep(8)  # the lab is built and a trial runs
        assert namespaces_matching(ours)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=90)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, out
    assert "interrupted: cleaned up, nothing written" in out
    assert namespaces_matching(ours) == []
    assert not list(tmp_path.iterdir())
