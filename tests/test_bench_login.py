"""benchmarks/login_figures.py: the summary per way to join and the Markdown table of `make
bench-login` (no lab: the lab run is benchmarks/login.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from login_figures import METHODS, markdown, summarize

TRIALS = [
    {"trial": 1, "url_s": 0.8, "act_s": 1.5, "up_s": 3.5, "ping_s": 3.2},
    {"trial": 2, "url_s": 0.7, "act_s": 1.4, "up_s": 3.0, "ping_s": 2.9},
    {"trial": 3, "error": "the walk of the pages failed: expected the page ..."},
    {"trial": 4, "url_s": 1.1, "act_s": 1.6, "up_s": 4.0, "ping_s": 3.8},
]


def test_a_way_is_summarized_without_its_failed_trials() -> None:
    s = summarize("password", TRIALS)
    assert (s["trials"], s["joined"]) == (4, 3)
    assert s["errors"] == ["the walk of the pages failed: expected the page ..."]
    assert s["times"]["up_s"] == {"median": 3.5, "p90": 4.0, "max": 4.0, "n": 3}
    assert s["times"]["url_s"]["median"] == 0.8


def test_a_way_without_a_url_has_no_url_figures() -> None:
    s = summarize("machine", [{"trial": 1, "up_s": 1.4, "ping_s": 1.2}])
    assert s["joined"] == 1
    assert s["times"]["url_s"] is None and s["times"]["act_s"] is None
    assert not METHODS["machine"].url


def test_an_unknown_way_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown method 'sms'"):
        summarize("sms", [])


def test_the_table_has_a_row_per_way_and_the_failures() -> None:
    result = {
        "date": "2026-12-07 23:00 UTC",
        "command": "make bench-login",
        "trials": 4,
        "methods": {
            "password": summarize("password", TRIALS),
            "machine": summarize("machine", [{"up_s": 1.4, "ping_s": 1.2}]),
        },
    }
    text = markdown(result)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[2].startswith(f"| {METHODS['password'].label} | 3/4 | 0.80 / 1.10 / 1.10 |")
    assert rows[2].endswith("| 3.50 / 4.00 / 4.00 | 3.20 / 3.80 / 3.80 |")
    assert rows[3] == (
        f"| {METHODS['machine'].label} | 1/1 | - | - | 1.40 / 1.40 / 1.40 | 1.20 / 1.20 / 1.20 |"
    )
    assert "- password: the walk of the pages failed" in text
