// Run with: node --test client/tests/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../protocol.js';
import * as R from '../reconnect.js';

test('backoff doubles up to its cap, with ±50 % jitter', () => {
  const mid = () => 0.5; // no jitter
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10].map((a) => R.backoffMs(a, mid)),
    [100, 200, 400, 800, 1600, 2000],
  );
  assert.equal(R.backoffMs(0, () => 0), 50);
  assert.equal(R.backoffMs(5, () => 0.999999), 3000);
  for (let i = 0; i < 100; i++) {
    const d = R.backoffMs(2);
    assert.ok(d >= 200 && d <= 600, d);
  }
});

test('a deliberate end never reconnects', () => {
  const lost = { joined: true, left: false, closeCode: 1006, lastError: null, shutdown: false };
  assert.equal(R.shouldReconnect(lost), true);
  assert.equal(R.shouldReconnect({ ...lost, closeCode: 4100 }), true);
  assert.equal(R.shouldReconnect({ ...lost, left: true }), false);
  assert.equal(R.shouldReconnect({ ...lost, joined: false }), false); // never got in
  assert.equal(R.shouldReconnect({ ...lost, shutdown: true }), false);
  for (const code of [1001, 1008, 4002]) assert.equal(R.shouldReconnect({ ...lost, closeCode: code }), false, code);
  for (const error of ['kicked', 'room-closed', 'unauthorized']) {
    assert.equal(R.shouldReconnect({ ...lost, lastError: error }), false, error);
  }
  assert.equal(R.shouldReconnect({ ...lost, lastError: 'rate-limited' }), true);
});

test('resume within the grace, join as new after it or without a token', () => {
  const base = { token: 't', graceS: 15, lostAtMs: 1000 };
  assert.equal(R.comeBackWith({ ...base, nowMs: 1000 }), 'resume');
  assert.equal(R.comeBackWith({ ...base, nowMs: 15_999 }), 'resume');
  assert.equal(R.comeBackWith({ ...base, nowMs: 16_000 }), 'join');
  assert.equal(R.comeBackWith({ ...base, token: null, nowMs: 1000 }), 'join');
  assert.equal(R.comeBackWith({ ...base, graceS: 0, nowMs: 1000 }), 'join');
});

test('a failed connection is renewed at once, a disconnected one after a while', () => {
  assert.equal(R.needsRenewal('connected', null, 0), false);
  assert.equal(R.needsRenewal('new', 0, 10_000), false);
  assert.equal(R.needsRenewal('failed', 5000, 5000), true);
  assert.equal(R.needsRenewal('closed', 5000, 5000), true);
  assert.equal(R.needsRenewal('disconnected', 5000, 5000 + R.DISCONNECTED_RENEW_MS - 1), false);
  assert.equal(R.needsRenewal('disconnected', 5000, 5000 + R.DISCONNECTED_RENEW_MS), true);
  assert.equal(R.needsRenewal('connecting', 5000, 6000, 1000), true);
});

test('resume and renew messages, and a restart offer', () => {
  assert.deepEqual(P.resume('demo', 'tok', 'p1'), { type: 'resume', room: 'demo', token: 'tok', id: 'p1' });
  assert.deepEqual(P.resume('demo', 'tok'), { type: 'resume', room: 'demo', token: 'tok' });
  assert.throws(() => P.resume('bad room', 'tok'), P.ProtocolError);
  assert.throws(() => P.resume('demo', ''), P.ProtocolError);
  assert.deepEqual(P.renew(), { type: 'renew', pc: 'subscribe' });
  assert.equal(P.offer('v=0', {}, true).restart, true);
  assert.equal('restart' in P.offer('v=0', {}), false);
});

test('the server messages of reconnecting parse', () => {
  const joined = {
    type: 'joined',
    protocol: 1,
    id: 'p1',
    room: 'demo',
    participants: [{ id: 'p2', name: 'B', tracks: [], reconnecting: true }],
    resume_token: 'tok',
    resume_grace_s: 15,
  };
  const m = P.parse(JSON.stringify({ ...joined, type: 'resumed' }));
  assert.equal(m.resume_token, 'tok');
  assert.equal(m.resume_grace_s, 15);
  assert.equal(m.participants[0].reconnecting, true);
  const old = P.parse(JSON.stringify({ ...joined, resume_token: undefined, resume_grace_s: undefined }));
  assert.equal(old.resume_token, null); // a server that keeps no lost sessions
  assert.equal(old.resume_grace_s, 0);
  assert.equal(P.parse('{"type":"participant-reconnecting","id":"p2"}').id, 'p2');
  assert.equal(P.parse('{"type":"participant-resumed","id":"p2"}').id, 'p2');
  assert.equal(P.parse('{"type":"renew","pc":"publish"}').pc, 'publish');
  assert.throws(() => P.parse('{"type":"renew","pc":"subscribe"}'), P.ProtocolError);
  assert.throws(() => P.parse('{"type":"participant-resumed"}'), P.ProtocolError);
  const offer = P.parse('{"type":"offer","pc":"subscribe","sdp":"v=0","restart":true,"consumers":[]}');
  assert.equal(offer.restart, true);
  assert.equal(P.parse('{"type":"offer","pc":"subscribe","sdp":"v=0"}').restart, false);
});

test('a steady flow that stops is a stall; a trickle never is', () => {
  const w = new R.FlowWatch();
  let bytes = 0;
  for (let t = 0; t <= 2000; t += 100) assert.equal(w.sample(t, (bytes += 500)), false);
  assert.equal(w.sample(2000 + R.STALL_MS - 100, bytes), false);
  assert.equal(w.sample(2000 + R.STALL_MS, bytes), true);
  assert.equal(w.idleMs(2000 + R.STALL_MS), R.STALL_MS);
  assert.equal(w.sample(3000, bytes + 100), false); // flowing again
  assert.equal(w.idleMs(3000), 0);
  const trickle = new R.FlowWatch();
  for (let t = 0; t <= 10_000; t += 100) {
    assert.equal(trickle.sample(t, Math.floor(t / 1000) * 60), false, t); // one RTCP packet a second
  }
  const fresh = new R.FlowWatch();
  assert.equal(fresh.sample(0, 0), false);
  assert.equal(fresh.sample(5000, 0), false); // never flowed: not a stall
  assert.equal(fresh.idleMs(5000), null);
});
