"""Time to the top layer for a fresh Chromium publisher and subscriber: transport-cc on vs off.

    .venv/bin/python bench/time_to_top.py [--modes on,off] [--repeat 5] [--seconds 20]
        [--out bench/results/time_to_top.json] [--plot bench/results/time_to_top.png]

Each run starts a fresh server (``python -m sfu`` subprocess, loopback, ``SFU_TRANSPORT_CC``
true or false, tokens so that the admin API can be read) and a fresh headless Chromium (fake
camera at 30 fps, captured at 1280x720, so the client sends three simulcast layers: 320x180,
640x360, 1280x720 with maxBitrate 150k/500k/1.5M). A publisher page joins, then a subscriber
page in a 1920x1080 viewport (one big tile: it asks for the top layer). Time 0 is when both
have joined. Every 250 ms for ``--seconds`` it samples:

- the subscriber's inbound-rtp video frameHeight (decoded layer);
- the publisher's candidate-pair availableOutgoingBitrate (Chrome's send-side estimate) and,
  per RID, outbound-rtp targetBitrate, frameHeight and the bitrate sent;
- the server's estimate of the subscriber's downlink (admin API, ``subscriber.bandwidth``:
  ``estimate_bps``, None while nothing limits it; with transport-cc, ``acked_bps``; without,
  the subscriber's REMB).

Per run: ``t_top_decoded_s`` (the subscriber first decodes the top height),
``t_top_settled_s`` (from when on it decodes the top height until the end of the window; None
if it is not on the top layer at the end),
``t_pub_top_target_s`` (the top encoding's targetBitrate first reaches 90 % of its maxBitrate),
``t_pub_available_s`` (availableOutgoingBitrate first exceeds the sum of the layers'
maxBitrate, 2.15 Mbit/s). Medians, minima and maxima per mode go to the JSON's ``summary``.
Runs are serialised with other browser runs on the machine by the caller
(``flock /tmp/sfu-e2e.lock ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.async_api import Browser, Page, async_playwright  # noqa: E402

from sfu import auth  # noqa: E402

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream=fps=30",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
LAYER_MAX_BITRATE_BPS = {"q": 150_000, "h": 500_000, "f": 1_500_000}  # client/session.js
TOP_RID = "f"
SAMPLE_INTERVAL_S = 0.25

SUB_JS = """() => {
  const s = window.sfuSession;
  if (!s || !s.subscribePc) return {height: 0};
  return s.subscribePc.getStats().then((report) => {
    let height = 0;
    report.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') height = Math.max(height, r.frameHeight || 0); });
    return {height};
  });
}"""

PUB_JS = """() => {
  const s = window.sfuSession;
  if (!s || !s.publishPc) return {available: 0, layers: {}};
  return s.publishPc.getStats().then((report) => {
    const out = {available: 0, layers: {}};
    report.forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate)
        out.available = Math.max(out.available, r.availableOutgoingBitrate);
      if (r.type === 'outbound-rtp' && r.kind === 'video' && r.rid)
        out.layers[r.rid] = {target: r.targetBitrate || 0, height: r.frameHeight || 0, bytes: r.bytesSent || 0,
                             limitation: r.qualityLimitationReason || ''};
    });
    return out;
  });
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=2) as response:
        return json.loads(response.read())


def start_server(port: int, transport_cc: bool, remb: bool, secret: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SFU_AUTH_SECRET=secret, SFU_TRANSPORT_CC="true" if transport_cc else "false")
    if not remb:
        env["SFU_PUBLISHER_BITRATE_BPS"] = "0"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "sfu", "--host", "127.0.0.1", "--port", str(port), "--ice-host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError as exc:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"server did not start, see {log}") from exc
            time.sleep(0.2)


async def open_page(browser: Browser, url: str, viewport: dict[str, int]) -> Page:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
    return page


def settled_time(samples: list[dict[str, Any]], predicate: Any) -> float | None:
    """The time from which predicate holds for every later sample (None: not at the end)."""
    t = None
    for s in samples:
        if predicate(s):
            if t is None:
                t = s["t_s"]
        else:
            t = None
    return t


def first_time(samples: list[dict[str, Any]], predicate: Any) -> float | None:
    return next((s["t_s"] for s in samples if predicate(s)), None)


async def one_run(mode: str, seconds: float, log_dir: Path, index: int) -> dict[str, Any]:
    transport_cc = mode.startswith("on")
    remb = not mode.endswith("-noremb")
    secret = secrets.token_urlsafe(32)
    port = free_port()
    room = "ttt"
    server = start_server(port, transport_cc, remb, secret, log_dir / f"server-{mode}-{index}.log")
    base = f"http://127.0.0.1:{port}"

    def token(identity: str, grants: list[str]) -> str:
        return auth.mint(secret, identity, room, grants, 600)

    admin = token("bench-admin", ["admin"])
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                # Both pages load and join at the same time.
                t_open = time.monotonic()
                pub, sub = await asyncio.gather(
                    open_page(
                        browser,
                        f"{base}/?room={room}&name=pub&autojoin=1&token={token('pub', ['publish', 'subscribe'])}",
                        {"width": 640, "height": 480},
                    ),
                    open_page(
                        browser,
                        f"{base}/?room={room}&name=sub&autojoin=1&publish=0&token={token('sub', ['subscribe'])}",
                        {"width": 1920, "height": 1080},
                    ),
                )
                sub_id = await sub.evaluate("window.sfuSession.id")
                t0 = time.monotonic()
                joined_after_s = round(t0 - t_open, 2)
                admin_error = None
                samples: list[dict[str, Any]] = []
                last_bytes: dict[str, tuple[float, int]] = {}
                while time.monotonic() - t0 < seconds:
                    t = time.monotonic() - t0
                    sub_stats, pub_stats = await asyncio.gather(sub.evaluate(SUB_JS), pub.evaluate(PUB_JS))
                    try:
                        room_info = await asyncio.to_thread(http_json, f"{base}/admin/rooms/{room}", admin)
                        me = next(p for p in room_info["participants"] if p["id"] == sub_id)
                        bandwidth = (me["subscriber"] or {}).get("bandwidth") or {}
                    except Exception as exc:
                        bandwidth = {}
                        admin_error = admin_error or repr(exc)
                    layers = {}
                    for rid, layer in pub_stats["layers"].items():
                        previous = last_bytes.get(rid)
                        now_bytes = layer["bytes"]
                        sent_bps = (
                            (now_bytes - previous[1]) * 8 / (t - previous[0]) if previous and t > previous[0] else None
                        )
                        last_bytes[rid] = (t, now_bytes)
                        layers[rid] = {**layer, "sent_bps": round(sent_bps) if sent_bps is not None else None}
                        del layers[rid]["bytes"]
                    samples.append(
                        {
                            "t_s": round(t, 3),
                            "sub_height": sub_stats["height"],
                            "pub_available_bps": round(pub_stats["available"]),
                            "pub_layers": layers,
                            # None: nothing limits the subscriber (no loss, REMB or congestion yet)
                            "server_estimate_bps": bandwidth.get("estimate_bps"),
                            "server_remb_bps": bandwidth.get("remb_bps"),
                            "server_acked_bps": bandwidth.get("acked_bps"),
                        }
                    )
                    await asyncio.sleep(max(0.0, SAMPLE_INTERVAL_S - (time.monotonic() - t0 - t)))
            finally:
                await browser.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    top_height = max((s["pub_layers"].get(TOP_RID, {}).get("height", 0) for s in samples), default=0) or 720
    total_bps = sum(LAYER_MAX_BITRATE_BPS.values())
    return {
        "mode": mode,
        "index": index,
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "both_joined_after_s": joined_after_s,
        "admin_error": admin_error,
        "top_height": top_height,
        "t_top_decoded_s": first_time(samples, lambda s: s["sub_height"] >= top_height),
        "t_top_settled_s": settled_time(samples, lambda s: s["sub_height"] >= top_height),
        "t_pub_top_target_s": first_time(
            samples,
            lambda s: s["pub_layers"].get(TOP_RID, {}).get("target", 0) >= 0.9 * LAYER_MAX_BITRATE_BPS[TOP_RID],
        ),
        "t_pub_available_s": first_time(samples, lambda s: s["pub_available_bps"] > total_bps),
        "samples": samples,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in sorted({r["mode"] for r in runs}, reverse=True):
        mine = [r for r in runs if r["mode"] == mode]
        entry: dict[str, Any] = {"runs": len(mine)}
        for key in ("t_top_decoded_s", "t_top_settled_s", "t_pub_top_target_s", "t_pub_available_s"):
            values = [r[key] for r in mine if r[key] is not None]
            entry[key] = {
                "median": round(statistics.median(values), 2) if values else None,
                "min": min(values) if values else None,
                "max": max(values) if values else None,
                "values": [r[key] for r in mine],
                "not_reached": len(mine) - len(values),
            }
        out[mode] = entry
    return out


def seconds(stat: dict[str, Any]) -> str:
    """A median for a title; runs that never got there are said so."""
    if stat["median"] is None:
        return "never"
    missed = f" ({stat['not_reached']} of {len(stat['values'])} runs never)" if stat["not_reached"] else ""
    return f"{stat['median']} s{missed}"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"on": "tab:blue", "off": "tab:red", "on-noremb": "tab:cyan", "off-noremb": "tab:orange"}
    labels = {
        "on": "transport-cc (+ fixed REMB cap)",
        "off": "REMB only (fixed 2.5 Mbit/s)",
        "on-noremb": "transport-cc, no REMB",
        "off-noremb": "neither (receiver reports only)",
    }
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    seen: set[str] = set()
    for run in result["runs"]:
        mode = run["mode"]
        label = labels[mode] if mode not in seen else None
        seen.add(mode)
        ts = [s["t_s"] for s in run["samples"]]
        kw = {"color": colors[mode], "alpha": 0.6, "lw": 1.2, "label": label}
        axes[0].step(ts, [s["sub_height"] for s in run["samples"]], where="post", **kw)
        axes[1].plot(ts, [s["pub_available_bps"] / 1e6 for s in run["samples"]], **kw)
        nan = float("nan")
        axes[2].plot(ts, [(s["server_estimate_bps"] or nan) / 1e6 for s in run["samples"]], **kw)
        axes[2].plot(
            ts,
            [(s.get("server_acked_bps") or nan) / 1e6 for s in run["samples"]],
            color=colors[mode],
            alpha=0.5,
            lw=0.8,
            ls=":",
        )
    axes[0].set_ylabel("subscriber decodes (frameHeight)")
    axes[1].set_ylabel("publisher's estimate\n(availableOutgoingBitrate, Mbit/s)")
    axes[1].axhline(sum(LAYER_MAX_BITRATE_BPS.values()) / 1e6, color="grey", ls="--", lw=0.8)
    axes[2].set_ylabel("server's estimate of the\nsubscriber's downlink (Mbit/s)")
    axes[2].text(
        0.01,
        0.95,
        "solid: estimate (absent while nothing limits it); dotted: bitrate the subscriber acknowledged",
        transform=axes[2].transAxes,
        fontsize=8,
        va="top",
    )
    axes[2].set_xlabel("seconds since both joined")
    axes[0].legend(loc="lower right")
    s = result["summary"]
    title = "Time to the top layer, fresh Chromium publisher + subscriber (loopback)\n" + "\n".join(
        f"{labels[m]}: top layer first decoded after {seconds(s[m]['t_top_decoded_s'])}, for good after "
        f"{seconds(s[m]['t_top_settled_s'])} (medians, N={s[m]['runs']})"
        for m in s
    )
    axes[0].set_title(title, fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "sfu", "client"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        return rev + ("+dirty" if dirty.strip() else "")
    except OSError:
        return "unknown"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--modes",
        default="on,off",
        help="on: transport-cc (and the fixed REMB); off: REMB only; on-noremb, off-noremb: "
        "the same with publisher_bitrate_bps = 0 (no REMB to publishers)",
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0, help="observation window per run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "time_to_top.json")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "time_to_top.png")
    parser.add_argument("--logs", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sfu-time-to-top")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from --out")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text()), args.plot)
        return
    args.logs.mkdir(parents=True, exist_ok=True)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    runs = []
    for i in range(args.repeat):
        for mode in modes:  # alternate, so that machine load drifts hit both modes alike
            run = await one_run(mode, args.seconds, args.logs, i)
            runs.append(run)
            print(
                f"{mode:3} #{i}: top decoded {run['t_top_decoded_s']} s (for good: {run['t_top_settled_s']} s), "
                f"top encoding at target "
                f"{run['t_pub_top_target_s']} s, estimate > layers {run['t_pub_available_s']} s "
                f"(load {run['load_avg_1m_at_end']})",
                flush=True,
            )
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "revision": revision(),
        "conditions": {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other sessions",
            "chromium": chromium,
            "network": "loopback, no impairment",
            "publisher_capture": "fake camera 1280x720 at 30 fps, simulcast q/h/f (150k/500k/1.5M max)",
            "server": "python -m sfu subprocess; publisher_bitrate_bps default (REMB 2.5 Mbit/s), 0 in -noremb modes",
            "seconds": args.seconds,
        },
        "summary": summarize(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.plot)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    asyncio.run(main())
