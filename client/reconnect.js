// Reconnecting (docs/protocol.md, Reconnecting): the decisions, as pure functions with the time
// and the randomness passed in, so that they run under node. session.js does the I/O.

// The first retry after this long, doubling up to the cap; each delay is jittered ±50 %.
export const FIRST_DELAY_MS = 100;
export const MAX_DELAY_MS = 2000;
// A socket that does not open within this long is given up and the next attempt started; one
// that opened gets this long for the answer to its first message.
export const CONNECT_TIMEOUT_MS = 2500;
export const ANSWER_TIMEOUT_MS = 5000;
// A peer connection that stays `disconnected` this long is renewed (`failed`: at once).
export const DISCONNECTED_RENEW_MS = 2000;
// After a resume, a connection that is not `connected` gets this long to recover by itself
// (its ICE consent checks resume once the network is back) before it is renewed.
export const RECOVER_AFTER_RESUME_MS = 1000;
// While a peer connection is disconnected, an unanswered ping means the socket is dead too
// after this long (the network changed under both).
export const PROBE_TIMEOUT_MS = 500;

// Server error codes after which the client must not come back (it was sent away).
export const FINAL_ERRORS = Object.freeze(['kicked', 'room-closed', 'unauthorized', 'shutting-down']);
// Close codes with the same meaning: going away (shutdown), policy (kicked, room closed), another
// socket resumed us.
export const FINAL_CLOSE_CODES = Object.freeze([1001, 1008, 4002]);
// The close code we send when we give up a socket to reconnect (the server takes 1000 and 1001
// as a deliberate leave, any other code as a lost socket).
export const CLOSE_RECONNECTING = 4100;

/** The delay before reconnect attempt `attempt` (0 first), with `random` in [0, 1). */
export function backoffMs(attempt, random = Math.random) {
  const base = Math.min(FIRST_DELAY_MS * 2 ** Math.max(0, attempt), MAX_DELAY_MS);
  return Math.round(base * (0.5 + random()));
}

/**
 * Whether a socket that closed should be reconnected: not after a leave, a kick, a closed room,
 * a shutdown or a refusal, and only once we were in the room.
 * @param {{joined: boolean, left: boolean, closeCode: number, lastError: string|null, shutdown: boolean}} s
 */
export function shouldReconnect({ joined, left, closeCode, lastError = null, shutdown = false }) {
  if (!joined || left || shutdown) return false;
  if (FINAL_CLOSE_CODES.includes(closeCode)) return false;
  return !(lastError && FINAL_ERRORS.includes(lastError));
}

/**
 * How to come back once a new socket is open: `resume` while the server may still hold the
 * session (lost less than the grace ago, with a token), else `join` as a new participant.
 */
export function comeBackWith({ token, graceS, lostAtMs, nowMs }) {
  if (!token || !(graceS > 0)) return 'join';
  return nowMs - lostAtMs < graceS * 1000 ? 'resume' : 'join';
}

/**
 * Whether a peer connection needs renewing now: `failed` (or closed under us) at once,
 * `disconnected` (or still connecting after a resume) once it has been so for `afterMs`.
 * `sinceMs`: when it left `connected` (null: it is connected).
 */
export function needsRenewal(state, sinceMs, nowMs, afterMs = DISCONNECTED_RENEW_MS) {
  if (state === 'connected' || state === 'new') return false;
  if (state === 'failed' || state === 'closed') return true;
  return sinceMs !== null && nowMs - sinceMs >= afterMs;
}

// A peer connection whose incoming bytes stop this long, after flowing steadily, is taken as
// down before the browser says so (it notices a changed network only after several seconds).
// (A false alarm costs a ping: the connection is renewed only if it stays so.)
export const STALL_MS = 500;
export const FLOW_SAMPLE_MS = 200;

/**
 * Watches one peer connection's received bytes (sampled every FLOW_SAMPLE_MS): `stalled` once
 * they stop for STALL_MS after a steady flow (at least 3 increases in the second before), so that
 * a connection that only ever carries a trickle (everyone muted) is never taken for a dead one.
 */
export class FlowWatch {
  constructor() {
    this.bytes = null;
    this.increases = []; // times the count went up, the last second's worth
    this.lastIncreaseMs = null;
  }

  /** How long no byte came (null: none ever did). */
  idleMs(nowMs) {
    return this.lastIncreaseMs === null ? null : nowMs - this.lastIncreaseMs;
  }

  /** One sample: true while the flow is stalled. */
  sample(nowMs, bytes) {
    if (this.bytes !== null && bytes > this.bytes) {
      this.increases.push(nowMs);
      this.lastIncreaseMs = nowMs;
    }
    if (this.bytes === null || bytes < this.bytes) this.increases = []; // a new connection
    this.bytes = bytes;
    const last = this.increases.at(-1);
    if (last === undefined) return false;
    if (nowMs - last < STALL_MS) {
      this.increases = this.increases.filter((t) => t > last - 1000);
      return false;
    }
    return this.increases.filter((t) => t > last - 1000).length >= 3;
  }
}
