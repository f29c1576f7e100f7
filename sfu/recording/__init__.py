"""Recording without transcoding: each publisher's media muxed live into files.

``control.py`` (RoomRecording: who is recorded in a room, the sidecar), ``recorder.py``
(FileRecorder: one file's consumers, frames and times), ``writer.py`` (MuxWriter: PyAV in a
thread behind a bounded queue). Frames are put together by sfu/media/depacketize.py.
"""

from .control import RoomRecording
from .recorder import RecordingTotals

__all__ = ["RecordingTotals", "RoomRecording"]
