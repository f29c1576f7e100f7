#!/usr/bin/env python3
"""Play a room over WHEP with GStreamer's webrtcbin and decode it (through GObject introspection).

    python3 gst_whep_play.py URL [TOKEN]

Runs with the system Python (python3-gi, gir1.2-gst-plugins-bad-1.0), not the project's venv.
Offers to receive VP8 video and Opus audio (recvonly), POSTs the offer with its candidates
once ICE gathering is complete, applies the answer, decodes what arrives (decodebin) and
prints "decoded: video <frames> audio <buffers>" every half second; on SIGINT or SIGTERM it
DELETEs the session and prints "deleted: <status>".
"""

from __future__ import annotations

import signal
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VIDEO_CAPS = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
AUDIO_CAPS = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000"


class Player:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self.location: str | None = None
        self.decoded = {"video": 0, "audio": 0}
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.Pipeline.new("player")
        self.pc = Gst.ElementFactory.make("webrtcbin", "pc")
        self.pc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipeline.add(self.pc)
        recvonly = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
        self.pc.emit("add-transceiver", recvonly, Gst.Caps.from_string(AUDIO_CAPS))
        self.pc.emit("add-transceiver", recvonly, Gst.Caps.from_string(VIDEO_CAPS))
        self.pc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.pc.connect("notify::ice-gathering-state", self._on_gathering)
        self.pc.connect("pad-added", self._on_incoming)
        self.offer_sent = False

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _on_negotiation_needed(self, _element: Gst.Element) -> None:
        self.pc.emit("create-offer", None, Gst.Promise.new_with_change_func(self._on_offer, None))

    def _on_offer(self, promise: Gst.Promise, _data: object) -> None:
        reply = promise.get_reply()
        if reply is None or not reply.has_field("offer"):
            print(f"no offer: {reply.to_string() if reply is not None else 'no reply'}", flush=True)
            return
        self.pc.emit("set-local-description", reply.get_value("offer"), Gst.Promise.new())

    def _on_gathering(self, *_args: object) -> None:
        state = self.pc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.offer_sent:
            self.offer_sent = True
            GLib.idle_add(self._post)

    def _post(self) -> bool:
        sdp = self.pc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(self.url, sdp.encode(), self._headers("application/sdp"), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                answer = response.read().decode()
                self.location = urllib.parse.urljoin(self.url, response.headers["Location"])
                print(f"created: {response.status} {self.location}", flush=True)
        except urllib.error.HTTPError as exc:
            print(f"refused: {exc.code} {exc.read().decode().strip()}", flush=True)
            self.loop.quit()
            return False
        _result, message = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        self.pc.emit("set-remote-description", description, Gst.Promise.new())
        return False

    def _on_incoming(self, _element: Gst.Element, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self._on_decoded)
        self.pipeline.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def _on_decoded(self, _element: Gst.Element, pad: Gst.Pad) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        kind = "video" if caps.to_string().startswith("video") else "audio"
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        sink.set_property("signal-handoffs", True)
        sink.connect("handoff", lambda *_args: self._count(kind))
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

    def _count(self, kind: str) -> None:
        self.decoded[kind] += 1

    def _report(self) -> bool:
        print(f"decoded: video {self.decoded['video']} audio {self.decoded['audio']}", flush=True)
        return True

    def delete(self) -> None:
        if self.location is None:
            return
        request = urllib.request.Request(self.location, headers=self._headers(), method="DELETE")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                print(f"deleted: {response.status}", flush=True)
        except urllib.error.HTTPError as exc:
            print(f"deleted: {exc.code}", flush=True)
        self.location = None

    def run(self) -> None:
        def stop(*_args: object) -> bool:
            self.delete()
            self.loop.quit()
            return False

        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
        GLib.timeout_add(500, self._report)
        self.pipeline.set_state(Gst.State.PLAYING)
        try:
            self.loop.run()
        finally:
            self.pipeline.set_state(Gst.State.NULL)


def main() -> None:
    Gst.init(None)
    if len(sys.argv) < 2:
        sys.exit("usage: gst_whep_play.py URL [TOKEN]")
    Player(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None).run()


if __name__ == "__main__":
    main()
