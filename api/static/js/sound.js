// An optional beep for new orders (Web Audio, no sound files). Browsers allow audio only after a user
// gesture, so sound starts off on every load and the AudioContext is created when the user turns it on.

export class Beeper {
  constructor() {
    this.context = null;
    this.lastBeep = 0;
    this.enabled = false; // always off on load: audio needs a click first
  }

  /** Turn sound on or off (call from a click handler). Returns the new setting. */
  toggle() {
    this.enabled = !this.enabled;
    if (this.enabled) {
      try {
        this.context ??= new AudioContext();
        this.context.resume();
      } catch {
        this.enabled = false;
      }
    }
    return this.enabled;
  }

  /** Two short tones; at most one beep per second however many orders arrive at once. */
  beep() {
    if (!this.enabled || !this.context) return;
    const now = performance.now();
    if (now - this.lastBeep < 1000) return;
    this.lastBeep = now;
    const ctx = this.context;
    for (const [offset, frequency] of [[0, 880], [0.18, 1320]]) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, ctx.currentTime + offset);
      gain.gain.exponentialRampToValueAtTime(0.2, ctx.currentTime + offset + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + offset + 0.15);
      osc.connect(gain).connect(ctx.destination);
      osc.start(ctx.currentTime + offset);
      osc.stop(ctx.currentTime + offset + 0.16);
    }
  }
}
