"""HTTP routes besides /ws: the admin API (admin grant) and Prometheus /metrics.

Every request names its token as ``Authorization: Bearer <token>``. Answers are JSON; errors
are ``{"type": "error", "code", "message"}`` with the same codes as the WebSocket
(docs/protocol.md): 401 ``unauthorized`` (no token, a bad or expired one, or one for another
room), 403 ``forbidden`` (no admin grant), 404 ``not-found``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import auth
from ..errors import BadRequest, NotAuthorised, SignalingError
from ..metrics import CONTENT_TYPE, render
from ..room import Participant, Room
from ..state import CONFIG_KEY, METRICS_KEY, ROOMS_KEY, STATS_KEY
from .limits import CLOSE_POLICY_VIOLATION
from .server_messages import Error


def refuse(
    request: web.Request, exc: SignalingError, plain: bool = False, headers: dict[str, str] | None = None
) -> web.Response:
    """The one HTTP error answer, with the error's status; counted. The body is the error's
    wire object as JSON, or with ``plain`` a short ``text/plain`` reason (``<code>: <message>``,
    what WHIP and WHEP clients show)."""
    request.app[STATS_KEY].count_error(exc.code)
    if plain:
        return web.Response(text=f"{exc.code}: {exc.message}\n", status=exc.status, headers=headers)
    return web.json_response(Error(exc).to_wire(), status=exc.status, headers=headers)


def _fail(request: web.Request, exc: SignalingError) -> web.Response:
    if exc.code == "unauthorized":
        request.app[STATS_KEY].auth_failures += 1
    return refuse(request, exc)


def _verified(request: web.Request) -> auth.Claims:
    config = request.app[CONFIG_KEY]
    if not config.auth_enabled:
        raise NotAuthorised("unauthorized", "the admin API needs auth_secret to be configured")
    token = auth.bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise NotAuthorised("unauthorized", "missing 'Authorization: Bearer <token>'")
    return auth.verify(config.auth_secret, token)


def admin_claims(request: web.Request, room: str | None) -> auth.Claims:
    """The claims of the request's token if it grants admin over ``room`` (None: every
    room, i.e. a token for room "*"); SignalingError otherwise."""
    claims = _verified(request)
    if room is None and claims.room != auth.ANY_ROOM:
        raise NotAuthorised("unauthorized", 'this needs a token for every room (room "*")')
    if room is not None and not claims.covers(room):
        raise NotAuthorised("unauthorized", f"the token is not for room {room!r}")
    if not claims.can("admin"):
        raise NotAuthorised("forbidden", "the token does not grant admin")
    return claims


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except SignalingError as exc:
            return _fail(request, exc)

    return wrapped


def describe_participant(participant: Participant) -> dict[str, Any]:
    return {
        "id": participant.id,
        "identity": participant.identity,
        "name": participant.name,
        "grants": sorted(participant.grants),
        "joined_at": participant.joined_at,
        # Its socket is lost and it may resume; how often it resumed, connections renewed.
        "reconnecting": participant.reconnecting,
        "resumes": participant.reconnected,
        "connections_renewed": participant.transport_renewals,
        "tracks": [p.describe(detail=True) for p in participant.producers()],
        # The downlink estimate and what is forwarded to this participant, with reasons.
        "subscriber": participant.subscriber.describe() if participant.subscriber else None,
        # Upstream loss repair of what it publishes (NACKs sent, RTX received).
        "publisher": participant.publisher.describe() if participant.publisher else None,
    }


@_guarded
async def list_rooms(request: web.Request) -> web.Response:
    claims = any_admin_claims(request)
    rooms = [
        {"name": r.name, "participants": len(r.participants), "created_at": r.created_at}
        for r in list(request.app[ROOMS_KEY].rooms.values())
        if claims.covers(r.name)
    ]
    return web.json_response({"rooms": rooms})


def any_admin_claims(request: web.Request) -> auth.Claims:
    """An admin token for any room (it lists only the rooms it covers)."""
    claims = _verified(request)
    if not claims.can("admin"):
        raise NotAuthorised("forbidden", "the token does not grant admin")
    return claims


def _room(request: web.Request) -> Room:
    name = request.match_info["room"]
    admin_claims(request, name)
    room = request.app[ROOMS_KEY].rooms.get(name)
    if room is None or room.closed:
        raise BadRequest("not-found", f"no room {name!r}")
    return room


@_guarded
async def get_room(request: web.Request) -> web.Response:
    room = _room(request)
    return web.json_response(
        {
            "name": room.name,
            "participants": [describe_participant(p) for p in list(room.participants.values())],
            # WHEP players: hidden from the participants, each with the one it plays.
            "viewers": [{**describe_participant(v), "pinned": v.pinned_source} for v in list(room.viewers.values())],
            # The dominant speaker and each participant's recent speech score.
            "active_speaker": room.active_speaker,
            "speaker_scores": room.speakers.describe(),
        }
    )


@_guarded
async def kick_participant(request: web.Request) -> web.Response:
    room = _room(request)
    participant_id = request.match_info["participant"]
    participant = room.participants.get(participant_id)
    if participant is None:
        raise BadRequest("not-found", f"no participant {participant_id!r} in room {room.name!r}")
    await disconnect_participant(participant, "kicked", "kicked", "an administrator removed you from the room")
    request.app[STATS_KEY].kicks += 1
    return web.json_response({"kicked": participant_id, "room": room.name})


@_guarded
async def close_room(request: web.Request) -> web.Response:
    room = _room(request)
    ids = list(room.participants)
    for viewer in list(room.viewers.values()):  # WHEP players: their sessions end with them
        await room.remove_viewer(viewer)
    for participant in list(room.participants.values()):
        await disconnect_participant(participant, "kicked", "room-closed", "an administrator closed the room")
        request.app[STATS_KEY].kicks += 1
    return web.json_response({"closed": room.name, "participants": ids})


def _recording_answer(room: Room) -> web.Response:
    return web.json_response(room.recording.describe())


def _recorded_participant(room: Room, request: web.Request) -> set[str]:
    participant_id = request.match_info["participant"]
    if participant_id not in room.participants:
        raise BadRequest("not-found", f"no participant {participant_id!r} in room {room.name!r}")
    return {participant_id}


@_guarded
async def get_recording(request: web.Request) -> web.Response:
    return _recording_answer(_room(request))


@_guarded
async def start_recording(request: web.Request) -> web.Response:
    room = _room(request)
    room.start_recording()
    return _recording_answer(room)


@_guarded
async def stop_recording(request: web.Request) -> web.Response:
    room = _room(request)
    room.stop_recording()
    await room.recording.wait_finished()
    return _recording_answer(room)


@_guarded
async def start_participant_recording(request: web.Request) -> web.Response:
    room = _room(request)
    room.start_recording(_recorded_participant(room, request))
    return _recording_answer(room)


@_guarded
async def stop_participant_recording(request: web.Request) -> web.Response:
    room = _room(request)
    room.stop_recording(_recorded_participant(room, request))
    await room.recording.wait_finished()
    return _recording_answer(room)


async def disconnect_participant(participant: Participant, leave_reason: str, code: str, message: str) -> None:
    session = participant.session
    if session is not None:
        await session.disconnect(leave_reason, code, message, CLOSE_POLICY_VIOLATION)
    else:  # not attached to a socket (a WHIP publisher): just remove it
        await participant.room.leave(participant, leave_reason)


async def metrics(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    if config.auth_enabled and not config.metrics_public:
        try:
            admin_claims(request, None)
        except SignalingError as exc:
            return _fail(request, exc)
    body = render(request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def add_routes(app: web.Application, metrics_enabled: bool) -> None:
    app.router.add_get("/admin/rooms", list_rooms)
    app.router.add_get("/admin/rooms/{room}", get_room)
    app.router.add_delete("/admin/rooms/{room}", close_room)
    app.router.add_delete("/admin/rooms/{room}/participants/{participant}", kick_participant)
    app.router.add_get("/admin/rooms/{room}/recording", get_recording)
    app.router.add_post("/admin/rooms/{room}/recording", start_recording)
    app.router.add_delete("/admin/rooms/{room}/recording", stop_recording)
    app.router.add_post("/admin/rooms/{room}/participants/{participant}/recording", start_participant_recording)
    app.router.add_delete("/admin/rooms/{room}/participants/{participant}/recording", stop_participant_recording)
    if metrics_enabled:
        app.router.add_get("/metrics", metrics)
