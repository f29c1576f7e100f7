"""Room lifecycle: close() removes every participant, tells nobody twice, and is idempotent."""

import pytest

from sfu.config import Config
from sfu.errors import Conflict
from sfu.room import Participant, RoomManager
from sfu.signaling.server_messages import JoinInfo, ParticipantLeft

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
