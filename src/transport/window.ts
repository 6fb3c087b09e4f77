// The request window: bytes of our transactions to one peer that are sent
// (or about to be) and not yet answered. A request takes its share before
// it is sent and gives it back when it is settled; requests that do not
// fit wait, first come first served, until they fit or their deadline.
// One request always fits, however large, so a request over the window is
// slow, never stuck. The waiters are bounded by the requests callers make.
import type { Clock, Timer } from '../lib/clock.js'

interface Waiter { bytes: number, resolve: () => void, timer: Timer }

export class RequestWindow {
  private used = 0
  private readonly queue: Waiter[] = []

  constructor (private readonly clock: Clock, private readonly limit: number) {}

  get inflightBytes (): number { return this.used }

  /** Resolves once bytes are taken; rejects with timeout() at the deadline. */
  async take (bytes: number, deadline: number, timeout: () => Error): Promise<void> {
    if (this.queue.length === 0 && this.fits(bytes)) {
      this.used += bytes
      return
    }
    await new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        bytes,
        resolve,
        timer: this.clock.setTimeout(() => {
          this.queue.splice(this.queue.indexOf(w), 1)
          reject(timeout())
          // The next in line may fit now that this one has left.
          this.admit()
        }, Math.max(1, deadline - this.clock.now()))
      }
      this.queue.push(w)
    })
  }

  give (bytes: number): void {
    this.used -= bytes
    this.admit()
  }

  private fits (bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.limit
  }

  private admit (): void {
    while (this.queue.length > 0 && this.fits(this.queue[0].bytes)) {
      const w = this.queue.shift() as Waiter
      this.clock.clearTimeout(w.timer)
      this.used += w.bytes
      w.resolve()
    }
  }
}
