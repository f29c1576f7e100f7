// Signaling protocol v1 (docs/protocol.md): message constructors and validation.
// Pure functions, no DOM and no browser APIs, so it also runs under node.

export const PROTOCOL_VERSION = 1;

export const SOURCES = Object.freeze(['microphone', 'camera', 'screen']);
export const KINDS = Object.freeze(['audio', 'video']);
export const PC_NAMES = Object.freeze(['publish', 'subscribe']);
export const LEAVE_REASONS = Object.freeze(['left', 'timeout', 'disconnected', 'kicked']);

export const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
export const MAX_NAME_CHARS = 64;
export const MAX_CHAT_CHARS = 2000;
export const DEFAULT_HEARTBEAT_INTERVAL_S = 2;
export const DEFAULT_MAX_MESSAGE_BYTES = 65536;

export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

// Length in characters (code points), as the server counts "1–64 chars".
const charCount = (s) => [...s].length;

export function isValidRoom(room) {
  return typeof room === 'string' && ROOM_RE.test(room);
}

export function isValidName(name) {
  return typeof name === 'string' && name.trim() !== '' && charCount(name) <= MAX_NAME_CHARS;
}

/** The server's id of a track we publish: `<participant id>-<mid of its publish m-section>`. */
export function ownTrackId(participantId, mid) {
  return `${participantId}-${mid}`;
}

// ---------------------------------------------------------------------------
// Client → server

export function join(room, name) {
  if (!isValidRoom(room)) throw new ProtocolError('room must be 1–64 characters of A-Z a-z 0-9 _ - .');
  if (!isValidName(name)) throw new ProtocolError(`name must be 1–${MAX_NAME_CHARS} characters`);
  return { type: 'join', room, name };
}

/** `sources` maps mid → "microphone" | "camera" | "screen"; omitted when empty. */
export function offer(sdp, sources) {
  requireString(sdp, 'sdp');
  const msg = { type: 'offer', pc: 'publish', sdp };
  if (sources && Object.keys(sources).length) {
    for (const [mid, source] of Object.entries(sources)) {
      if (!SOURCES.includes(source)) throw new ProtocolError(`bad source ${source} for mid ${mid}`);
    }
    msg.sources = { ...sources };
  }
  return msg;
}

export function answer(sdp) {
  requireString(sdp, 'sdp');
  return { type: 'answer', pc: 'subscribe', sdp };
}

/** `cand` is an RTCIceCandidate (or its toJSON()) or null for end of candidates. */
export function candidate(pc, cand) {
  if (!PC_NAMES.includes(pc)) throw new ProtocolError(`bad pc ${pc}`);
  return { type: 'candidate', pc, candidate: candidateToWire(cand) };
}

export function candidateToWire(cand) {
  if (!cand || !cand.candidate) return null; // an empty candidate string also means "end"
  return {
    candidate: cand.candidate,
    sdp_mid: cand.sdpMid ?? null,
    sdp_mline_index: cand.sdpMLineIndex ?? null,
  };
}

/** The inverse of candidateToWire: an RTCIceCandidateInit, or null. */
export function candidateFromWire(w) {
  if (!w) return null;
  return { candidate: w.candidate, sdpMid: w.sdp_mid ?? null, sdpMLineIndex: w.sdp_mline_index ?? null };
}

export function mute(track, muted) {
  requireString(track, 'track');
  return { type: 'mute', track, muted: Boolean(muted) };
}

/**
 * What we want of a remote track: a height cap in pixels (null: none) or nothing (paused);
 * `pinned` asks the server to serve it before the others when bandwidth is short.
 */
export function subscription(track, maxHeight, paused, pinned = false) {
  return { type: 'subscription', track, max_height: maxHeight, paused: !!paused, pinned: !!pinned };
}

export function chat(text) {
  if (typeof text !== 'string' || text.length === 0 || charCount(text) > MAX_CHAT_CHARS) {
    throw new ProtocolError(`chat text must be 1–${MAX_CHAT_CHARS} characters`);
  }
  return { type: 'chat', text };
}

export const ping = () => ({ type: 'ping' });
export const leave = () => ({ type: 'leave' });

/** JSON-encode a client message, refusing frames the server would reject as too large. */
export function encode(msg, maxBytes = DEFAULT_MAX_MESSAGE_BYTES) {
  const text = JSON.stringify(msg);
  const bytes = new TextEncoder().encode(text).length;
  if (bytes > maxBytes) throw new ProtocolError(`${msg.type} message is ${bytes} bytes, over the limit of ${maxBytes}`);
  return text;
}

// ---------------------------------------------------------------------------
// Server → client

/**
 * Parse and validate one server frame. Returns the message object (unknown
 * fields kept) or throws ProtocolError. Missing optional fields get defaults.
 */
export function parse(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    throw new ProtocolError('frame is not JSON');
  }
  if (!isObject(msg)) throw new ProtocolError('frame is not a JSON object');
  const check = SERVER_MESSAGES[msg.type];
  if (!check) throw new ProtocolError(`unknown message type ${JSON.stringify(msg.type)}`);
  check(msg);
  return msg;
}

const SERVER_MESSAGES = {
  joined(m) {
    if (m.protocol !== PROTOCOL_VERSION) throw new ProtocolError(`unsupported protocol ${m.protocol}`);
    requireString(m.id, 'id');
    requireString(m.room, 'room');
    requireArray(m.participants, 'participants').forEach(checkParticipant);
    m.ice_servers = m.ice_servers == null ? [] : requireArray(m.ice_servers, 'ice_servers');
    m.heartbeat_interval_s = positiveNumber(m.heartbeat_interval_s, DEFAULT_HEARTBEAT_INTERVAL_S);
    m.max_message_bytes = positiveNumber(m.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
  },
  'participant-joined'(m) {
    checkParticipant(m.participant);
  },
  'participant-left'(m) {
    requireString(m.id, 'id');
  },
  'track-published'(m) {
    requireString(m.participant, 'participant');
    checkTrack(m.track);
  },
  'track-unpublished'(m) {
    requireString(m.participant, 'participant');
    requireString(m.track, 'track');
  },
  answer(m) {
    requirePc(m, 'publish');
    requireString(m.sdp, 'sdp');
  },
  offer(m) {
    requirePc(m, 'subscribe');
    requireString(m.sdp, 'sdp');
    m.consumers = m.consumers == null ? [] : requireArray(m.consumers, 'consumers');
    for (const c of m.consumers) {
      if (!isObject(c)) throw new ProtocolError('consumer is not an object');
      requireString(c.mid, 'consumer.mid');
      requireString(c.participant, 'consumer.participant');
      requireString(c.track, 'consumer.track');
      requireOneOf(c.kind, KINDS, 'consumer.kind');
      if (c.source == null) c.source = c.kind === 'audio' ? 'microphone' : 'camera';
      requireOneOf(c.source, SOURCES, 'consumer.source');
    }
  },
  mute(m) {
    requireString(m.participant, 'participant');
    requireString(m.track, 'track');
    if (typeof m.muted !== 'boolean') throw new ProtocolError('muted must be a boolean');
  },
  chat(m) {
    requireString(m.from, 'from');
    requireString(m.text, 'text');
    if (typeof m.name !== 'string') m.name = '';
    if (typeof m.ts_ms !== 'number') m.ts_ms = Date.now();
  },
  layers(m) {
    requireString(m.track, 'track');
    m.active = m.active == null ? [] : requireArray(m.active, 'active');
    m.paused = Boolean(m.paused);
  },
  'track-quality'(m) {
    requireString(m.track, 'track');
    if (typeof m.paused !== 'boolean') throw new ProtocolError('paused must be a boolean');
  },
  'active-speaker'(m) {
    // The room's dominant speaker (null: none, e.g. they left).
    if (m.participant !== null) requireString(m.participant, 'participant');
  },
  recording(m) {
    // The room's recording: on or off, and whose media is being written to a file.
    if (typeof m.active !== 'boolean') throw new ProtocolError('active must be a boolean');
    m.participants = m.participants == null ? [] : requireArray(m.participants, 'participants');
  },
  pong() {},
  'server-shutdown'(m) {
    // The server is going away; the socket closes (1001) after grace_s unless we leave first.
    m.grace_s = typeof m.grace_s === 'number' && m.grace_s >= 0 ? m.grace_s : 0;
  },
  error(m) {
    requireString(m.code, 'code');
    if (typeof m.message !== 'string') m.message = '';
  },
  'data-error'(m) {
    // Data channel messages of ours the server did not relay (docs/protocol.md, Data channels).
    requireString(m.code, 'code');
    if (typeof m.message !== 'string') m.message = '';
    requireOneOf(m.channel, ['reliable', 'lossy'], 'channel');
    m.dropped = typeof m.dropped === 'number' && m.dropped >= 1 ? m.dropped : 1;
  },
};

function checkParticipant(p) {
  if (!isObject(p)) throw new ProtocolError('participant is not an object');
  requireString(p.id, 'participant.id');
  if (typeof p.name !== 'string') p.name = '';
  p.tracks = p.tracks == null ? [] : requireArray(p.tracks, 'participant.tracks');
  p.tracks.forEach(checkTrack);
}

function checkTrack(t) {
  if (!isObject(t)) throw new ProtocolError('track is not an object');
  requireString(t.id, 'track.id');
  requireOneOf(t.kind, KINDS, 'track.kind');
  if (t.source == null) t.source = t.kind === 'audio' ? 'microphone' : 'camera';
  requireOneOf(t.source, SOURCES, 'track.source');
  t.muted = Boolean(t.muted);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function requireString(v, field) {
  if (typeof v !== 'string' || v === '') throw new ProtocolError(`${field} must be a non-empty string`);
  return v;
}

function requireArray(v, field) {
  if (!Array.isArray(v)) throw new ProtocolError(`${field} must be an array`);
  return v;
}

function requireOneOf(v, allowed, field) {
  if (!allowed.includes(v)) throw new ProtocolError(`${field} must be one of ${allowed.join(', ')}`);
  return v;
}

function requirePc(m, expected) {
  if (m.pc !== expected) throw new ProtocolError(`${m.type} must have pc "${expected}", got ${JSON.stringify(m.pc)}`);
}

function positiveNumber(v, fallback) {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fallback;
}

// ---------------------------------------------------------------------------
// Data channel frames (docs/protocol.md, Data channels): version, flags (0x01: UTF-8 text),
// a big-endian 16-bit header length, a JSON header, the payload.

export const DATA_RELIABLE_LABEL = 'sfu-reliable';
export const DATA_LOSSY_LABEL = 'sfu-lossy';
export const DATA_FRAME_VERSION = 1;
export const MAX_DATA_HEADER_BYTES = 4096;
const FLAG_TEXT = 0x01;

/**
 * One frame: `payload` a string (sent as text) or bytes (Uint8Array / ArrayBuffer);
 * optional `topic`, `to` (participant ids; absent: everyone else) and `ref`.
 */
export function encodeDataFrame(payload, { topic, to, ref } = {}) {
  const text = typeof payload === 'string';
  const body = text ? new TextEncoder().encode(payload) : toBytes(payload);
  const header = {};
  if (topic != null) header.topic = requireString(topic, 'topic');
  if (to != null) {
    if (!Array.isArray(to) || !to.length) throw new ProtocolError('to must be a non-empty array of participant ids');
    header.to = to.map((id) => requireString(id, 'to[]'));
  }
  if (ref != null) header.ref = requireString(ref, 'ref');
  const head = Object.keys(header).length ? new TextEncoder().encode(JSON.stringify(header)) : new Uint8Array(0);
  if (head.length > MAX_DATA_HEADER_BYTES) throw new ProtocolError(`the header is over ${MAX_DATA_HEADER_BYTES} bytes`);
  const frame = new Uint8Array(4 + head.length + body.length);
  frame[0] = DATA_FRAME_VERSION;
  frame[1] = text ? FLAG_TEXT : 0;
  frame[2] = head.length >> 8;
  frame[3] = head.length & 0xff;
  frame.set(head, 4);
  frame.set(body, 4 + head.length);
  return frame;
}

/**
 * A frame the server delivered: {from, topic, text (bool), data (string for text, else
 * Uint8Array)}; throws ProtocolError for anything that is not one.
 */
export function decodeDataFrame(raw) {
  if (typeof raw === 'string') throw new ProtocolError('a data frame is binary');
  const bytes = toBytes(raw);
  if (bytes.length < 4) throw new ProtocolError('a data frame has at least 4 bytes');
  if (bytes[0] !== DATA_FRAME_VERSION) throw new ProtocolError(`unknown data frame version ${bytes[0]}`);
  if (bytes[1] & ~FLAG_TEXT) throw new ProtocolError('unknown data frame flags');
  const headLength = (bytes[2] << 8) | bytes[3];
  if (4 + headLength > bytes.length) throw new ProtocolError('the data frame header is cut short');
  let header = {};
  if (headLength) {
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(4, 4 + headLength)));
    } catch {
      throw new ProtocolError('the data frame header is not JSON');
    }
    if (!isObject(header)) throw new ProtocolError('the data frame header is not an object');
  }
  const body = bytes.slice(4 + headLength);
  const text = Boolean(bytes[1] & FLAG_TEXT);
  let data = body;
  if (text) {
    try {
      data = new TextDecoder('utf-8', { fatal: true }).decode(body);
    } catch {
      throw new ProtocolError('a text data frame is not UTF-8');
    }
  }
  return {
    from: typeof header.from === 'string' ? header.from : null,
    topic: typeof header.topic === 'string' ? header.topic : null,
    text,
    data,
  };
}

function toBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new ProtocolError('payload must be a string or bytes');
}
