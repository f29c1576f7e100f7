"""WHIP clients that nobody here wrote publish into a room; a Chromium participant decodes them.

- Debian's ``simple-whip-client`` (Meetecho's, GStreamer webrtcbin, trickle ICE over PATCH
  with If-Match, DELETE on exit), with GStreamer test sources encoded to VP8 or to H.264 (a
  single-layer constrained-baseline stream, what OBS sends);
- a GStreamer ``webrtcbin`` pipeline driven through GObject introspection
  (tests/e2e/whip/gst_whip_publish.py: the offer with its candidates, no trickle).

libnice (GStreamer's ICE) gathers no loopback candidate while another address exists, and
aioice gathers none at all: the clients run in a network namespace (the ``lab`` fixture) and
reach the server on the host side of the veth pair; Chromium stays on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from sfu.app import ROOMS_KEY
from tests.conftest import RunningServer
from tests.e2e.netns import HOST_IP, NS

pytestmark = pytest.mark.timeout(120)

WHIP_DIR = Path(__file__).resolve().parent / "whip"

AUDIO_PIPELINE = (
    "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! queue ! opusenc ! "
    "rtpopuspay pt=100 ssrc=1 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100"
)
VP8_PIPELINE = (
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! videoconvert ! "
    "queue ! vp8enc deadline=1 keyframe-max-dist=60 ! rtpvp8pay pt=96 ssrc=2 mtu=1200 ! queue ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96"
)
H264_PIPELINE = (
    "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=360,framerate=30/1 ! videoconvert ! "
    "queue ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 ! "
    "video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 ssrc=2 mtu=1200 config-interval=-1 aggregate-mode=zero-latency ! "
    "queue ! application/x-rtp,media=video,encoding-name=H264,payload=102"
)

# What a participant's page decodes of each remote participant: video frames, audio samples.
DECODED_JS = """async () => {
  const s = window.sfuSession;
  if (!s || !s.subscribePc) return {};
  const out = {};
  const stats = await s.subscribePc.getStats();
  stats.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    const c = s.consumers.get(r.mid);
    if (!c) return;
    const e = out[c.participant] = out[c.participant] || {frames: 0, samples: 0, height: 0, codec: ''};
    if (r.kind === 'video') {
      e.frames += r.framesDecoded || 0; e.height = r.frameHeight || 0;
      e.codec = (stats.get(r.codecId) || {}).mimeType || '';
    }
    else e.samples += Math.max(0, (r.totalSamplesReceived || 0) - (r.concealedSamples || 0));
  });
  return out;
}"""


def build_igd_stub(directory: Path) -> Path:
    """The UPnP stand-in simple-whip-client needs on Debian 12 (see whip/igd_stub.c)."""
    library = directory / "libgupnp-igd-1.0.so.4"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(library), str(WHIP_DIR / "igd_stub.c")], check=True, capture_output=True
    )
    return directory


async def open_viewer(browser: Browser, base: str, room: str) -> Page:
    page = await (await browser.new_context()).new_page()
    page.on("console", lambda m: print(f"[viewer] {m.type}: {m.text}") if m.type == "error" else None)
    await page.goto(f"{base}/?room={room}&name=viewer&autojoin=1&publish=0")
    await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=15000)
    return page


async def decoded(page: Page) -> dict[str, dict]:
    return await page.evaluate(DECODED_JS)


async def start_in_namespace(*command: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        NS,
        "env",
        *[f"{k}={v}" for k, v in (env or {}).items()],
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGINT (both clients then DELETE their session), and what the process printed."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 15)
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
    return out.decode(errors="replace")


async def wait_for_publisher(server: RunningServer, room: str, name: str, process: asyncio.subprocess.Process):
    async def joined():
        if process.returncode is not None:
            raise AssertionError(f"the client exited ({process.returncode}): {await stop(process)}")
        rooms = server.app[ROOMS_KEY].rooms
        found = [p for p in rooms[room].participants.values() if p.name == name] if room in rooms else []
        return found[0] if found and len(found[0].producers()) == 2 else None

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (participant := await joined()) is None:
        assert loop.time() < deadline, "the WHIP client never published"
        await asyncio.sleep(0.1)
    return participant


async def assert_decodes(page: Page, participant_id: str, process: asyncio.subprocess.Process | None = None) -> dict:
    """The page decodes video frames and audio samples of the participant, and keeps doing so."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    media: dict = {}
    while not ((m := (media := await decoded(page)).get(participant_id)) and m["frames"] > 30 and m["samples"] > 0):
        assert process is None or process.returncode is None, await stop(process)
        assert loop.time() < deadline, f"decoded: {media}"
        await asyncio.sleep(0.2)
    first = media[participant_id]
    deadline = loop.time() + 30
    while not (
        (m := (await decoded(page))[participant_id])["frames"] > first["frames"] + 30
        and m["samples"] > first["samples"]
    ):
        assert loop.time() < deadline, f"decoding stopped: {first} then {m}"
        await asyncio.sleep(0.2)
    return m


async def _publish_with_simple_whip_client(
    browser: Browser, lab, tmp_path: Path, video_pipeline: str, codec: str
) -> None:
    server, _ns = lab
    page = await open_viewer(browser, server.url, "studio")
    stub = build_igd_stub(tmp_path)
    url = f"http://{HOST_IP}:{server.config.port}/whip/studio?name=gst-{codec}"
    client = await start_in_namespace(
        "whip-client", "-u", url, "-l", "4", "-o", "-A", AUDIO_PIPELINE, "-V", video_pipeline,
        env={"LD_LIBRARY_PATH": str(stub)},
    )  # fmt: skip
    try:
        publisher = await wait_for_publisher(server, "studio", f"gst-{codec}", client)
        video = next(p for p in publisher.producers() if p.kind == "video")
        assert video.codec.name.upper() == codec.upper(), video.codec
        # The browser sees an ordinary participant: it joined, published two tracks.
        await page.wait_for_function(
            f"window.sfuSession.participants.get('{publisher.id}')?.tracks.size === 2", timeout=15000
        )
        t0 = time.monotonic()
        media = await assert_decodes(page, publisher.id, client)
        print(f"{codec}: decoded {media} ({time.monotonic() - t0:.1f} s)")
        assert media["height"] == 360 and media["codec"].lower() == f"video/{codec}", media
    finally:
        output = await stop(client)
    # Stopped, the client DELETEs its session: the participant leaves.
    assert "Disconnecting from server (Shutting down)" in output and "Not Found" not in output, output
    await page.wait_for_function(f"!window.sfuSession.participants.has('{publisher.id}')", timeout=15000)
    assert publisher.closed
    await page.context.close()


async def test_simple_whip_client_vp8_is_decoded_by_a_browser_participant(browser: Browser, lab, tmp_path):
    await _publish_with_simple_whip_client(browser, lab, tmp_path, VP8_PIPELINE, "vp8")


async def test_simple_whip_client_h264_is_decoded_by_a_browser_participant(browser: Browser, lab, tmp_path):
    await _publish_with_simple_whip_client(browser, lab, tmp_path, H264_PIPELINE, "h264")


async def test_gstreamer_webrtcbin_pipeline_publishes_over_whip(browser: Browser, lab):
    server, _ns = lab
    page = await open_viewer(browser, server.url, "studio")
    url = f"http://{HOST_IP}:{server.config.port}/whip/studio?name=webrtcbin"
    client = await start_in_namespace(
        "/usr/bin/python3", str(WHIP_DIR / "gst_whip_publish.py"), url, env={"PYTHONUNBUFFERED": "1"}
    )
    try:
        publisher = await wait_for_publisher(server, "studio", "webrtcbin", client)
        media = await assert_decodes(page, publisher.id, client)
        print(f"webrtcbin: decoded {media}")
    finally:
        output = await stop(client)
    assert "deleted: 200" in output, output
    await page.wait_for_function(f"!window.sfuSession.participants.has('{publisher.id}')", timeout=15000)
    await page.context.close()


def test_the_igd_stub_builds(tmp_path):
    # The stand-in has exactly the four symbols libnice takes from gupnp-igd.
    library = build_igd_stub(tmp_path) / "libgupnp-igd-1.0.so.4"
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    libnice = next(line.split("=>")[1].strip() for line in cache.splitlines() if "libnice.so.10 " in line)
    wanted = subprocess.run(["nm", "-D", "--undefined-only", libnice], capture_output=True, text=True).stdout
    needed = {line.split()[-1] for line in wanted.splitlines() if "gupnp" in line}
    assert needed and needed <= {line.split()[-1] for line in symbols.splitlines()}
    assert os.path.getsize(library) > 0
