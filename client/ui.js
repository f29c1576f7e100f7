// DOM side of the client: views, the video grid, controls, chat and the banner.
// It knows nothing about the Session; app.js connects the two.

const $ = (id) => document.getElementById(id);

const MIC_OFF_ICON = `<svg viewBox="0 0 24 24" aria-hidden="true"><path fill="currentColor" d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z"/><path stroke="currentColor" stroke-width="2" d="M4 4l16 16"/></svg>`;

/** One video tile: a <video> playing a MediaStream of the tracks given to it. */
class Tile {
  constructor({ label, local = false, kind = 'main' }) {
    this.stream = new MediaStream();
    this.el = document.createElement('div');
    this.el.className = `tile tile-${kind}${local ? ' local' : ''}`;
    this.el.dataset.tile = kind;
    this.el.innerHTML = `
      <video autoplay playsinline></video>
      <div class="avatar"><span></span></div>
      <div class="camera-off">Camera off</div>
      <div class="low-bandwidth">Video paused: your connection is too slow</div>
      <div class="label"><span class="mic-off" title="Microphone muted">${MIC_OFF_ICON}</span><span class="name"></span></div>
      <button class="pin" type="button" title="Pin (show large, keep sharp)" aria-pressed="false">Pin</button>
      <div class="stats"></div>`;
    this.video = this.el.querySelector('video');
    this.video.muted = local; // never play our own microphone back
    this.nameEl = this.el.querySelector('.name');
    this.statsEl = this.el.querySelector('.stats');
    this.el.querySelector('.pin').hidden = local;
    this.setLabel(label);
    this.setFlags({});
  }

  _updateVideoFlag = () => {
    this.el.toggleAttribute('data-has-video', this.stream.getVideoTracks().some((t) => !t.muted));
  };

  setLabel(label) {
    this.nameEl.textContent = label;
    this.el.querySelector('.avatar span').textContent = (label.trim()[0] ?? '?').toUpperCase();
  }

  setPinned(pinned) {
    this.el.toggleAttribute('data-pinned', pinned);
    const button = this.el.querySelector('.pin');
    button.setAttribute('aria-pressed', String(pinned));
    button.textContent = pinned ? 'Unpin' : 'Pin';
  }

  /** micMuted / cameraOff overlays. */
  setBandwidthPaused(paused) {
    this.el.toggleAttribute('data-bandwidth-paused', paused);
  }

  setFlags({ micMuted = false, cameraOff = false }) {
    this.el.toggleAttribute('data-mic-muted', micMuted);
    this.el.toggleAttribute('data-camera-off', cameraOff);
  }

  setStream(stream) {
    this.stream = stream ?? new MediaStream();
    this._reload();
  }

  addTrack(track) {
    if (this.stream.getTrackById(track.id)) return;
    // One track per kind: a newer one replaces the old.
    this.stream.getTracks().filter((t) => t.kind === track.kind).forEach((t) => this.stream.removeTrack(t));
    this.stream.addTrack(track);
    this._reload();
  }

  removeTrack(track) {
    if (!this.stream.getTrackById(track.id)) return;
    this.stream.removeTrack(track);
    this._reload();
  }

  get hasTracks() {
    return this.stream.getTracks().length > 0;
  }

  _reload() {
    // A remote track is muted while no media arrives: show the avatar then.
    for (const t of this._watched ?? []) {
      t.removeEventListener('mute', this._updateVideoFlag);
      t.removeEventListener('unmute', this._updateVideoFlag);
    }
    this._watched = this.stream.getVideoTracks();
    for (const t of this._watched) {
      t.addEventListener('mute', this._updateVideoFlag);
      t.addEventListener('unmute', this._updateVideoFlag);
    }
    this._updateVideoFlag();
    // Re-assigning restarts playback with the current set of tracks.
    this.video.srcObject = this.hasTracks ? this.stream : null;
    if (this.hasTracks) this.play();
  }

  async play() {
    try {
      await this.video.play();
    } catch (e) {
      if (e.name === 'NotAllowedError' && !this.video.muted) {
        // Autoplay with sound refused: play muted and let the user turn sound on.
        this.video.muted = true;
        this.onSoundBlocked?.();
        this.video.play().catch(() => {});
      }
      // AbortError: a newer srcObject took over; nothing to do.
    }
  }
}

export class UI {
  constructor() {
    this.handlers = {}; // join, rejoin, reconnect, toggleMic, toggleCamera, toggleScreen, toggleStats, leave, sendChat, pinChanged
    this.remote = new Map(); // participant id → Tile
    this.screens = new Map(); // participant id → Tile
    this.localTile = null;
    this.localScreenTile = null;
    this.unread = 0;
    this._bind();
    new ResizeObserver(() => this._layout()).observe($('grid'));
  }

  on(name, fn) {
    this.handlers[name] = fn;
  }

  _fire(name, ...args) {
    this.handlers[name]?.(...args);
  }

  _bind() {
    $('join-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this._fire('join', $('room-input').value.trim(), $('name-input').value.trim());
    });
    $('rejoin-button').addEventListener('click', () => this._fire('rejoin'));
    $('banner-close').addEventListener('click', () => this.hideBanner());
    $('mic-button').addEventListener('click', () => this._fire('toggleMic'));
    $('camera-button').addEventListener('click', () => this._fire('toggleCamera'));
    $('screen-button').addEventListener('click', () => this._fire('toggleScreen'));
    $('stats-button').addEventListener('click', () => this._fire('toggleStats'));
    $('leave-button').addEventListener('click', () => this._fire('leave'));
    $('chat-button').addEventListener('click', () => this.toggleChat());
    $('sound-button').addEventListener('click', () => this.enableSound());
    $('grid').addEventListener('click', (e) => {
      const button = e.target.closest?.('.tile .pin');
      if (button) this.togglePin(button.closest('.tile'));
    });
    $('chat-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const text = $('chat-input').value.trim();
      if (!text) return;
      this._fire('sendChat', text);
      $('chat-input').value = '';
    });
    $('chat-input').addEventListener('input', () => this._fire('typing'));
    if (!navigator.mediaDevices?.getDisplayMedia) $('screen-button').hidden = true;
  }

  // ----- views -------------------------------------------------------------

  setState(state) {
    document.body.dataset.state = state;
    $('join-button').disabled = state === 'joining';
    $('join-button').textContent = state === 'joining' ? 'Joining…' : 'Join';
    this._updateCount();
  }

  showJoinForm({ room = '', name = '' } = {}) {
    $('room-input').value = room;
    $('name-input').value = name;
    this._show('join-view');
    (room ? $('name-input') : $('room-input')).focus();
  }

  showCall(room) {
    $('room-label').textContent = room;
    this._show('call-view');
    this._layout();
  }

  showLeft(room) {
    this.clearCall();
    $('left-room').textContent = room ? `Room ${room}` : '';
    this._show('left-view');
    $('rejoin-button').focus();
  }

  _show(view) {
    for (const id of ['join-view', 'left-view', 'call-view']) $(id).hidden = id !== view;
    $('controls').hidden = view !== 'call-view';
  }

  /** Remove every tile and chat message of the previous call. */
  clearCall() {
    $('grid').replaceChildren();
    this.remote.clear();
    this.screens.clear();
    this.localTile = this.localScreenTile = null;
    this.activeSpeaker = null;
    $('chat-messages').replaceChildren();
    this.unread = 0;
    this._updateBadge();
    $('sound-button').hidden = true;
    $('room-label').textContent = '';
    this._updateCount();
  }

  // ----- banner ---------------------------------------------------------------

  /**
   * Show a message. `code` lands in data-code for tests and styling; `action`
   * adds a button: {label, onClick}.
   */
  showBanner(text, { kind = 'error', code = '', action = null } = {}) {
    const banner = $('banner');
    $('banner-text').textContent = text;
    banner.dataset.kind = kind;
    banner.dataset.code = code;
    const btn = $('banner-action');
    btn.hidden = !action;
    btn.textContent = action?.label ?? '';
    btn.onclick = action ? () => action.onClick() : null;
    banner.hidden = false;
  }

  hideBanner(code) {
    if (code && $('banner').dataset.code !== code) return;
    $('banner').hidden = true;
  }

  // ----- tiles -------------------------------------------------------------------

  setLocalStream(stream, { label = 'You' } = {}) {
    if (!this.localTile) {
      this.localTile = new Tile({ label, local: true });
      this.localTile.el.id = 'local-tile';
      if (this.activeSpeaker === 'self') this.localTile.el.setAttribute('data-speaking', '');
      $('grid').prepend(this.localTile.el);
    }
    this.localTile.setStream(stream);
    this._layout();
  }

  setLocalScreen(stream) {
    if (stream && !this.localScreenTile) {
      this.localScreenTile = new Tile({ label: 'Your screen', local: true, kind: 'screen' });
      this.localScreenTile.el.id = 'local-screen-tile';
      if (this.localTile) this.localTile.el.after(this.localScreenTile.el);
      else $('grid').prepend(this.localScreenTile.el);
    }
    if (stream) this.localScreenTile.setStream(stream);
    else if (this.localScreenTile) {
      this.localScreenTile.el.remove();
      this.localScreenTile = null;
    }
    this._layout();
  }

  setLocalFlags(flags) {
    this.localTile?.setFlags(flags);
  }

  setControls({ micMuted, cameraOff, hasMic, hasCamera, sharing, stats }) {
    const set = (id, pressed, label, disabled = false) => {
      const b = $(id);
      b.setAttribute('aria-pressed', String(pressed));
      b.firstChild.textContent = label;
      b.disabled = disabled;
    };
    set('mic-button', micMuted, micMuted ? 'Unmute' : 'Mute', !hasMic);
    set('camera-button', cameraOff, cameraOff ? 'Start video' : 'Stop video', !hasCamera);
    set('screen-button', sharing, sharing ? 'Stop sharing' : 'Share screen');
    set('stats-button', stats, 'Stats');
  }

  /** The participant's main tile, created on first use. */
  participantTile(id, name = '') {
    let tile = this.remote.get(id);
    if (!tile) {
      tile = new Tile({ label: name || 'Guest' });
      tile.el.dataset.participant = id;
      if (this.activeSpeaker === id) tile.el.setAttribute('data-speaking', '');
      tile.onSoundBlocked = () => ($('sound-button').hidden = false);
      this.remote.set(id, tile);
      $('grid').append(tile.el);
      this._updateCount();
      this._layout();
    } else if (name) {
      tile.setLabel(name);
    }
    return tile;
  }

  /** Pin one remote tile (shown large and first) or unpin it; at most one tile is pinned. */
  togglePin(el) {
    const pin = !el.hasAttribute('data-pinned');
    for (const tile of this._allRemoteTiles()) tile.setPinned(pin && tile.el === el);
    this._layout();
    this._fire('pinChanged');
  }

  /** Highlight the active speaker's tile ('self' for our own). */
  /** The red dot in the top bar while the room is being recorded. */
  setRecording(active, self) {
    const dot = $('recording-dot');
    dot.hidden = !active;
    dot.title = self ? 'Recording: you are being recorded' : 'This room is being recorded';
  }

  setActiveSpeaker(id) {
    this.activeSpeaker = id;
    for (const tile of [this.localTile, ...this.remote.values()]) tile?.el.removeAttribute('data-speaking');
    const tile = id === 'self' ? this.localTile : this.remote.get(id);
    tile?.el.setAttribute('data-speaking', '');
  }

  removeParticipant(id) {
    for (const map of [this.remote, this.screens]) {
      map.get(id)?.el.remove();
      map.delete(id);
    }
    this._updateCount();
    this._layout();
  }

  /** Attach a remote track: microphone + camera share the main tile, screen gets its own. */
  addRemoteTrack({ participant, source, mediaTrack }, name) {
    if (source === 'screen') {
      let tile = this.screens.get(participant);
      if (!tile) {
        tile = new Tile({ label: `${name || 'Guest'} (screen)`, kind: 'screen' });
        tile.el.dataset.screenOf = participant;
        tile.onSoundBlocked = () => ($('sound-button').hidden = false);
        this.screens.set(participant, tile);
        const owner = this.participantTile(participant, name).el;
        owner.after(tile.el);
        this._layout();
      }
      tile.addTrack(mediaTrack);
      return tile;
    }
    const tile = this.participantTile(participant, name);
    tile.addTrack(mediaTrack);
    return tile;
  }

  /** The server paused (or resumed) a remote video because our downlink is too slow. */
  setBandwidthPaused({ participant, source }, paused) {
    const tile = source === 'screen' ? this.screens.get(participant) : this.remote.get(participant);
    tile?.setBandwidthPaused(paused);
  }

  removeRemoteTrack({ participant, source, mediaTrack }) {
    if (source === 'screen') {
      const tile = this.screens.get(participant);
      if (!tile) return;
      tile.removeTrack(mediaTrack);
      if (!tile.hasTracks) {
        tile.el.remove();
        this.screens.delete(participant);
        this._layout();
      }
    } else {
      this.remote.get(participant)?.removeTrack(mediaTrack);
    }
  }

  setParticipantFlags(id, flags) {
    this.remote.get(id)?.setFlags(flags);
  }

  enableSound() {
    for (const tile of [...this.remote.values(), ...this.screens.values()]) {
      tile.video.muted = false;
      tile.video.play().catch(() => {});
    }
    $('sound-button').hidden = true;
  }

  _updateCount() {
    const n = this.remote.size + (document.body.dataset.state === 'joined' ? 1 : 0);
    $('participant-count').textContent = n ? `${n} in call` : '';
  }

  /** Pick the column count that makes 16:9 tiles as large as possible. */
  _layout() {
    const grid = $('grid');
    const n = grid.children.length;
    if (!n || grid.clientWidth === 0) return;
    const gap = 8;
    const W = grid.clientWidth - 2 * gap;
    const H = grid.clientHeight - 2 * gap;
    let best = { cols: 1, width: 0 };
    for (let cols = 1; cols <= n; cols++) {
      const rows = Math.ceil(n / cols);
      const w = Math.min((W - gap * (cols - 1)) / cols, ((H - gap * (rows - 1)) / rows) * (16 / 9));
      if (w > best.width) best = { cols, width: w };
    }
    grid.style.setProperty('--cols', best.cols);
    grid.style.setProperty('--tile-width', `${Math.max(160, Math.floor(best.width))}px`);
  }

  // ----- stats overlay -----------------------------------------------------------------

  setStatsVisible(on) {
    document.body.toggleAttribute('data-stats', on);
    if (!on) for (const tile of [...this._allRemoteTiles(), this.localTile, this.localScreenTile]) if (tile) tile.statsEl.textContent = '';
  }

  /** `stats`: entries of Session.getSendStats(): what each of our encodings sends. */
  showLocalStats(stats) {
    for (const [source, tile] of [['camera', this.localTile], ['screen', this.localScreenTile]]) {
      if (!tile) continue;
      const parts = stats
        .filter((s) => s.source === source)
        .map((s) => {
          const name = s.rid ?? 'video';
          if (!s.active) return `${name} off${s.requested ? '' : ' (unwatched)'}`;
          const kbps = s.bitrateBps == null ? '–' : Math.round(s.bitrateBps / 1000);
          return `${name} ${s.frameHeight}p ${kbps} kb/s`;
        });
      tile.statsEl.textContent = parts.length ? `sending: ${parts.join(' · ')}` : '';
    }
  }

  /** `stats`: entries of Session.getReceiveStats(). */
  showStats(stats) {
    const seen = new Set();
    for (const s of stats) {
      const tile = s.source === 'screen' ? this.screens.get(s.participant) : this.remote.get(s.participant);
      if (!tile) continue;
      seen.add(tile);
      const kbps = s.bitrateBps / 1000;
      const rate = s.bitrateBps == null ? '– kb/s' : kbps >= 1000 ? `${(kbps / 1000).toFixed(2)} Mb/s` : `${Math.round(kbps)} kb/s`;
      const fps = s.framesPerSecond == null ? '–' : Math.round(s.framesPerSecond);
      tile.statsEl.textContent = `${s.frameWidth}×${s.frameHeight} · ${fps} fps · ${rate}`;
    }
    for (const tile of this._allRemoteTiles()) if (!seen.has(tile)) tile.statsEl.textContent = 'no video';
  }

  _allRemoteTiles() {
    return [...this.remote.values(), ...this.screens.values()];
  }

  // ----- chat --------------------------------------------------------------------------------

  toggleChat(open = $('chat').hidden) {
    $('chat').hidden = !open;
    $('chat-button').setAttribute('aria-pressed', String(open));
    if (open) {
      this.unread = 0;
      this._updateBadge();
      $('chat-input').focus();
    }
    this._layout();
  }

  addChat({ name, text, ts_ms, self = false, system = false, via = 'signaling' }) {
    const li = document.createElement('li');
    li.className = system ? 'system' : self ? 'self' : '';
    li.dataset.via = via; // "data" (reliable data channel) or "signaling" (the WebSocket)
    const time = new Date(ts_ms ?? Date.now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (!system) {
      const head = li.appendChild(document.createElement('div'));
      head.className = 'chat-meta';
      head.append(Object.assign(document.createElement('span'), { className: 'chat-name', textContent: self ? 'You' : name || 'Guest' }));
      head.append(Object.assign(document.createElement('time'), { textContent: time }));
    }
    li.append(Object.assign(document.createElement('div'), { className: 'chat-text', textContent: text }));
    const list = $('chat-messages');
    list.append(li);
    list.scrollTop = list.scrollHeight;
    if ($('chat').hidden && !self && !system) {
      this.unread++;
      this._updateBadge();
    }
  }

  /** "<name> is typing…" under the messages, for 3 s after their last keystroke. */
  showTyping(name) {
    const el = $('chat-typing');
    el.textContent = `${name || 'Guest'} is typing…`;
    el.hidden = false;
    clearTimeout(this._typingTimer);
    this._typingTimer = setTimeout(() => {
      el.hidden = true;
    }, 3000);
  }

  _updateBadge() {
    $('chat-badge').hidden = this.unread === 0;
    $('chat-badge').textContent = String(this.unread);
  }
}
