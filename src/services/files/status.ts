// files/.peerfs-status: one tab-separated line per name, in name order
// (name, version, size or "deleted", signer, sha256 or "-", state), names
// and signers escaped, rewritten whole and atomically after changes.
// It follows every change at once while that is cheap; once rendering it
// costs more (10,000 names), changes are gathered for 20 times what the
// last rendering took, so it stays a few percent of a core. Each entry's
// line is rendered once per change, and the file is built in slices, so
// no rewrite holds the event loop for long.
import type { Clock, Timer } from '../../lib/clock.js'
import { writeDurable } from '../../lib/durable.js'
import type { Logger } from '../../lib/log.js'
import { yieldLoop } from '../../lib/wait.js'
import { escapeName } from './names.js'
import type { Entry } from './store.js'

const MAX_DELAY_MS = 1000
const SLICE = 1000

export interface StatusOptions {
  file: string
  /** Where the next version is written before it is renamed in, out of the user's sight. */
  tmpDir: string
  /** The table, read (and each entry's cached line filled) at each rewrite. */
  entries: ReadonlyMap<string, Entry>
  signerName: (signer: string) => string
  clock: Clock
  log: Logger
}

/** Merges two sorted lists of distinct names. */
function mergeSorted (a: string[], b: string[]): string[] {
  const out: string[] = []
  let i = 0
  let j = 0
  while (i < a.length && j < b.length) out.push(a[i] < b[j] ? a[i++] : b[j++])
  while (i < a.length) out.push(a[i++])
  while (j < b.length) out.push(b[j++])
  return out
}

export class StatusFile {
  private state: 'idle' | 'scheduled' | 'writing' | 'closed' = 'idle'
  private again = false
  private cost = 0
  private timer: Timer | undefined
  private running: Promise<void> | undefined
  /** Names in order, and names added since (names are never removed from the table). */
  private sorted: string[] = []
  private unsorted: string[] = []

  constructor (private readonly opts: StatusOptions) {}

  added (name: string): void { this.unsorted.push(name) }

  /** Something listed changed: rewrite soon. */
  changed (): void {
    if (this.state === 'writing') this.again = true
    if (this.state !== 'idle') return
    this.state = 'scheduled'
    const delay = Math.min(MAX_DELAY_MS, 20 * this.cost)
    const run = (): void => { this.running = this.run() }
    if (delay < 5) setImmediate(run)
    else this.timer = this.opts.clock.setTimeout(run, delay)
  }

  private async run (): Promise<void> {
    if (this.state !== 'scheduled') return
    this.state = 'writing'
    await this.write().catch((err: unknown) => this.opts.log.error({ err }, 'cannot write the managed-file status'))
    if (this.state !== 'writing') return
    this.state = 'idle'
    if (this.again) {
      this.again = false
      this.changed()
    }
  }

  /** Stops rewriting after a last one. */
  async close (): Promise<void> {
    this.opts.clock.clearTimeout(this.timer)
    this.state = 'closed'
    await this.running
    await this.write().catch(() => {})
  }

  async write (): Promise<void> {
    let t0 = performance.now()
    let cost = 0
    if (this.unsorted.length > 0) {
      this.sorted = mergeSorted(this.sorted, this.unsorted.sort())
      this.unsorted = []
    }
    const signers = new Map<string, string>()
    const signerName = (s: string): string => {
      let n = signers.get(s)
      if (n === undefined) signers.set(s, n = escapeName(this.opts.signerName(s)))
      return n
    }
    const parts: Buffer[] = [Buffer.from('# name\tversion\tsize\tsigner\tsha256\tstate\n')]
    for (let i = 0; i < this.sorted.length; i += SLICE) {
      const lines: string[] = []
      for (const n of this.sorted.slice(i, i + SLICE)) {
        const e = this.opts.entries.get(n) as Entry
        const { m } = e
        e.line ??= `${escapeName(n)}\t${m.version}\t${m.deleted ? 'deleted' : m.size}\t${signerName(m.signer)}\t${m.deleted ? '-' : m.sha256}\t${e.state}\n`
        lines.push(e.line)
      }
      parts.push(Buffer.from(lines.join('')))
      if (i + SLICE < this.sorted.length) {
        cost += performance.now() - t0
        await yieldLoop()
        t0 = performance.now()
      }
    }
    // The event loop's share of a rewrite; writing it out is the thread pool's.
    this.cost = cost + performance.now() - t0
    await writeDurable(this.opts.file, Buffer.concat(parts), 0o444, this.opts.tmpDir)
  }
}
