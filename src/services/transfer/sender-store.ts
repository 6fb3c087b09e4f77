// The outbox sender's saved transfers, one record each in its spool
// folder: <xid>.json, and <xid>.tar for a bundle. A restart offers a saved
// transfer again under the same xid, so the receiver can resume it or say
// it was delivered already. A record's phase is 'send' until it is done,
// or 'cancel' once its files left the outbox before it was delivered: the
// cancel is kept until the receiver answers it.
//
// The spool's disk is the outbox's: a user can fill it to the last block
// with files to send (a peer down for days). A record is then what stands
// between the full disk and the deliveries that would empty it, so
// RESERVE_BYTES of it are kept in a file of their own beside the spool
// folder (<spool>.reserve), given up when a record finds no room, and
// taken back once there is room again.
import { open, readdir, readFile, rename, rm, stat, statfs } from 'node:fs/promises'
import path from 'node:path'
import { isNoRoom, writeDurable } from '../../lib/durable.js'
import type { XferKind } from '../../transport/messages/xfer.js'
import type { Item } from './bundle.js'

export type SentPhase = 'send' | 'cancel'

export interface SentRecord {
  xid: string
  kind: XferKind
  /** The file's relative path, or a label for a bundle. */
  name: string
  size: number
  items: Item[]
  phase: SentPhase
  /** When it was made (ms): transfers are tried oldest first. */
  created: number
}

const RECORD_RE = /^([0-9a-f]{32})\.json$/

/** Room for a few hundred records (each a block or two) on a disk the outbox filled. */
const RESERVE_BYTES = 1 << 20

/** The reserve is taken only from a disk with this many times its size free. */
const RESERVE_SPARE = 4

export class SenderStore {
  constructor (readonly dir: string, private readonly outbox: string) {}

  bundle (xid: string): string { return path.join(this.dir, `${xid}.tar`) }

  private get reserve (): string { return `${this.dir}.reserve` }

  /** Where the n-th removal moves delivered files out of the outbox before it unlinks them (queue.ts); removed at load. */
  trash (n: number): string { return path.join(this.dir, `trash-${n}`) }

  /** What the transfer's bytes are read from. */
  source (rec: SentRecord): string {
    return rec.kind === 'tar' ? this.bundle(rec.xid) : path.join(this.outbox, rec.items[0].rel)
  }

  /** The saved records, oldest first; removes bundles and temp files no record owns. */
  async load (onBad: (file: string, err: Error) => void): Promise<SentRecord[]> {
    const names = await readdir(this.dir).catch(() => [] as string[])
    const recs: SentRecord[] = []
    for (const name of names) {
      const m = RECORD_RE.exec(name)
      // current.json: the one saved transfer of earlier versions, its bundle named bundle-<xid>.tar.
      const legacy = name === 'current.json'
      if (m === null && !legacy) continue
      const file = path.join(this.dir, name)
      try {
        const rec = JSON.parse(await readFile(file, 'utf8')) as SentRecord
        if (legacy) {
          rec.phase = 'send'
          rec.created = 0
          if (rec.kind === 'tar') await rename(path.join(this.dir, `bundle-${rec.xid}.tar`), this.bundle(rec.xid)).catch(() => {})
          await this.save(rec)
          await rm(file, { force: true })
        }
        recs.push(rec)
      } catch (err) {
        onBad(file, err as Error)
        await rm(file, { force: true })
      }
    }
    const owned = new Set(recs.map(r => `${r.xid}.tar`))
    for (const name of names) {
      // trash-<n>: delivered files a run moved aside and died before it unlinked them.
      if ((name.endsWith('.tar') && !owned.has(name)) || name.startsWith('.tmp-') || name.startsWith('trash-')) await rm(path.join(this.dir, name), { recursive: true, force: true })
    }
    return recs.sort((a, b) => a.created - b.created)
  }

  async save (rec: SentRecord): Promise<void> {
    const write = async (): Promise<void> => { await writeDurable(path.join(this.dir, `${rec.xid}.json`), JSON.stringify(rec)) }
    try {
      await write()
    } catch (err) {
      if (!isNoRoom(err) || !await this.spendReserve()) throw err
      await write()
    }
  }

  /** Gives the reserve up; true if there was one. */
  private async spendReserve (): Promise<boolean> {
    const file = this.reserve
    if (await stat(file).catch(() => undefined) === undefined) return false
    await rm(file, { force: true })
    return true
  }

  /**
   * Makes the reserve whole, if the disk has room to spare for it (a
   * small state disk is not given up to it). Never throws: a full disk is
   * what it is for.
   */
  async keepReserve (): Promise<void> {
    const file = this.reserve
    if ((await stat(file).catch(() => undefined))?.size === RESERVE_BYTES) return
    const fs = await statfs(this.dir).catch(() => undefined)
    if (fs === undefined || fs.bavail * fs.bsize < RESERVE_SPARE * RESERVE_BYTES) return
    // Written, not sparse: the blocks must be taken now, to be given back later.
    const fh = await open(file, 'w', 0o600).catch(() => undefined)
    if (fh === undefined) return
    let whole = false
    try {
      whole = (await fh.write(Buffer.alloc(RESERVE_BYTES))).bytesWritten === RESERVE_BYTES
      await fh.sync()
    } catch {
      whole = false
    } finally {
      await fh.close().catch(() => {})
    }
    if (!whole) await rm(file, { force: true }).catch(() => {})
  }

  async dropBundle (rec: SentRecord): Promise<void> {
    if (rec.kind === 'tar') await rm(this.bundle(rec.xid), { force: true })
  }

  async drop (rec: SentRecord): Promise<void> {
    await this.dropBundle(rec)
    await rm(path.join(this.dir, `${rec.xid}.json`), { force: true })
  }
}
