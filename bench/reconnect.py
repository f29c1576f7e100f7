"""Calls through network trouble: how long media takes to come back, and what the others saw.

    flock /tmp/sfu-e2e.lock .venv/bin/python bench/reconnect.py [--repeat 5]
        [--scenarios cut3,cut8,address,ws-reset] [--out bench/results/reconnect.json]

Each run is a fresh in-process server (1 s heartbeat, the default 15 s resume grace) and three
headless Chromium pages publishing camera and microphone through the browser client: "moving"
in a network namespace of its own (tests/e2e/netns.py), "a" and "b" outside it. Once everyone
decodes everyone and the call has run for 2 s, one of:

- ``cut3``, ``cut8``: every packet into and out of the namespace dropped for 3 s or 8 s, then
  restored; time 0 is the restore;
- ``address``: the namespace's interface moves to a new address (the old one removed); time 0
  is the change;
- ``ws-reset``: only the page's signaling TCP connection is reset; time 0 is the reset.

Measured from the decoded-frame times each page samples itself every 50 ms
(tests/e2e/lab_call.py): ``back_at_moving_s``, the first frame the moving page decodes from each
of the others after time 0 (the later of the two); ``back_at_others_s``, the same at a and b
for the moving page's video; ``freeze_at_others_s``, the longest time a or b went without a
new frame of the moving page's video, from the start of the trouble to 5 s after time 0 (the
cut itself included); ``left_seen``, participant-left messages at a and b (0: they never saw
it leave); ``same_participant``, whether the page kept its participant id. Medians, minima and
maxima per scenario go to the JSON's ``summary``. Run it alone on the machine: it needs the
e2e lock (namespaces and veths have fixed names).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402

from sfu.app import STATS_KEY  # noqa: E402
from tests.conftest import eventually, start_server  # noqa: E402
from tests.e2e.lab_call import Call, max_gap_s, seen  # noqa: E402
from tests.e2e.netns import HOST_IP, Namespace  # noqa: E402

SCENARIOS = ("cut3", "cut8", "address", "ws-reset")
AFTER_S = 5.0  # how long after time 0 the freeze is looked at


def last_frame_before(times: list[float], t_ms: float) -> float:
    earlier = [t for t in times if t <= t_ms]
    return earlier[-1] if earlier else t_ms


async def one_run(pw: Any, scenario: str) -> dict[str, Any]:
    ns = Namespace()
    srv = await start_server(heartbeat_interval_s=1.0, ice_host_addresses=("127.0.0.1", HOST_IP))
    await web.TCPSite(srv.runner, HOST_IP, srv.config.port).start()
    call = Call(srv, ns)
    try:
        await call.start(pw, f"bench-{scenario}")
        await asyncio.sleep(2)
        moving_id = call.ids["moving"]
        trouble_ms = time.time() * 1000
        if scenario.startswith("cut"):
            ns.cut()
            await asyncio.sleep(float(scenario[3:]))
            t0_ms = time.time() * 1000
            ns.restore()
        elif scenario == "address":
            t0_ms = trouble_ms
            ns.move_address()
        else:
            resumes = srv.app[STATS_KEY].resumes
            t0_ms = trouble_ms
            ns.reset_tcp(srv.config.port)
            try:
                await eventually(lambda: srv.app[STATS_KEY].resumes > resumes, timeout=15)
            finally:
                ns.unreset()
        stall_ms = 250 if scenario == "address" else 0
        back = await call.media_back(t0_ms, timeout=40, stall_ms=stall_ms)
        await asyncio.sleep(max(0.0, AFTER_S - (time.time() * 1000 - t0_ms) / 1000))
        end_ms = t0_ms + AFTER_S * 1000
        freezes = []
        for name in ("a", "b"):
            times = await call.pages[name].evaluate(f"window.__frames['{moving_id}'] || []")
            start = last_frame_before(times, trouble_ms)
            freezes.append(await max_gap_s(call.pages[name], moving_id, start - 1, end_ms))
        left = 0
        for name in ("a", "b"):
            left += len((await seen(call.pages[name]))["left"])
        same = await call.pages["moving"].evaluate("window.sfuSession.id") == moving_id
        return {
            "scenario": scenario,
            "back_at_moving_s": max(v for (viewer, _), v in back.items() if viewer == "moving"),
            "back_at_others_s": max(v for (viewer, _), v in back.items() if viewer != "moving"),
            "back_s": {f"{v}<-{p}": t for (v, p), t in back.items()},
            "freeze_at_others_s": round(max(freezes), 3),
            "left_seen": left,
            "same_participant": same,
        }
    finally:
        await call.close()
        await srv.runner.cleanup()
        ns.close()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        mine = [r for r in runs if r["scenario"] == scenario]
        entry: dict[str, Any] = {"runs": len(mine)}
        for key in ("back_at_moving_s", "back_at_others_s", "freeze_at_others_s"):
            values = [r[key] for r in mine]
            entry[key] = {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}
        entry["left_seen"] = sum(r["left_seen"] for r in mine)
        entry["same_participant"] = all(r["same_participant"] for r in mine)
        out[scenario] = entry
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reconnect.json")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    runs = []
    async with async_playwright() as pw:
        for i in range(args.repeat):
            for scenario in scenarios:  # interleaved: a slow spell of the machine hits all alike
                run = await one_run(pw, scenario)
                run["round"] = i
                print(json.dumps(run), flush=True)
                runs.append(run)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    result = {
        "commit": commit.stdout.strip(),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "heartbeat_interval_s": 1.0,
        "resume_grace_s": 15.0,
        "summary": summarise(runs),
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    asyncio.run(main())
