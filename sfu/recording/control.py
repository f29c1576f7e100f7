"""Recording one room: who is recorded, their files, and the sidecar that lists them.

A room is recorded whole (everyone who publishes, now or later: the admin API's room
endpoint, or ``record_all_rooms``) or participant by participant. Each recorded participant
has one file per group of what it publishes (camera and microphone together, a screen share
on its own; sfu/recording/recorder.py); when what it publishes changes, the files whose
tracks changed end and new ones begin. The sidecar, ``<room>_<start time>.json`` next to the
files, lists every file of the room's recording with its duration; it is rewritten (off the
event loop) whenever a file ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from ..forwarding import Producer
from ..tasks import spawn
from .recorder import FileRecorder, RecordingTotals, file_group, safe_name
from .writer import supported

logger = logging.getLogger(__name__)

TICK_INTERVAL_S = 0.2
FINISH_TIMEOUT_S = 30.0  # longest wait for a writer to empty its queue and close its file


class RecordedParticipant(Protocol):
    """What recording needs of a participant (sfu/room.py ``Participant``)."""

    id: str
    name: str

    def producers(self) -> list[Producer]: ...


class RoomRecording:
    """The recording state of one room; ``on_change`` is called when who is recorded changes
    (the room tells its participants)."""

    def __init__(
        self,
        room: str,
        directory: Path,
        totals: RecordingTotals,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.room = room
        self.directory = directory
        self.totals = totals
        self.on_change = on_change
        self.whole_room = False
        self.wanted: set[str] = set()  # participants recorded one by one
        self.excluded: set[str] = set()  # left out of a whole-room recording
        self.files: dict[tuple[str, str], FileRecorder] = {}  # (participant id, group)
        self.finished: list[FileRecorder] = []
        self.sidecar: Path | None = None
        self._task: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._sidecar_lock = asyncio.Lock()
        self.closed = False

    @property
    def active(self) -> bool:
        return self.whole_room or bool(self.wanted)

    def recorded(self) -> list[str]:
        """The participants with a file being written, sorted."""
        return sorted({pid for pid, _ in self.files})

    def records(self, participant_id: str) -> bool:
        if self.whole_room:
            return participant_id not in self.excluded
        return participant_id in self.wanted

    # -- control ------------------------------------------------------------------------

    def start(self, participants: Iterable[RecordedParticipant], only: set[str] | None = None) -> None:
        """Record the whole room (``only`` None) or these participants as well."""
        if self.closed:
            return
        if only is None:
            self.whole_room = True
            self.excluded.clear()
        else:
            self.wanted |= only
            self.excluded -= only
        if self.sidecar is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            self.sidecar = self.directory / f"{safe_name(self.room)}_{stamp}.json"
        if self._task is None:
            self._task = spawn(self._run(), name=f"recording-{self.room}")
        for participant in participants:
            self.sync(participant, notify=False)
        self.on_change()

    def stop(self, participants: Iterable[RecordedParticipant], only: set[str] | None = None) -> None:
        """Stop recording the whole room and everyone (``only`` None), or these participants."""
        if only is None:
            self.whole_room = False
            self.wanted.clear()
            self.excluded.clear()
        else:
            self.wanted -= only
            if self.whole_room:
                self.excluded |= only
        for participant in participants:
            self.sync(participant, notify=False)
        if not self.active and self._task is not None:
            self._task.cancel()
            self._task = None
        self.on_change()

    def sync(self, participant: RecordedParticipant, notify: bool = True) -> None:
        """Make the participant's files match what it publishes and whether it is recorded."""
        groups: dict[str, list[Producer]] = {}
        if self.records(participant.id) and not self.closed:
            for producer in participant.producers():
                if not producer.closed and supported(producer.codec.name):
                    groups.setdefault(file_group(producer), []).append(producer)
        logger.debug(
            "recording %s: %s publishes %s",
            self.room,
            participant.id,
            [(p.id, p.codec.name, p.source, p.closed) for p in participant.producers()],
        )
        changed = False
        for key, recorder in list(self.files.items()):
            pid, group = key
            if pid == participant.id and groups.get(group) != recorder.producers:
                self._finish(key)
                changed = True
        for group, producers in groups.items():
            key = (participant.id, group)
            if key not in self.files:
                self.files[key] = FileRecorder(
                    self.directory, self.room, participant.id, participant.name, group, producers, self.totals
                )
                logger.info("recording %s to %s", participant.id, self.files[key].path)
                changed = True
        if changed and notify:
            self.on_change()

    def participant_left(self, participant_id: str) -> None:
        for key in [k for k in self.files if k[0] == participant_id]:
            self._finish(key)
        self.wanted.discard(participant_id)
        self.excluded.discard(participant_id)
        if not self.active and self._task is not None:
            self._task.cancel()
            self._task = None
        self.on_change()

    def _finish(self, key: tuple[str, str]) -> None:
        recorder = self.files.pop(key)
        recorder.stop()
        self.finished.append(recorder)
        task = spawn(self._finished(recorder), name=f"recording-finish-{self.room}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finished(self, recorder: FileRecorder) -> None:
        while not recorder.closed:  # the media captured before the stop may still be coming
            recorder.tick(time.monotonic())
            if not recorder.closed:
                await asyncio.sleep(0.05)
        writer = recorder.writer
        if writer is not None:
            done = await asyncio.to_thread(writer.join, FINISH_TIMEOUT_S)
            if not done or writer.error:
                self.totals.files_failed += 1
                logger.error("recording %s did not finish cleanly: %s", recorder.path, writer.error or "timeout")
        self.totals.files_finished += 1
        logger.info("recorded %s (%.1f s)", recorder.path.name, recorder.duration_s())
        await self.write_sidecar()

    async def write_sidecar(self) -> None:
        """Rewrite the sidecar (in a thread: the disk may be slow)."""
        if self.sidecar is None:
            return
        async with self._sidecar_lock:
            body = json.dumps(self.describe(), indent=2)
            await asyncio.to_thread(_write_atomically, self.sidecar, body)

    async def wait_finished(self) -> None:
        """Until every ended file is written and the sidecar lists it."""
        while self._finishing:
            await asyncio.gather(*list(self._finishing), return_exceptions=True)

    async def close(self) -> None:
        """End every file (the room is closing); idempotent."""
        if self.closed:
            return
        self.closed = True
        for key in list(self.files):
            self._finish(key)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.wait_finished()

    async def _run(self) -> None:
        try:
            while True:
                await asyncio.sleep(TICK_INTERVAL_S)
                now_s = time.monotonic()
                for recorder in list(self.files.values()):
                    try:
                        recorder.tick(now_s)
                    except Exception:
                        logger.exception("recording tick failed for %s", recorder.path)
        except asyncio.CancelledError:
            pass

    def describe(self) -> dict[str, Any]:
        """The admin view and the sidecar's content."""
        return {
            "room": self.room,
            "active": self.active,
            "whole_room": self.whole_room,
            "participants": self.recorded(),
            "directory": str(self.directory),
            "sidecar": self.sidecar.name if self.sidecar else None,
            "files": [r.describe() for r in [*self.finished, *self.files.values()]],
        }


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
