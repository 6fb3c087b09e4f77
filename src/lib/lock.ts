// Per-key serial lock: work queued under one key runs one at a time, in
// order; different keys run independently. A failed task does not stop
// the ones behind it. An idle key holds no memory.
export class KeyedLock<K = string> {
  private readonly tails = new Map<K, Promise<unknown>>()

  run<T> (key: K, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve()
    const run = prev.then(fn, fn)
    const tail = run.then(() => {}, () => {})
    this.tails.set(key, tail)
    void tail.then(() => { if (this.tails.get(key) === tail) this.tails.delete(key) })
    return run
  }

  get size (): number { return this.tails.size }
}

/** One queue: a KeyedLock with a single key. */
export class SerialLock {
  private readonly lock = new KeyedLock<0>()
  run<T> (fn: () => Promise<T>): Promise<T> { return this.lock.run(0, fn) }
}
