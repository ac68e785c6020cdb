// Reconnect delays: 1 s, 2 s, 4 s ... capped at 30 s; reset after a
// connection that delivered something.

export class Backoff {
  constructor(minMs = 1000, maxMs = 30000) {
    this.min = minMs;
    this.max = maxMs;
    this.attempt = 0;
  }

  next() {
    const d = Math.min(this.max, this.min * 2 ** this.attempt);
    this.attempt++;
    return d;
  }

  reset() {
    this.attempt = 0;
  }
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}
