// Time is injected wherever behaviour depends on it (keepalive, backoff,
// timeouts) so tests can drive it with fake timers instead of sleeping.
/** Opaque: whatever the clock's setTimeout returned. */
export type Timer = object

export interface Clock {
  now(): number
  setTimeout(fn: () => void, ms: number): Timer
  clearTimeout(t: Timer | undefined): void
  random(): number
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => { if (t !== undefined) clearTimeout(t as NodeJS.Timeout) },
  random: () => Math.random()
}
