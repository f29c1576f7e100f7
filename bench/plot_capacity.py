"""Capacity before and after, one figure: the server's CPU, p99 latency and packets forwarded
against participants for each locust scenario (bench/scenarios.py), two runs side by side.

    .venv/bin/python bench/plot_capacity.py [--before bench/results/capacity_before]
        [--after bench/results] [--out bench/results/capacity_before_after.png]

Each directory holds the scenarios' JSON as scenarios.py writes them (big-room.json,
small-rooms.json, broadcast.json); a scenario missing from either side is drawn from the other
alone. The legend names each run's revision.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
SCENARIOS = ("big-room", "small-rooms", "broadcast")


def load(directory: Path, scenario: str) -> dict | None:
    path = directory / f"{scenario}.json"
    return json.loads(path.read_text()) if path.exists() else None


def series(run: dict, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for step in run["steps"]:
        value = step.get(key)
        if key == "p99":
            value = (step.get("latency_ms") or {}).get("p99")
        if value is not None:
            xs.append(step["participants"])
            ys.append(value)
    return xs, ys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, default=HERE / "results" / "capacity_before")
    parser.add_argument("--after", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "capacity_before_after.png")
    args = parser.parse_args()
    rows = [
        ("server_cpu_total_pct", "server CPU, % of a core"),
        ("p99", "p99 latency, ms"),
        ("forwarded_packets_per_s", "packets forwarded / s"),
    ]
    fig, axes = plt.subplots(len(rows), len(SCENARIOS), figsize=(15, 10), squeeze=False)
    for col, scenario in enumerate(SCENARIOS):
        for label, directory, style in (("before", args.before, "o--"), ("after", args.after, "s-")):
            run = load(directory, scenario)
            if run is None:
                continue
            revisions = run.get("revision", "?")  # one, or a list when runs were merged
            revision = "+".join(r[:7] for r in revisions) if isinstance(revisions, list) else revisions[:8]
            name = f"{label} ({revision}, capacity {run.get('capacity')})"
            for row, (key, _) in enumerate(rows):
                xs, ys = series(run, key)
                axes[row][col].plot(xs, ys, style, label=name)
        axes[0][col].set_title(scenario)
        for row, (key, title) in enumerate(rows):
            ax = axes[row][col]
            ax.set_ylabel(title)
            ax.set_xlabel("participants")
            ax.grid(True, alpha=0.3)
            if key == "p99":
                ax.axhline(100, color="grey", lw=0.8)
                ax.set_yscale("log")
        axes[0][col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
