"""One recording file: a publisher's camera and microphone (or its screen share), muxed live.

Each recorded producer gets a ``Consumer`` of its own, like a subscriber's: it is registered
with the producer (so dynacast keeps the layers it wants running), asks for a keyframe when it
starts, wants the top simulcast layer (no height cap, no bandwidth cap: it takes the best layer
that arrives and follows the layers the publisher actually sends), and its munger turns layer
switches and mutes into one continuous RTP stream. Its packets, instead of going to a socket,
come here: a ``FrameAssembler`` makes whole frames of them (in order, waiting a moment for NACK
repairs; a frame that stays incomplete is dropped and a keyframe asked for), and each frame is
handed to the file's ``MuxWriter`` with its time.

Times come from the RTP clock. With the publisher's sender reports (each layer's NTP ↔ RTP
mapping, as the forwarding code keeps it for our own sender reports) every frame gets the
capture time its timestamp stands for, so audio and video stay aligned across loss, mutes and
layer switches; between reports, and for publishers that send none, the munged timestamps
carry the time on from the previous frame. The file starts when every stream has its first
frame (video: a keyframe) and a sender report, or after ``START_HOLD_S`` with what has come;
audio from before the first video frame is left out, so the two start together.

No I/O but the writer's queue; time is an argument.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ..forwarding import Consumer, OutStream, Producer
from ..media.depacketize import Frame, FrameAssembler, h264_parameter_sets
from ..media.seq import ts_diff
from .writer import MuxWriter, StreamSpec, container_format

logger = logging.getLogger(__name__)

RECORDER_ID = "recorder"  # the subscriber id of recording consumers (admin views, logs)
START_HOLD_S = 6.0  # longest wait for every stream's first frame and sender report
STOP_GRACE_S = 3.0  # longest wait, after a stop, for the media captured before it
DROP_LOG_INTERVAL_S = 5.0
NTP_FRACTION = float(1 << 32)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

# What a frame carries from its first packet: (layer index, incoming RTP timestamp, arrival s).
_Meta = tuple[int, int, float]
WriterFactory = Callable[[Path, str, list[StreamSpec]], MuxWriter]


def safe_name(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a room or participant name."""
    return _UNSAFE.sub("_", text).strip("._")[:limit] or "x"


def file_group(producer: Producer) -> str:
    """Which file a producer goes in: ``screen`` for a screen share, else ``camera``."""
    return "screen" if producer.source == "screen" else "camera"


@dataclass(slots=True)
class RecordingTotals:
    """Counters over every recording of the server (for /metrics)."""

    files_started: int = 0
    files_finished: int = 0
    frames_queued: int = 0
    frames_dropped: int = 0  # the writer's queue was full: a slow disk
    frames_lost: int = 0  # incomplete (lost packets), or skipped until the next keyframe
    files_failed: int = 0


@dataclass(slots=True)
class _Timed:
    frame: Frame
    time_s: float | None  # capture time on the publisher's clock (None: no sender report yet)
    arrival_s: float  # wall-clock arrival of its first packet (server clock)


@dataclass(slots=True)
class _StreamState:
    producer: Producer
    index: int
    consumer: Consumer
    assembler: FrameAssembler
    rate: int
    held: list[_Timed] = field(default_factory=list)
    last_time_s: float | None = None
    last_ts: int = 0
    first_pts_ms: int | None = None
    last_pts_ms: int = -1
    duration_ms: int = 0  # of the last frame written
    ended: bool = False  # stopping, and a frame captured after the stop came
    frames: int = 0


class FileRecorder:
    """One file: the given producers of one participant (one camera and microphone, or one
    screen share), from now until ``close``."""

    def __init__(
        self,
        directory: Path,
        room: str,
        participant_id: str,
        participant_name: str,
        group: str,
        producers: list[Producer],
        totals: RecordingTotals,
        now_s: Callable[[], float] = time.monotonic,
        wall_s: Callable[[], float] = time.time,
        writer_factory: WriterFactory = MuxWriter,
    ) -> None:
        self.room = room
        self.participant_id = participant_id
        self.participant_name = participant_name
        self.group = group
        self.producers = list(producers)
        self._totals = totals
        self._now_s = now_s
        self._wall_s = wall_s
        self._writer_factory = writer_factory
        self.started_at = wall_s()  # when recording was asked for (wall clock)
        self._started_mono = now_s()
        self.stopped_at: float | None = None
        self.first_frame_at: float | None = None  # wall-clock arrival of the file's first frame
        video = next((p.codec.name for p in producers if p.kind == "video"), None)
        self.format, extension = container_format(video)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.started_at))
        name = f"{safe_name(room)}_{safe_name(participant_name)}-{participant_id}_{group}_{stamp}.{extension}"
        self.path = directory / name
        self.writer: MuxWriter | None = None
        self.closed = False
        # Stopping: the media captured until the stop is still taken (it may be on its way),
        # for up to STOP_GRACE_S; what was captured after it is not.
        self.stopping = False
        self._stop_deadline_s = 0.0
        self._arrival_lead_s: float | None = None  # least (arrival - capture time) seen
        self._mode_sr = False  # times from sender reports (else from arrival, server clock)
        self._origin_s = 0.0
        self._last_drop_log_s = -1e9
        self.frames_dropped = 0
        self.streams: list[_StreamState] = []
        for index, producer in enumerate(producers):
            out = OutStream(0x5EC0_0000 + index, 0, 0)
            state: _StreamState
            consumer = Consumer(producer, RECORDER_ID, out, producer.payload_type, self._sender(index), now_s)
            state = _StreamState(
                producer, index, consumer, FrameAssembler(producer.codec.name), producer.codec.clock_rate
            )
            self.streams.append(state)
        for state in self.streams:
            state.producer.add_consumer(state.consumer, now_s())  # asks for a keyframe
        totals.files_started += 1

    # -- packets in (from the consumers, on the forwarding path) -------------------------

    def _sender(self, index: int) -> Callable[[bytes], bool]:
        def send(packet: bytes) -> bool:
            self._on_packet(self.streams[index], packet)
            return True

        return send

    def _on_packet(self, state: _StreamState, packet: bytes) -> None:
        # Consumer.forward writes a 12-byte header (sfu.media.rtp.write_header) + the payload.
        marker = packet[1] >> 7
        seq = (packet[2] << 8) | packet[3]
        ts = int.from_bytes(packet[4:8], "big")
        consumer = state.consumer
        # The incoming timestamp and layer, for the layer's sender report.
        in_ts = (ts - consumer.out.munger.out_timestamp(0)) & 0xFFFFFFFF
        meta = (consumer.current, in_ts, self._wall_s())
        now_ms = int(self._now_s() * 1000)
        for frame in state.assembler.push(seq, ts, marker, packet[12:], now_ms, meta):
            self._on_frame(state, frame)
        if state.assembler.keyframe_wanted:
            self._ask_keyframe(state)

    def _ask_keyframe(self, state: _StreamState) -> None:
        consumer = state.consumer
        if state.producer.request_keyframe(self._now_s(), max(consumer.current, consumer.target, 0)):
            state.assembler.keyframe_asked()

    def tick(self, now_s: float) -> None:
        """Periodic: follow the layers that arrive, give up on frames that stay incomplete,
        ask again for a keyframe still missing, start the file after the hold."""
        now_ms = int(now_s * 1000)
        for state in self.streams:
            if state.consumer.closed:
                continue
            state.consumer.select(now_ms)
            for frame in state.assembler.poll(now_ms):
                self._on_frame(state, frame)
            if state.assembler.keyframe_wanted:
                self._ask_keyframe(state)
        if self.writer is None and not self.closed and now_s - self._started_mono >= START_HOLD_S:
            self._start()
        if self.stopping and not self.closed:
            ended = all(s.ended or s.consumer.closed for s in self.streams)
            if ended or now_s >= self._stop_deadline_s:
                self.close()

    def stop(self) -> None:
        """End the file once the media captured until now has come (``tick`` closes it)."""
        if self.stopping or self.closed:
            return
        self.stopping = True
        self.stopped_at = self._wall_s()
        self._stop_deadline_s = self._now_s() + STOP_GRACE_S

    # -- timing -------------------------------------------------------------------------

    def _capture_s(self, state: _StreamState, frame: Frame) -> float | None:
        layer_index, in_ts, _ = cast(_Meta, frame.meta)
        layers = state.producer.layers
        if not 0 <= layer_index < len(layers):
            return None
        layer = layers[layer_index]
        if layer.sr_ntp is None:
            return None
        return layer.sr_ntp / NTP_FRACTION + ts_diff(in_ts, layer.sr_rtp) / state.rate

    def _frame_time(self, state: _StreamState, timed: _Timed) -> float:
        """The frame's time on the file's clock (before the origin is subtracted)."""
        t: float | None = None
        if self._mode_sr:
            t = self._capture_s(state, timed.frame) if timed.time_s is None else timed.time_s
        if t is None:
            if state.last_time_s is not None:
                t = state.last_time_s + ts_diff(timed.frame.timestamp, state.last_ts) / state.rate
            else:
                t = timed.arrival_s
        state.last_time_s = t
        state.last_ts = timed.frame.timestamp
        return t

    # -- frames out ---------------------------------------------------------------------

    def _on_frame(self, state: _StreamState, frame: Frame) -> None:
        if self.closed:
            return
        timed = _Timed(frame, None, cast(_Meta, frame.meta)[2])
        if self.writer is None:
            timed.time_s = self._capture_s(state, frame)
            state.held.append(timed)
            if self._ready():
                self._start()
            return
        self._write(state, timed)

    def _ready(self) -> bool:
        """Every stream has its first frame and a sender report for it."""
        return all(s.held and self._capture_s(s, s.held[0].frame) is not None for s in self.streams)

    def _start(self) -> None:
        held = [s for s in self.streams if s.held]
        if not held:
            return  # nothing yet: the file is made when the first frame comes
        self._mode_sr = all(self._capture_s(s, s.held[0].frame) is not None for s in held)
        firsts: dict[int, float] = {}
        for s in held:
            for timed in s.held:
                timed.time_s = self._capture_s(s, timed.frame) if self._mode_sr else None
            first = s.held[0]
            firsts[s.index] = first.time_s if first.time_s is not None else first.arrival_s
        video = [s for s in held if s.producer.kind == "video"]
        self._origin_s = min(firsts[s.index] for s in video) if video else min(firsts.values())
        specs = []
        for s in self.streams:
            p = s.producer
            if p.kind == "video":
                layer = p.layers[max(s.consumer.current, 0)]
                extradata = b""
                if p.codec.name.upper() == "H264" and s.held:
                    extradata = h264_parameter_sets(s.held[0].frame.data)
                specs.append(StreamSpec("video", p.codec.name, layer.width, layer.height, extradata=extradata))
            else:
                specs.append(StreamSpec("audio", p.codec.name, sample_rate=p.codec.clock_rate))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = self._writer_factory(self.path, self.format, specs)
        # Stream by stream, each in its order (the muxer interleaves).
        for s in held:
            frames, s.held = s.held, []
            for timed in frames:
                self._write(s, timed)

    def _write(self, state: _StreamState, timed: _Timed) -> None:
        t = self._frame_time(state, timed)
        lead = timed.arrival_s - t  # network delay (and clock offset, with sender reports)
        if self._arrival_lead_s is None or lead < self._arrival_lead_s:
            self._arrival_lead_s = lead
        if self.stopping and self.stopped_at is not None and t > self.stopped_at - (self._arrival_lead_s or 0.0):
            state.ended = True  # captured after the stop
            return
        pts_ms = round((t - self._origin_s) * 1000)
        if state.producer.kind == "audio" and pts_ms < -10:
            return  # before the video began: left out so that both start together
        pts_ms = max(pts_ms, state.last_pts_ms + 1, 0)
        writer = self.writer
        assert writer is not None
        frame = timed.frame
        # A frame lasts as long as the one before it (what a player shows for the last one).
        if state.last_pts_ms >= 0 and pts_ms - state.last_pts_ms < 1000:
            state.duration_ms = pts_ms - state.last_pts_ms
        if not writer.put(state.index, pts_ms, frame.data, frame.keyframe, state.duration_ms):
            self.frames_dropped += 1
            self._totals.frames_dropped += 1
            if state.producer.kind == "video":
                state.assembler.restart()  # what follows needs the frame: start again on a keyframe
                self._ask_keyframe(state)
            now = self._now_s()
            if now - self._last_drop_log_s >= DROP_LOG_INTERVAL_S:
                self._last_drop_log_s = now
                logger.warning(
                    "recording %s: the disk is too slow, %d frames dropped so far (%d queued)",
                    self.path.name,
                    self.frames_dropped,
                    writer.queued,
                )
            return
        self._totals.frames_queued += 1
        if state.first_pts_ms is None:
            state.first_pts_ms = pts_ms
            if self.first_frame_at is None:
                self.first_frame_at = timed.arrival_s
        state.last_pts_ms = pts_ms
        state.frames += 1

    # -- the end ------------------------------------------------------------------------

    @property
    def frames_lost(self) -> int:
        return sum(s.assembler.frames_dropped for s in self.streams)

    def close(self) -> None:
        """Stop recording: the consumers go, the writer finishes the file (in its thread);
        idempotent."""
        if self.closed:
            return
        if self.writer is None:
            self._start()
        self.closed = True
        if self.stopped_at is None:
            self.stopped_at = self._wall_s()
        for state in self.streams:
            state.consumer.close()
        self._totals.frames_lost += self.frames_lost
        if self.writer is not None:
            self.writer.close()

    def duration_s(self) -> float:
        firsts = [s.first_pts_ms for s in self.streams if s.first_pts_ms is not None]
        if not firsts:
            return 0.0
        ends = [s.last_pts_ms + s.duration_ms for s in self.streams if s.first_pts_ms is not None]
        return (max(ends) - min(firsts)) / 1000

    def describe(self) -> dict[str, object]:
        """The file's entry in the sidecar and the admin view."""
        writer = self.writer
        return {
            "file": self.path.name,
            "participant": self.participant_id,
            "name": self.participant_name,
            "source": self.group,
            "format": self.format,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "first_frame_at": self.first_frame_at,
            "duration_s": round(self.duration_s(), 3),
            "timing": "sender-reports" if self._mode_sr else "arrival",
            "streams": [
                {
                    "track": s.producer.id,
                    "kind": s.producer.kind,
                    "codec": s.producer.codec.name,
                    "frames": s.frames,
                    "start_s": None if s.first_pts_ms is None else s.first_pts_ms / 1000,
                    "frames_lost": s.assembler.frames_dropped,
                    "layer": s.consumer.current,
                }
                for s in self.streams
            ],
            "frames_dropped": writer.frames_dropped if writer else 0,
            "error": writer.error if writer else None,
        }
