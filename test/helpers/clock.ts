// A manual clock for unit tests: timers fire only when advance() passes them.
import type { Clock, Timer } from '../../src/lib/clock.js'

interface Entry { at: number, fn: () => void, id: number }

export class FakeClock implements Clock {
  t = 1_000_000
  private timers: Entry[] = []
  private seq = 0
  randomValue = 0.5

  now (): number { return this.t }
  random (): number { return this.randomValue }

  setTimeout (fn: () => void, ms: number): Timer {
    const e = { at: this.t + ms, fn, id: ++this.seq }
    this.timers.push(e)
    return e as Timer
  }

  clearTimeout (t: Timer | undefined): void {
    this.timers = this.timers.filter(e => e !== t)
  }

  get pending (): number { return this.timers.length }

  /** Moves time forward, firing due timers in order (and timers they set). */
  advance (ms: number): void {
    const end = this.t + ms
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id)
      const next = this.timers[0]
      if (next === undefined || next.at > end) break
      this.timers.shift()
      this.t = next.at
      next.fn()
    }
    this.t = end
  }
}
