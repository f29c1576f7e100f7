"""Plot bench/results/forward.json: server CPU vs subscribers, and CPU per forwarded packet.

    .venv/bin/python bench/plot.py [--in bench/results/forward.json] [--out bench/results/forward_cpu.png]

Panels: (1) server CPU of both servers; (2) the SFU alone, zoomed, with the CPU of the client
process that hosts the publisher and the subscribers; (3) server CPU time per forwarded packet
(average, and the marginal cost from the linear fit) on a log scale.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
STYLE = {
    "sfu": {"color": "tab:blue", "marker": "o", "label": "SFU (RTP forwarding)"},
    "mediarelay": {"color": "tab:red", "marker": "s", "label": "aiortc MediaRelay baseline (decode + re-encode)"},
}


def series(summary: list[dict[str, Any]], key: str) -> tuple[list[int], list[float], list[list[float]]]:
    xs, ys, lo, hi = [], [], [], []
    for s in summary:
        if s.get(key) is None:
            continue
        xs.append(s["subscribers"])
        ys.append(s[key])
        lo.append(s[key] - s.get(key + "_min", s[key]))
        hi.append(s.get(key + "_max", s[key]) - s[key])
    return xs, ys, [lo, hi]


def style(server: str) -> dict[str, str]:
    return STYLE.get(server, {"color": "gray", "marker": "x", "label": server})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--in", dest="inp", default=str(HERE / "results" / "forward.json"))
    parser.add_argument("--out", default=str(HERE / "results" / "forward_cpu.png"))
    args = parser.parse_args()
    data: dict[str, Any] = json.loads(Path(args.inp).read_text())["results"]

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(18, 5.6), gridspec_kw={"width_ratios": [1.1, 0.9, 1.0]})
    all_x: set[int] = set()
    fit_lines = []

    # (1) server CPU, both servers
    for server, result in data.items():
        st = style(server)
        summary = result["summary"]
        xs, ys, err = series(summary, "server_cpu_pct")
        all_x |= set(xs)
        ax1.errorbar(xs, ys, yerr=err, color=st["color"], marker=st["marker"], capsize=4, label=st["label"])
        for s in summary:
            x, y = s["subscribers"], s["server_cpu_pct"]
            if s.get("saturated"):
                ax1.plot([x], [y], marker=st["marker"], markersize=13, markerfacecolor="none", markeredgecolor="black")
                ax1.annotate(
                    f"{y:.1f} - SATURATED:\n{s['video_fps_per_subscriber_mean']:.0f} of 30 fps delivered",
                    (x, y),
                    textcoords="offset points",
                    xytext=(12, -8),
                    fontsize=8,
                    color=st["color"],
                )
            else:
                ax1.annotate(
                    f"{y:.1f}", (x, y), textcoords="offset points", xytext=(7, -3), fontsize=8, color=st["color"]
                )
        m = result.get("marginal")
        if m:
            runs = max((s["runs"] for s in summary), default=0)
            fit_lines.append(
                f"{server}: +{m['server_cpu_pct_per_extra_subscriber']:.2f} % core per extra subscriber, "
                f"{m['server_marginal_us_per_forwarded_packet']:.0f} µs per extra packet\n"
                f"    (least squares over n = {m.get('fitted_subscriber_counts')}; median of {runs} runs each)"
            )
    ax1.set_title("Server CPU: one publisher (VP8 + Opus) to N subscribers")
    ax1.set_xlabel("subscribers")
    ax1.set_ylabel("server CPU, % of one core (user + sys, all threads)")
    ax1.set_xticks(sorted(all_x))
    ax1.set_ylim(bottom=0)
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8, loc="upper left")
    ax1.text(
        0.98,
        0.30,
        "\n".join(fit_lines),
        transform=ax1.transAxes,
        fontsize=7.2,
        ha="right",
        va="center",
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9, "edgecolor": "0.8"},
    )

    # (2) the SFU, zoomed, with the client process
    if "sfu" in data:
        summary = data["sfu"]["summary"]
        xs, ys, err = series(summary, "server_cpu_pct")
        ax2.errorbar(xs, ys, yerr=err, color="tab:blue", marker="o", capsize=4, label="SFU server process")
        for x, y in zip(xs, ys, strict=True):
            ax2.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(-6, 8), fontsize=8, color="tab:blue")
        cx, cy, cerr = series(summary, "client_cpu_pct")
        ax2.errorbar(
            cx,
            cy,
            yerr=cerr,
            color="tab:gray",
            marker=".",
            linestyle=":",
            capsize=3,
            label="client process (publisher + all subscribers)",
        )
        m = data["sfu"].get("marginal")
        if m:
            fx = [0, max(xs)]
            ax2.plot(
                fx,
                [m["server_cpu_pct_intercept"] + m["server_cpu_pct_per_extra_subscriber"] * x for x in fx],
                color="tab:blue",
                alpha=0.35,
                linestyle="--",
                label=f"fit: {m['server_cpu_pct_intercept']:.1f} + {m['server_cpu_pct_per_extra_subscriber']:.2f}·N %",
            )
        ax2.set_xticks(xs)
        ax2.set_ylim(0, max(max(ys), max(cy)) * 1.35)
        ax2.set_title("SFU alone (zoomed)")
        ax2.set_xlabel("subscribers")
        ax2.set_ylabel("% of one core")
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=8, loc="upper left")

    # (3) CPU per forwarded packet
    for server, result in data.items():
        st = style(server)
        px, py, perr = series(result["summary"], "server_us_per_forwarded_packet")
        ax3.errorbar(
            px,
            py,
            yerr=perr,
            color=st["color"],
            marker=st["marker"],
            capsize=4,
            label=f"{st['label']}: average (total CPU / packets)",
        )
        for x, y in zip(px, py, strict=True):
            ax3.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8, color=st["color"])
        m = result.get("marginal")
        if m:
            ax3.axhline(
                m["server_marginal_us_per_forwarded_packet"],
                color=st["color"],
                linestyle="--",
                alpha=0.5,
                label=f"{server}: marginal {m['server_marginal_us_per_forwarded_packet']:.0f} µs/packet (fit)",
            )
    ax3.set_title("Server CPU time per forwarded RTP packet")
    ax3.set_xlabel("subscribers")
    ax3.set_ylabel("µs of server CPU per packet received by subscribers (log)")
    ax3.set_yscale("log")
    ax3.set_xticks(sorted(x for x in all_x if x > 0))
    ax3.grid(True, which="both", alpha=0.3)
    ax3.legend(fontsize=7.5, loc="center right")

    commits = "; ".join(
        f"{server}: sfu {str(r.get('machine', {}).get('sfu_commit') or '?')[:9]}, {r.get('started_at', '?')[:16]}"
        for server, r in data.items()
    )
    fig.text(
        0.01,
        0.01,
        "error bars: min-max over repeats (points: medians); loopback UDP; 2-core shared, noisy "
        "machine; the clients send pre-encoded media and do not decode; source: 30 fps VP8 ~450 kbit/s + Opus"
        f"  |  {commits}",
        fontsize=7.5,
        color="gray",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
