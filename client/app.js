// Entry point: reads the URL (?room=NAME&name=X&autojoin=1) and wires the Session to the UI.

import { QualityWatcher } from './quality.js';
import { Session } from './session.js';
import { UI } from './ui.js';
import { isValidName, isValidRoom, MAX_NAME_CHARS } from './protocol.js';

const NAME_KEY = 'sfu.name';
const params = new URLSearchParams(location.search);
// ?simulcast=0 publishes the camera as a single stream; ?publish=0 joins as a viewer;
// ?codec=h264 (or vp8, vp9, av1) offers that video codec first.
const session = new Session({
  simulcast: params.get('simulcast') !== '0',
  publish: params.get('publish') !== '0',
  videoCodec: params.get('codec') ?? '',
});
const ui = new UI();
const quality = new QualityWatcher(session);
// ?token=JWT joins with an access token; ?relay=1 uses TURN relays only (iceTransportPolicy).
session.token = params.get('token');
session.iceTransportPolicy = params.get('relay') === '1' ? 'relay' : 'all';
window.sfuSession = session; // for end-to-end tests and the console

let last = { room: params.get('room') ?? '', name: params.get('name') ?? storedName() };
let statsOn = false;
let statsTimer = null;

// ----- actions -------------------------------------------------------------------

function join(room, name) {
  if (!isValidRoom(room)) {
    ui.showJoinForm({ room, name });
    return ui.showBanner('Room names are 1–64 letters, digits, "_", "-" or ".".', { code: 'bad-room' });
  }
  if (!isValidName(name)) {
    ui.showJoinForm({ room, name });
    return ui.showBanner(`Please enter a name (up to ${MAX_NAME_CHARS} characters).`, { code: 'bad-name' });
  }
  last = { room, name };
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // storage may be disabled
  }
  if (new URLSearchParams(location.search).get('room') !== room) {
    const url = new URL(location.href);
    url.searchParams.set('room', room);
    history.replaceState(null, '', url);
  }
  ui.hideBanner();
  ui.clearCall();
  ui.showCall(room);
  if (session.publish) ui.setLocalStream(null); // viewers have no tile of their own
  updateControls();
  session.join(room, name).catch(() => {}); // failures arrive as events below
}

function toggleStats() {
  statsOn = !statsOn;
  ui.setStatsVisible(statsOn);
  clearInterval(statsTimer);
  statsTimer = null;
  if (statsOn) {
    const refresh = () => {
      session.getReceiveStats().then((s) => statsOn && ui.showStats(s), () => {});
      session.getSendStats().then((s) => statsOn && ui.showLocalStats(s), () => {});
    };
    refresh();
    statsTimer = setInterval(refresh, 1000);
  }
  updateControls();
}

function updateControls() {
  const micMuted = session.isMuted('microphone');
  const cameraOff = session.isMuted('camera');
  ui.setControls({
    micMuted,
    cameraOff,
    hasMic: session.hasLocal('microphone'),
    hasCamera: session.hasLocal('camera'),
    sharing: session.screenSharing,
    stats: statsOn,
  });
  ui.setLocalFlags({ micMuted, cameraOff: cameraOff || !session.hasLocal('camera') });
}

function refreshParticipant(id) {
  const p = session.participants.get(id);
  if (!p) return;
  const tracks = [...p.tracks.values()];
  ui.setParticipantFlags(id, {
    micMuted: tracks.some((t) => t.source === 'microphone' && t.muted),
    cameraOff: tracks.some((t) => t.source === 'camera' && t.muted),
  });
}

const nameOf = (id) => session.participants.get(id)?.name ?? '';

function showFailure(text, code) {
  if (statsOn) toggleStats();
  ui.clearCall();
  ui.showJoinForm(last);
  ui.showBanner(text, { code, action: { label: 'Reconnect', onClick: () => join(last.room, last.name) } });
}

// ----- UI → session -------------------------------------------------------------------

ui.on('join', join);
ui.on('rejoin', () => join(last.room, last.name));
ui.on('leave', () => session.leave());
ui.on('toggleMic', () => session.setMicMuted(!session.isMuted('microphone')));
ui.on('toggleCamera', () => session.setCameraOff(!session.isMuted('camera')));
ui.on('toggleStats', toggleStats);
ui.on('toggleScreen', () => {
  if (session.screenSharing) return session.stopScreenShare();
  session.startScreenShare().catch((e) => {
    // NotAllowedError: the user closed the picker.
    if (e.name !== 'NotAllowedError') ui.showBanner(`Screen sharing failed: ${e.message}`, { kind: 'warning', code: 'screen' });
  });
});
ui.on('typing', () => session.sendTyping());
ui.on('sendChat', (text) => {
  try {
    session.sendChat(text);
  } catch (e) {
    ui.showBanner(`Message not sent: ${e.message}`, { kind: 'warning', code: 'chat' });
  }
});

// ----- session → UI ---------------------------------------------------------------------

session.on('state', ({ state }) => ui.setState(state));

session.on('joined', ({ participants }) => {
  for (const p of participants) {
    ui.participantTile(p.id, p.name);
    refreshParticipant(p.id);
  }
});

session.on('local-media', ({ stream, error, missing }) => {
  ui.setLocalStream(stream);
  updateControls();
  if (error) {
    const have = stream ? ` Joined with ${missing.includes('camera') ? 'microphone' : 'camera'} only.` : ' You can still see and hear the others.';
    ui.showBanner(`Camera or microphone unavailable: ${describe(error)}.${have}`, { kind: 'warning', code: 'media' });
  }
});

session.on('local-screen', ({ stream }) => {
  ui.setLocalScreen(stream);
  updateControls();
});

session.on('local-mute', updateControls);

session.on('participant-joined', ({ participant }) => {
  ui.participantTile(participant.id, participant.name);
  refreshParticipant(participant.id);
  ui.addChat({ system: true, text: `${participant.name || 'Guest'} joined` });
});

session.on('participant-left', ({ id, participant }) => {
  ui.removeParticipant(id);
  if (participant) ui.addChat({ system: true, text: `${participant.name || 'Guest'} left` });
});

for (const type of ['track-published', 'track-unpublished', 'mute']) {
  session.on(type, ({ participant }) => refreshParticipant(participant));
}

session.on('remote-track', (c) => {
  const tile = ui.addRemoteTrack(c, nameOf(c.participant));
  if (c.kind === 'video' && tile) quality.watch(c.track, tile.el);
});
session.on('remote-track-removed', (c) => {
  quality.unwatch(c.track);
  ui.removeRemoteTrack(c);
});
session.on('chat', (m) => ui.addChat(m));
session.on('typing', ({ name }) => ui.showTyping(name));
session.on('data-error', ({ code, message }) => {
  ui.showBanner(`Message not delivered (${code})${message ? `: ${message}` : ''}`, { kind: 'warning', code: 'data' });
});
session.on('active-speaker', ({ participant }) => ui.setActiveSpeaker(participant === session.id ? 'self' : participant));
session.on('recording', ({ active, participants }) => ui.setRecording(active, participants.includes(session.id)));
ui.on('pinChanged', () => quality.update());
session.on('track-quality', ({ track, paused }) => {
  const c = [...session.consumers.values()].find((x) => x.track === track);
  if (c) ui.setBandwidthPaused(c, paused);
});

session.on('error', ({ code, message, fatal }) => {
  if (fatal) {
    ui.clearCall();
    ui.showJoinForm(last);
  }
  if (code === 'room-full') ui.showBanner('Room is full', { code });
  else ui.showBanner(`Error ${code}${message ? `: ${message}` : ''}`, { code });
});

session.on('connection-lost', ({ reason }) => showFailure(`Connection lost: ${reason}`, 'connection-lost'));

session.on('left', () => {
  if (statsOn) toggleStats();
  ui.hideBanner();
  ui.showLeft(last.room);
});

// Tell the server right away when the tab goes away.
addEventListener('pagehide', () => session.leave());

// ----- start ---------------------------------------------------------------------------

ui.setState(session.state);
updateControls();
if (params.get('autojoin') === '1' && last.room && last.name) join(last.room, last.name);
else ui.showJoinForm(last);

function storedName() {
  try {
    return localStorage.getItem(NAME_KEY) ?? '';
  } catch {
    return '';
  }
}

function describe(error) {
  const reasons = {
    NotAllowedError: 'permission denied',
    NotFoundError: 'no device found',
    NotReadableError: 'the device is in use or not working',
    OverconstrainedError: 'no device matches the requested settings',
  };
  return reasons[error.name] ? `${reasons[error.name]} (${error.name})` : `${error.name || 'Error'}: ${error.message}`;
}
