// Pinning and the active speaker in the protocol module. Run with: node --test client/tests/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../protocol.js';

test('subscription carries pinned, false unless asked', () => {
  assert.deepEqual(P.subscription('p1-1', 360, false), { type: 'subscription', track: 'p1-1', max_height: 360, paused: false, pinned: false });
  assert.equal(P.subscription('p1-1', 720, false, true).pinned, true);
});

test('active-speaker names a participant or nobody', () => {
  assert.equal(P.parse('{"type":"active-speaker","participant":"p1"}').participant, 'p1');
  assert.equal(P.parse('{"type":"active-speaker","participant":null}').participant, null);
  assert.throws(() => P.parse('{"type":"active-speaker","participant":5}'), P.ProtocolError);
  assert.throws(() => P.parse('{"type":"active-speaker"}'), P.ProtocolError);
});

test('track-quality is a known server message', () => {
  const m = P.parse('{"type":"track-quality","track":"p1-1","paused":true,"reason":"bandwidth","estimate_bps":1}');
  assert.equal(m.paused, true);
  assert.throws(() => P.parse('{"type":"track-quality","track":"p1-1"}'), P.ProtocolError);
});
