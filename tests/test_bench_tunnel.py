"""benchmarks/tunnel_figures.py and the binary checks of benchmarks/tunnel.py: what `make bench`
makes of its rounds with Debian's wireguard-go alone and with the newest beside it (no lab:
the lab run is tests/interop/test_bench.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from tunnel import wireguard_go_version
from tunnel_figures import (
    METRICS,
    chart,
    many_ratios,
    markdown,
    name_of,
    pairings,
    ratio_lines,
    summarize,
)

WGPY, DEBIAN, NEWEST = (
    "wgpy/wgpy",
    "wireguard-go/wireguard-go",
    "wireguard-go-newest/wireguard-go-newest",
)


def figures(scale: float, drops: float = 0.0) -> dict[str, float]:
    """A pairing's figures in one round, every metric ``scale`` times a base value."""
    base = {metric: 10.0 for metric in METRICS}
    out = {metric: value * scale for metric, value in base.items()}
    out["tcp1_tun_drops"] = out["tcp4_tun_drops"] = drops
    return out


def rounds(newest: bool) -> list[dict[str, dict[str, float]]]:
    """Two rounds; wgpy at 2x then 3x Debian's and at 0.5x then 1x the newest's."""
    made = []
    for wgpy, debian, latest in ((2.0, 1.0, 4.0), (6.0, 2.0, 6.0)):
        one = {
            WGPY: figures(wgpy),
            DEBIAN: figures(debian, drops=7),
            "wgpy/wireguard-go": figures(1),
        }
        if newest:
            one[NEWEST] = figures(latest)
            one["wgpy/wireguard-go-newest"] = figures(1)
        made.append(one)
    return made


def result(newest: bool) -> dict[str, Any]:
    many = {
        "wgpy": {"peers": 1000, "setconf_s": 2.0, "show_s": 0.5, "peak_rss_mb": 60.0},
        "wireguard-go": {"peers": 1000, "setconf_s": 1.0, "show_s": 0.25, "peak_rss_mb": 30.0},
    }
    versions = {
        "wgpy": "wgpy-userspace v0.1.0",
        "wireguard-go (Debian)": "wireguard-go v0.0.20220316",
    }
    if newest:
        many["wireguard-go-newest"] = {"peers": 1000, "setconf_s": 4.0, "show_s": 1.0,
                                       "peak_rss_mb": 120.0}  # fmt: skip
        versions["wireguard-go-newest (/opt/wg)"] = "wireguard-go v0.0.20250522"
    return {
        "date": "2026-12-08 04:00 UTC",
        "command": "make bench",
        "rounds": 2,
        "seconds": 2.0,
        "versions": versions,
        "many_peers": many,
        **summarize(rounds(newest)),
    }


def test_the_pairings_add_the_newest_wireguard_go_only_when_given_one() -> None:
    assert [name_of(p) for p in pairings(False)] == [WGPY, DEBIAN, "wgpy/wireguard-go"]
    assert [name_of(p) for p in pairings(True)] == [
        WGPY, DEBIAN, "wgpy/wireguard-go", NEWEST, "wgpy/wireguard-go-newest",
    ]  # fmt: skip


def test_without_the_newest_the_ratios_are_to_debians_alone() -> None:
    summary = summarize(rounds(False))
    assert set(summary) == {"summary", "ratios"}
    assert set(summary["ratios"]) == {WGPY, "wgpy/wireguard-go"}
    # per-round ratios 2 and 3: their median, and the range
    assert summary["ratios"][WGPY]["tcp1_mbps"] == 2.5
    assert summary["ratios"][WGPY]["tcp1_mbps_min"] == 2.0
    assert summary["ratios"][WGPY]["tcp1_mbps_max"] == 3.0
    assert summary["summary"][DEBIAN]["tcp1_tun_drops"]["median"] == 7


def test_with_the_newest_every_metric_gets_a_ratio_to_each_wireguard_go() -> None:
    summary = summarize(rounds(True))
    to_debian, to_newest = summary["ratios"], summary["ratios_newest"]
    assert set(to_debian) == {WGPY, "wgpy/wireguard-go", NEWEST, "wgpy/wireguard-go-newest"}
    assert set(to_newest) == {WGPY, DEBIAN, "wgpy/wireguard-go", "wgpy/wireguard-go-newest"}
    for metric in ("added_latency_p50_ms", "added_latency_p99_ms", "tcp1_mbps", "tcp4_mbps",
                   "udp_mbps", "cpu_s_per_gb", "peak_rss_mb"):  # fmt: skip
        assert to_debian[WGPY][metric] == 2.5
        assert to_newest[WGPY][metric] == 0.75  # per round 0.5 and 1.0
        assert (to_newest[WGPY][metric + "_min"], to_newest[WGPY][metric + "_max"]) == (0.5, 1.0)
    # counts (drops, retransmits) are shown but never divided
    assert "tcp1_tun_drops" not in to_debian[WGPY] and "tcp4_retransmits" not in to_newest[WGPY]


def test_a_reference_at_zero_gives_no_ratio_rather_than_a_crash() -> None:
    made = rounds(False)
    for one in made:
        one[DEBIAN]["added_latency_p50_ms"] = 0.0
    summary = summarize(made)
    assert "added_latency_p50_ms" not in summary["ratios"][WGPY]
    assert "| latency added, p50 | - |" in markdown({**result(False), **summary})


def test_the_many_peers_ratios_are_wgpy_over_each_wireguard_go() -> None:
    many = result(True)["many_peers"]
    assert many_ratios(many) == {
        "wgpy/wireguard-go": {"setconf_s": 2.0, "show_s": 2.0, "peak_rss_mb": 2.0},
        "wgpy/wireguard-go-newest": {"setconf_s": 0.5, "show_s": 0.5, "peak_rss_mb": 0.5},
    }


def test_the_markdown_shows_all_three_implementations_and_both_ratios() -> None:
    text = markdown(result(True))
    header = next(line for line in text.splitlines() if line.startswith("| metric | wgpy/wgpy"))
    assert header.count("|") == 7 and NEWEST in header and "wgpy/wireguard-go-newest" in header
    assert f"Ratios to {DEBIAN} in the same rounds" in text
    assert f"Ratios to {NEWEST} in the same rounds" in text
    assert "| TCP, 1 stream: TUN drops (packets) | 0 (0-0) | 7 (7-7) |" in text
    assert "wireguard-go-newest (/opt/wg) wireguard-go v0.0.20250522" in text
    assert "| wgpy/wireguard-go-newest (lower is better) | - | 0.50x | 0.50x | 0.50x |" in text
    assert "| wgpy/wireguard-go (lower is better) | - | 2.00x | 2.00x | 2.00x |" in text
    lines = "\n".join(ratio_lines(result(True)))
    assert f"ratios to {NEWEST}" in lines and f"ratios to {DEBIAN}" in lines


def test_without_the_newest_the_markdown_names_only_debians() -> None:
    text = markdown(result(False))
    assert "newest" not in text
    assert f"Ratios to {DEBIAN} in the same rounds" in text


def test_the_chart_draws_five_pairings(tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    chart(result(True), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def executable(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_a_wireguard_go_is_known_by_its_version_line(tmp_path: Path) -> None:
    fake = executable(tmp_path / "wireguard-go", "#!/bin/sh\necho 'wireguard-go v0.0.20250522'\n"
                      "echo\necho 'Userspace WireGuard daemon for linux-amd64.'\n")  # fmt: skip
    assert wireguard_go_version(fake) == "wireguard-go v0.0.20250522"


@pytest.mark.parametrize(
    ("name", "text", "mode", "words"),
    [
        ("missing", None, None, "is not an executable file"),
        ("plain", "wireguard-go v0\n", 0o644, "is not an executable file"),
        ("other", "#!/bin/sh\necho 'wgpy-userspace v0.1.0'\n", 0o755, "is not a wireguard-go"),
        ("silent", "#!/bin/sh\nexit 1\n", 0o755, "printed 'nothing'"),
    ],
)
def test_anything_else_is_refused_with_one_sentence(
    tmp_path: Path, name: str, text: str | None, mode: int | None, words: str
) -> None:
    path = tmp_path / name
    if text is not None and mode is not None:
        path.write_text(text)
        path.chmod(mode)
    with pytest.raises(ValueError, match=words) as caught:
        wireguard_go_version(str(path))
    message = str(caught.value)
    assert message.endswith(".") and message.count(". ") == 0 and str(path) in message
