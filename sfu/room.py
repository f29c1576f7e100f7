"""Rooms and participants: membership, who consumes what, and the messages about it.

Besides its participants a room has viewers: players that receive one source at a time (WHEP,
sfu/signaling/whip.py). A viewer is a subscriber-only Participant kept apart from the
participant list: nobody is told it joined or left, it is not in ``joined``, and it follows
the active speaker (or the one participant it was pinned to) by switching what its answered
connection forwards, never by renegotiating. Viewers count towards ``room_capacity``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Protocol

from .config import Config
from .data_relay import DataReceiver, DataRelay
from .errors import SignalingError
from .events import MediaEvent
from .forwarding import Producer
from .recording import RecordingTotals, RoomRecording
from .resume import ResumeTokens
from .rtc.publish import PublishPeer
from .rtc.subscribe import SubscribePeer
from .signaling.server_messages import (
    ActiveSpeaker,
    ChatRelayed,
    Joined,
    JoinInfo,
    MuteChanged,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantReconnecting,
    ParticipantResumed,
    PublishAnswer,
    Recording,
    RenewPublish,
    Resumed,
    ServerMessage,
    TrackInfo,
    TrackPublished,
    TrackUnpublished,
    from_event,
)
from .speaker import INTERVAL_MS, SpeakerDetector
from .stats import DataStats, RetiredTotals
from .tasks import spawn

logger = logging.getLogger(__name__)

PostFn = Callable[[ServerMessage], None]


class SessionHandle(Protocol):
    """The signaling session that owns a participant (sfu/signaling/ws.py ``Session``)."""

    async def disconnect(self, leave_reason: str, code: str | None, message: str, close_code: int) -> None: ...

    def release(self) -> None:
        """Another socket resumed the participant: this one lets go of it and closes."""


_counter = itertools.count(1)


def new_participant_id(prefix: str = "") -> str:
    """Unique in this process; ``prefix`` (a worker's, in a cluster) makes it unique across
    the processes of a deployment."""
    return f"{prefix}p{next(_counter)}{secrets.token_hex(3)}"


class Participant:
    def __init__(self, room: Room, name: str, post: PostFn, config: Config) -> None:
        self.id = new_participant_id(room.id_prefix)
        self.name = name
        self.room = room
        self._post = post
        self._config = config
        self.publisher: PublishPeer | None = None
        self.subscriber: SubscribePeer | None = None
        self.closed = False
        self.joined_at = time.time()
        # Its socket was lost and it may come back with `resume` (Room.suspend): it keeps its
        # tracks and consumers, and messages for it are dropped until then.
        self.reconnecting = False
        self.reconnected = 0  # times it resumed
        self.transport_renewals = 0  # connections renewed (by either side) while its socket was up
        # Who joined and what they may do (from the access token; open rooms grant
        # publish and subscribe). The signaling session that owns this participant.
        self.identity = ""
        self.grants: frozenset[str] = frozenset({"publish", "subscribe"})
        self.session: SessionHandle | None = None
        # A viewer (a WHEP player): hidden from the room, plays one source; pinned to one
        # participant (id), or following the active speaker (None).
        self.viewer = False
        self.pinned_source: str | None = None
        # Signalled over HTTP (WHIP, WHEP): nothing can be said to it after its answer, so no
        # dynacast (it could not be told which layers to send); it answers as the DTLS server.
        self.over_http = False
        # Over HTTP nobody can be asked for a new connection: a lost one ends the session
        # (sfu/media_sessions.py sets this).
        self.on_transport_failed: Callable[[Participant], None] | None = None

    def can(self, grant: str) -> bool:
        return grant in self.grants

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(
            self.id, self.name, tuple(TrackInfo.of(p) for p in self.producers()), reconnecting=self.reconnecting
        )

    def describe(self) -> dict[str, Any]:
        """The wire's participant object."""
        return self.info().to_wire()

    def producers(self) -> list[Producer]:
        return list(self.publisher.producers.values()) if self.publisher else []

    def post(self, msg: ServerMessage) -> None:
        """Queue a message for this participant; messages keep their order. While it is
        reconnecting they are dropped: ``resumed`` tells it the room as it is then."""
        if not self.closed and not self.reconnecting:
            self._post(msg)

    def attach(self, post: PostFn, session: SessionHandle) -> None:
        """The socket that speaks for this participant from now on."""
        self._post = post
        self.session = session

    async def media_event(self, event: MediaEvent) -> None:
        """The peers' event sink: the message that tells the client about a media event."""
        self.post(from_event(event))

    def _publish_lost(self) -> None:
        """aiortc gave the publish connection up (failed, or closed by the other end): the
        client is asked for a new one (its tracks and their consumers stay)."""
        if self.closed or self.publisher is None:
            return
        if self.on_transport_failed is not None:
            self.on_transport_failed(self)
            return
        logger.info("participant %s: publish connection %s", self.id, self.publisher.connection_state)
        if not self.reconnecting:  # else the client renews it when it resumes
            self.post(RenewPublish())  # (counted when its restart offer comes)

    def _subscribe_lost(self) -> None:
        """The subscribe connection is gone: a new one is offered (restart) at once, or when
        the participant resumes."""
        if self.closed or self.subscriber is None:
            return
        if self.on_transport_failed is not None:
            self.on_transport_failed(self)
            return
        logger.info("participant %s: subscribe connection %s", self.id, self.subscriber.connection_state)
        if not self.reconnecting:
            self.transport_renewals += 1
            spawn(self.subscriber.renew(), name=f"renew-subscriber-{self.id}")

    async def renew_subscriber(self) -> None:
        """The client asks for a new subscribe connection (its own failed, or it resumed)."""
        if self.subscriber is None:
            raise SignalingError("wrong-state", "no subscribe connection yet")
        self.transport_renewals += 1
        await self.subscriber.renew()

    # -- publishing -----------------------------------------------------------------------

    async def handle_publish_offer(self, sdp: str, sources: dict[str, str], restart: bool = False) -> str:
        """Apply a publish offer; the answer is posted (``answer``) and returned. ``restart``:
        the first offer of the client's new connection for the tracks it publishes (they stay,
        fed from the new connection)."""
        if restart and self.publisher is not None:
            self.transport_renewals += 1
            self.publisher.renew()
        first = self.publisher is None
        if self.publisher is None:
            self.publisher = PublishPeer(
                self.id,
                list(self._config.ice_servers),
                self._publish_lost,
                self._config.publisher_bitrate_bps,
                events=self.media_event,
                dynacast=self._config.dynacast and not self.over_http,
                transport_cc=self._config.transport_cc,
                max_ssrcs=self._config.max_ssrcs_per_transport,
                max_tracks=self._config.max_tracks_per_publisher,
                max_m_sections=self._config.max_m_sections_per_sdp,
                negotiation_timeout_s=self._config.negotiation_timeout_s,
                max_rtcp_bps=self._config.max_rtcp_bps,
                on_data=self._on_data,
                on_data_open=self._on_data_open,
            )
            self.publisher.dtls_server = self.over_http
        try:
            answer, added, removed = await self.publisher.handle_offer(sdp, sources)
        except SignalingError as exc:
            if first:  # nothing was published: forget the half-made connection
                publisher, self.publisher = self.publisher, None
                await publisher.close()
            elif exc.code == "negotiation-timeout" or self.publisher.pc.signalingState != "stable":
                # The connection is in an unknown state: drop it and everything it published.
                await self._drop_publisher()
            raise
        self.post(PublishAnswer(answer))
        self.room.producers_changed(self, added, removed)
        return answer

    async def _drop_publisher(self) -> None:
        publisher, self.publisher = self.publisher, None
        if publisher is None:
            return
        removed = list(publisher.producers.values())
        await publisher.close()
        self.room.producers_changed(self, [], removed)

    # -- data channels (relayed by the room) ------------------------------------------------

    def _on_data(self, reliable: bool, message: bytes | str) -> None:
        if not self.closed:
            self.room.relay_data(self, reliable, message)

    def _on_data_open(self) -> None:
        if not self.closed:
            self.room.data_opened(self)

    @property
    def sends_data(self) -> bool:
        """Whether this participant opened a data channel (the others then need a subscribe
        connection to receive on, media or not)."""
        return self.publisher is not None and self.publisher.data.opened

    def set_muted(self, track_id: str, muted: bool) -> Producer:
        for producer in self.producers():
            if producer.id == track_id:
                producer.set_muted(muted, time.monotonic())
                return producer
        raise SignalingError("unknown-track", f"you publish no track {track_id!r}")

    # -- subscribing ----------------------------------------------------------------------

    def ensure_subscriber(self) -> SubscribePeer:
        if self.subscriber is None:
            self.subscriber = SubscribePeer(
                self.id,
                list(self._config.ice_servers),
                self._subscribe_lost,
                self.media_event,
                transport_cc=self._config.transport_cc,
                max_m_sections=self._config.max_m_sections_per_sdp,
                negotiation_timeout_s=self._config.negotiation_timeout_s,
                max_rtcp_bps=self._config.max_rtcp_bps,
            )
            self.subscriber.active_speaker = self.room.active_speaker
        return self.subscriber

    def speech_score(self, interval_ms: int) -> float | None:
        """This interval's speech score from the audio levels of our microphone (None: no audio)."""
        if self.publisher is None:
            return None
        score = None
        for producer in self.publisher.producers.values():
            meter = self.publisher.audio_levels.get(producer.id)
            if meter is not None:
                score = max(score or 0.0, meter.take(interval_ms, muted=producer.muted))
        return score

    def renegotiate(self) -> None:
        if self.subscriber is not None and not self.closed:
            spawn(self.subscriber.negotiate(), name=f"negotiate-{self.id}")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.publisher is not None:
            await self.publisher.close()
        if self.subscriber is not None:
            await self.subscriber.close()


class Room:
    def __init__(
        self,
        name: str,
        capacity: int,
        on_empty: Callable[[Room], None],
        retired: RetiredTotals | None = None,
        id_prefix: str = "",
        recording: RoomRecording | None = None,
        tokens: ResumeTokens | None = None,
    ) -> None:
        self.name = name
        self.id_prefix = id_prefix  # of its participants' ids
        self.capacity = capacity
        self.participants: dict[str, Participant] = {}
        self.viewers: dict[str, Participant] = {}  # hidden, subscribe-only (WHEP players)
        self._on_empty = on_empty
        self.closed = False
        self.created_at = time.time()
        self.retired = retired if retired is not None else RetiredTotals()
        self.speakers = SpeakerDetector()
        self.active_speaker: str | None = None  # participant id
        self._speaker_task: asyncio.Task[None] | None = None
        # Resume tokens (shared by the server's rooms); grace 0: a lost participant leaves at once.
        self.tokens = tokens if tokens is not None else ResumeTokens(0.0)
        self._grace_tasks: dict[str, asyncio.Task[None]] = {}  # participant id -> its grace timer
        self.data = DataRelay(65536, 50.0, 100)  # the RoomManager's has the configured limits
        self.recording = recording or RoomRecording(name, Path("recordings"), RecordingTotals())
        self.recording.on_change = self._recording_changed

    def use_recording(self, recording: RoomRecording) -> None:
        """The RoomManager's recorder (its directory and totals) in place of the default."""
        self.recording = recording
        recording.on_change = self._recording_changed

    def local_participants(self) -> list[Participant]:
        """The participants whose media arrives on this process (all of them, unless the room
        spans workers)."""
        return list(self.participants.values())

    def _recording_changed(self) -> None:
        self._broadcast(self.recording_state())

    def recording_state(self) -> Recording:
        return Recording(self.recording.active, tuple(self.recording.recorded()))

    def start_recording(self, participant_ids: set[str] | None = None) -> None:
        """Record the whole room (None) or these participants too (sfu/recording/)."""
        self.recording.start(self.local_participants(), participant_ids)

    def stop_recording(self, participant_ids: set[str] | None = None) -> None:
        self.recording.stop(self.local_participants(), participant_ids)

    def check_capacity(self) -> None:
        if len(self.participants) + len(self.viewers) >= self.capacity:
            raise SignalingError("room-full", f"room {self.name!r} is full ({self.capacity} participants)")

    def join(self, participant: Participant, info: JoinInfo) -> None:
        if self.closed:
            raise SignalingError("room-closed", f"room {self.name!r} is closed")
        self.check_capacity()
        others = list(self.participants.values())
        self.participants[participant.id] = participant
        token = self.tokens.issue(self.name, participant.id) if self.tokens.grace_s > 0 else None
        participant.post(Joined(participant.id, self.name, tuple(p.info() for p in others), info, token))
        self._broadcast(ParticipantJoined(participant.info()), exclude=participant)
        if self.active_speaker is not None:
            participant.post(ActiveSpeaker(self.active_speaker))
        if self.recording.active:
            participant.post(self.recording_state())
        if self._speaker_task is None:
            self._speaker_task = spawn(self._detect_speakers(), name=f"speakers-{self.name}")
        # Consume everything already published.
        producers = [p for other in others for p in other.producers()]
        data = any(other.sends_data for other in others)
        if (producers or data) and participant.can("subscribe"):
            subscriber = participant.ensure_subscriber()
            for producer in producers:
                subscriber.consume(producer)
            participant.renegotiate()

    def producers_changed(self, owner: Participant, added: list[Producer], removed: list[Producer]) -> None:
        self.retired.retire_producers(removed)
        for producer in removed:
            self._broadcast(TrackUnpublished(owner.id, producer.id), exclude=owner)
        for producer in added:
            self._broadcast(TrackPublished(owner.id, TrackInfo.of(producer)), exclude=owner)
        if not added and not removed:
            return
        if self.recording.active and owner in self.local_participants():  # each worker its own
            self.recording.sync(owner)
        self._refresh_viewers()
        for other in self.participants.values():
            if other is owner or not other.can("subscribe"):
                continue
            if added:
                subscriber = other.ensure_subscriber()
                for producer in added:
                    subscriber.consume(producer)
            if other.subscriber is not None:
                for producer in removed:
                    other.subscriber.unconsume(producer)
            other.renegotiate()

    def has_track(self, track_id: str, exclude: Participant | None = None) -> bool:
        return any(
            producer.id == track_id
            for p in self.participants.values()
            if p is not exclude
            for producer in p.producers()
        )

    def broadcast_mute(self, owner: Participant, producer: Producer) -> None:
        self._broadcast(MuteChanged(owner.id, producer.id, producer.muted), exclude=owner)

    def relay_data(self, sender: Participant, reliable: bool, message: bytes | str) -> None:
        """One data channel message of ``sender`` to the others (sfu/data_relay.py)."""
        receivers: dict[str, DataReceiver | None] = {
            p.id: (p.subscriber.data if p.subscriber is not None else None)
            for p in self.participants.values()
            if p is not sender and p.can("subscribe")
        }
        self.data.relay(sender.id, reliable, message, receivers, sender.post, time.monotonic())

    def data_opened(self, owner: Participant) -> None:
        """``owner`` opened its first data channel: everyone else gets a subscribe connection."""
        for other in self.participants.values():
            if other is not owner and other.subscriber is None and other.can("subscribe"):
                other.ensure_subscriber()
                other.renegotiate()

    def chat(self, sender: Participant, text: str) -> None:
        self._broadcast(ChatRelayed(sender.id, sender.name, text, int(time.time() * 1000)))

    # -- lost and resumed ---------------------------------------------------------------------

    def suspend(self, participant: Participant) -> bool:
        """The participant's socket is lost: keep it for the grace (tracks and consumers stay,
        the others are told it is reconnecting), then it leaves with reason ``timeout``.
        False (nothing done) when the server keeps no lost sessions or it is not here."""
        grace_s = self.tokens.grace_s
        if grace_s <= 0 or self.participants.get(participant.id) is not participant or participant.closed:
            return False
        participant.reconnecting = True
        participant.session = None
        self.tokens.lost(participant.id, time.monotonic())
        old = self._grace_tasks.pop(participant.id, None)
        if old is not None:
            old.cancel()
        self._grace_tasks[participant.id] = spawn(self._grace(participant, grace_s), name=f"grace-{participant.id}")
        self._broadcast(ParticipantReconnecting(participant.id), exclude=participant)
        logger.info("participant %s lost its socket: kept %g s for a resume", participant.id, grace_s)
        return True

    async def _grace(self, participant: Participant, grace_s: float) -> None:
        await asyncio.sleep(grace_s)
        self._grace_tasks.pop(participant.id, None)
        if participant.reconnecting:
            logger.info("participant %s did not resume within %g s", participant.id, grace_s)
            await self.leave(participant, "timeout")

    def resume(self, participant: Participant, post: PostFn, session: SessionHandle, info: JoinInfo) -> None:
        """A new socket takes the participant back: same id, tracks, consumers, preferences
        and identity. It is told the room as it is now (``resumed``, with a new token), the
        subscribe offer it may have missed, and what dynacast asks of its videos."""
        old = participant.session
        if old is not None and old is not session:
            old.release()  # the previous socket was still open (the client gave it up first)
        task = self._grace_tasks.pop(participant.id, None)
        if task is not None:
            task.cancel()
        was_reconnecting = participant.reconnecting
        participant.reconnecting = False
        participant.reconnected += 1
        participant.attach(post, session)
        others = tuple(p.info() for p in self.participants.values() if p is not participant)
        token = self.tokens.issue(self.name, participant.id)
        participant.post(Resumed(participant.id, self.name, others, info, token))
        if self.active_speaker is not None:
            participant.post(ActiveSpeaker(self.active_speaker))
        subscriber = participant.subscriber
        if subscriber is not None and subscriber.offer_outstanding and subscriber.last_offer is not None:
            participant.post(from_event(subscriber.last_offer))
        if participant.publisher is not None:
            participant.publisher.repeat_layer_requests()
        if was_reconnecting:
            self._broadcast(ParticipantResumed(participant.id), exclude=participant)

    async def leave(self, participant: Participant, reason: str) -> None:
        if self.participants.get(participant.id) is not participant:
            return
        del self.participants[participant.id]
        self.data.forget(participant.id)
        self.tokens.revoke(participant.id)
        task = self._grace_tasks.pop(participant.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        removed = participant.producers()
        self.retired.retire_participant(participant)
        if self.recording.files or self.recording.wanted:
            self.recording.participant_left(participant.id)
        # The others are told first: closing the connections of a participant whose network is
        # gone may take a while (bounded by negotiation_timeout_s).
        for other in list(self.participants.values()):
            if other.subscriber is not None and removed:
                for producer in removed:
                    other.subscriber.unconsume(producer)
                other.renegotiate()
        self._broadcast(ParticipantLeft(participant.id, reason))
        self._refresh_viewers()
        await participant.close()
        if not self.participants and not self.viewers:
            self._closed_now()

    # -- viewers (WHEP players) -------------------------------------------------------------

    def add_viewer(self, viewer: Participant) -> None:
        """Admit a viewer (hidden from the participants; counted towards the capacity)."""
        if self.closed:
            raise SignalingError("room-closed", f"room {self.name!r} is closed")
        self.check_capacity()
        viewer.viewer = True
        self.viewers[viewer.id] = viewer

    async def remove_viewer(self, viewer: Participant) -> None:
        if self.viewers.get(viewer.id) is not viewer:
            return
        del self.viewers[viewer.id]
        self.retired.retire_participant(viewer)
        await viewer.close()
        if not self.participants and not self.viewers:
            self._closed_now()

    def find_participant(self, key: str) -> Participant | None:
        """A participant by id, or else by name if exactly one has it."""
        found = self.participants.get(key)
        if found is not None:
            return found
        named = [p for p in self.participants.values() if p.name == key]
        return named[0] if len(named) == 1 else None

    def viewer_source(self, viewer: Participant) -> Participant | None:
        """Whom a viewer plays: its pinned participant; else the active speaker if it
        publishes; else the participant that has been publishing longest."""
        if viewer.pinned_source is not None:
            return self.participants.get(viewer.pinned_source)
        speaker = self.participants.get(self.active_speaker) if self.active_speaker else None
        if speaker is not None and speaker.producers():
            return speaker
        return next((p for p in self.participants.values() if p.producers()), None)

    def follow(self, viewer: Participant) -> None:
        """Point a viewer's audio and video at its source's tracks (video: the camera before
        a screen share). A kind the source does not publish, or publishes in a codec the
        viewer's connection did not negotiate, keeps what it plays while that lasts."""
        subscriber = viewer.subscriber
        if subscriber is None or viewer.closed:
            return
        source = self.viewer_source(viewer)
        producers = source.producers() if source is not None else []
        for kind in ("audio", "video"):
            candidates = [p for p in producers if p.kind == kind and subscriber.playable(p)]
            candidates.sort(key=lambda p: p.source != ("microphone" if kind == "audio" else "camera"))
            current = subscriber.playing(kind)
            if candidates:
                subscriber.play(kind, candidates[0])
            elif viewer.pinned_source is not None or current is None or current.closed:
                subscriber.play(kind, None)

    def _refresh_viewers(self) -> None:
        for viewer in list(self.viewers.values()):
            try:
                self.follow(viewer)
            except Exception:
                logger.exception("room %s: viewer %s could not follow its source", self.name, viewer.id)

    def _closed_now(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._speaker_task is not None:
            self._speaker_task.cancel()
            self._speaker_task = None
        if not self.recording.closed:
            spawn(self.recording.close(), name=f"recording-close-{self.name}")
        self._on_empty(self)

    async def close(self, reason: str = "left") -> None:
        """Remove every participant and viewer (closing their peers) and the room; idempotent."""
        for viewer in list(self.viewers.values()):
            await self.remove_viewer(viewer)
        for participant in list(self.participants.values()):
            await self.leave(participant, reason)
        self._closed_now()
        await self.recording.close()

    async def _detect_speakers(self) -> None:
        """Every INTERVAL_MS: the dominant speaker from everyone's audio levels."""
        last = time.monotonic()
        while not self.closed:
            await asyncio.sleep(INTERVAL_MS / 1000)
            now = time.monotonic()
            try:
                self.update_speaker(now * 1000, int((now - last) * 1000))
            except Exception:
                logger.exception("speaker detection failed in room %s", self.name)
            last = now

    def update_speaker(self, now_ms: float, interval_ms: int = INTERVAL_MS) -> None:
        scores: dict[Hashable, float] = {}
        for p in self.participants.values():
            score = p.speech_score(interval_ms)
            if score is not None:
                scores[p.id] = score
        speaker = self.speakers.update(now_ms, scores)
        if speaker == self.active_speaker:
            return
        logger.info("room %s: active speaker %s -> %s", self.name, self.active_speaker, speaker)
        self.active_speaker = speaker if isinstance(speaker, str) else None
        for p in [*self.participants.values(), *self.viewers.values()]:
            if p.subscriber is not None:
                p.subscriber.active_speaker = self.active_speaker
        self._broadcast(ActiveSpeaker(self.active_speaker))
        self._refresh_viewers()

    def _broadcast(self, msg: ServerMessage, exclude: Participant | None = None) -> None:
        for p in list(self.participants.values()):
            if p is not exclude:
                p.post(msg)


class RoomManager:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.rooms: dict[str, Room] = {}
        self.retired = RetiredTotals()
        self.data_stats = DataStats()  # data channel messages of every room, for /metrics
        self.recording_totals = RecordingTotals()
        self.draining = False  # shutting down: no new joins
        self.id_prefix = ""  # of participant ids: a worker's own in a cluster (unique across it)
        # Makes the rooms: a worker's may span workers (sfu/cluster/span.py).
        self.room_factory: Callable[[str, int, Callable[[Room], None], RetiredTotals, str], Room] = Room
        self.tokens = ResumeTokens(config.resume_grace_s)

    def get_or_create(self, name: str) -> Room:
        if self.draining:
            raise SignalingError("shutting-down", "the server is shutting down; try again in a moment")
        room = self.rooms.get(name)
        if room is None or room.closed:
            room = self.room_factory(name, self.config.room_capacity, self._remove, self.retired, self.id_prefix)
            room.tokens = self.tokens
            self.rooms[name] = room
            room.data = self._data_relay()
            room.use_recording(RoomRecording(name, self.config.recording_dir, self.recording_totals))
            if self.config.record_all_rooms:
                room.start_recording()
        return room

    def _data_relay(self) -> DataRelay:
        def schedule(delay_s: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
            return asyncio.get_running_loop().call_later(delay_s, callback)

        c = self.config
        return DataRelay(
            c.max_data_message_bytes, c.data_messages_per_s, c.data_message_burst, self.data_stats, schedule
        )

    def find_resumable(self, room_name: str, token: str, participant_id: str | None) -> Participant:
        """The participant a resume token gives back (the token is spent), or NotAuthorised
        ``resume-failed``."""
        pid = self.tokens.take(token, room_name, time.monotonic(), participant_id)
        room = self.rooms.get(room_name)
        participant = room.participants.get(pid) if room is not None and not room.closed else None
        if participant is None or participant.closed:
            raise SignalingError("resume-failed", "the session is over (it left or timed out)")
        return participant

    def discard_if_empty(self, room: Room) -> None:
        if not room.participants and not room.viewers:
            room._closed_now()
            self._remove(room)

    def _remove(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    async def close(self) -> None:
        """Close every room (and so every participant); idempotent."""
        for room in list(self.rooms.values()):
            await room.close("left")
