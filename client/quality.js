// Quality follows the tile: each remote video asks the server for a layer no taller than
// it is shown (with some headroom), and for nothing at all while it cannot be seen.
// No DOM of its own: it watches elements it is given.

const HEADROOM = 1.5; // ask for a cap 1.5x the rendered height (sharper than exact)
const DEBOUNCE_MS = 200;
const PINNED_MIN_HEIGHT = 720; // a pinned tile is the big one: ask for a sharp layer

export class QualityWatcher {
  /** @param {{setSubscription: Function}} session */
  constructor(session) {
    this.session = session;
    this.watched = new Map(); // track id -> {el, visible}
    this.timer = null;
    this.resize = new ResizeObserver(() => this._schedule());
    this.intersect = new IntersectionObserver((entries) => {
      for (const e of entries) {
        for (const w of this.watched.values()) if (w.el === e.target) w.visible = e.isIntersecting;
      }
      this._schedule();
    });
    document.addEventListener('visibilitychange', () => this._schedule());
  }

  /** Start following `el` (the tile showing remote video track `track`). */
  watch(track, el) {
    this.unwatch(track);
    this.watched.set(track, { el, visible: true });
    this.resize.observe(el);
    this.intersect.observe(el);
    this._schedule();
  }

  unwatch(track) {
    const w = this.watched.get(track);
    if (!w) return;
    this.watched.delete(track);
    if (![...this.watched.values()].some((o) => o.el === w.el)) {
      this.resize.unobserve(w.el);
      this.intersect.unobserve(w.el);
    }
  }

  _schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.update(), DEBOUNCE_MS);
  }

  update() {
    const hidden = document.visibilityState === 'hidden';
    for (const [track, w] of this.watched) {
      const height = w.el.getBoundingClientRect().height;
      const paused = hidden || !w.visible || height < 1 || !w.el.isConnected;
      const pinned = w.el.hasAttribute('data-pinned');
      let maxHeight = paused ? null : Math.ceil(height * (window.devicePixelRatio || 1) * HEADROOM);
      if (pinned && maxHeight !== null) maxHeight = Math.max(maxHeight, PINNED_MIN_HEIGHT);
      this.session.setSubscription(track, { maxHeight, paused, pinned });
    }
  }
}
