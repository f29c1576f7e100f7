"""Room lifecycle: close() removes every participant, tells nobody twice, and is idempotent; a
participant whose socket is lost is kept for the grace, and resumes or leaves."""

import asyncio

import pytest

from sfu import room as room_module
from sfu.config import Config
from sfu.errors import Conflict, NotAuthorised
from sfu.room import Participant, RoomManager
from sfu.signaling.server_messages import (
    Joined,
    JoinInfo,
    ParticipantLeft,
    ParticipantReconnecting,
    ParticipantResumed,
    Resumed,
)

INFO = JoinInfo((), 2.0, 65536)


async def test_close_removes_every_participant_and_the_room_and_is_idempotent():
    manager = RoomManager(Config())
    room = manager.get_or_create("r")
    inbox: dict[str, list] = {"a": [], "b": []}
    a = Participant(room, "a", inbox["a"].append, manager.config)
    b = Participant(room, "b", inbox["b"].append, manager.config)
    room.join(a, INFO)
    room.join(b, INFO)
    await room.close("kicked")
    assert room.closed and not room.participants and "r" not in manager.rooms
    assert a.closed and b.closed
    assert [m for m in inbox["b"] if isinstance(m, ParticipantLeft)] == [ParticipantLeft(a.id, "kicked")]
    await room.close("kicked")  # again: nothing happens
    assert len([m for m in inbox["b"] if isinstance(m, ParticipantLeft)]) == 1
    late = Participant(room, "late", lambda m: None, manager.config)
    with pytest.raises(Conflict) as info:
        room.join(late, INFO)
    assert info.value.code == "room-closed"
    assert manager.get_or_create("r") is not room  # the name is free for a new room
    await manager.close()
    await manager.close()


class FakeSession:
    def __init__(self) -> None:
        self.released = False

    async def disconnect(self, leave_reason, code, message, close_code) -> None:
        pass

    def release(self) -> None:
        self.released = True


async def test_a_lost_participant_is_kept_for_the_default_grace_then_leaves_with_timeout(monkeypatch):
    config = Config()
    assert config.resume_grace_s == 15.0
    manager = RoomManager(config)
    room = manager.get_or_create("r")
    inbox: dict[str, list] = {"a": [], "b": []}
    a = Participant(room, "a", inbox["a"].append, config)
    b = Participant(room, "b", inbox["b"].append, config)
    room.join(a, INFO)
    room.join(b, INFO)
    token = next(m for m in inbox["a"] if isinstance(m, Joined)).resume_token
    assert token
    # The grace timer sleeps the configured 15 s: recorded, and run at once.
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay_s):
        slept.append(delay_s)
        await real_sleep(0)

    assert room.suspend(a)
    assert a.reconnecting and a.id in room.participants
    assert ParticipantReconnecting(a.id) in inbox["b"]
    a.post(ParticipantLeft("x", "left"))  # messages for it are dropped while it is away
    assert ParticipantLeft("x", "left") not in inbox["a"]
    # It comes back with its token within the grace: same participant, a new token.
    assert manager.find_resumable("r", token, a.id) is a
    again: list = []
    session = FakeSession()
    room.resume(a, again.append, session, INFO)
    assert not a.reconnecting and a.session is session
    resumed = next(m for m in again if isinstance(m, Resumed))
    assert resumed.participant_id == a.id and resumed.resume_token not in (None, token)
    assert ParticipantResumed(a.id) in inbox["b"]
    # Lost again, and this time the grace runs out.
    monkeypatch.setattr(room_module.asyncio, "sleep", fake_sleep)
    assert room.suspend(a)
    await real_sleep(0.05)
    assert slept.count(15.0) == 1  # (the room's speaker loop sleeps too)
    assert a.id not in room.participants and a.closed
    assert inbox["b"][-1] == ParticipantLeft(a.id, "timeout")
    with pytest.raises(NotAuthorised) as info:
        manager.find_resumable("r", resumed.resume_token, a.id)
    assert info.value.code == "resume-failed"
    await manager.close()


async def test_without_a_grace_a_lost_participant_is_not_kept():
    manager = RoomManager(Config(resume_grace_s=0))
    room = manager.get_or_create("r")
    inbox: list = []
    a = Participant(room, "a", inbox.append, manager.config)
    room.join(a, INFO)
    assert inbox[0].resume_token is None
    assert not room.suspend(a)
    await manager.close()
