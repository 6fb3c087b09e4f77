// Reference counts by key (open writers of a file): a key is present while
// its count is above zero, and an idle key holds no memory.
export class RefCounts<K = string> {
  private readonly counts = new Map<K, number>()

  add (key: K, delta: number): void {
    const n = (this.counts.get(key) ?? 0) + delta
    if (n <= 0) this.counts.delete(key)
    else this.counts.set(key, n)
  }

  has (key: K): boolean { return this.counts.has(key) }
  keys (): IterableIterator<K> { return this.counts.keys() }
  get size (): number { return this.counts.size }
}
