// Run with: node --test client/tests/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../protocol.js';

test('join validates room and name', () => {
  assert.deepEqual(P.join('demo_1.a-b', 'Ada'), { type: 'join', room: 'demo_1.a-b', name: 'Ada' });
  assert.throws(() => P.join('', 'Ada'), P.ProtocolError);
  assert.throws(() => P.join('has space', 'Ada'), P.ProtocolError);
  assert.throws(() => P.join('x'.repeat(65), 'Ada'), P.ProtocolError);
  assert.throws(() => P.join('demo', '   '), P.ProtocolError);
  assert.throws(() => P.join('demo', 'n'.repeat(65)), P.ProtocolError);
  assert.doesNotThrow(() => P.join('x'.repeat(64), '😀'.repeat(64))); // counted in characters
});

test('offer carries pc and sources', () => {
  assert.deepEqual(P.offer('v=0', { 0: 'microphone', 1: 'camera' }), {
    type: 'offer',
    pc: 'publish',
    sdp: 'v=0',
    sources: { 0: 'microphone', 1: 'camera' },
  });
  assert.equal('sources' in P.offer('v=0', {}), false);
  assert.throws(() => P.offer('v=0', { 0: 'webcam' }), P.ProtocolError);
  assert.deepEqual(P.answer('v=0'), { type: 'answer', pc: 'subscribe', sdp: 'v=0' });
});

test('candidates use snake_case and null for the end', () => {
  const c = { candidate: 'candidate:1 1 udp 1 1.2.3.4 5 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  const msg = P.candidate('publish', c);
  assert.deepEqual(msg, {
    type: 'candidate',
    pc: 'publish',
    candidate: { candidate: c.candidate, sdp_mid: '0', sdp_mline_index: 0 },
  });
  assert.deepEqual(P.candidateFromWire(msg.candidate), c);
  assert.equal(P.candidate('subscribe', null).candidate, null);
  assert.equal(P.candidate('subscribe', { candidate: '', sdpMid: '0', sdpMLineIndex: 0 }).candidate, null);
  assert.throws(() => P.candidate('other', null), P.ProtocolError);
});

test('mute, chat, ping, leave', () => {
  assert.deepEqual(P.mute('p1-0', true), { type: 'mute', track: 'p1-0', muted: true });
  assert.equal(P.ownTrackId('p1', '1'), 'p1-1');
  assert.deepEqual(P.chat('hi'), { type: 'chat', text: 'hi' });
  assert.throws(() => P.chat(''), P.ProtocolError);
  assert.throws(() => P.chat('x'.repeat(2001)), P.ProtocolError);
  assert.deepEqual(P.ping(), { type: 'ping' });
  assert.deepEqual(P.leave(), { type: 'leave' });
});

test('encode refuses frames over max_message_bytes', () => {
  assert.equal(P.encode(P.ping()), '{"type":"ping"}');
  assert.throws(() => P.encode(P.offer('x'.repeat(100)), 64), P.ProtocolError);
});

test('parse joined fills defaults', () => {
  const m = P.parse(
    JSON.stringify({
      type: 'joined',
      protocol: 1,
      id: 'p2',
      room: 'demo',
      participants: [{ id: 'p1', name: 'Ada', tracks: [{ id: 'p1-0', kind: 'audio', source: 'microphone', muted: true }] }],
      extra: 'ignored',
    }),
  );
  assert.deepEqual(m.ice_servers, []);
  assert.equal(m.heartbeat_interval_s, 2);
  assert.equal(m.max_message_bytes, 65536);
  assert.equal(m.participants[0].tracks[0].muted, true);
  assert.throws(() => P.parse(JSON.stringify({ type: 'joined', protocol: 2, id: 'p', room: 'r', participants: [] })), P.ProtocolError);
});

test('parse subscribe offer with consumers', () => {
  const m = P.parse(
    JSON.stringify({
      type: 'offer',
      pc: 'subscribe',
      sdp: 'v=0',
      consumers: [
        { mid: '0', participant: 'p1', track: 'p1-0', kind: 'audio', source: 'microphone' },
        { mid: '1', participant: 'p1', track: 'p1-1', kind: 'video' },
      ],
    }),
  );
  assert.equal(m.consumers[1].source, 'camera');
  assert.throws(() => P.parse(JSON.stringify({ type: 'offer', pc: 'publish', sdp: 'v=0', consumers: [] })), P.ProtocolError);
  assert.throws(
    () => P.parse(JSON.stringify({ type: 'offer', pc: 'subscribe', sdp: 'v=0', consumers: [{ mid: '0', kind: 'audio' }] })),
    P.ProtocolError,
  );
});

test('parse other server messages', () => {
  assert.equal(P.parse('{"type":"pong"}').type, 'pong');
  assert.equal(P.parse('{"type":"answer","pc":"publish","sdp":"v=0"}').sdp, 'v=0');
  assert.equal(P.parse('{"type":"error","code":"room-full"}').message, '');
  assert.equal(P.parse('{"type":"mute","participant":"p1","track":"p1-1","muted":false}').muted, false);
  assert.throws(() => P.parse('{"type":"mute","participant":"p1","track":"p1-1"}'), P.ProtocolError);
  const chat = P.parse('{"type":"chat","from":"p1","name":"Ada","text":"hi","ts_ms":5}');
  assert.equal(chat.ts_ms, 5);
  const left = P.parse('{"type":"participant-left","id":"p1","reason":"timeout"}');
  assert.equal(left.reason, 'timeout');
  const pub = P.parse('{"type":"track-published","participant":"p1","track":{"id":"p1-2","kind":"video","source":"screen"}}');
  assert.equal(pub.track.muted, false);
});

test('parse rejects bad frames', () => {
  assert.throws(() => P.parse('not json'), P.ProtocolError);
  assert.throws(() => P.parse('[1]'), P.ProtocolError);
  assert.throws(() => P.parse('{"type":"nope"}'), P.ProtocolError);
  assert.throws(() => P.parse('{"no":"type"}'), P.ProtocolError);
});

test('parse layers (dynacast)', () => {
  const m = P.parse('{"type":"layers","track":"p1-1","active":["q","h"],"paused":false}');
  assert.deepEqual([m.track, m.active, m.paused], ['p1-1', ['q', 'h'], false]);
  assert.deepEqual(P.parse('{"type":"layers","track":"p1-1","paused":true}').active, []);
  assert.throws(() => P.parse('{"type":"layers","active":[]}'), P.ProtocolError);
  assert.throws(() => P.parse('{"type":"layers","track":"p1-1","active":"q"}'), P.ProtocolError);
});

test('parse recording', () => {
  const m = P.parse('{"type":"recording","active":true,"participants":["p1"]}');
  assert.deepEqual([m.active, m.participants], [true, ['p1']]);
  assert.deepEqual(P.parse('{"type":"recording","active":false}').participants, []);
  assert.throws(() => P.parse('{"type":"recording","participants":[]}'), P.ProtocolError);
  assert.throws(() => P.parse('{"type":"recording","active":true,"participants":"p1"}'), P.ProtocolError);
});

test('parse server-shutdown', () => {
  assert.equal(P.parse('{"type":"server-shutdown","grace_s":5}').grace_s, 5);
  assert.equal(P.parse('{"type":"server-shutdown"}').grace_s, 0);
});

test('data frames: the exact bytes, round trips and bad input', () => {
  const plain = P.encodeDataFrame(new Uint8Array([7, 8]));
  assert.deepEqual([...plain], [1, 0, 0, 0, 7, 8]);
  const text = P.encodeDataFrame('hello', { topic: 'chat', to: ['p2a1b2c'] });
  const header = '{"topic":"chat","to":["p2a1b2c"]}';
  assert.deepEqual([...text.subarray(0, 4)], [1, 1, 0, header.length]);
  assert.equal(new TextDecoder().decode(text.subarray(4)), `${header}hello`);
  // What the server delivers: the sender's id and the topic.
  const delivered = new Uint8Array([1, 1, 0, 28, ...new TextEncoder().encode('{"from":"p1","topic":"chat"}hé')]);
  assert.deepEqual(P.decodeDataFrame(delivered.buffer), { from: 'p1', topic: 'chat', text: true, data: 'hé' });
  const bin = P.decodeDataFrame(P.encodeDataFrame(new Uint8Array([0, 255])));
  assert.deepEqual([bin.from, bin.topic, bin.text, [...bin.data]], [null, null, false, [0, 255]]);
  for (const bad of ['text', new Uint8Array([1]), new Uint8Array([2, 0, 0, 0]), new Uint8Array([1, 4, 0, 0]),
    new Uint8Array([1, 0, 0, 9, 123]), new Uint8Array([1, 0, 0, 1, 123]), new Uint8Array([1, 1, 0, 0, 0xff])]) {
    assert.throws(() => P.decodeDataFrame(bad), P.ProtocolError);
  }
  assert.throws(() => P.encodeDataFrame(42), P.ProtocolError);
  assert.throws(() => P.encodeDataFrame('x', { to: [] }), P.ProtocolError);
});

test('parse data-error', () => {
  const m = P.parse('{"type":"data-error","code":"too-large","message":"m","channel":"lossy","dropped":3,"ref":"r"}');
  assert.deepEqual([m.code, m.channel, m.dropped, m.ref], ['too-large', 'lossy', 3, 'r']);
  assert.equal(P.parse('{"type":"data-error","code":"rate-limited","channel":"reliable"}').dropped, 1);
  assert.throws(() => P.parse('{"type":"data-error","code":"x","channel":"other"}'), P.ProtocolError);
});
