// Session: one participant's connection to the SFU. It owns the WebSocket, the
// `publish` and `subscribe` RTCPeerConnections, the local media and the heartbeat,
// and reports everything through events (see `on`). It touches no DOM.

import * as P from './protocol.js';

export const MEDIA_CONSTRAINTS = Object.freeze({
  audio: true,
  video: { width: { ideal: 1280 }, height: { ideal: 720 } },
});

const JOIN_TIMEOUT_MS = 15_000;

// Camera simulcast: lowest layer first (the server takes the order as low → high). Chrome
// sends all three only from a capture of 720p or more, and drops the top ones when its
// uplink estimate is too low for them.
export const SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 }),
]);

// Local sources whose mute state the user controls, and their track kind.
const MUTABLE = { microphone: 'audio', camera: 'video' };
// Data channel topics the client itself uses (any other topic is the application's: `data` events).
export const CHAT_TOPIC = 'chat';
export const TYPING_TOPIC = 'typing';

export function defaultWsUrl(loc = globalThis.location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

export class Session {
  /** @param {{wsUrl?: string, simulcast?: boolean, publish?: boolean, videoCodec?: string}} [options] */
  constructor({ wsUrl, simulcast = true, publish = true, videoCodec = '' } = {}) {
    this.wsUrl = wsUrl ?? defaultWsUrl();
    this.simulcast = simulcast;
    this.videoCodec = videoCodec.toLowerCase(); // e.g. 'h264': offered first for camera and screen
    this.publish = publish; // false: a viewer that only receives
    this._handlers = new Map();
    this._gen = 0; // bumped on cleanup; async work of an older generation is dropped
    this._muted = { microphone: false, camera: false }; // kept across rejoins
    this.state = 'idle';
    this._reset();
  }

  // ----- events ------------------------------------------------------------

  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }

  _emit(type, detail = {}) {
    for (const fn of [...(this._handlers.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (e) {
        console.error(`session ${type} handler failed`, e);
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state });
  }

  // ----- public API ----------------------------------------------------------

  /**
   * Join `room` as `name`. Resolves with the `joined` message; rejects with a
   * ProtocolError for a bad room or name, or an Error whose `code` is the
   * server's error code, "connection-lost" or "closed" (left while joining).
   * Local media is acquired in parallel and published once joined.
   */
  join(room, name) {
    if (this.state === 'joining' || this.state === 'joined') {
      return Promise.reject(new Error(`cannot join while ${this.state}`));
    }
    let joinMsg;
    try {
      joinMsg = P.join(room, name);
      if (this.token) joinMsg.token = this.token; // access token (app.js: ?token=)
    } catch (e) {
      return Promise.reject(e); // ProtocolError: bad room or name
    }
    this._cleanup();
    this._reset();
    const gen = this._gen;
    this.room = room;
    this.name = name;
    this._setState('joining');

    const joined = new Promise((resolve, reject) => (this._joinWaiter = { resolve, reject }));
    joined.catch(() => {}); // callers that ignore the promise rely on events instead

    this._mediaReady = this.publish ? this._acquireMedia(gen) : Promise.resolve();
    const ws = new WebSocket(this.wsUrl);
    this.ws = ws;
    ws.onopen = () => this._send(joinMsg);
    this._timers.push(setTimeout(() => this.state === 'joining' && this._lost('the server did not answer'), JOIN_TIMEOUT_MS));
    ws.onmessage = (ev) => this._onFrame(ev.data);
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      const why = `WebSocket closed (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
      this._lost(this.state === 'joining' ? `could not join: ${why}` : why);
    };
    return joined;
  }

  /** Leave the room: tells the server, closes both connections, stops local media. */
  leave() {
    if (this.state !== 'joining' && this.state !== 'joined') return;
    this._send(P.leave());
    this._cleanup('left the room');
    this._setState('left');
    this._emit('left');
  }

  setMicMuted(muted) {
    this._setMuted('microphone', muted);
  }

  setCameraOff(off) {
    this._setMuted('camera', off);
  }

  isMuted(source) {
    return Boolean(this._muted[source]);
  }

  /** Whether a local track of this source ("microphone" | "camera") is available. */
  hasLocal(source) {
    return Boolean(this.localStream?.getTracks().some((t) => t.kind === MUTABLE[source]));
  }

  get screenSharing() {
    return this.screenStream !== null;
  }

  /** Ask for a screen (getDisplayMedia) and publish it as source "screen". */
  async startScreenShare() {
    if (this.state !== 'joined' || !this.publishPc) throw new Error('not in a room');
    if (this.screenStream) return this.screenStream;
    const gen = this._gen;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (gen !== this._gen || !track || this.screenStream) {
      stream.getTracks().forEach((t) => t.stop());
      return this.screenStream;
    }
    track.contentHint = 'detail';
    track.addEventListener('ended', () => this.stopScreenShare()); // "Stop sharing" in the browser UI
    this.screenStream = stream;

    const existing = this._transceiver('screen');
    if (existing) {
      // Reuse the m-section of an earlier share. It is a new track for the server, which
      // expects every encoding on: forget what it asked of the old one.
      await existing.sender.replaceTrack(track);
      if (this.screenStream !== stream) return null; // stopped meanwhile
      existing.direction = 'sendonly';
      if (existing.mid != null) this._onLayers({ track: P.ownTrackId(this.id, existing.mid), active: null, paused: false });
    } else {
      const t = this.publishPc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      this._preferCodec(t, 'video');
      this._pub.sources.set(t, 'screen');
    }
    this._emit('local-screen', { stream });
    this._negotiatePublish();
    return stream;
  }

  /** Stop sharing: the m-section becomes inactive (and is reused by the next share). */
  stopScreenShare() {
    if (!this.screenStream) return;
    this.screenStream.getTracks().forEach((t) => t.stop());
    this.screenStream = null;
    const t = this._transceiver('screen');
    if (t && this.publishPc.signalingState !== 'closed') {
      t.sender.replaceTrack(null).catch(() => {});
      t.direction = 'inactive';
      this._negotiatePublish();
    }
    this._emit('local-screen', { stream: null });
  }

  /**
   * Chat: over our reliable data channel when it is open (then shown here at once, as the
   * server does not echo data messages), else as the signaling `chat` message.
   */
  sendChat(text) {
    if (this.state !== 'joined') throw new Error('not in a room');
    const msg = P.chat(text); // the same length check either way
    if (this.sendData(msg.text, { topic: CHAT_TOPIC })) {
      this._emit('chat', { from: this.id, name: this.name, text: msg.text, ts_ms: Date.now(), self: true, via: 'data' });
      return 'data';
    }
    this._send(msg);
    return 'signaling';
  }

  /** Tell the others we are typing (lossy channel, at most once a second). */
  sendTyping() {
    const now = Date.now();
    if (now - (this._data.typingSentAt ?? 0) < 1000) return;
    if (this.sendData('', { topic: TYPING_TOPIC, reliable: false })) this._data.typingSentAt = now;
  }

  /** Whether data can go both ways: our two channels and the server's two are open. */
  get dataReady() {
    const { out, in: inbound } = this._data;
    return [out.reliable, out.lossy, inbound.reliable, inbound.lossy].every((c) => c?.readyState === 'open');
  }

  /** Whether our data channel of this kind is open (messages can be sent on it). */
  dataOpen(reliable = true) {
    return this._data.out[reliable ? 'reliable' : 'lossy']?.readyState === 'open';
  }

  /**
   * One data channel message (docs/protocol.md, Data channels): `payload` a string (text)
   * or bytes, to everyone else or to `to` (participant ids), with an optional `topic`.
   * Returns false when the channel is not open (nothing sent).
   */
  sendData(payload, { reliable = true, topic = null, to = null, ref = null } = {}) {
    const channel = this._data.out[reliable ? 'reliable' : 'lossy'];
    if (!channel || channel.readyState !== 'open') return false;
    channel.send(P.encodeDataFrame(payload, { topic, to, ref }));
    return true;
  }

  /**
   * Our published tracks as the server knows them (answered, active m-sections):
   * [{id, mid, kind, source, muted}].
   */
  get publishedTracks() {
    const out = [];
    for (const [t, source] of this._pub.sources) {
      if (t.mid == null || !this._pub.answered.has(t.mid)) continue;
      out.push({
        id: P.ownTrackId(this.id, t.mid),
        mid: t.mid,
        kind: source === 'microphone' ? 'audio' : 'video',
        source,
        muted: Boolean(this._muted[source]),
      });
    }
    return out;
  }

  /**
   * Receive-side video stats from the subscribe connection, one entry per
   * remote video: {mid, participant, track, source, frameWidth, frameHeight,
   * framesPerSecond, bitrateBps}. Rates are measured since the previous call
   * (null on the first one when the browser does not report them).
   */
  async getReceiveStats() {
    const pc = this.subscribePc;
    if (!pc || pc.signalingState === 'closed') return [];
    const report = await pc.getStats();
    const byTrackId = new Map([...this.consumers.values()].map((c) => [c.mediaTrack.id, c]));
    const best = new Map(); // mid → newest inbound-rtp (a reused mid may have an old one too)
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp' || (s.kind ?? s.mediaType) !== 'video') return;
      const c = (s.mid != null && this.consumers.get(s.mid)) || byTrackId.get(s.trackIdentifier);
      if (!c) return;
      const cur = best.get(c.mid);
      if (!cur || (s.lastPacketReceivedTimestamp ?? 0) > (cur.s.lastPacketReceivedTimestamp ?? 0)) {
        best.set(c.mid, { s, c });
      }
    });
    const prevAll = this._statsPrev;
    this._statsPrev = new Map();
    const out = [];
    for (const { s, c } of best.values()) {
      const prev = prevAll.get(s.id);
      this._statsPrev.set(s.id, { t: s.timestamp, bytes: s.bytesReceived ?? 0, frames: s.framesDecoded ?? 0 });
      const dt = prev ? (s.timestamp - prev.t) / 1000 : 0;
      out.push({
        mid: c.mid,
        participant: c.participant,
        track: c.track,
        source: c.source,
        frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0,
        framesPerSecond: s.framesPerSecond ?? (dt > 0 ? ((s.framesDecoded ?? 0) - prev.frames) / dt : null),
        bitrateBps: dt > 0 ? (8 * ((s.bytesReceived ?? 0) - prev.bytes)) / dt : null,
      });
    }
    return out;
  }

  /**
   * Send-side stats of our own videos, one entry per encoding: {track, source, rid,
   * requested (false: the server asked us to stop it, dynacast), active (the sender's flag),
   * frameHeight, bytesSent, bitrateBps (since the previous call; null on the first)}.
   */
  async getSendStats() {
    const pc = this.publishPc;
    if (!pc || pc.signalingState === 'closed') return [];
    const report = await pc.getStats();
    const byKey = new Map();
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && (s.kind ?? s.mediaType) === 'video') byKey.set(`${s.mid}/${s.rid ?? ''}`, s);
    });
    const prevAll = this._sendStatsPrev;
    this._sendStatsPrev = new Map();
    const out = [];
    for (const [t, source] of this._pub.sources) {
      if (t.stopped || t.mid == null || source === 'microphone') continue;
      const track = P.ownTrackId(this.id, t.mid);
      const want = this._layers.get(track);
      const encodings = t.sender.getParameters().encodings ?? [];
      for (const e of encodings) {
        const s = byKey.get(`${t.mid}/${e.rid ?? ''}`);
        const bytes = s?.bytesSent ?? 0;
        const prev = s && prevAll.get(s.id);
        if (s) this._sendStatsPrev.set(s.id, { t: s.timestamp, bytes });
        const dt = prev ? (s.timestamp - prev.t) / 1000 : 0;
        out.push({
          track,
          source,
          rid: e.rid ?? null,
          requested: !want || wantsEncoding(want, e, encodings.length),
          active: e.active !== false,
          frameHeight: s?.frameHeight ?? 0,
          bytesSent: bytes,
          bitrateBps: dt > 0 ? (8 * (bytes - prev.bytes)) / dt : null,
        });
      }
    }
    return out;
  }

  // ----- internals: state ------------------------------------------------------

  _reset() {
    this._subscriptions = new Map(); // track id -> last {maxHeight, paused, pinned} sent
    this.activeSpeaker = null; // participant id of the room's dominant speaker (maybe us)
    this.recording = { active: false, participants: [] }; // the room's recording (`recording` message)
    this.ws = null;
    this.id = null; // our participant id
    this.room = null;
    this.name = null;
    /** id → {id, name, tracks: Map<trackId, {id, kind, source, muted}>} (others only) */
    this.participants = new Map();
    this.iceServers = [];
    this.heartbeatIntervalS = P.DEFAULT_HEARTBEAT_INTERVAL_S;
    this.maxMessageBytes = P.DEFAULT_MAX_MESSAGE_BYTES;
    this.publishPc = null;
    this.subscribePc = null;
    this.localStream = null; // microphone + camera
    this.screenStream = null;
    this.mediaError = null;
    /** mid → {mid, participant, track, kind, source, mediaTrack}: remote tracks attached to tiles */
    this.consumers = new Map();
    this._offered = new Map(); // mid → consumer, from the latest subscribe offer
    this._pub = {
      sources: new Map(), // RTCRtpTransceiver → source
      busy: false, // an offer is outstanding
      again: false, // renegotiate once the answer is in
      offeredMids: new Set(),
      answered: new Set(), // mids the server accepted as tracks
    };
    this._reportedMute = new Map(); // own track id → muted, as last told to the server
    this._signalled = { publish: false, subscribe: false }; // candidates may flow
    this._candidateQueue = { publish: [], subscribe: [] };
    this._endOfCandidates = { publish: false, subscribe: false };
    this._subscribeChain = Promise.resolve();
    this._statsPrev = new Map();
    this._sendStatsPrev = new Map();
    this._layers = new Map(); // own track id → {active, paused}: what the server last asked us to send
    this._layersChain = Promise.resolve(); // setParameters calls, one at a time
    this._timers = [];
    this._unansweredSince = null; // when the oldest unanswered ping was sent
    this._joinWaiter = null;
    this._mediaReady = Promise.resolve();
    // Data channels: ours on the publish connection, the server's on the subscribe one.
    this._data = { out: {}, in: {}, typingSentAt: 0 };
  }

  /** Tear down connections and media of the current generation. */
  _cleanup(reason = 'closed') {
    this._gen++;
    this._timers.forEach(clearInterval);
    this._timers = [];
    if (this.ws) {
      const ws = this.ws;
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000);
    }
    for (const pc of [this.publishPc, this.subscribePc]) {
      if (pc && pc.signalingState !== 'closed') pc.close();
    }
    this.localStream?.getTracks().forEach((t) => t.stop());
    this.screenStream?.getTracks().forEach((t) => t.stop());
    this.screenStream = null;
    if (this._joinWaiter) {
      const err = new Error(reason);
      err.code = 'closed';
      this._joinWaiter.reject(err);
      this._joinWaiter = null;
    }
  }

  _lost(reason) {
    if (this.state !== 'joining' && this.state !== 'joined') return;
    const waiter = this._joinWaiter;
    this._joinWaiter = null;
    this._cleanup(reason);
    this._setState('error');
    this._emit('connection-lost', { reason });
    if (waiter) waiter.reject(Object.assign(new Error(reason), { code: 'connection-lost' }));
  }

  _send(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    try {
      ws.send(P.encode(msg, this.maxMessageBytes));
      return true;
    } catch (e) {
      this._emit('error', { code: 'client', message: e.message, request: msg.type, fatal: false });
      return false;
    }
  }

  // ----- internals: local media --------------------------------------------------

  async _acquireMedia(gen) {
    const md = navigator.mediaDevices;
    let stream = null;
    let error = null;
    if (!md?.getUserMedia) {
      error = new Error('media devices are not available (this page needs https or localhost)');
    } else {
      try {
        stream = await md.getUserMedia(MEDIA_CONSTRAINTS);
      } catch (e) {
        error = e;
        // Publish what we can: try each kind alone. After a refusal only retry
        // kinds already granted, so the user is not asked again.
        const tracks = [];
        for (const [kind, name] of [['audio', 'microphone'], ['video', 'camera']]) {
          if (e.name === 'NotAllowedError' && (await permissionState(name)) !== 'granted') continue;
          try {
            const s = await md.getUserMedia({ [kind]: MEDIA_CONSTRAINTS[kind] });
            tracks.push(...s.getTracks());
          } catch {
            // keep the first error for the message
          }
        }
        if (tracks.length) stream = new MediaStream(tracks);
      }
    }
    if (gen !== this._gen) {
      stream?.getTracks().forEach((t) => t.stop());
      return;
    }
    const missing = Object.entries(MUTABLE)
      .filter(([, kind]) => !stream?.getTracks().some((t) => t.kind === kind))
      .map(([source]) => source);
    this.localStream = stream;
    this.mediaError = error;
    for (const source of Object.keys(MUTABLE)) this._applyMuteToTracks(source);
    this._emit('local-media', { stream, error, missing });
  }

  _transceiver(source) {
    for (const [t, s] of this._pub.sources) if (s === source && !t.stopped) return t;
    return null;
  }

  _setMuted(source, muted) {
    if (!(source in MUTABLE)) throw new Error(`cannot mute ${source}`);
    this._muted[source] = Boolean(muted);
    this._applyMuteToTracks(source);
    this._emit('local-mute', { source, muted: this._muted[source] });
    this._reportMutes();
  }

  _applyMuteToTracks(source) {
    const enabled = !this._muted[source];
    this.localStream?.getTracks().forEach((t) => {
      if (t.kind === MUTABLE[source]) t.enabled = enabled;
    });
    const sending = this._transceiver(source)?.sender.track;
    if (sending) sending.enabled = enabled;
  }

  /** Tell the server the mute state of every published track where it differs. */
  _reportMutes() {
    if (this.state !== 'joined') return;
    for (const [t, source] of this._pub.sources) {
      if (!(source in MUTABLE) || t.mid == null) continue;
      const id = P.ownTrackId(this.id, t.mid);
      if (!this._pub.answered.has(t.mid)) {
        this._reportedMute.delete(id); // unpublished: a new publication starts unmuted
        continue;
      }
      const muted = this._muted[source];
      if ((this._reportedMute.get(id) ?? false) !== muted) {
        if (this._send(P.mute(id, muted))) this._reportedMute.set(id, muted);
      }
    }
  }

  // ----- internals: signaling -------------------------------------------------------

  _onFrame(data) {
    this._unansweredSince = null; // any message shows the server is alive
    let msg;
    try {
      msg = P.parse(data);
    } catch (e) {
      console.warn('ignoring bad server message:', e.message, data);
      return;
    }
    this._emit('message', msg);
    switch (msg.type) {
      case 'joined':
        return this._onJoined(msg);
      case 'participant-joined':
        return this._onParticipantJoined(msg.participant);
      case 'participant-left':
        return this._onParticipantLeft(msg);
      case 'track-published':
        return this._onTrackPublished(msg);
      case 'track-unpublished':
        return this._onTrackUnpublished(msg);
      case 'answer':
        return this._onPublishAnswer(msg).catch((e) => this._localError('publish', e));
      case 'offer':
        this._subscribeChain = this._subscribeChain
          .then(() => this._onSubscribeOffer(msg))
          .catch((e) => this._localError('subscribe', e));
        return;
      case 'mute':
        return this._onMute(msg);
      case 'chat':
        return this._emit('chat', { ...msg, self: msg.from === this.id });
      case 'track-quality':
        return this._emit('track-quality', msg);
      case 'layers':
        return this._onLayers(msg);
      case 'active-speaker':
        this.activeSpeaker = msg.participant;
        return this._emit('active-speaker', { participant: msg.participant });
      case 'error':
        return this._onServerError(msg);
      case 'data-error':
        return this._emit('data-error', msg);
      case 'recording':
        this.recording = { active: msg.active, participants: msg.participants };
        return this._emit('recording', this.recording);
      case 'pong':
        return;
      case 'server-shutdown':
        return this._emit('server-shutdown', { grace_s: msg.grace_s });
    }
  }

  _onJoined(m) {
    if (this.state !== 'joining') return;
    this.id = m.id;
    this.room = m.room;
    this.iceServers = m.ice_servers;
    this.heartbeatIntervalS = m.heartbeat_interval_s;
    this.maxMessageBytes = m.max_message_bytes;
    for (const p of m.participants) this._addParticipant(p);
    this._startHeartbeat();
    this.publishPc = this._createPc('publish');
    this._setState('joined');
    this._emit('joined', { id: m.id, room: m.room, participants: [...this.participants.values()] });
    this._joinWaiter?.resolve(m);
    this._joinWaiter = null;
    const gen = this._gen;
    this._mediaReady.then(() => gen === this._gen && this._publishLocalMedia());
  }

  /** Our two data channels, the same labels and options as the server's (once per connection). */
  _openDataChannels() {
    const pc = this.publishPc;
    if (!pc || this._data.out.reliable || typeof pc.createDataChannel !== 'function') return false;
    this._data.out.reliable = pc.createDataChannel(P.DATA_RELIABLE_LABEL, { ordered: true });
    this._data.out.lossy = pc.createDataChannel(P.DATA_LOSSY_LABEL, { ordered: false, maxRetransmits: 0 });
    for (const [kind, channel] of Object.entries(this._data.out)) {
      channel.onopen = () => this._emit('data-open', { channel: kind, direction: 'send' });
    }
    return true;
  }

  _onServerChannel(channel) {
    const reliable = channel.label === P.DATA_RELIABLE_LABEL;
    channel.binaryType = 'arraybuffer';
    this._data.in[reliable ? 'reliable' : 'lossy'] = channel;
    const open = () => this._emit('data-open', { channel: reliable ? 'reliable' : 'lossy', direction: 'receive' });
    if (channel.readyState === 'open') open();
    else channel.onopen = open;
    channel.onmessage = (ev) => {
      let frame;
      try {
        frame = P.decodeDataFrame(ev.data);
      } catch (e) {
        console.warn('a data message that is no frame', e);
        return;
      }
      const name = this.participants.get(frame.from)?.name ?? '';
      if (frame.topic === CHAT_TOPIC && frame.text) {
        this._emit('chat', { from: frame.from, name, text: frame.data, ts_ms: Date.now(), self: false, via: 'data' });
      } else if (frame.topic === TYPING_TOPIC) {
        this._emit('typing', { from: frame.from, name });
      }
      this._emit('data', { ...frame, name, reliable });
    };
  }

  _startHeartbeat() {
    const intervalMs = this.heartbeatIntervalS * 1000;
    // The server's own liveness check uses WebSocket pings, which JS cannot see,
    // but it answers every `ping`: a ping unanswered for this long means the link
    // is dead. Timed from the ping, not from the last message, so that a
    // background tab whose timers are throttled is not taken for a dead link.
    const timeoutMs = Math.max(10_000, 5 * intervalMs);
    this._timers.push(
      setInterval(() => {
        if (this._unansweredSince !== null && Date.now() - this._unansweredSince > timeoutMs) {
          return this._lost('the server stopped answering');
        }
        if (this._send(P.ping()) && this._unansweredSince === null) this._unansweredSince = Date.now();
      }, intervalMs),
    );
  }

  _addParticipant(p) {
    const entry = { id: p.id, name: p.name, tracks: new Map(p.tracks.map((t) => [t.id, { ...t }])) };
    this.participants.set(p.id, entry);
    return entry;
  }

  _onParticipantJoined(p) {
    if (p.id === this.id) return;
    this._emit('participant-joined', { participant: this._addParticipant(p) });
  }

  _onParticipantLeft(m) {
    const participant = this.participants.get(m.id) ?? null;
    this.participants.delete(m.id);
    for (const [mid, c] of this.consumers) if (c.participant === m.id) this._detach(mid);
    this._emit('participant-left', { id: m.id, reason: m.reason ?? 'left', participant });
  }

  _onTrackPublished(m) {
    const p = this.participants.get(m.participant);
    if (p) p.tracks.set(m.track.id, { ...m.track });
    this._emit('track-published', { participant: m.participant, track: m.track });
  }

  _onTrackUnpublished(m) {
    this.participants.get(m.participant)?.tracks.delete(m.track);
    for (const [mid, c] of this.consumers) if (c.track === m.track) this._detach(mid);
    this._emit('track-unpublished', { participant: m.participant, track: m.track });
  }

  _onMute(m) {
    if (m.participant === this.id) return; // echo of our own mute
    const track = this.participants.get(m.participant)?.tracks.get(m.track);
    if (track) track.muted = m.muted;
    this._emit('mute', { participant: m.participant, track: m.track, muted: m.muted, source: track?.source ?? null });
  }

  /**
   * Dynacast: the server asks us to send only the encodings of one of our videos that some
   * subscriber receives (`active` RIDs; `paused`: none at all). `active: null` means all.
   */
  _onLayers(m) {
    if (m.active === null && !m.paused) this._layers.delete(m.track);
    else this._layers.set(m.track, { active: m.active, paused: m.paused });
    this._emit('local-layers', { track: m.track, active: m.active, paused: m.paused });
    const gen = this._gen;
    // One setParameters at a time (each must start from what the previous one set); a
    // request that is superseded meanwhile is applied as the newest one when its turn comes.
    this._layersChain = this._layersChain
      .then(() => this._applyLayers(m.track, gen))
      .catch((e) => console.warn(`could not apply layers for ${m.track}`, e));
  }

  async _applyLayers(track, gen, retry = true) {
    const pc = this.publishPc;
    if (gen !== this._gen || !pc || pc.signalingState === 'closed') return;
    let transceiver = null;
    for (const t of this._pub.sources.keys()) {
      if (!t.stopped && t.mid != null && P.ownTrackId(this.id, t.mid) === track) transceiver = t;
    }
    if (!transceiver) return; // unpublished meanwhile
    const want = this._layers.get(track) ?? { active: null, paused: false };
    const sender = transceiver.sender;
    const params = sender.getParameters();
    if (!params.encodings?.length) return;
    let changed = false;
    for (const e of params.encodings) {
      const active = wantsEncoding(want, e, params.encodings.length);
      if ((e.active !== false) !== active) {
        e.active = active;
        changed = true;
      }
    }
    if (!changed) return;
    try {
      await sender.setParameters(params);
    } catch (e) {
      // e.g. a renegotiation changed the parameters between get and set: once more.
      if (!retry) throw e;
      await this._applyLayers(track, gen, false);
    }
  }

  _onServerError(m) {
    const fatal = this.state === 'joining'; // e.g. room-full: we never got in
    this._emit('error', { code: m.code, message: m.message, request: m.request ?? null, fatal });
    if (fatal) {
      const waiter = this._joinWaiter;
      this._joinWaiter = null;
      this._cleanup(m.code);
      this._setState('error');
      waiter?.reject(Object.assign(new Error(m.message || m.code), { code: m.code }));
    } else if (m.request === 'offer' && this._pub.busy) {
      this._abandonPublishOffer();
    }
  }

  _localError(what, e) {
    console.error(`${what} negotiation failed`, e);
    this._emit('error', { code: `${what}-failed`, message: e?.message ?? String(e), request: null, fatal: false });
  }

  // ----- internals: peer connections ---------------------------------------------------

  _createPc(name) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy ?? 'all', // app.js: ?relay=1 forces TURN
      bundlePolicy: 'max-bundle',
    });
    pc.onicecandidate = (ev) => this._onLocalCandidate(name, ev.candidate);
    pc.onconnectionstatechange = () => {
      if (pc !== this[`${name}Pc`]) return;
      this._emit('pc-state', { pc: name, state: pc.connectionState });
      if (pc.connectionState === 'failed') this._lost(`${name} connection failed`);
    };
    return pc;
  }

  _onLocalCandidate(name, cand) {
    const msg = P.candidate(name, cand);
    if (msg.candidate === null) {
      if (this._endOfCandidates[name]) return; // Chrome may signal the end twice
      this._endOfCandidates[name] = true;
    } else {
      this._endOfCandidates[name] = false;
    }
    // Candidates must follow our offer (publish) or answer (subscribe).
    if (this._signalled[name]) this._send(msg);
    else this._candidateQueue[name].push(msg);
  }

  _markSignalled(name) {
    if (this._signalled[name]) return;
    this._signalled[name] = true;
    this._candidateQueue[name].splice(0).forEach((m) => this._send(m));
  }

  // publish: we offer, one offer at a time.

  _publishLocalMedia() {
    const pc = this.publishPc;
    const stream = this.localStream;
    if (!pc) return;
    if (!stream) {
      // No camera or microphone (denied, none): data channels alone. A viewer (publish=0)
      // opens none (its token may not grant publish); it still receives data, and chats
      // over the signaling socket.
      if (this.publish && this._openDataChannels()) this._negotiatePublish();
      return;
    }
    // Microphone first, then camera: mids follow this order.
    for (const [source, kind] of Object.entries(MUTABLE)) {
      for (const track of stream.getTracks().filter((t) => t.kind === kind)) {
        const init = { direction: 'sendonly', streams: [stream] };
        if (kind === 'video' && this.simulcast) init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
        const t = pc.addTransceiver(track, init);
        if (kind === 'video') this._preferCodec(t, kind);
        this._pub.sources.set(t, source);
      }
    }
    // Data channels after the media transceivers, in the same first offer.
    if (this._openDataChannels() || this._pub.sources.size) this._negotiatePublish();
  }

  /** Offer the chosen video codec first (the server answers the first one it can forward). */
  _preferCodec(transceiver, kind) {
    if (!this.videoCodec || typeof transceiver.setCodecPreferences !== 'function') return;
    const codecs = globalThis.RTCRtpSender?.getCapabilities?.(kind)?.codecs ?? [];
    const wanted = `${kind}/${this.videoCodec}`;
    const rank = (c) => {
      if (c.mimeType.toLowerCase() !== wanted) return 2;
      // H.264: packetization-mode=1 and the constrained-baseline profile are what everyone decodes.
      const fmtp = c.sdpFmtpLine ?? '';
      return fmtp.includes('packetization-mode=0') ? 1 : fmtp.includes('42e01f') ? 0 : 0.5;
    };
    const ordered = [...codecs].sort((a, b) => rank(a) - rank(b));
    if (!ordered.length || rank(ordered[0]) >= 2) {
      console.warn(`video codec ${this.videoCodec} is not available here; using the default`);
      return;
    }
    try {
      transceiver.setCodecPreferences(ordered);
    } catch (err) {
      console.warn('setCodecPreferences failed', err);
    }
  }

  async _negotiatePublish() {
    const pc = this.publishPc;
    const pub = this._pub;
    if (!pc || pc.signalingState === 'closed') return;
    if (pub.busy) {
      pub.again = true;
      return;
    }
    pub.busy = true;
    pub.again = false;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      if (pc !== this.publishPc || pc.signalingState === 'closed') return;
      const sources = {};
      pub.offeredMids = new Set();
      for (const [t, source] of pub.sources) {
        if (t.mid == null || t.stopped) continue;
        sources[t.mid] = source;
        if (t.direction === 'sendonly' && t.sender.track) pub.offeredMids.add(t.mid);
      }
      if (!this._send(P.offer(pc.localDescription.sdp, sources))) throw new Error('could not send the offer');
      this._markSignalled('publish');
    } catch (e) {
      pub.busy = false;
      if (pc === this.publishPc && pc.signalingState !== 'closed') this._localError('publish', e);
    }
  }

  async _onPublishAnswer(m) {
    const pc = this.publishPc;
    const pub = this._pub;
    if (!pc || !pub.busy || pc.signalingState !== 'have-local-offer') {
      console.warn('ignoring a publish answer with no offer outstanding');
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
    if (pc !== this.publishPc) return;
    pub.answered = pub.offeredMids;
    pub.busy = false;
    this._reportMutes();
    this._emit('published', { tracks: this.publishedTracks });
    if (pub.again) this._negotiatePublish();
  }

  /** The server rejected our offer: go back to the last agreed state. */
  async _abandonPublishOffer() {
    const pc = this.publishPc;
    try {
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
    } catch (e) {
      console.warn('rollback failed', e);
    }
    this._pub.busy = false;
    if (this._pub.again) this._negotiatePublish();
  }

  // subscribe: the server offers, we answer.

  async _onSubscribeOffer(m) {
    const gen = this._gen;
    if (this.state !== 'joined') return;
    if (!this.subscribePc) {
      this.subscribePc = this._createPc('subscribe');
      this.subscribePc.ontrack = (ev) => this._attach(ev.transceiver);
      this.subscribePc.ondatachannel = (ev) => this._onServerChannel(ev.channel);
    }
    const pc = this.subscribePc;
    const next = new Map(m.consumers.map((c) => [c.mid, c]));
    // m-sections may be reused for another track or become inactive:
    // detach whatever no longer matches before the new description applies.
    for (const [mid, cur] of this.consumers) {
      const n = next.get(mid);
      if (!n || n.track !== cur.track || n.participant !== cur.participant) this._detach(mid);
    }
    this._offered = next;
    await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
    if (gen !== this._gen) return;
    // ontrack fires only when an m-section starts receiving; a reused one does not
    // fire again, so check every transceiver against the new mapping.
    for (const t of pc.getTransceivers()) this._attach(t);
    await pc.setLocalDescription(await pc.createAnswer());
    if (gen !== this._gen) return;
    this._send(P.answer(pc.localDescription.sdp));
    this._markSignalled('subscribe');
  }

  _attach(transceiver) {
    const mid = transceiver.mid;
    const c = mid != null && this._offered.get(mid);
    if (!c) return;
    const mediaTrack = transceiver.receiver.track;
    if (mediaTrack.kind !== c.kind) {
      console.warn(`consumer ${mid} says ${c.kind} but the m-section is ${mediaTrack.kind}`);
      return;
    }
    const cur = this.consumers.get(mid);
    if (cur && cur.track === c.track && cur.participant === c.participant && cur.mediaTrack === mediaTrack) return;
    if (cur) this._detach(mid);
    const entry = { mid, participant: c.participant, track: c.track, kind: c.kind, source: c.source, mediaTrack };
    this.consumers.set(mid, entry);
    this._emit('remote-track', entry);
  }

  /**
   * Tell the server how much of a remote track we need: the height we render it at
   * (a cap; null for no cap), or nothing at all while it is not visible (paused);
   * `pinned` tracks are served first when our downlink is short.
   */
  setSubscription(track, { maxHeight = null, paused = false, pinned = false } = {}) {
    const last = this._subscriptions.get(track);
    if (last && last.maxHeight === maxHeight && last.paused === paused && last.pinned === pinned) return;
    this._subscriptions.set(track, { maxHeight, paused, pinned });
    if (this.state === 'joined') this._send(P.subscription(track, maxHeight, paused, pinned));
  }

  _detach(mid) {
    const cur = this.consumers.get(mid);
    if (!cur) return;
    this.consumers.delete(mid);
    this._emit('remote-track-removed', cur);
  }
}

/** Whether an encoding should be sent under the server's request `want` ({active, paused}). */
function wantsEncoding(want, encoding, count) {
  if (want.paused) return false;
  if (want.active === null || encoding.rid == null || count === 1) return true; // all, or the only encoding
  return want.active.includes(encoding.rid);
}

async function permissionState(name) {
  try {
    return (await navigator.permissions.query({ name })).state;
  } catch {
    return 'unknown';
  }
}
