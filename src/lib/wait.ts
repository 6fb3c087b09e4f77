// A wait that ends in exactly one way: notify() (check again), or the
// caller's abort signal (EINTR). Blocking reads are built on it. And the
// one way a long loop lets the event loop run between its slices, and the
// one way a wait is bounded in time.
import type { Clock, Timer } from './clock.js'
import { E, FsError } from './errors.js'

/**
 * Lets what waits on the event loop run (FUSE operations, a transaction)
 * before a long loop goes on: one turn of the daemon's only thread is
 * added to the wait of every operation that arrives during it.
 */
export async function yieldLoop (): Promise<void> {
  await new Promise(resolve => setImmediate(resolve))
}

/**
 * True once p settles, false if ms pass first. p goes on either way; a
 * rejection is the caller's to see on p.
 */
export async function settlesWithin (p: Promise<unknown>, ms: number, clock: Clock): Promise<boolean> {
  let timer: Timer | undefined
  const late = new Promise<boolean>(resolve => { timer = clock.setTimeout(() => resolve(false), ms) })
  try {
    return await Promise.race([p.then(() => true, () => true), late])
  } finally {
    clock.clearTimeout(timer)
  }
}

export class Waiters {
  private readonly waiting = new Set<() => void>()

  wait (signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted === true) {
        reject(new FsError(E.EINTR, 'interrupted'))
        return
      }
      const onAbort = (): void => {
        this.waiting.delete(done)
        reject(new FsError(E.EINTR, 'interrupted'))
      }
      const done = (): void => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      }
      this.waiting.add(done)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  notify (): void {
    const all = [...this.waiting]
    this.waiting.clear()
    for (const w of all) w()
  }
}
