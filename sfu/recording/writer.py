"""Muxing one recording file with PyAV, off the event loop: packets as they came, never decoded.

A ``MuxWriter`` owns one file and one thread. The event loop hands it complete frames with
``put``, which never blocks: the frames wait in a bounded queue, and when the disk is too slow
for it to drain, ``put`` drops the frame and says so (the recorder counts it, logs it and, for
video, waits for the next keyframe so the file stays decodable). The thread opens the
container, writes each frame as one packet (its bytes exactly as they arrived) and, after
``close``, writes the trailer.

The streams' codec contexts are only there to describe the streams to the muxer: PyAV opens
them when it writes the header (an encoder that never sees a frame); for H.264 the stream
header (SPS, PPS) is the one the publisher sent, set after that opening.
"""

from __future__ import annotations

import contextlib
import fractions
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

logger = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, 1000)  # packet times are in milliseconds
DEFAULT_QUEUE_FRAMES = 1500  # about 10 s of a 30 fps video with its audio
_CLOSE = object()

# Codec name (as negotiated) -> (the PyAV codec whose context describes the stream, options).
_CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "VP8": ("libvpx", {}),
    "VP9": ("libvpx-vp9", {}),
    "H264": ("libx264", {"preset": "ultrafast", "tune": "zerolatency", "threads": "1"}),
    "OPUS": ("libopus", {}),
}


def container_format(video_codec: str | None) -> tuple[str, str]:
    """(FFmpeg format, file extension): WebM for VP8/VP9 and audio alone, Matroska for H.264."""
    if video_codec is not None and video_codec.upper() == "H264":
        return "matroska", "mkv"
    return "webm", "webm"


def supported(codec: str) -> bool:
    return codec.upper() in _CODECS


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One stream of a file: its kind and codec, and what the stream header needs."""

    kind: str  # "audio" or "video"
    codec: str  # "VP8", "VP9", "H264", "opus"
    width: int = 0
    height: int = 0
    sample_rate: int = 48000
    extradata: bytes = b""  # H.264: the SPS and PPS (Annex B)


class MuxWriter:
    """One file written by its own thread from a bounded queue of frames."""

    def __init__(
        self, path: Path, fmt: str, streams: list[StreamSpec], max_queue_frames: int = DEFAULT_QUEUE_FRAMES
    ) -> None:
        self.path = path
        self.format = fmt
        self.streams = streams
        self._queue: queue.Queue[Any] = queue.Queue(max_queue_frames)
        self.frames_written = 0
        self.bytes_written = 0
        self.frames_dropped = 0  # the queue was full (the disk is slower than the media)
        self.error: str | None = None
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=f"recording-{path.name}", daemon=True)
        self._thread.start()

    def put(self, stream_index: int, pts_ms: int, data: bytes, keyframe: bool, duration_ms: int = 0) -> bool:
        """Queue one frame; False (and counted) when the queue is full or the file failed."""
        if self.closed or self.error is not None:
            self.frames_dropped += 1
            return False
        try:
            self._queue.put_nowait((stream_index, pts_ms, data, keyframe, duration_ms))
        except queue.Full:
            self.frames_dropped += 1
            return False
        return True

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Finish the file once the queued frames are written; idempotent, never blocks."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(queue.Full):  # full: the thread ends once it has emptied it
            self._queue.put_nowait(_CLOSE)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread (blocking: call it in a thread); True when the file is done."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        container: Any = None
        file: Any = None
        try:
            # Python's file I/O, not FFmpeg's: it lets go of the GIL while the disk is busy,
            # so a slow (or stuck) disk holds up this thread and nothing else.
            file = open(self.path, "wb")  # noqa: SIM115 (closed in finally, after the container)
            container = av.open(
                file,
                "w",
                format=self.format,
                # Interleave within a second, and hand every packet to the OS at once, so a
                # crash leaves a playable file with everything up to a moment before it.
                container_options={"max_interleave_delta": "1000000", "flush_packets": "1"},
            )
            out = [self._add_stream(container, spec) for spec in self.streams]
            while True:
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self.closed:
                        break
                    continue
                if item is _CLOSE:
                    break
                index, pts_ms, data, keyframe, duration_ms = item
                packet = av.Packet(data)
                packet.stream = out[index]
                packet.time_base = TIME_BASE
                packet.pts = packet.dts = pts_ms
                if duration_ms > 0:
                    packet.duration = duration_ms
                packet.is_keyframe = keyframe
                container.mux(packet)
                self.frames_written += 1
                self.bytes_written += len(data)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("recording %s failed: %s", self.path, self.error)
            self._drain()
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception as exc:
                    self.error = self.error or f"{type(exc).__name__}: {exc}"
                    logger.error("recording %s: closing failed: %s", self.path, exc)
            if file is not None:
                file.close()

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.closed:
                    return
                continue
            if item is _CLOSE:
                return
            self.frames_dropped += 1

    @staticmethod
    def _add_stream(container: Any, spec: StreamSpec) -> Any:
        name, options = _CODECS[spec.codec.upper()]
        if spec.kind == "video":
            stream = container.add_stream(name, rate=30, options=dict(options))
            stream.width = spec.width or 640
            stream.height = spec.height or 480
        else:
            stream = container.add_stream(name, rate=spec.sample_rate)
        stream.time_base = TIME_BASE
        if spec.extradata:
            ctx = stream.codec_context
            ctx.open()
            ctx.extradata = spec.extradata
        return stream
