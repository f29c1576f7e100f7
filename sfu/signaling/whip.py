"""WHIP (RFC 9725) ingest and WHEP playback over plain HTTP, beside the WebSocket.

    POST    /whip/{room}                          publish (an SDP offer that sends)
    POST    /whep/{room}[/{participant}]          play the active speaker, or one participant
    PATCH   /{whip,whep}/{room}/sessions/{id}     trickle ICE (application/trickle-ice-sdpfrag)
    DELETE  /{whip,whep}/{room}/sessions/{id}     end the session
    OPTIONS any of them                           CORS preflight, Accept-Post / Accept-Patch

Tokens are those of the WebSocket (``Authorization: Bearer``): WHIP needs the publish grant,
WHEP the subscribe grant; open rooms need none. Every error is a ``refuse`` of the error
hierarchy with a one-line ``text/plain`` reason. docs/protocol.md (WHIP and WHEP) has the
statuses.
"""

from __future__ import annotations

import logging

from aiohttp import web
from multidict import CIMultiDict

from .. import auth, turn
from ..errors import BadRequest, NotAuthorised, SignalingError
from ..media_sessions import Kind, MediaSession
from ..room import Participant, Room
from ..rtc.sdp import (
    check_direction,
    check_publish_offer,
    ice_credentials,
    live_bundle_only,
    parse_sdp,
    parse_sdp_fragment,
)
from ..state import CONFIG_KEY, MEDIA_SESSIONS_KEY, ROOMS_KEY, STATS_KEY
from .http import refuse
from .messages import ROOM_RE
from .server_messages import JoinInfo, ServerMessage
from .whip_wire import (
    ENDPOINT_METHODS,
    RESOURCE_METHODS,
    SDP_FRAGMENT_TYPE,
    SDP_TYPE,
    check_content_type,
    check_if_match,
    cors_headers,
    ice_server_links,
    options_headers,
)

logger = logging.getLogger(__name__)

MAX_NAME_CHARS = 64


def _discard(msg: ServerMessage) -> None:
    """What is said to a participant without a socket: nobody hears it."""


def _error(request: web.Request, exc: SignalingError, methods: str) -> web.Response:
    headers = cors_headers(methods)
    if exc.code == "unauthorized":
        request.app[STATS_KEY].auth_failures += 1
        headers["WWW-Authenticate"] = 'Bearer realm="sfu"'
    if exc.status == 405:
        headers["Allow"] = methods
    return refuse(request, exc, plain=True, headers=headers)


def _room_name(request: web.Request) -> str:
    """The path's room, as the WebSocket's ``join`` accepts it (400 otherwise)."""
    room = request.match_info["room"]
    if not ROOM_RE.fullmatch(room):
        raise BadRequest("bad-message", "a room name has 1-64 of A-Z a-z 0-9 _ - . only")
    return room


def _claims(request: web.Request, room: str) -> tuple[auth.Claims, bool]:
    """The request's claims for ``room`` and whether a token gave them (401 otherwise)."""
    config = request.app[CONFIG_KEY]
    header = request.headers.get("Authorization")
    token = auth.bearer_token(header)
    if token is None and header:
        raise NotAuthorised("unauthorized", "Authorization must be 'Bearer <token>'")
    if token is None:
        if config.open_rooms:
            return auth.open_claims(), False
        raise NotAuthorised("unauthorized", "this server needs an access token (Authorization: Bearer)")
    if not config.auth_enabled:
        raise NotAuthorised("unauthorized", "this server does not use tokens (no auth_secret)")
    claims = auth.verify(config.auth_secret, token)
    if not claims.covers(room):
        raise NotAuthorised("unauthorized", f"the token is not for room {room!r}")
    return claims, True


async def _body(request: web.Request, content_type: str) -> str:
    check_content_type(request.headers.get("Content-Type", ""), content_type)
    limit = request.app[CONFIG_KEY].max_message_bytes
    data = await request.content.read(limit + 1)
    if len(data) > limit:
        raise BadRequest("too-large", f"the body exceeds max_message_bytes ({limit})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("bad-sdp", "the body is not UTF-8") from None


def _name(request: web.Request, claims: auth.Claims, default: str) -> str:
    name = claims.name or request.query.get("name", "").strip() or default
    return name[:MAX_NAME_CHARS]


def _created(request: web.Request, session: MediaSession, answer: str) -> web.Response:
    config = request.app[CONFIG_KEY]
    identity = session.participant.identity
    headers: CIMultiDict[str] = CIMultiDict(cors_headers(ENDPOINT_METHODS))
    headers["Location"] = session.location
    headers["ETag"] = session.etag
    headers["Accept-Patch"] = SDP_FRAGMENT_TYPE
    headers["Content-Type"] = SDP_TYPE
    for link in ice_server_links(turn.ice_servers_for(config, identity)):
        headers.add("Link", link)
    return web.Response(status=201, body=answer.encode("utf-8"), headers=headers)


# -- POST: a new session ------------------------------------------------------------------


async def whip_post(request: web.Request) -> web.StreamResponse:
    try:
        return await _whip_post(request)
    except SignalingError as exc:
        return _error(request, exc, ENDPOINT_METHODS)


async def _whip_post(request: web.Request) -> web.Response:
    app = request.app
    config, rooms, sessions = app[CONFIG_KEY], app[ROOMS_KEY], app[MEDIA_SESSIONS_KEY]
    room_name = _room_name(request)
    claims, with_token = _claims(request, room_name)
    if not claims.can("publish"):
        raise NotAuthorised("forbidden", "the token does not grant publish")
    sdp = live_bundle_only(await _body(request, SDP_TYPE))
    # Checked before the room sees a participant: a bad offer is no join and leave.
    offer = parse_sdp(sdp)
    check_direction(offer, sending=True)
    check_publish_offer(offer, [], config.max_tracks_per_publisher, config.max_m_sections_per_sdp)
    room = rooms.get_or_create(room_name)
    participant = Participant(room, _name(request, claims, "whip"), _discard, config)
    participant.identity = claims.identity or participant.id
    participant.over_http = True
    # It publishes and never receives: without the grant nothing is ever consumed for it.
    participant.grants = claims.grants - {"subscribe"}
    info = JoinInfo(
        tuple(turn.ice_servers_for(config, participant.identity)),
        config.heartbeat_interval_s,
        config.max_message_bytes,
    )
    try:
        room.join(participant, info)
    finally:
        if not room.participants:
            rooms.discard_if_empty(room)
    ufrag, pwd = ice_credentials(offer)
    session = MediaSession("whip", room, participant, ufrag, pwd, claims.identity if with_token else None)
    try:
        answer = await participant.handle_publish_offer(sdp, {})
    except BaseException:
        await room.leave(participant, "disconnected")
        raise
    sessions.add(session, config.join_timeout_s)
    app[STATS_KEY].joins += 1
    if session.identity is not None:
        # The same token publishing again (OBS reconnecting after a network change): the new
        # session replaces the old one, which would otherwise linger until its ICE times out.
        for old in sessions.sessions():
            if old is not session and old.kind == "whip" and old.room is room and old.identity == session.identity:
                logger.info("whip session %s replaced by %s (same identity)", old.id, session.id)
                await sessions.end(old, "left")
    logger.info("whip session %s: %s publishes in room %s", session.id, participant.id, room.name)
    return _created(request, session, answer)


async def whep_post(request: web.Request) -> web.StreamResponse:
    try:
        return await _whep_post(request)
    except SignalingError as exc:
        return _error(request, exc, ENDPOINT_METHODS)


async def _whep_post(request: web.Request) -> web.Response:
    app = request.app
    config, rooms, sessions = app[CONFIG_KEY], app[ROOMS_KEY], app[MEDIA_SESSIONS_KEY]
    room_name = _room_name(request)
    claims, with_token = _claims(request, room_name)
    if not claims.can("subscribe"):
        raise NotAuthorised("forbidden", "the token does not grant subscribe")
    sdp = live_bundle_only(await _body(request, SDP_TYPE))
    offer = parse_sdp(sdp)
    check_direction(offer, sending=False)
    if rooms.draining:
        raise SignalingError("shutting-down", "the server is shutting down; try again in a moment")
    room: Room | None = rooms.rooms.get(room_name)
    if room is None or room.closed:
        raise BadRequest("not-found", f"no room {room_name!r}")
    pinned = request.match_info.get("participant")
    source = None
    if pinned is not None:
        source = room.find_participant(pinned)
        if source is None:
            raise BadRequest("not-found", f"no participant {pinned!r} in room {room_name!r}")
    viewer = Participant(room, _name(request, claims, "whep"), _discard, config)
    viewer.identity = claims.identity or viewer.id
    viewer.over_http = True
    viewer.grants = claims.grants & {"subscribe"}
    viewer.pinned_source = source.id if source is not None else None
    room.add_viewer(viewer)
    ufrag, pwd = ice_credentials(offer)
    session = MediaSession("whep", room, viewer, ufrag, pwd, claims.identity if with_token else None)
    try:
        subscriber = viewer.ensure_subscriber()
        first = room.viewer_source(viewer)
        video = next((p for p in first.producers() if p.kind == "video"), None) if first else None
        answer = await subscriber.answer(sdp, video.codec if video is not None else None)
        if video is not None and subscriber.has_slot("video") and not subscriber.playable(video):
            # Better refused than a player that shows nothing: the SFU never transcodes.
            raise BadRequest("bad-sdp", f"the stream's video is {video.codec.name}; the offer has no such codec")
        room.follow(viewer)
    except BaseException:
        await room.remove_viewer(viewer)
        raise
    sessions.add(session, config.join_timeout_s)
    logger.info("whep session %s: %s plays room %s", session.id, viewer.id, room.name)
    return _created(request, session, answer)


# -- the session resource -----------------------------------------------------------------


def _session(request: web.Request, kind: Kind) -> MediaSession:
    """The session this request names, if the request may act on it (404, 401, 403)."""
    room = _room_name(request)
    session = request.app[MEDIA_SESSIONS_KEY].get(kind, room, request.match_info["session"])
    if session is None:
        raise BadRequest("not-found", f"no {kind.upper()} session here (ended, or never was)")
    if session.identity is not None:
        claims, with_token = _claims(request, room)
        if not with_token:
            raise NotAuthorised("unauthorized", "this session was opened with a token: send it")
        if claims.identity != session.identity:
            raise NotAuthorised("forbidden", "the token is not the one this session was opened with")
    return session


async def resource_patch(request: web.Request) -> web.StreamResponse:
    try:
        return await _resource_patch(request)
    except SignalingError as exc:
        return _error(request, exc, RESOURCE_METHODS)


async def _resource_patch(request: web.Request) -> web.Response:
    kind: Kind = request.match_info["kind"]  # type: ignore[assignment]
    session = _session(request, kind)
    check_content_type(request.headers.get("Content-Type", ""), SDP_FRAGMENT_TYPE)
    any_tag = check_if_match(request.headers.get("If-Match"), session.etag)
    fragment = parse_sdp_fragment(await _body(request, SDP_FRAGMENT_TYPE))
    restart = (fragment.ice_ufrag is not None and fragment.ice_ufrag != session.ice_ufrag) or (
        fragment.ice_pwd is not None and fragment.ice_pwd != session.ice_pwd
    )
    if restart or (any_tag and fragment.ice_ufrag is None):
        # aiortc has no ICE restart: RFC 9725 section 4.3.1, a session that supports trickle
        # but not restarts answers 422. The client ends the session and starts a new one.
        raise BadRequest("ice-restart-unsupported", "ICE restarts are not supported: DELETE and POST again")
    peer = session.peer
    if peer is None:
        raise BadRequest("not-found", "the session has no connection")
    for candidate in fragment.candidates:
        await peer.add_candidate({"candidate": candidate.candidate, "sdp_mid": candidate.mid, "sdp_mline_index": None})
    return web.Response(status=204, headers=cors_headers(RESOURCE_METHODS))


async def resource_delete(request: web.Request) -> web.StreamResponse:
    try:
        kind: Kind = request.match_info["kind"]  # type: ignore[assignment]
        session = _session(request, kind)
    except SignalingError as exc:
        return _error(request, exc, RESOURCE_METHODS)
    await request.app[MEDIA_SESSIONS_KEY].end(session, "left")
    logger.info("%s session %s ended by its client", kind, session.id)
    return web.Response(status=200, text="session ended\n", headers=cors_headers(RESOURCE_METHODS))


async def endpoint_options(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204, headers=options_headers(resource=False))


async def resource_options(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204, headers=options_headers(resource=True))


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/whip/{room}", whip_post)
    router.add_options("/whip/{room}", endpoint_options)
    router.add_post("/whep/{room}", whep_post)
    router.add_options("/whep/{room}", endpoint_options)
    router.add_post("/whep/{room}/{participant}", whep_post)
    router.add_options("/whep/{room}/{participant}", endpoint_options)
    resource = "/{kind:whip|whep}/{room}/sessions/{session}"
    router.add_patch(resource, resource_patch)
    router.add_delete(resource, resource_delete)
    router.add_options(resource, resource_options)
