"""Plot bench/results/forward.json: server CPU vs subscribers, and CPU per forwarded packet.

    .venv/bin/python bench/plot.py [--in bench/results/forward.json] [--out bench/results/forward_cpu.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
STYLE = {
    "sfu": {"color": "tab:blue", "marker": "o", "label": "SFU (RTP forwarding)"},
    "mediarelay": {"color": "tab:red", "marker": "s", "label": "aiortc MediaRelay (decode + re-encode)"},
}


def series(summary: list[dict], key: str) -> tuple[list[int], list[float], list[list[float]]]:
    xs, ys, lo, hi = [], [], [], []
    for s in summary:
        if s.get(key) is None:
            continue
        xs.append(s["subscribers"])
        ys.append(s[key])
        lo.append(s[key] - s.get(key + "_min", s[key]))
        hi.append(s.get(key + "_max", s[key]) - s[key])
    return xs, ys, [lo, hi]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--in", dest="inp", default=str(HERE / "results" / "forward.json"))
    parser.add_argument("--out", default=str(HERE / "results" / "forward_cpu.png"))
    args = parser.parse_args()
    data = json.loads(Path(args.inp).read_text())["results"]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    all_x: set[int] = set()
    for server, result in data.items():
        st = STYLE.get(server, {"color": "gray", "marker": "x", "label": server})
        summary = result["summary"]
        runs = summary[0]["runs"] if summary else 0
        xs, ys, err = series(summary, "server_cpu_pct")
        all_x |= set(xs)
        ax1.errorbar(xs, ys, yerr=err, color=st["color"], marker=st["marker"], capsize=4,
                     label=f"{st['label']} - server")
        for x, y in zip(xs, ys):
            ax1.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(6, 4),
                         fontsize=8, color=st["color"])
        cx, cy, _ = series(summary, "client_cpu_pct")
        ax1.plot(cx, cy, color=st["color"], linestyle=":", alpha=0.6, marker=".",
                 label=f"{st['label'].split(' (')[0]} run - client process (publisher + subscribers)")
        px, py, perr = series(summary, "server_us_per_forwarded_packet")
        ax2.errorbar(px, py, yerr=perr, color=st["color"], marker=st["marker"], capsize=4,
                     label=st["label"])
        for x, y in zip(px, py):
            ax2.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(6, 4),
                         fontsize=8, color=st["color"])
        m = result.get("marginal")
        if m:
            ax1.plot([], [], " ", label=f"  {server}: +{m['server_cpu_pct_per_extra_subscriber']:.1f} % core "
                                        f"per extra subscriber (fit), median of {runs} runs")

    ax1.set_title("Server CPU, one publisher (VP8 + Opus) to N subscribers")
    ax1.set_xlabel("subscribers")
    ax1.set_ylabel("CPU, % of one core (user + sys, all threads)")
    ax1.set_xticks(sorted(all_x))
    ax1.set_ylim(bottom=0)
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=7.5, loc="upper left")

    ax2.set_title("Server CPU time per forwarded RTP packet")
    ax2.set_xlabel("subscribers")
    ax2.set_ylabel("µs of CPU per packet received by subscribers (log)")
    ax2.set_yscale("log")
    ax2.set_xticks(sorted(x for x in all_x if x > 0))
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)

    fig.text(0.01, 0.01, "error bars: min-max over repeats; loopback, 2-core shared machine; "
             "clients send pre-encoded media and do not decode", fontsize=7.5, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
