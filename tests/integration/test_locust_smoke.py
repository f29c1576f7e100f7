"""Smoke run of the load test: locust headless, as a subprocess, against a server process."""

import csv
import json
import subprocess
import sys
from pathlib import Path

from bench.scenarios import wait_healthy
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
USERS = 3


def test_locust_users_join_receive_media_and_report_rates(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "sfu", "--host", "127.0.0.1", "--port", str(port), "--ice-host", "127.0.0.1"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(url)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(ROOT / "bench" / "locustfile.py"),
                "--headless",
                "--only-summary",
                "-u",
                str(USERS),
                "-r",
                str(USERS),
                "-t",
                "8s",
                "--host",
                url,
                "--sfu-room-size",
                str(USERS),
                "--csv",
                str(tmp_path / "smoke"),
                "--sfu-json",
                str(tmp_path / "smoke.json"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.terminate()
        server.wait(15)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    with (tmp_path / "smoke_stats.csv").open() as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    join = rows[("webrtc", "join")]
    assert int(join["Request Count"]) == USERS and int(join["Failure Count"]) == 0
    assert int(rows[("webrtc", "publish")]["Request Count"]) == USERS
    assert int(rows[("webrtc", "first remote frame")]["Request Count"]) == USERS
    for name in ("packets/s", "kbit/s"):
        row = rows[("rx", name)]
        assert int(row["Request Count"]) > 0 and float(row["Average Response Time"]) > 0, name
    assert int(rows[("rx", "latency ms")]["Request Count"]) > 0
    assert float(rows[("rx", "loss %")]["Average Response Time"]) < 5

    data = json.loads((tmp_path / "smoke.json").read_text())
    users = data["users"]
    assert len(users) == USERS and all("join_ms" in u and "first_frame_ms" in u for u in users), users
    assert len({u["room"] for u in users}) == 1
    active = [r for r in data["records"] if r["packets"] > 0]
    assert {r["user"] for r in active} == {u["id"] for u in users}, "every user received media"
    # Each user receives the two others' audio and video.
    assert max(r["streams"] for r in active) == 2 * (USERS - 1)
    assert sum((r["latency_hist"] and sum(r["latency_hist"].values())) or 0 for r in active) > 0
