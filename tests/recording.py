"""Shared by the recording tests: a Python subscriber that keeps the frames the SFU forwards,
and a reader that tells what a recorded file holds (PyAV: demuxed, and decoded)."""

import hashlib
from dataclasses import dataclass, field

import av

from sfu.client import Participant
from sfu.media.depacketize import FrameAssembler
from sfu.media.rtcp import RtcpPli
from sfu.media.rtp import MalformedPacket, parse_rtp
from sfu.rtc import aiortc_glue as glue


class FrameWatcher(Participant):
    """A subscriber that also puts the VP8 frames it receives back together (what the SFU
    forwarded to it), as SHA-256 digests by track."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.assemblers: dict[str, FrameAssembler] = {}
        self.frames: dict[str, set[str]] = {}

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        await super()._on_rtp(data, arrival_ms)
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            return
        stream = self.streams.get(self._ssrc_mid.get(view.ssrc, ""))
        if stream is None or stream.kind != "video":
            return
        assembler = self.assemblers.setdefault(stream.track, FrameAssembler("VP8"))
        payload = data[view.payload_start : view.payload_end]
        frames = assembler.push(view.seq, view.timestamp, view.marker, payload, arrival_ms)
        for frame in frames + assembler.poll(arrival_ms):
            self.frames.setdefault(stream.track, set()).add(digest(frame.data))
        if assembler.keyframe_wanted:
            # A frame could not be completed: ask for a keyframe, as a decoder would (PLI).
            transports = glue.dtls_transports(self.subscribe_pc) if self.subscribe_pc is not None else []
            if transports and glue.send_packet(transports[0], bytes(RtcpPli(1, view.ssrc)), rtcp=True):
                assembler.keyframe_asked()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class StreamContent:
    times_s: list[float] = field(default_factory=list)  # packet times, in file order
    packets: list[bytes] = field(default_factory=list)
    keyframes: list[bool] = field(default_factory=list)
    decoded: int = 0
    decode_errors: list[str] = field(default_factory=list)

    @property
    def first_s(self) -> float:
        return min(self.times_s)

    @property
    def last_s(self) -> float:
        return max(self.times_s)

    def gaps_s(self) -> list[tuple[float, float]]:
        """(time before, time after) of each pause longer than half a second."""
        t = self.times_s
        return [(a, b) for a, b in zip(t, t[1:], strict=False) if b - a > 0.5]


@dataclass
class FileContent:
    duration_s: float
    streams: dict[str, StreamContent]


def read_file(path) -> FileContent:
    """Demux every packet, then decode each stream packet by packet, noting every error."""
    streams: dict[str, StreamContent] = {}
    with av.open(str(path)) as container:
        duration_s = container.duration / 1_000_000 if container.duration else 0.0
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None:
                continue
            s = streams.setdefault(packet.stream.type, StreamContent())
            s.times_s.append(float(packet.pts * packet.time_base))
            s.packets.append(bytes(packet))
            s.keyframes.append(bool(packet.is_keyframe))
    for kind, s in streams.items():
        with av.open(str(path)) as container:
            stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
            for packet in container.demux(stream):
                try:
                    s.decoded += len(packet.decode())
                except av.error.FFmpegError as exc:
                    s.decode_errors.append(str(exc))
    return FileContent(duration_s, streams)
