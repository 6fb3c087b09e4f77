// The receiver's disk, under <root>/<peer>/, one set of names per xid:
//
//   <xid>.json      the record: phase, and what the phase needs
//   <xid>.part      data received; fsynced up to the record's offset
//   <xid>.staging/  a verified bundle unpacked, <index> per file
//
// Phases: 'receiving' (offset is durable), 'placing' (a verified bundle is
// unpacked into staging/; files lists what is being placed), 'delivered'
// (every file is placed: a second offer of the xid is answered "delivered"
// until its sender says to forget it). 'delivered' is not written, it is
// read from the disk, so delivering costs no sync beyond the renames': a
// single file's partial is renamed into the inbox, so a record of all its
// bytes without its .part is delivered (a .part.copied is one half-way to
// another filesystem); a bundle's staging/ is removed once all of it is
// placed, so a 'placing' record without staging/ is delivered. Hence the
// record goes before the data when a transfer is dropped. A .part without
// a record is a transfer that had no acknowledgement yet.
import { lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { writeDurable } from '../../lib/durable.js'
import { treeBytes } from '../../lib/walk.js'
import type { XferKind } from '../../transport/messages/xfer.js'
import type { Staged } from './bundle.js'

export type RecvPhase = 'receiving' | 'placing' | 'delivered'

export interface RecvRecord {
  xid: string
  phase: RecvPhase
  kind: XferKind
  name: string
  size: number
  /** Bytes of the .part that are fsynced. */
  offset: number
  /** In 'placing': the files, staged as the .part (a single file) or staging/<index>. */
  files?: Staged[]
}

/** What one peer has here, per xid: the newest time any of it was touched, and its data's bytes. */
export interface Held { xid: string, phase: RecvPhase | 'orphan', mtimeMs: number, bytes: number }

const XID_RE = /^([0-9a-f]{32})\.(json|part|part\.copied|staging)$/
const exists = async (p: string): Promise<boolean> => await lstat(p).then(() => true, () => false)

export class ReceiverStore {
  constructor (readonly root: string) {}

  dir (peer: string): string { return path.join(this.root, peer) }
  part (peer: string, xid: string): string { return path.join(this.dir(peer), `${xid}.part`) }
  staging (peer: string, xid: string): string { return path.join(this.dir(peer), `${xid}.staging`) }
  private json (peer: string, xid: string): string { return path.join(this.dir(peer), `${xid}.json`) }

  /** The record with its phase as the disk says it is now. */
  async load (peer: string, xid: string): Promise<RecvRecord | undefined> {
    const text = await readFile(this.json(peer, xid), 'utf8').catch(() => undefined)
    if (text === undefined) return undefined
    let rec: RecvRecord
    try {
      rec = JSON.parse(text) as RecvRecord
    } catch {
      return undefined
    }
    if (rec.kind === 'file' && rec.phase === 'receiving' && rec.offset === rec.size && !await exists(this.part(peer, xid))) {
      // Mode and mtime were given to the copy already; finishing needs only the name.
      if (await exists(`${this.part(peer, xid)}.copied`)) return { ...rec, phase: 'placing', files: [{ rel: rec.name, mode: 0o644, mtimeMs: 0 }] }
      return { ...rec, phase: 'delivered' }
    }
    if (rec.kind === 'tar' && rec.phase === 'placing' && !await exists(this.staging(peer, xid))) return { ...rec, phase: 'delivered' }
    return rec
  }

  async save (peer: string, rec: RecvRecord): Promise<void> {
    await mkdir(this.dir(peer), { recursive: true, mode: 0o700 })
    await writeDurable(this.json(peer, rec.xid), JSON.stringify(rec))
  }

  /** Removes the data of a transfer, keeping its record: once placed, that makes it delivered. */
  async dropData (peer: string, xid: string): Promise<void> {
    await rm(this.part(peer, xid), { force: true })
    await rm(`${this.part(peer, xid)}.copied`, { force: true })
    await rm(this.staging(peer, xid), { recursive: true, force: true })
  }

  /** Removes all of it, the record first: data without a record is never taken for delivered. */
  async drop (peer: string, xid: string): Promise<void> {
    await rm(this.json(peer, xid), { force: true })
    await this.dropData(peer, xid)
  }

  /** Every transfer the peer has here. */
  async held (peer: string): Promise<Held[]> {
    const byXid = new Map<string, Held>()
    for (const name of await readdir(this.dir(peer)).catch(() => [] as string[])) {
      const m = XID_RE.exec(name)
      if (m === null) continue
      const file = path.join(this.dir(peer), name)
      const st = await lstat(file).catch(() => undefined)
      if (st === undefined) continue
      const h = byXid.get(m[1]) ?? { xid: m[1], phase: 'orphan', mtimeMs: 0, bytes: 0 }
      h.mtimeMs = Math.max(h.mtimeMs, st.mtimeMs)
      if (m[2].startsWith('part')) h.bytes += st.size
      if (m[2] === 'staging') h.bytes += await treeBytes(file)
      if (m[2] === 'json') h.phase = (await this.load(peer, m[1]))?.phase ?? 'orphan'
      byXid.set(m[1], h)
    }
    return [...byXid.values()]
  }

  /** Peers with a folder here. */
  async peers (): Promise<string[]> {
    return await readdir(this.root).catch(() => [] as string[])
  }

  /** Temp files of a durable write that a crash interrupted. */
  async dropTemps (peer: string): Promise<void> {
    for (const name of await readdir(this.dir(peer)).catch(() => [] as string[])) {
      if (name.startsWith('.tmp-')) await rm(path.join(this.dir(peer), name), { force: true })
    }
  }
}
