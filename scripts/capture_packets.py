"""Capture decrypted RTP and RTCP packets of a real Chromium call, as test fixtures.

Runs the server in this process and two headless Chromium participants (Debian's package,
driven by Playwright; fake camera and microphone) in one room, then writes a few packets of
each kind, as the server's SRTP sessions decrypted them (the glue tap) or as it is about to
encrypt them (``send_packet``), to ``tests/unit/fixtures/<name>.bin``:

- from a publisher: a VP8 keyframe's first packet, an Opus packet with the audio-level
  extension, an RTX retransmission, an RTX padding packet, a sender report;
- from a subscriber: a receiver report, transport-cc feedback, a NACK, a PLI, and (in a
  second call with transport-cc off) a REMB;
- from the server: a receiver report + REMB compound, a NACK and a PLI to a publisher;
- and Chromium's publish offer (``chromium_publish_offer.sdp``), for the SDP helpers' tests.

One packet in 40 is dropped on each side (publisher to server, server to subscriber) so
that NACKs and retransmissions happen. Needs Chromium (``/usr/bin/chromium``)::

    flock /tmp/sfu-e2e.lock .venv/bin/python scripts/capture_packets.py [--out tests/unit/fixtures]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.async_api import async_playwright  # noqa: E402

from sfu.media.keyframe import vp8_keyframe_start  # noqa: E402
from sfu.media.rtp import find_extension, is_rtcp, parse_rtp  # noqa: E402
from sfu.rtc import aiortc_glue as glue  # noqa: E402
from tests.conftest import start_server  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

DROP_EVERY = 40


class Capture:
    def __init__(self) -> None:
        self.incoming: list[bytes] = []  # every decrypted packet the server received
        self.outgoing: list[tuple[bytes, bool]] = []  # (plain packet, rtcp) the server sent
        self._in_count = 0
        self._out_count = 0

    def install(self) -> None:
        tap, send = glue.install_tap, glue.send_packet

        def install_tap(pc: Any, on_rtp: Any, on_rtcp: Any) -> None:
            async def rtp(data: bytes, arrival_ms: int) -> None:
                self.incoming.append(data)
                self._in_count += 1
                if self._in_count % DROP_EVERY:
                    await on_rtp(data, arrival_ms)

            async def rtcp(data: bytes) -> None:
                self.incoming.append(data)
                await on_rtcp(data)

            tap(pc, rtp, rtcp)

        def send_packet(transport: Any, data: bytes, rtcp: bool = False) -> bool:
            self.outgoing.append((data, rtcp))
            if not rtcp:
                self._out_count += 1
                if self._out_count % DROP_EVERY == 0:
                    return True
            result: bool = send(transport, data, rtcp)
            return result

        glue.install_tap = install_tap
        glue.send_packet = send_packet


def rtcp_types(data: bytes) -> list[tuple[int, int]]:
    """(packet type, fmt) of each packet of a compound RTCP packet (no validation)."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        out.append((data[pos + 1], data[pos] & 0x1F))
        pos += 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
    return out


def payload_types(sdp: str) -> dict[int, str]:
    return {int(m[0]): m[1].lower() for m in re.findall(r"a=rtpmap:(\d+) ([^/\s]+)", sdp)}


def extmap_id(sdp: str, uri: str) -> int | None:
    m = re.search(r"a=extmap:(\d+)(?:/\w+)? " + re.escape(uri), sdp)
    return int(m.group(1)) if m else None


async def call(capture: Capture, seconds: float, **options: Any) -> tuple[str, str]:
    server = await start_server(heartbeat_interval_s=1.0, **options)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            pages = []
            for name in ("alice", "bob"):
                page = await (await browser.new_context()).new_page()
                await page.goto(f"{server.url}/?room=capture&name={name}&autojoin=1")
                await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
                pages.append(page)
            await asyncio.sleep(seconds)
            publish_sdp = await pages[0].evaluate("window.sfuSession.publishPc.localDescription.sdp")
            subscribe_sdp = await pages[0].evaluate("window.sfuSession.publishPc.remoteDescription.sdp")
            await browser.close()
    finally:
        await server.runner.cleanup()
    return publish_sdp, subscribe_sdp


def pick(capture: Capture, publish_sdp: str) -> dict[str, bytes]:
    pts = payload_types(publish_sdp)
    level_id = extmap_id(publish_sdp, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
    found: dict[str, bytes] = {}

    def keep(name: str, data: bytes) -> None:
        if name not in found:
            found[name] = data

    for data in capture.incoming:
        if is_rtcp(data):
            kinds = rtcp_types(data)
            if (200, 0) <= kinds[0] <= (200, 31):
                keep("chromium_sr", data)
            if [pt for pt, _ in kinds] == [201]:
                keep("chromium_rr", data)
            for pt, fmt in kinds:
                if (pt, fmt) == (205, 15):
                    keep("chromium_transport_cc", data)
                elif (pt, fmt) == (205, 1):
                    keep("chromium_nack", data)
                elif (pt, fmt) == (206, 1):
                    keep("chromium_pli", data)
                elif (pt, fmt) == (206, 15):
                    keep("chromium_remb", data)
            continue
        try:
            view = parse_rtp(data)
        except ValueError:
            continue
        codec = pts.get(view.payload_type, "")
        payload = data[view.payload_start : view.payload_end]
        if codec == "vp8" and vp8_keyframe_start(payload):
            keep("chromium_vp8_keyframe", data)
        elif codec == "opus" and level_id is not None and find_extension(data, view.ext_start, level_id)[0] >= 0:
            keep("chromium_opus_audio_level", data)
        elif codec == "rtx":
            if data[0] & 0x20 and view.payload_end == view.payload_start:
                keep("chromium_rtx_padding", data)
            elif view.payload_end - view.payload_start > 2:
                keep("chromium_rtx", data)
    for data, rtcp in capture.outgoing:
        if not rtcp:
            continue
        kinds = rtcp_types(data)
        if kinds and kinds[0][0] == 201 and (206, 15) in kinds:
            keep("server_rr_remb", data)
        if kinds == [(205, 1)]:
            keep("server_nack", data)
        if kinds == [(206, 1)]:
            keep("server_pli", data)
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "unit" / "fixtures")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    capture = Capture()
    capture.install()
    found: dict[str, bytes] = {}
    publish_sdp, _ = await call(capture, args.seconds)
    found.update(pick(capture, publish_sdp))
    offer = publish_sdp
    capture.incoming.clear()
    capture.outgoing.clear()
    publish_sdp, _ = await call(capture, args.seconds, transport_cc=False)
    for name, data in pick(capture, publish_sdp).items():
        found.setdefault(name, data)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(found.items()):
        (args.out / f"{name}.bin").write_bytes(data)
        print(f"{name}.bin: {len(data)} bytes")
    (args.out / "chromium_publish_offer.sdp").write_text(offer)
    print(f"chromium_publish_offer.sdp: {len(offer)} bytes")


if __name__ == "__main__":
    asyncio.run(main())
