"""The figures of `make bench-login` (benchmarks/login.py), without I/O: the ways to join it
times, the summary per way (median / p90 / max) and the Markdown table.
tests/test_bench_login.py tests this module; the spreads are benchmarks/report.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from report import seconds, spread


@dataclass(frozen=True)
class Method:
    label: str  # in the table
    person: str  # who acts between the URL and the node coming up ("" for none)
    url: bool = True  # `wgpy up` prints a login URL


METHODS: dict[str, Method] = {
    "password": Method(
        "interactive login, password + TOTP (enrolment) on the pages",
        "a headless walk of the pages: sign in, enrol TOTP, connect",
    ),
    "oidc": Method(
        "interactive login, single sign-on (OIDC)",
        "a headless walk: /oidc/start, the provider's login and consent, connect",
    ),
    "admin": Method(
        "interactive login, approved by an admin",
        "`wgpy admin login approve ID --user USER`",
    ),
    "machine": Method("auth key with a machine certificate", "", url=False),
}

# per-trial times, seconds from the start of `wgpy up`: key -> label in the table
TIMES: dict[str, str] = {
    "url_s": "URL printed",
    "act_s": "the person's part",
    "up_s": "`wgpy up` returned",
    "ping_s": "first ping over the mesh",
}


def summarize(method: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """A way's trials: how many joined, the errors, and each time's spread (trials that
    failed left out)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    done = [t for t in trials if not t.get("error")]
    return {
        "trials": len(trials),
        "joined": sum(t.get("ping_s") is not None for t in done),
        "errors": [str(t["error"]) for t in trials if t.get("error")],
        "times": {k: spread([t[k] for t in done if t.get(k) is not None]) for k in TIMES},
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Joining a wgpy mesh, {result['date']}",
        "",
        f"{result['trials']} trials a way to join, each a fresh node (new namespace, keys and "
        f"state), interleaved. Command: `{result['command']}`.",
        "Seconds from the start of `wgpy up`, median / p90 / max; the person's part is the "
        "time from the URL printed to the person (or admin) done. See benchmarks/README.md.",
        "",
        "| way to join | joined | URL printed | the person's part | `wgpy up` returned | "
        "first ping over the mesh |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in result["methods"].items():
        times = s["times"]
        lines.append(
            f"| {METHODS[name].label} | {s['joined']}/{s['trials']} | "
            f"{seconds(times['url_s'])} | {seconds(times['act_s'])} | "
            f"{seconds(times['up_s'])} | {seconds(times['ping_s'])} |"
        )
    lines += ["", "The person's part, per way:", ""]
    for name in result["methods"]:
        lines.append(f"- {name}: {METHODS[name].person or 'none (no URL, no person)'}")
    errors = [(n, e) for n, s in result["methods"].items() for e in s["errors"]]
    if errors:
        lines += ["", "Trials that failed:", ""] + [f"- {n}: {e}" for n, e in errors]
    return "\n".join(lines) + "\n"
