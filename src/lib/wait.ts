// A wait that ends in exactly one way: notify() (check again), or the
// caller's abort signal (EINTR). Blocking reads are built on it.
import { E, FsError } from './errors.js'

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
