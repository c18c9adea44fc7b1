"""`make bench`'s figures from its rounds: medians, ratios to each reference, the Markdown
table and the PNG (no lab, no I/O but the chart's file; the lab run is benchmarks/tunnel.py).

A round maps each pairing ("wgpy/wgpy", "wireguard-go/wireguard-go", ...) to its figures
(metric -> value). The references are the wireguard-go pairings to themselves: Debian's
("wireguard-go") always, and the newest built from source ("wireguard-go-newest") when
`make bench` was given one; every other pairing gets a ratio to each.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

DEBIAN = "wireguard-go"  # the implementation names the lab (tests/interop/netns.py) knows
NEWEST = "wireguard-go-newest"
REFERENCES = {DEBIAN: f"{DEBIAN}/{DEBIAN}", NEWEST: f"{NEWEST}/{NEWEST}"}
# the JSON key of each reference's ratios ("ratios" as before a second binary existed)
RATIO_KEYS = {DEBIAN: "ratios", NEWEST: "ratios_newest"}

# metric -> (label, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "tcp1_mbps": ("TCP, 1 stream", "Mbit/s", True),
    "tcp1_retransmits": ("TCP, 1 stream: retransmits", "segments", False),
    "tcp1_tun_drops": ("TCP, 1 stream: TUN drops", "packets", False),
    "tcp4_mbps": ("TCP, 4 streams", "Mbit/s", True),
    "tcp4_retransmits": ("TCP, 4 streams: retransmits", "segments", False),
    "tcp4_tun_drops": ("TCP, 4 streams: TUN drops", "packets", False),
    "udp_mbps": ("UDP delivered", "Mbit/s", True),
    "udp_loss_pct": ("UDP loss", "%", False),
    "added_latency_p50_ms": ("latency added, p50", "ms", False),
    "added_latency_p99_ms": ("latency added, p99", "ms", False),
    "cpu_s_per_gb": ("CPU per GB (both daemons)", "s", False),
    "peak_rss_mb": ("peak RSS (larger daemon)", "MB", False),
}
# counts of events, often zero: shown, never divided
COUNTS = {"tcp1_retransmits", "tcp1_tun_drops", "tcp4_retransmits", "tcp4_tun_drops"}
# the many-peers test: key -> (label, unit)
MANY: dict[str, tuple[str, str]] = {
    "setconf_s": ("`wg setconf`", "s"),
    "show_s": ("`wg show dump`", "s"),
    "peak_rss_mb": ("peak RSS", "MB"),
}


def name_of(pairing: tuple[str, str]) -> str:
    return f"{pairing[0]}/{pairing[1]}"


def pairings(newest: bool) -> list[tuple[str, str]]:
    """Every pairing a round measures, in order; the newest wireguard-go's only with one."""
    measured = [("wgpy", "wgpy"), (DEBIAN, DEBIAN), ("wgpy", DEBIAN)]
    if newest:
        measured += [(NEWEST, NEWEST), ("wgpy", NEWEST)]
    return measured


def implementations(newest: bool) -> list[str]:
    return ["wgpy", DEBIAN, NEWEST] if newest else ["wgpy", DEBIAN]


def ratios_to(
    rounds: list[dict[str, dict[str, float]]], names: list[str], reference: str
) -> dict[str, dict[str, float]]:
    """Each pairing but the reference against it, metric by metric: the median of the
    per-round ratios (same round, same noise) and their range. Counts get none."""
    ratios: dict[str, dict[str, float]] = {}
    for pairing in names:
        if pairing == reference:
            continue
        ratios[pairing] = {}
        for metric in METRICS:
            if metric in COUNTS:
                continue
            per_round = [
                r[pairing][metric] / r[reference][metric]
                for r in rounds
                if metric in r.get(pairing, {}) and r.get(reference, {}).get(metric)
            ]
            if per_round:
                ratios[pairing][metric] = statistics.median(per_round)
                ratios[pairing][metric + "_min"] = min(per_round)
                ratios[pairing][metric + "_max"] = max(per_round)
    return ratios


def summarize(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """The medians and ranges of every pairing a round holds, and the ratios to each
    reference measured ("ratios" to Debian's wireguard-go, "ratios_newest" to the newest)."""
    names = [p for r in rounds for p in r]
    names = list(dict.fromkeys(names))
    summary: dict[str, Any] = {}
    for pairing in names:
        summary[pairing] = {}
        for metric in METRICS:
            values = [r[pairing][metric] for r in rounds if metric in r.get(pairing, {})]
            if values:
                summary[pairing][metric] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "values": values,
                }
    result: dict[str, Any] = {"summary": summary}
    for impl, reference in REFERENCES.items():
        if reference in names:
            result[RATIO_KEYS[impl]] = ratios_to(rounds, names, reference)
    return result


def many_ratios(many: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """wgpy's many-peers figures over each wireguard-go's ("wgpy/wireguard-go": {...})."""
    ratios: dict[str, dict[str, float]] = {}
    if "wgpy" not in many:
        return ratios
    for impl in (DEBIAN, NEWEST):
        if impl in many:
            ratios[f"wgpy/{impl}"] = {
                key: many["wgpy"][key] / many[impl][key] for key in MANY if many[impl][key]
            }
    return ratios


def num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio_table(ratios: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| metric | " + " | ".join(ratios) + " |", "| --- |" + " --- |" * len(ratios)]
    for metric, (label, _, higher) in METRICS.items():
        if metric in COUNTS:
            continue
        cells = []
        for pairing in ratios:
            r = ratios[pairing].get(metric)
            better = "higher is better" if higher else "lower is better"
            cells.append(
                f"{r:.2f}x ({ratios[pairing][metric + '_min']:.2f}-"
                f"{ratios[pairing][metric + '_max']:.2f}, {better})"
                if r is not None
                else "-"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    summary = result["summary"]
    names = list(summary)
    lines = [
        f"# wgpy beside wireguard-go, {result['date']}",
        "",
        f"{result['rounds']} rounds of {result['seconds']:g} s per test; medians (min-max). "
        f"Command: `{result['command']}`.",
    ]
    versions = result.get("versions")
    if versions:
        lines += ["", "Versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    lines += ["", "| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for metric, (label, unit, _) in METRICS.items():
        cells = []
        for pairing in names:
            s = summary[pairing].get(metric)
            cells.append(f"{num(s['median'])} ({num(s['min'])}-{num(s['max'])})" if s else "-")
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    lines += ["", "TUN drops: the TUN transmit queue's drops (tx_dropped) at both ends during "
              "the run; retransmits: iperf3's sum_sent.retransmits."]  # fmt: skip
    for impl, reference in REFERENCES.items():
        ratios = result.get(RATIO_KEYS[impl])
        if ratios:
            lines += ["", f"Ratios to {reference} in the same rounds (median of per-round "
                      "ratios):", ""]  # fmt: skip
            lines += ratio_table(ratios)
    many = result.get("many_peers")
    if many:
        lines += ["", "One interface with many peers configured:", "",
                  "| implementation | peers | `wg setconf` | `wg show dump` | peak RSS |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for impl, m in many.items():
            lines.append(f"| {impl} | {m['peers']:,} | {m['setconf_s']:.2f} s | "
                         f"{m['show_s']:.2f} s | {m['peak_rss_mb']:.0f} MB |")  # fmt: skip
        for pair, ratios in many_ratios(many).items():
            cells = " | ".join(f"{ratios[k]:.2f}x" if k in ratios else "-" for k in MANY)
            lines.append(f"| {pair} (lower is better) | - | {cells} |")
    core = result.get("core")
    if core:
        lines += ["", "The sans-IO core on one core (benchmarks/core.py):", ""]
        for key, value in core.items():
            lines.append(f"- {key}: {value['median']:,.0f}")
    return "\n".join(lines) + "\n"


def ratio_lines(result: dict[str, Any]) -> list[str]:
    """The terminal's summary: every ratio to each reference (median, min-max)."""
    lines = []
    for impl, reference in REFERENCES.items():
        ratios = result.get(RATIO_KEYS[impl])
        if not ratios:
            continue
        lines.append(f"\nratios to {reference}, same rounds (median, min-max):")
        for pairing, figures in ratios.items():
            lines.append(f"  {pairing}")
            for metric, (label, _, higher) in METRICS.items():
                if metric in figures:
                    mark = "higher is better" if higher else "lower is better"
                    low, high = figures[metric + "_min"], figures[metric + "_max"]
                    lines.append(
                        f"    {label:28s} {figures[metric]:5.2f}x ({low:.2f}-{high:.2f}; {mark})"
                    )
    return lines


COLOURS = {
    "wgpy/wgpy": "#3b7dd8",
    f"{DEBIAN}/{DEBIAN}": "#888888",
    f"wgpy/{DEBIAN}": "#7fb3ee",
    f"{NEWEST}/{NEWEST}": "#d88a3b",
    f"wgpy/{NEWEST}": "#eec07f",
}


SHORT = {DEBIAN: "wg-go Debian", NEWEST: "wg-go newest"}  # the chart's axis labels


def tick(pairing: str) -> str:
    return "\n".join(SHORT.get(impl, impl) for impl in pairing.split("/"))


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    names = list(summary)
    shown = ["tcp1_mbps", "tcp4_mbps", "udp_mbps", "added_latency_p50_ms", "peak_rss_mb"]
    fig, axes = plt.subplots(1, len(shown), figsize=((4 if len(names) <= 3 else 5) * len(shown), 4))
    for ax, metric in zip(axes, shown, strict=True):
        label, unit, _ = METRICS[metric]
        medians = [summary[p][metric]["median"] for p in names]
        low = [m - summary[p][metric]["min"] for p, m in zip(names, medians, strict=True)]
        high = [summary[p][metric]["max"] - m for p, m in zip(names, medians, strict=True)]
        ax.bar(range(len(names)), medians, yerr=[low, high], capsize=4,
               color=[COLOURS.get(p, "#444444") for p in names])  # fmt: skip
        ax.set_xticks(range(len(names)), [tick(p) for p in names], fontsize=8)
        ax.set_title(f"{label} ({unit})", fontsize=10)
    fig.suptitle(f"wgpy beside wireguard-go ({result['date']}, medians, min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
