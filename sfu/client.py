"""A Python participant for the SFU, for tests, benchmarks and bots.

It speaks the signaling protocol (docs/protocol.md), publishes *pre-encoded* media (a VP8 and
an Opus clip encoded once with PyAV and cached on disk, then packetized by aiortc with no
encoder running), and receives media without decoding: incoming RTP is counted by the same
tap the server uses, before aiortc's jitter buffer and decoder. It sends and receives data
channel messages (text or binary, a topic, destinations) in the server's frame
(sfu/data_frame.py).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fractions
import json
import math
import os
import pickle
import random
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from .data_frame import DataFrame, MalformedFrame, decode, encode
from .media.keyframe import vp8_keyframe_start
from .media.rtcp import RtcpFir, RtcpPli, RtcpRemb, parse_compound
from .media.rtp import MalformedPacket, one_byte_extensions, parse_rtp, write_header_flags
from .rtc import aiortc_glue as glue
from .speaker import AUDIO_LEVEL_URI

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000
CACHE_DIR = Path(os.environ.get("SFU_CLIP_CACHE", Path.home() / ".cache" / "sfu-clips"))


# -- pre-encoded clips -------------------------------------------------------------------


@dataclass
class Clip:
    """Encoded frames: (payload bytes, is_keyframe), played at ``fps`` in a loop."""

    kind: str
    fps: float
    frames: list[tuple[bytes, bool]]


def _video_clip(width: int, height: int, fps: int, seconds: int, bitrate: int) -> Clip:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps)
    codec.bit_rate = bitrate
    codec.gop_size = fps  # a keyframe every second
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = random.Random(7)
    frames: list[tuple[bytes, bool]] = []
    frame = av.VideoFrame(width, height, "yuv420p")
    block = 16
    for i in range(fps * seconds):
        # Moving blocks of noise: enough detail for realistic packet sizes.
        for p, plane in enumerate(frame.planes):
            w = plane.line_size
            h = height if p == 0 else height // 2
            row = bytes(rng.randrange(256) if (x // block + i) % 3 == 0 else 128 for x in range(w))
            plane.update(row * h)
        frame.pts = i
        for packet in codec.encode(frame):
            frames.append((bytes(packet), bool(packet.is_keyframe)))
    for packet in codec.encode(None):
        frames.append((bytes(packet), bool(packet.is_keyframe)))
    return Clip("video", fps, frames)


def _audio_clip(seconds: int) -> Clip:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_CLOCK
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 48000
    frames: list[tuple[bytes, bool]] = []
    samples = 960
    for i in range(seconds * 50):
        pcm = array.array("h")
        for n in range(samples):
            v = int(8000 * math.sin(2 * math.pi * 440 * (i * samples + n) / AUDIO_CLOCK))
            pcm.extend((v, v))
        frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = i * samples
        for packet in codec.encode(frame):
            frames.append((bytes(packet), True))
    return Clip("audio", 50, frames)


def load_clip(kind: str, width: int = 640, height: int = 360, fps: int = 30, bitrate: int = 600_000) -> Clip:
    """A clip from the cache, encoding it on first use."""
    name = f"{kind}-{width}x{height}-{fps}-{bitrate}.pickle" if kind == "video" else "audio-opus.pickle"
    path = CACHE_DIR / name
    if path.exists():
        with path.open("rb") as f:
            clip: Clip = pickle.load(f)
            return clip
    clip = _video_clip(width, height, fps, 4, bitrate) if kind == "video" else _audio_clip(2)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(clip, f)
    tmp.replace(path)
    return clip


class PreEncodedTrack(MediaStreamTrack):
    """Plays a clip's encoded frames in real time; aiortc only packetizes them."""

    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self.kind = clip.kind
        self._clip = clip
        self._index = 0
        self._start: float | None = None
        self._clock = VIDEO_CLOCK if clip.kind == "video" else AUDIO_CLOCK
        self._step = int(self._clock / clip.fps)

    async def recv(self) -> av.Packet[Any]:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index / self._clip.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        data, _key = self._clip.frames[self._index % len(self._clip.frames)]
        packet = av.Packet(data)
        packet.pts = self._index * self._step
        packet.time_base = fractions.Fraction(1, self._clock)
        self._index += 1
        return packet


# -- publishing RTP directly (simulcast, send timestamps) ------------------------------

MID_EXT_ID = 1  # aiortc's offer uses 1 for sdes:mid
RID_EXT_ID = 10
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
VP8_MAX_PAYLOAD = 1200
# Appended to each video frame: magic + publisher wall-clock time in microseconds. Subscribers
# read it from the last packet of a frame without decoding (decoders ignore trailing bytes).
TRAILER_MAGIC = b"SFUt"
TRAILER = struct.Struct("!4sQ")
SIMULCAST_LAYERS = (("q", 160, 90, 100_000), ("h", 320, 180, 300_000), ("f", 640, 360, 900_000))


def vp8_packetize(frame: bytes, picture_id: int) -> list[bytes]:
    """RTP payloads for one VP8 frame (RFC 7741) with a 15-bit picture ID."""
    chunks = [frame[i : i + VP8_MAX_PAYLOAD] for i in range(0, len(frame), VP8_MAX_PAYLOAD)] or [b""]
    pid = bytes([0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])
    return [bytes([0x90 if i == 0 else 0x80, 0x80]) + pid + c for i, c in enumerate(chunks)]


@dataclass
class RtpStream:
    """One outgoing RTP stream of the RTP publisher."""

    clip: Clip
    payload_type: int
    clock: int
    mid: str
    rid: str | None
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(15))
    ts_base: int = field(default_factory=lambda: random.getrandbits(31))
    picture_id: int = field(default_factory=lambda: random.getrandbits(15))
    packets_sent: int = 0
    active: bool = True  # False: the server asked for this layer to stop (dynacast)
    keyframe_wanted: bool = False  # a PLI/FIR arrived: the next frame is a keyframe
    keyframe_requests: int = 0  # PLIs and FIRs received for it
    frame_offset: int = 0  # clip frame played at index i: i + frame_offset

    # Audio: the RFC 6464 level written into every packet (-dBov, 0 loud .. 127 silent), and the
    # extension id the server's answer gave it. None: no audio-level extension.
    audio_level_ext_id: int | None = None
    level: int | None = None

    def start_on_keyframe(self, index: int) -> None:
        """Play the clip's first frame (a keyframe) at ``index``, as an encoder that (re)starts."""
        self.frame_offset = -index % len(self.clip.frames)

    def packets(self, index: int, trailer: bool) -> list[bytes]:
        data, _key = self.clip.frames[(index + self.frame_offset) % len(self.clip.frames)]
        ts = (self.ts_base + index * int(self.clock / self.clip.fps)) & 0xFFFFFFFF
        if self.clip.kind == "video":
            if trailer:
                data += TRAILER.pack(TRAILER_MAGIC, int(time.time() * 1_000_000))
            payloads = vp8_packetize(data, self.picture_id)
            self.picture_id = (self.picture_id + 1) & 0x7FFF
        else:
            payloads = [data]
        ext = b""
        if self.rid is not None:
            ext = one_byte_extensions([(MID_EXT_ID, self.mid.encode()), (RID_EXT_ID, self.rid.encode())])
        elif self.level is not None and self.audio_level_ext_id is not None:
            voice = 0x80 if self.level <= 50 else 0  # V: what a sender's VAD would say
            ext = one_byte_extensions([(self.audio_level_ext_id, bytes([voice | self.level]))])
        out = []
        for i, payload in enumerate(payloads):
            marker = 1 if i == len(payloads) - 1 else 0
            header = write_header_flags(
                marker, self.payload_type, self.seq, ts, self.ssrc, extension=bool(ext), padding=False
            )
            self.seq = (self.seq + 1) & 0xFFFF
            out.append(header + ext + payload)
        return out


def _munge_offer(sdp: str, video_mid: str | None, rids: list[str]) -> str:
    """Turn aiortc's video m-section into a RID simulcast offer (no SSRCs, RID extension)."""
    out: list[str] = []
    mid = None
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            mid = None
        if line.startswith("a=mid:"):
            mid = line[6:]
        in_video = mid is not None and mid == video_mid
        if in_video and rids and (line.startswith("a=ssrc") or line.startswith("a=ssrc-group")):
            continue
        out.append(line)
        if in_video and rids and line.startswith("a=mid:"):
            out.append(f"a=extmap:{RID_EXT_ID} {RID_URI}")
            out.extend(f"a=rid:{rid} send" for rid in rids)
            out.append("a=simulcast:send " + ";".join(rids))
    return "\r\n".join(out)


# -- receiving ---------------------------------------------------------------------------


@dataclass
class ReceivedStream:
    """What arrived on one subscribe m-section."""

    mid: str
    kind: str = ""
    participant: str = ""
    track: str = ""
    packets: int = 0
    bytes: int = 0
    keyframes: int = 0
    first_packet_s: float | None = None
    last_packet_s: float | None = None
    seqs: set[int] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)  # publisher send → here, per frame


@dataclass
class ReceivedData:
    """One data channel message that arrived on the subscribe connection."""

    frame: DataFrame
    reliable: bool  # on the server's reliable channel (else the lossy one)
    at_s: float


class Participant:
    """One client: a WebSocket, a publish connection and a subscribe connection."""

    def __init__(
        self, url: str, room: str, name: str, token: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.url = url
        self.headers = headers or {}  # of the WebSocket handshake
        self.room = room
        self.name = name
        self.token = token  # access token, sent in join
        self.id: str | None = None
        self.joined: dict[str, Any] | None = None
        self.messages: list[dict[str, Any]] = []
        self.streams: dict[str, ReceivedStream] = {}  # by mid
        self._ssrc_mid: dict[int, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_message = asyncio.Condition()
        self.publish_pc: Any = None
        self.subscribe_pc: Any = None
        self._answer: asyncio.Future[str] | None = None
        self.rtp_streams: list[RtpStream] = []
        self._audio_level: int | None = 127  # RTP-published audio says "silent" until told otherwise
        self._rtp_task: asyncio.Task[None] | None = None
        # Data channels: ours on the publish connection (by reliability), the server's on the
        # subscribe connection (by label), what arrived on them, frames that did not parse.
        self.data_channels: dict[bool, Any] = {}
        self.server_channels: dict[str, Any] = {}
        self.data_received: list[ReceivedData] = []
        self.malformed_data = 0
        self._new_data = asyncio.Condition()
        self.closed = False

    # -- signaling ------------------------------------------------------------------------

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, max_msg_size=0, headers=self.headers)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send(self, msg: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(msg))

    async def send_raw(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            if raw.type != aiohttp.WSMsgType.TEXT:
                break
            msg = json.loads(raw.data)
            try:
                await self._handle(msg)
            except Exception as exc:  # keep reading; tests look at messages
                msg = {"type": "client-error", "message": repr(exc)}
            async with self._new_message:
                self.messages.append(msg)
                self._new_message.notify_all()
        async with self._new_message:
            self.messages.append({"type": "socket-closed"})
            self._new_message.notify_all()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first message (already received or future) for which predicate(msg) holds."""

        async def find() -> dict[str, Any]:
            async with self._new_message:
                while True:
                    for msg in self.messages:
                        if predicate(msg):
                            return msg
                    await self._new_message.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait_type(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        return await self.wait_for(lambda m: m.get("type") == kind, timeout)

    async def join(self) -> dict[str, Any]:
        if self._ws is None:
            await self.connect()
        join: dict[str, Any] = {"type": "join", "room": self.room, "name": self.name}
        if self.token is not None:
            join["token"] = self.token
        await self.send(join)
        msg = await self.wait_for(lambda m: m.get("type") in ("joined", "error"))
        if msg["type"] == "error":
            raise RuntimeError(f"join failed: {msg['code']}: {msg['message']}")
        self.joined = msg
        self.id = msg["id"]
        return msg

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "answer" and msg.get("pc") == "publish" and self._answer is not None:
            if not self._answer.done():
                self._answer.set_result(msg["sdp"])
        elif kind == "offer" and msg.get("pc") == "subscribe":
            await self._on_subscribe_offer(msg)
        elif kind == "layers":
            self._on_layers(msg)

    def _on_layers(self, msg: dict[str, Any]) -> None:
        """Dynacast: stop or restart the RTP publisher's video layers as the server asks.
        (The aiortc ``publish()`` path ignores it: aiortc has no per-encoding control.)"""
        for stream in self.rtp_streams:
            if stream.clip.kind == "video" and f"{self.id}-{stream.mid}" == msg.get("track"):
                stream.active = not msg.get("paused") and (stream.rid is None or stream.rid in msg.get("active", []))

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, audio: bool = True, video: bool = True, data: bool = False, **video_opts: Any) -> None:
        """Publish the pre-encoded clips through aiortc (and open the data channels: ``data``)."""
        self.publish_pc = glue.create_peer_connection(self.joined["ice_servers"] if self.joined else [])
        if audio:
            self.publish_pc.addTransceiver(PreEncodedTrack(load_clip("audio")), direction="sendonly")
        if video:
            self.publish_pc.addTransceiver(PreEncodedTrack(load_clip("video", **video_opts)), direction="sendonly")
        if data:  # after the transceivers (sfu/rtc/datachannels.py says why)
            self._open_data_channels(self.publish_pc)
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        self._answer = asyncio.get_running_loop().create_future()
        await self.send({"type": "offer", "pc": "publish", "sdp": self.publish_pc.localDescription.sdp})
        error: asyncio.Future[Any] = asyncio.ensure_future(
            self.wait_for(lambda m: m.get("type") == "error" and m.get("request") == "offer", 30)
        )
        try:
            done, _ = await asyncio.wait([self._answer, error], timeout=15, return_when=asyncio.FIRST_COMPLETED)
        finally:
            error.cancel()
        if self._answer not in done:
            raise RuntimeError(f"publish failed: {[d.result() for d in done if not d.cancelled()]}")
        await self.publish_pc.setRemoteDescription(RTCSessionDescription(self._answer.result(), "answer"))

    async def publish_rtp(
        self, audio: bool = True, video: bool = True, simulcast: bool = False, trailer: bool = True, data: bool = False
    ) -> None:
        """Publish pre-encoded clips as RTP written by us: optionally as three simulcast layers
        (RIDs q, h, f at 160x90, 320x180, 640x360), with send-time trailers in video frames;
        ``data``: and open the data channels on the same connection."""
        pc = self.publish_pc = glue.create_peer_connection(self.joined["ice_servers"] if self.joined else [])
        transceivers = []
        ssrcs: dict[str, int] = {}
        for kind, wanted in (("audio", audio), ("video", video)):
            if wanted:
                t = pc.addTransceiver(kind, direction="sendonly")
                ssrcs[kind], _rtx = glue.prepare_forwarding_sender(t, "rtp-publisher", kind)
                transceivers.append(t)
        if data:  # after the transceivers (sfu/rtc/datachannels.py says why)
            self._open_data_channels(pc)
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        video_t = next((t for t in transceivers if t.kind == "video"), None)
        rids = [layer[0] for layer in SIMULCAST_LAYERS] if simulcast and video_t is not None else []
        sdp = _munge_offer(pc.localDescription.sdp, video_t.mid if video_t else None, rids)
        self._answer = asyncio.get_running_loop().create_future()
        await self.send({"type": "offer", "pc": "publish", "sdp": sdp})
        answer = await asyncio.wait_for(self._answer, 15)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        description = aiortc_sdp.SessionDescription.parse(answer)
        streams: list[RtpStream] = []
        for t in transceivers:
            media = next(m for m in description.media if m.rtp.muxId == t.mid)
            codec = next(c for c in media.rtp.codecs if c.name.lower() in ("vp8", "opus"))
            pt, mid = codec.payloadType, t.mid
            if pt is None or mid is None:
                raise RuntimeError("the answer names no payload type or MID for a publish transceiver")
            if t.kind == "audio":
                level_id = next((e.id for e in media.rtp.headerExtensions if e.uri == AUDIO_LEVEL_URI), None)
                stream = RtpStream(load_clip("audio"), pt, AUDIO_CLOCK, mid, None, ssrc=ssrcs["audio"])
                stream.audio_level_ext_id, stream.level = level_id, self._audio_level
                streams.append(stream)
            elif rids:
                for rid, width, height, bitrate in SIMULCAST_LAYERS:
                    clip = load_clip("video", width=width, height=height, bitrate=bitrate)
                    streams.append(RtpStream(clip, pt, VIDEO_CLOCK, mid, rid))
            else:
                streams.append(RtpStream(load_clip("video"), pt, VIDEO_CLOCK, mid, None, ssrc=ssrcs["video"]))
        self.rtp_streams = streams
        self._rtp_task = asyncio.get_running_loop().create_task(self._send_rtp(pc, streams, trailer))

    # -- data channels ----------------------------------------------------------------------

    def _open_data_channels(self, pc: Any) -> None:
        self.data_channels[True] = pc.createDataChannel("sfu-reliable", ordered=True)
        self.data_channels[False] = pc.createDataChannel("sfu-lossy", ordered=False, maxRetransmits=0)

    async def publish_data(self) -> None:
        """A publish connection with data channels only (no media)."""
        self.publish_pc = glue.create_peer_connection(self.joined["ice_servers"] if self.joined else [])
        self._open_data_channels(self.publish_pc)
        await self.renegotiate_publish()

    async def wait_data_open(self, timeout: float = 15.0) -> None:
        """Until our channels and the server's two (to receive on) are open."""

        def ready() -> bool:
            channels = list(self.data_channels.values()) + list(self.server_channels.values())
            return len(channels) == 4 and all(c.readyState == "open" for c in channels)

        async def poll() -> None:
            while not ready():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), timeout)

    def send_data(
        self,
        payload: bytes | str,
        reliable: bool = True,
        topic: str | None = None,
        to: list[str] | None = None,
        ref: str | None = None,
    ) -> None:
        """One data message (text when ``payload`` is a str) to everyone else, or to ``to``."""
        text = isinstance(payload, str)
        body = payload.encode() if isinstance(payload, str) else payload
        frame = DataFrame(body, text=text, topic=topic, to=tuple(to) if to is not None else None, ref=ref)
        self.data_channels[reliable].send(encode(frame))

    def send_raw_data(self, message: bytes | str, reliable: bool = True) -> None:
        """Put anything on a data channel, framed or not (for tests of bad input)."""
        self.data_channels[reliable].send(message)

    def _on_server_channel(self, channel: Any) -> None:
        self.server_channels[channel.label] = channel
        reliable = channel.label == "sfu-reliable"

        async def on_message(message: bytes | str) -> None:  # pyee runs it as a task
            try:
                frame = decode(message if isinstance(message, bytes) else message.encode())
            except MalformedFrame:
                self.malformed_data += 1
                return
            async with self._new_data:
                self.data_received.append(ReceivedData(frame, reliable, time.monotonic()))
                self._new_data.notify_all()

        channel.on("message", on_message)

    async def wait_data(self, predicate: Any, timeout: float = 10.0) -> ReceivedData:
        """The first data message (received or future) for which predicate(received) holds."""

        async def find() -> ReceivedData:
            async with self._new_data:
                while True:
                    for received in self.data_received:
                        if predicate(received):
                            return received
                    await self._new_data.wait()

        return await asyncio.wait_for(find(), timeout)

    def set_audio_level(self, dbov: int | None) -> None:
        """The audio level (dBov, -127..0) that RTP-published audio claims from now on, in the
        RFC 6464 extension the server negotiated (e.g. -20 talking, -127 silent). None: none."""
        self._audio_level = None if dbov is None else min(127, max(0, -dbov))
        for stream in self.rtp_streams:
            if stream.clip.kind == "audio":
                stream.level = self._audio_level

    async def _send_rtp(self, pc: Any, streams: list[RtpStream], trailer: bool) -> None:
        """Send every stream's frames in real time until the connection closes."""
        while not glue.dtls_transports(pc) or not glue.is_connected(glue.dtls_transports(pc)[0]):
            if pc.connectionState in ("failed", "closed"):
                return
            await asyncio.sleep(0.02)
        transport = glue.dtls_transports(pc)[0]

        async def ignore_rtp(data: bytes, arrival_ms: int) -> None:
            return None

        async def on_rtcp(data: bytes) -> None:  # answer keyframe requests, as an encoder does
            try:
                packets = parse_compound(data)
            except MalformedPacket:
                return
            for p in packets:
                if isinstance(p, RtcpPli):
                    wanted = {p.media_ssrc}
                elif isinstance(p, RtcpFir):
                    wanted = {ssrc for ssrc, _ in p.entries}
                else:
                    continue
                for stream in streams:
                    if stream.ssrc in wanted:
                        stream.keyframe_wanted = True
                        stream.keyframe_requests += 1

        glue.install_tap(pc, ignore_rtp, on_rtcp)
        start = time.monotonic()
        sent: dict[int, int] = {id(s): 0 for s in streams}
        while pc.connectionState not in ("failed", "closed") and not self.closed:
            now = time.monotonic() - start
            next_due = now + 0.05
            for stream in list(streams):
                if not stream.active:
                    sent.pop(id(stream), None)  # stopped by the server: not even encoded
                    continue
                due_index = int(now * stream.clip.fps)
                if due_index - sent.get(id(stream), -1_000_000) > stream.clip.fps:
                    sent[id(stream)] = due_index  # a stream paused for a while resumes now,
                    stream.start_on_keyframe(due_index)  # with a keyframe, as an encoder would
                sent.setdefault(id(stream), due_index)
                if stream.keyframe_wanted:
                    stream.keyframe_wanted = False
                    stream.start_on_keyframe(sent[id(stream)])
                while sent[id(stream)] <= due_index:
                    for packet in stream.packets(sent[id(stream)], trailer):
                        if glue.send_packet(transport, packet):
                            stream.packets_sent += 1
                    sent[id(stream)] += 1
                next_due = min(next_due, (sent[id(stream)]) / stream.clip.fps)
            await asyncio.sleep(max(0.0, next_due - (time.monotonic() - start)))

    async def renegotiate_publish(self) -> None:
        """Send a new publish offer (after changing transceivers) and apply the answer."""
        await self.publish_pc.setLocalDescription(await self.publish_pc.createOffer())
        self._answer = asyncio.get_running_loop().create_future()
        await self.send({"type": "offer", "pc": "publish", "sdp": self.publish_pc.localDescription.sdp})
        await self.publish_pc.setRemoteDescription(
            RTCSessionDescription(await asyncio.wait_for(self._answer, 15), "answer")
        )

    async def unpublish(self, kind: str) -> None:
        """Stop publishing every track of ``kind`` (the m-section becomes inactive)."""
        for t in self.publish_pc.getTransceivers():
            if t.kind == kind:
                t.direction = "inactive"
        await self.renegotiate_publish()

    def publisher_track_ids(self) -> list[str]:
        return [f"{self.id}-{t.mid}" for t in self.publish_pc.getTransceivers()] if self.publish_pc else []

    # -- subscribing ----------------------------------------------------------------------

    async def _on_subscribe_offer(self, msg: dict[str, Any]) -> None:
        if self.subscribe_pc is None:
            self.subscribe_pc = glue.create_peer_connection(self.joined["ice_servers"] if self.joined else [])
            self.subscribe_pc.on("datachannel", self._on_server_channel)
        pc = self.subscribe_pc
        description = aiortc_sdp.SessionDescription.parse(msg["sdp"])
        for media in description.media:
            for s in media.ssrc:
                self._ssrc_mid[s.ssrc] = media.rtp.muxId
        for c in msg["consumers"]:
            stream = self.streams.setdefault(c["mid"], ReceivedStream(c["mid"]))
            stream.kind, stream.participant, stream.track = c["kind"], c["participant"], c["track"]
        await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
        glue.detach_receivers(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        glue.install_tap(pc, self._on_rtp, self._on_rtcp)
        await self.send({"type": "answer", "pc": "subscribe", "sdp": pc.localDescription.sdp})

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            return
        mid = self._ssrc_mid.get(view.ssrc)
        if mid is None:
            return
        stream = self.streams.setdefault(mid, ReceivedStream(mid))
        now = time.monotonic()
        if stream.first_packet_s is None:
            stream.first_packet_s = now
        stream.last_packet_s = now
        stream.packets += 1
        stream.bytes += len(data)
        stream.seqs.add(view.seq)
        if stream.kind == "video":
            if vp8_keyframe_start(data[view.payload_start : view.payload_end]):
                stream.keyframes += 1
            end = view.payload_end
            if view.marker and end - view.payload_start >= TRAILER.size:
                magic, sent_us = TRAILER.unpack_from(data, end - TRAILER.size)
                if magic == TRAILER_MAGIC:
                    stream.latencies_ms.append((time.time() * 1_000_000 - sent_us) / 1000)

    async def _on_rtcp(self, data: bytes) -> None:
        return None

    def send_remb(self, bitrate_bps: int) -> bool:
        """Tell the server our downlink carries ``bitrate_bps`` (RTCP REMB for every stream we
        receive), as a receiver's bandwidth estimator would."""
        pc = self.subscribe_pc
        transports = glue.dtls_transports(pc) if pc is not None else []
        if not transports or not self._ssrc_mid:
            return False
        packet = RtcpRemb(sender_ssrc=1, bitrate_bps=bitrate_bps, ssrcs=sorted(self._ssrc_mid))
        return glue.send_packet(transports[0], bytes(packet), rtcp=True)

    def send_pli(self) -> bool:
        """Ask for a keyframe of every video we receive (RTCP PLI), as a decoder does after loss."""
        pc = self.subscribe_pc
        transports = glue.dtls_transports(pc) if pc is not None else []
        video = [
            ssrc
            for ssrc, mid in self._ssrc_mid.items()
            if self.streams.get(mid, None) and self.streams[mid].kind == "video"
        ]
        if not transports or not video:
            return False
        packet = b"".join(bytes(RtcpPli(sender_ssrc=1, media_ssrc=ssrc)) for ssrc in video)
        return glue.send_packet(transports[0], packet, rtcp=True)

    def received_from(self, participant_id: str, kind: str) -> int:
        """Packets received of ``kind`` from one participant's tracks."""
        return sum(s.packets for s in self.streams.values() if s.participant == participant_id and s.kind == kind)

    # -- leaving --------------------------------------------------------------------------

    async def close(self, leave: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if leave and self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.send({"type": "leave"})
        if self._rtp_task is not None:
            self._rtp_task.cancel()
            await asyncio.gather(self._rtp_task, return_exceptions=True)
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await pc.close()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


async def _run_cli(args: Any) -> None:
    glue.set_host_addresses(args.ice_host or None)
    p = Participant(args.url, args.room, args.name)
    await p.join()
    print(json.dumps({"event": "joined", "id": p.id}), flush=True)
    if args.publish:
        await p.publish()
        print(json.dumps({"event": "published", "tracks": p.publisher_track_ids()}), flush=True)
    await asyncio.sleep(args.seconds)
    await p.close()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sfu.client", description="A headless SFU participant.")
    parser.add_argument("--url", default="http://127.0.0.1:8080/ws")
    parser.add_argument("--room", default="demo")
    parser.add_argument("--name", default="bot")
    parser.add_argument("--publish", action="store_true", help="publish the pre-encoded clips")
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--ice-host", action="append", help="pin ICE host candidate addresses")
    asyncio.run(_run_cli(parser.parse_args()))


if __name__ == "__main__":
    main()
