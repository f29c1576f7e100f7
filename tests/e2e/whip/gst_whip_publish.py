#!/usr/bin/env python3
"""Publish GStreamer test sources over WHIP with webrtcbin (through GObject introspection).

    python3 gst_whip_publish.py URL [TOKEN]

Runs with the system Python (python3-gi, gir1.2-gst-plugins-bad-1.0), not the project's venv.
The WHIP side is RFC 9725 without trickle: the offer is POSTed once ICE gathering has
completed, with its candidates; the 201's answer is applied; on SIGINT or SIGTERM the session
is DELETEd and "deleted: <status>" printed.
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

PIPELINE = (
    "webrtcbin name=pc bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! videoconvert ! "
    "queue ! vp8enc deadline=1 keyframe-max-dist=60 ! rtpvp8pay pt=96 mtu=1200 ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96 ! pc. "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=111 ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! pc."
)


class Publisher:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self.location: str | None = None
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.parse_launch(PIPELINE)
        self.pc = self.pipeline.get_by_name("pc")
        for transceiver in self._transceivers():
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        self.pc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.pc.connect("notify::ice-gathering-state", self._on_gathering)
        self.pc.connect("notify::connection-state", self._on_connection)
        self.offer_sent = False

    def _transceivers(self) -> list[GstWebRTC.WebRTCRTPTransceiver]:
        return [pad.get_property("transceiver") for pad in self.pc.sinkpads]

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _on_negotiation_needed(self, _element: Gst.Element) -> None:
        promise = Gst.Promise.new_with_change_func(self._on_offer, None)
        self.pc.emit("create-offer", None, promise)

    def _on_offer(self, promise: Gst.Promise, _data: object) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            print(f"no offer: {reply.to_string() if reply is not None else 'no reply'}", flush=True)
            return
        self.pc.emit("set-local-description", offer, Gst.Promise.new())

    def _on_gathering(self, *_args: object) -> None:
        state = self.pc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.offer_sent:
            self.offer_sent = True
            GLib.idle_add(self._post)

    def _on_connection(self, *_args: object) -> None:
        print("connection:", self.pc.get_property("connection-state").value_nick, flush=True)

    def _post(self) -> bool:
        sdp = self.pc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(self.url, sdp.encode(), self._headers("application/sdp"), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                answer = response.read().decode()
                self.location = urllib.parse.urljoin(self.url, response.headers["Location"])
                print(f"created: {response.status} {self.location} etag {response.headers['ETag']}", flush=True)
        except urllib.error.HTTPError as exc:
            print(f"refused: {exc.code} {exc.read().decode().strip()}", flush=True)
            self.loop.quit()
            return False
        _result, message = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        self.pc.emit("set-remote-description", description, Gst.Promise.new())
        return False

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
        self.pipeline.set_state(Gst.State.PLAYING)
        try:
            self.loop.run()
        finally:
            self.pipeline.set_state(Gst.State.NULL)


def main() -> None:
    Gst.init(None)
    if len(sys.argv) < 2:
        sys.exit("usage: gst_whip_publish.py URL [TOKEN]")
    Publisher(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None).run()


if __name__ == "__main__":
    main()
