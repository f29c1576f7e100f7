"""The Redis coordinator: the shared state of a cluster of hosts in one Redis server.

Every read and write is one Lua script (EVALSHA through ``register_script``), so each method is
one atomic step on the server, and every time in it is the server's clock (``TIME``), never a
client's. Every record has a TTL refreshed by its owner, so nothing outlives it. The keys
(``key_prefix`` first, ``sfu:`` by default), with their types, TTLs and writers, are listed
in docs/scaling.md, "The Redis keys" (tests/unit/test_scaling_doc.py keeps that table equal
to the keys the scripts use): ``node:<id>`` and ``worker:<id>`` hashes, the ``nodes``,
``workers`` and ``load`` zsets, ``room:<room>`` strings and ``members:<room>`` hashes, the
``rooms`` zset, and ``epoch`` and ``recovering``.

A worker is live while its hash and its node's hash exist. The scripts build key names from
the prefix (they do not declare them in KEYS), so this runs on one Redis server (or a
Sentinel-managed primary), not on Redis Cluster.

Every Redis failure (refused, reset, timed out, an error reply) raises
``CoordinatorUnavailable`` within about ``timeout_s``; nothing is retried but one immediate
reconnect, and nothing is cached, so the next call after Redis returns works, and the next
heartbeat writes the registry again (a Redis that restarted empty loses the scripts too:
``register_script`` loads them again on ``NOSCRIPT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from sfu.cluster.coordinator import (
    CoordinatorUnavailable,
    NoCapacity,
    NodeInfo,
    ParticipantEntry,
    Placement,
    RoomEntry,
    WorkerLoad,
)
from sfu.cluster.memory import NEW_ROOM_TRACKS, RECOVERING, ROOM_TTL_S, check_load

# ARGV[1] of every script is the key prefix.
_PRELUDE = r"""
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- the load zset's score: tracks, then rooms
local ROOMS_SPAN = 1000000
local function load_score(tracks, rooms)
  return tonumber(tracks) * ROOMS_SPAN + math.min(tonumber(rooms), ROOMS_SPAN - 1)
end
local function drop_worker(id)
  redis.call('DEL', P .. 'worker:' .. id)
  redis.call('ZREM', P .. 'workers', id)
  redis.call('ZREM', P .. 'load', id)
end
local function prune(now)
  redis.call('ZREMRANGEBYSCORE', P .. 'nodes', '-inf', now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'workers', '-inf', now)) do drop_worker(id) end
  redis.call('ZREMRANGEBYSCORE', P .. 'rooms', '-inf', now)
end
-- an index lives at least as long as its newest member
local function extend(key, ttl)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ttl) then redis.call('PEXPIRE', key, ttl) end
end
-- the worker's node id if the worker and its node are live, else nil
local function live_worker(id)
  local node = redis.call('HGET', P .. 'worker:' .. id, 'node')
  if not node then return nil end
  if redis.call('EXISTS', P .. 'node:' .. node) == 0 then return nil end
  return node
end
local function drop_room(room)
  redis.call('DEL', P .. 'room:' .. room, P .. 'members:' .. room)
  redis.call('ZREM', P .. 'rooms', room)
end
"""

# ARGV: prefix, node id, public url, draining (0/1), ttl ms, workers (JSON list of objects
# whose values are all strings), the epoch this coordinator last saw (empty: none). Returns the
# current epoch.
_HEARTBEAT = r"""
local node_id, url, draining, ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local workers = cjson.decode(ARGV[6])
local now = now_ms()
prune(now)
-- the state lost (Redis restarted empty, or every node silent for a TTL) while this node runs
-- rooms, or seen by a node that knew the state before (its last epoch is not the current one,
-- however short the outage was): new rooms wait one TTL, so that every live node writes its
-- rooms back first. A new deployment's first heartbeat (no rooms, no epoch seen) places at once.
local seen = ARGV[7] or ''
local epoch = redis.call('GET', P .. 'epoch')
local lost = false
if not epoch then
  epoch = tostring(now) .. ':' .. node_id
  redis.call('SET', P .. 'epoch', epoch, 'PX', ttl)
  for _, w in ipairs(workers) do
    if tonumber(w.rooms) > 0 then lost = true; break end
  end
else
  extend(P .. 'epoch', ttl)
end
if seen ~= '' and seen ~= epoch then lost = true end
if lost and redis.call('EXISTS', P .. 'recovering') == 0 then
  redis.call('SET', P .. 'recovering', now + ttl, 'PX', ttl)
end
local nkey = P .. 'node:' .. node_id
local ids, reported = {}, {}
for i, w in ipairs(workers) do ids[i] = w.id; reported[w.id] = true end
local old = redis.call('HGET', nkey, 'workers')
if old then
  for _, id in ipairs(cjson.decode(old)) do
    if not reported[id] then drop_worker(id) end
  end
end
redis.call('DEL', nkey)
redis.call('HSET', nkey, 'url', url, 'draining', draining, 'workers', cjson.encode(ids))
redis.call('PEXPIRE', nkey, ttl)
redis.call('ZADD', P .. 'nodes', now + ttl, node_id)
extend(P .. 'nodes', ttl)
for _, w in ipairs(workers) do
  local wkey = P .. 'worker:' .. w.id
  redis.call('DEL', wkey)
  redis.call('HSET', wkey, 'node', node_id, 'url', w.url, 'tracks', w.tracks, 'rooms', w.rooms,
    'participants', w.participants, 'cpu', w.cpu, 'max_tracks', w.max_tracks, 'max_cpu', w.max_cpu,
    'draining', w.draining)
  redis.call('PEXPIRE', wkey, ttl)
  redis.call('ZADD', P .. 'workers', now + ttl, w.id)
  redis.call('ZADD', P .. 'load', load_score(w.tracks, w.rooms), w.id)
end
if #ids > 0 then
  extend(P .. 'workers', ttl)
  extend(P .. 'load', ttl)
end
return epoch
"""

# ARGV: prefix, node id
_REMOVE_NODE = r"""
local node_id = ARGV[2]
local now = now_ms()
prune(now)
local nkey = P .. 'node:' .. node_id
local listed = redis.call('HGET', nkey, 'workers')
if listed then
  for _, id in ipairs(cjson.decode(listed)) do drop_worker(id) end
end
for _, id in ipairs(redis.call('ZRANGE', P .. 'workers', 0, -1)) do
  if redis.call('HGET', P .. 'worker:' .. id, 'node') == node_id then drop_worker(id) end
end
redis.call('DEL', nkey)
redis.call('ZREM', P .. 'nodes', node_id)
for _, room in ipairs(redis.call('ZRANGE', P .. 'rooms', 0, -1)) do
  local cur = redis.call('GET', P .. 'room:' .. room)
  if cur and cjson.decode(cur).node == node_id then drop_room(room) end
end
return 1
"""

# ARGV: prefix
_NODES = r"""
local now = now_ms()
prune(now)
local out = {}
for _, node_id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'nodes', '(' .. now, '+inf')) do
  local n = redis.call('HMGET', P .. 'node:' .. node_id, 'url', 'draining', 'workers')
  if n[1] then
    local ws = {}
    for _, id in ipairs(cjson.decode(n[3])) do
      local w = redis.call('HMGET', P .. 'worker:' .. id, 'node', 'url', 'tracks', 'rooms', 'participants',
        'cpu', 'max_tracks', 'max_cpu', 'draining')
      if w[1] then
        table.insert(ws, {id, w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9]})
      end
    end
    table.insert(out, {node_id, n[1], n[2], ws})
  end
end
return out
"""

# ARGV: prefix, room, preferred node ('' for none), room ttl ms, tracks a new room counts
# Returns {'placed', placement JSON}, {'recovering'} or {'none'}.
_PLACE_ROOM = r"""
local room, prefer, room_ttl, add = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
prune(now)
local rkey = P .. 'room:' .. room
local cur = redis.call('GET', rkey)
if cur and live_worker(cjson.decode(cur).worker) then
  -- a join is on its way to the room: keep its records at least room_ttl
  for _, key in ipairs({rkey, P .. 'members:' .. room}) do
    local left = redis.call('PTTL', key)
    if left >= 0 and left < room_ttl then redis.call('PEXPIRE', key, room_ttl) end
  end
  redis.call('ZADD', P .. 'rooms', 'GT', now + room_ttl, room)
  extend(P .. 'rooms', room_ttl)
  return {'placed', cur}
end
if redis.call('EXISTS', P .. 'recovering') == 1 then return {'recovering'} end
-- the least-loaded live worker of a non-draining node under its limits: fewest tracks, then
-- the preferred node, then the fewest rooms, then the worker id (sfu.cluster.memory.placement_order).
-- The load zset keeps the workers in order of (tracks, rooms, id), so the first eligible one
-- read from it is the best of all but for the preferred node, and the preferred node's best
-- worker wins if it has as few tracks: a placement reads the workers it skips (full,
-- draining, dead) and the preferred node's, never the whole registry.
local node_state = {}
local function eligible(id)
  local w = redis.call('HMGET', P .. 'worker:' .. id, 'node', 'url', 'tracks', 'rooms', 'cpu', 'max_tracks', 'max_cpu',
    'draining')
  if not w[1] or w[8] == '1' then return nil end
  local state = node_state[w[1]]
  if state == nil then
    state = redis.call('HGET', P .. 'node:' .. w[1], 'draining') or 'gone'
    node_state[w[1]] = state
  end
  if state ~= '0' then return nil end
  local tracks, cpu, max_tracks, max_cpu = tonumber(w[3]), tonumber(w[5]), tonumber(w[6]), tonumber(w[7])
  if (max_tracks > 0 and tracks >= max_tracks) or (max_cpu > 0 and cpu >= max_cpu) then return nil end
  return w
end
local best, bw = nil, nil
local offset, batch_size = 0, 64
while not best do
  local batch = redis.call('ZRANGE', P .. 'load', '-inf', '+inf', 'BYSCORE', 'LIMIT', offset, batch_size)
  for _, id in ipairs(batch) do
    local w = eligible(id)
    if w then best, bw = id, w; break end
  end
  if #batch < batch_size then break end
  offset = offset + batch_size
end
if best and prefer ~= '' and bw[1] ~= prefer then
  local listed = redis.call('HGET', P .. 'node:' .. prefer, 'workers')
  local pbest, pw = nil, nil
  for _, id in ipairs(listed and cjson.decode(listed) or {}) do
    local w = eligible(id)
    if w and w[1] == prefer and tonumber(w[3]) == tonumber(bw[3]) then
      if pbest == nil or tonumber(w[4]) < tonumber(pw[4]) or (tonumber(w[4]) == tonumber(pw[4]) and id < pbest) then
        pbest, pw = id, w
      end
    end
  end
  if pbest then best, bw = pbest, pw end
end
if best then best = {worker = best, node = bw[1], url = bw[2]} end
if not best then return {'none'} end
local placed = cjson.encode(best)
redis.call('SET', rkey, placed, 'PX', room_ttl)
redis.call('DEL', P .. 'members:' .. room)
redis.call('ZADD', P .. 'rooms', now + room_ttl, room)
extend(P .. 'rooms', room_ttl)
redis.call('HINCRBY', P .. 'worker:' .. best.worker, 'rooms', 1)
redis.call('HINCRBY', P .. 'worker:' .. best.worker, 'tracks', add)
redis.call('ZINCRBY', P .. 'load', add * ROOMS_SPAN + 1, best.worker)
return {'placed', placed}
"""

# ARGV: prefix, room. Returns the placement JSON if its worker is live, else false.
_PLACEMENT = r"""
prune(now_ms())
local cur = redis.call('GET', P .. 'room:' .. ARGV[2])
if cur and live_worker(cjson.decode(cur).worker) then return cur end
return false
"""

# ARGV: prefix, room, worker id
_RELEASE_ROOM = r"""
local cur = redis.call('GET', P .. 'room:' .. ARGV[2])
if cur and cjson.decode(cur).worker == ARGV[3] then
  drop_room(ARGV[2])
  return 1
end
return 0
"""

# ARGV: prefix, room, placement JSON, ttl ms, then participant id and name pairs.
# Returns 1 if written, 0 if another live worker holds the room.
_SET_ROOM_PARTICIPANTS = r"""
local room, mine, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
prune(now)
local rkey, mkey = P .. 'room:' .. room, P .. 'members:' .. room
local cur = redis.call('GET', rkey)
if cur then
  local holder = cjson.decode(cur).worker
  if holder ~= cjson.decode(mine).worker and live_worker(holder) then return 0 end
end
redis.call('SET', rkey, mine, 'PX', ttl)
redis.call('DEL', mkey)
if #ARGV > 4 then
  redis.call('HSET', mkey, unpack(ARGV, 5))
  redis.call('PEXPIRE', mkey, ttl)
end
redis.call('ZADD', P .. 'rooms', now + ttl, room)
extend(P .. 'rooms', ttl)
return 1
"""

# ARGV: prefix. Returns {room, placement JSON, {id, name, id, name, ...}} per live room.
_ROOMS = r"""
local now = now_ms()
prune(now)
local out = {}
for _, room in ipairs(redis.call('ZRANGEBYSCORE', P .. 'rooms', '(' .. now, '+inf')) do
  local cur = redis.call('GET', P .. 'room:' .. room)
  if cur and live_worker(cjson.decode(cur).worker) then
    table.insert(out, {room, cur, redis.call('HGETALL', P .. 'members:' .. room)})
  end
end
return out
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _placement(room: str, text: str) -> Placement:
    data = json.loads(text)
    return Placement(room=room, worker_id=data["worker"], node_id=data["node"], url=data["url"])


def _placement_json(placement: Placement) -> str:
    return json.dumps({"worker": placement.worker_id, "node": placement.node_id, "url": placement.url})


class RedisCoordinator:
    """The ``Coordinator`` of a cluster: one Redis server shared by every node. Each instance
    has its own connection pool; ``start()`` does not contact Redis (a node starts while Redis
    is down and joins the cluster at its first successful heartbeat)."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "sfu:",
        timeout_s: float = 1.0,
        room_ttl_s: float = ROOM_TTL_S,
        new_room_tracks: int = NEW_ROOM_TRACKS,
    ) -> None:
        self._prefix = key_prefix
        self._timeout_s = timeout_s
        self._room_ttl_ms = _ms(room_ttl_s)
        self._new_room_tracks = new_room_tracks
        self._closed = False
        # the epoch of the shared state this coordinator last wrote into (empty: none yet)
        self._seen_epoch = ""
        self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # one immediate reconnect (a pooled connection that a restarted Redis closed), no backoff
            retry=Retry(NoBackoff(), 1),
        )
        self._scripts: dict[str, AsyncScript] = {
            name: self._client.register_script(_PRELUDE + body)
            for name, body in (
                ("heartbeat", _HEARTBEAT),
                ("remove_node", _REMOVE_NODE),
                ("nodes", _NODES),
                ("place_room", _PLACE_ROOM),
                ("placement", _PLACEMENT),
                ("release_room", _RELEASE_ROOM),
                ("set_room_participants", _SET_ROOM_PARTICIPANTS),
                ("rooms", _ROOMS),
            )
        }

    async def start(self) -> None:
        if self._closed:
            raise CoordinatorUnavailable("the coordinator is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()

    async def _run(self, script: str, *args: str | int) -> Any:
        """One script, bounded by ``timeout_s``; any failure is ``CoordinatorUnavailable``."""
        if self._closed:
            raise CoordinatorUnavailable("the coordinator is closed")
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._scripts[script](keys=[], args=[self._prefix, *args])
        except (RedisError, ConnectionError, TimeoutError, OSError) as exc:
            raise CoordinatorUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def heartbeat(self, node: NodeInfo, ttl_s: float) -> None:
        check_load(node)
        workers = [
            {
                "id": w.worker_id,
                "url": w.url,
                "tracks": str(w.tracks),
                "rooms": str(w.rooms),
                "participants": str(w.participants),
                "cpu": repr(float(w.cpu_percent)),
                "max_tracks": str(w.max_tracks),
                "max_cpu": repr(float(w.max_cpu_percent)),
                "draining": "1" if w.draining else "0",
            }
            for w in node.workers
        ]
        epoch = await self._run(
            "heartbeat",
            node.node_id,
            node.public_url,
            "1" if node.draining else "0",
            _ms(ttl_s),
            json.dumps(workers),
            self._seen_epoch,
        )
        self._seen_epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)

    async def remove_node(self, node_id: str) -> None:
        await self._run("remove_node", node_id)

    async def nodes(self) -> list[NodeInfo]:
        listed = []
        for node_id, url, draining, workers in await self._run("nodes"):
            loads = tuple(
                WorkerLoad(
                    worker_id=worker_id,
                    node_id=worker_node,
                    url=worker_url,
                    tracks=int(tracks),
                    rooms=int(rooms),
                    participants=int(participants),
                    cpu_percent=float(cpu),
                    max_tracks=int(max_tracks),
                    max_cpu_percent=float(max_cpu),
                    draining=draining_worker == "1",
                )
                for (
                    worker_id,
                    worker_node,
                    worker_url,
                    tracks,
                    rooms,
                    participants,
                    cpu,
                    max_tracks,
                    max_cpu,
                    draining_worker,
                ) in workers
            )
            listed.append(NodeInfo(node_id=node_id, public_url=url, draining=draining == "1", workers=loads))
        return sorted(listed, key=lambda n: n.node_id)

    async def place_room(self, room: str, *, prefer_node: str | None = None) -> Placement:
        answer = await self._run("place_room", room, prefer_node or "", self._room_ttl_ms, self._new_room_tracks)
        if answer[0] == "recovering":
            raise CoordinatorUnavailable(RECOVERING)
        if answer[0] != "placed":
            raise NoCapacity(f"no live worker under its limit for room {room!r}")
        return _placement(room, answer[1])

    async def placement(self, room: str) -> Placement | None:
        text = await self._run("placement", room)
        return _placement(room, text) if text else None

    async def release_room(self, room: str, worker_id: str) -> None:
        await self._run("release_room", room, worker_id)

    async def set_room_participants(
        self, room: str, placement: Placement, participants: tuple[ParticipantEntry, ...], ttl_s: float
    ) -> None:
        """Writes the placement back if it is gone or names a worker that is not live; leaves
        it alone if another live worker holds the room (as ``MemoryCoordinator`` does)."""
        pairs = [field for p in participants for field in (p.participant_id, p.name)]
        await self._run("set_room_participants", room, _placement_json(placement), _ms(ttl_s), *pairs)

    async def rooms(self) -> list[RoomEntry]:
        listed = []
        for room, text, members in await self._run("rooms"):
            entries = tuple(
                sorted(
                    (ParticipantEntry(members[i], members[i + 1]) for i in range(0, len(members), 2)),
                    key=lambda p: p.participant_id,
                )
            )
            listed.append(RoomEntry(room=room, placement=_placement(room, text), participants=entries))
        return sorted(listed, key=lambda r: r.room)
