// The outbox folder as the sender's queue: which files wait (visible, not
// being written, not refused as they are), when a batch of them is due,
// how they are cut into
// transfers (one large file alone, or small ones in one tar bundle), and
// clearing the files of a delivered transfer: only those unchanged since
// they were read leave the outbox, with the folders that empties.
import { randomBytes } from 'node:crypto'
import { rmdir, stat, unlink } from 'node:fs/promises'
import path from 'node:path'
import { isHidden } from '../../lib/names.js'
import { walkFiles } from '../../lib/walk.js'
import { XID_BYTES } from '../../transport/messages/xfer.js'
import { packBundle, type Item } from './bundle.js'
import type { SenderStore, SentRecord } from './sender-store.js'
import type { TransferSettings } from './shared.js'

export class OutboxQueue {
  /** Open handles writing each file: not ready meanwhile. */
  private readonly writers = new Map<string, number>()
  /** Refused files and their mtime: not offered again until they change. */
  private readonly refused = new Map<string, number>()
  /** What the last scan found waiting. */
  queued = { files: 0, bytes: 0 }
  /** Files reported ready since the last pick: a batch leaves when full, or batchMs after its first. */
  private batch = { first: undefined as number | undefined, count: 0 }

  constructor (private readonly outbox: string, private readonly store: SenderStore, private readonly settings: TransferSettings) {}

  writing (rel: string, delta: number): void {
    const n = (this.writers.get(rel) ?? 0) + delta
    if (n <= 0) this.writers.delete(rel)
    else this.writers.set(rel, n)
  }

  /** A file is ready to send: in how many ms to pick (now for a large file or a full batch). */
  async ready (rel: string, now: () => number): Promise<number> {
    const s = this.settings
    this.refused.delete(rel)
    this.batch.count++
    const first = this.batch.first ??= now()
    const st = await stat(path.join(this.outbox, rel)).catch(() => undefined)
    if (st === undefined) return s.batchMs
    return st.size >= s.largeFileBytes || this.batch.count >= s.batchFiles ? 0 : Math.max(0, first + s.batchMs - now())
  }

  newBatch (): void { this.batch = { first: undefined, count: 0 } }

  refuse (items: Item[]): void {
    for (const it of items) this.refused.set(it.rel, it.mtimeMs)
  }

  /** Files waiting, in path order. */
  async scan (): Promise<Item[]> {
    const out: Item[] = []
    for await (const { rel, st } of walkFiles(this.outbox, { skipHidden: true })) {
      if (!this.writers.has(rel) && this.refused.get(rel) !== st.mtimeMs) out.push({ rel, size: st.size, mtimeMs: st.mtimeMs })
    }
    this.queued = { files: out.length, bytes: out.reduce((n, it) => n + it.size, 0) }
    return out
  }

  /** The source is still what the record was made from. */
  async intact (rec: SentRecord): Promise<boolean> {
    const st = await stat(this.store.source(rec)).catch(() => undefined)
    if (st === undefined || st.size !== rec.size) return false
    return rec.kind === 'tar' || st.mtimeMs === rec.items[0].mtimeMs
  }

  /** A new transfer, saved, from files in no other; undefined if none (or one changed while packed). */
  async build (free: Item[], now: number): Promise<SentRecord | undefined> {
    if (free.length === 0) return undefined
    const s = this.settings
    const base = { xid: randomBytes(XID_BYTES).toString('hex'), phase: 'send' as const, created: now }
    const large = free.find(it => it.size >= s.largeFileBytes)
    let rec: SentRecord
    if (large !== undefined) {
      rec = { ...base, kind: 'file', name: large.rel, size: large.size, items: [large] }
    } else {
      const batch: Item[] = []
      let bytes = 0
      for (const it of free) {
        if (batch.length >= s.batchFiles || (batch.length > 0 && bytes + it.size > s.bundleMaxBytes)) break
        batch.push(it)
        bytes += it.size
      }
      rec = { ...base, kind: 'tar', name: `${batch.length} files`, size: 0, items: batch }
      const size = await packBundle(this.outbox, batch, this.store.bundle(rec.xid))
      if (size === undefined) {
        // Its close reports the changed file ready again.
        await this.store.dropBundle(rec)
        return undefined
      }
      rec.size = size
    }
    await this.store.save(rec)
    return rec
  }

  /** Removes a delivered transfer's files that are unchanged since they were read, and its bundle. */
  async clear (rec: SentRecord): Promise<void> {
    for (const it of rec.items) {
      const file = path.join(this.outbox, it.rel)
      const st = await stat(file).catch(() => undefined)
      if (st === undefined || st.size !== it.size || st.mtimeMs !== it.mtimeMs) continue
      await unlink(file).catch(() => {})
      await this.prune(path.dirname(it.rel))
    }
    await this.store.dropBundle(rec)
  }

  /** Removes folders the delivery emptied, up to the outbox itself. */
  private async prune (rel: string): Promise<void> {
    while (rel !== '.' && rel !== '' && !isHidden(rel)) {
      try {
        await rmdir(path.join(this.outbox, rel))
      } catch {
        return
      }
      rel = path.dirname(rel)
    }
  }
}
