#!/usr/bin/env python3
# bench/chart.py: draws the load table of bench/load.py (its JSON) as a PNG (`make bench-chart`).
"""Bars of CPU µs per request, p99 latency and requests/s for each proxy of one load run, with
the spread over rounds as error bars. Needs matplotlib (make bench-chart puts it in .venv-bench).

bench/chart.py [target/bench/load.json] [-o target/bench/chart.png]
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Names starting with these are the comparison points (grey); the rest are router builds (red).
PEERS = ("direct", "nginx", "haproxy", "bare")
PANELS = [
    ("cpu_us_per_req", "CPU µs per request (lower is better)"),
    ("p99_ms", "p99 latency, ms (lower is better)"),
    ("rps", "requests/s (higher is better)"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data", nargs="?", default=str(ROOT / "target/bench/load.json"))
    ap.add_argument("-o", "--out", default=str(ROOT / "target/bench/chart.png"))
    args = ap.parse_args()
    run = json.loads(Path(args.data).read_text())
    summary = run["summary"]
    settings = run["settings"]
    names = list(summary)
    # The direct run has no proxy: its CPU is the upstream's, so it is left out of that panel.
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2))
    for ax, (key, title) in zip(axes, PANELS):
        shown = [n for n in names if not (key == "cpu_us_per_req" and n == "direct")]
        med = [summary[n][key]["median"] for n in shown]
        lo = [m - summary[n][key]["min"] for n, m in zip(shown, med)]
        hi = [summary[n][key]["max"] - m for n, m in zip(shown, med)]
        colors = ["#7f7f7f" if n.startswith(PEERS) else "#d62728" for n in shown]
        ax.bar(shown, med, yerr=[lo, hi], capsize=4, color=colors)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        for i, m in enumerate(med):
            ax.annotate(f"{m:,.1f}" if m < 1000 else f"{m:,.0f}", (i, m), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    fig.suptitle(
        f"{settings['connections']} connections, 1 KiB responses, one worker thread per proxy, "
        f"{settings['rounds']} rounds of {settings['duration']} s, access logs "
        f"{settings['access_log']} (bars: median, whiskers: min–max)",
        fontsize=9,
    )
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"chart: {args.out}")


if __name__ == "__main__":
    main()
