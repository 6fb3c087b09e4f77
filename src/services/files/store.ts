// The managed files as this node holds them: a table name -> entry (the
// accepted manifest, what data/<name> holds, and a state), kept durable by
// the journal, and the disk brought to it by settle().
//
// The table is what nodes compare and converge on; the disk follows it:
// - content not in the tree lives in objects/<sha256> (fetched and
//   verified, or set aside), partial fetches in partial/;
// - a new version is cut over by one rename, checked against the open
//   writers in the same tick (nothing can open it in between), so an open
//   file is never replaced: the entry waits ('pending') for the close;
// - a name that is a file in one manifest and the folder of live names in
//   others is the folder everywhere; the file is 'shadowed' (its bytes kept
//   in objects/ if we had them) until the folder's last name goes;
// - a tombstone removes a file, never a folder;
// - an unmanaged obstacle (a hidden or ignored name in the way) leaves the
//   entry 'blocked', never an error that stops the rest.
// Work on one name runs under its key in `lock`; the caller takes it.
import { lstatSync, mkdirSync, renameSync, rmdirSync, rmSync, unlinkSync } from 'node:fs'
import { copyFile, mkdir, open, readdir, rm } from 'node:fs/promises'
import path from 'node:path'
import type { Clock } from '../../lib/clock.js'
import { fsErrorOf, setTimes } from '../../lib/durable.js'
import { KeyedLock } from '../../lib/lock.js'
import type { Logger } from '../../lib/log.js'
import { ancestors, lstatOrUndefined, onlyFolders, sameStamp, stampOf } from './disk.js'
import { Journal, type DiskStamp, type JournalRecord } from './journal.js'
import { itemHash, type Manifest } from './manifest.js'
import { escapeName } from './names.js'
import { StatusFile } from './status.js'
import { Summary } from './summary.js'

export const STATUS_NAME = '.peerfs-status'

export type EntryState = 'ok' | 'deleted' | 'fetching' | 'pending' | 'shadowed' | 'blocked' | 'ignored'

export interface Entry {
  m: Manifest
  disk: DiskStamp | null
  state: EntryState
  /** The entry's status line, rendered once per change. */
  line?: string
}

export type Settled =
  | { kind: 'done', changed: boolean }
  /** The content is needed and not here. */
  | { kind: 'fetch' }
  /** A file in the way (the name itself or a folder on its path) is open for writing. */
  | { kind: 'wait', on: string }
  /** An ancestor is a managed file on disk: set it aside first (under its own lock). */
  | { kind: 'displace', name: string }

export interface StoreOptions {
  dir: string
  log: Logger
  clock: Clock
  signerName: (signer: string) => string
  /** True while a handle writes name. */
  writing: (name: string) => boolean
  ignored: (name: string) => boolean
  /** Content larger than this is not fetched (the entry stays 'blocked'). */
  maxFileBytes: number
}

export class FileStore {
  readonly lock = new KeyedLock<string>()
  readonly summary = new Summary()
  private readonly table = new Map<string, Entry>()
  /** Live entries strictly under each folder: a file manifest for a folder with any is shadowed. */
  private readonly liveUnder = new Map<string, number>()
  private readonly bySha = new Map<string, Set<string>>()
  private readonly objects = new Set<string>()
  private journal: Journal | undefined
  private readonly status: StatusFile

  constructor (private readonly opts: StoreOptions) {
    this.status = new StatusFile({ file: path.join(opts.dir, 'data', STATUS_NAME), tmpDir: path.join(opts.dir, 'partial'), entries: this.table, signerName: opts.signerName, clock: opts.clock, log: opts.log })
  }

  get dataDir (): string { return path.join(this.opts.dir, 'data') }
  objectPath (sha: string): string { return path.join(this.opts.dir, 'objects', sha) }
  partialPath (sha: string): string { return path.join(this.opts.dir, 'partial', `${sha}.part`) }
  private real (name: string): string { return path.join(this.dataDir, name) }

  /** Creates the folders, replays the journal; returns what it held, for the caller to check against the disk. */
  async open (): Promise<Map<string, JournalRecord>> {
    await mkdir(this.dataDir, { recursive: true, mode: 0o755 })
    for (const d of ['objects', 'partial']) await mkdir(path.join(this.opts.dir, d), { recursive: true, mode: 0o700 })
    for (const f of await readdir(path.join(this.opts.dir, 'objects'))) {
      if (/^[0-9a-f]{64}$/.test(f)) this.objects.add(f)
      else await rm(path.join(this.opts.dir, 'objects', f), { force: true })
    }
    const table = this.table
    const { journal, records } = await Journal.open(path.join(this.opts.dir, 'journal'), {
      size: () => this.table.size,
      records: function * (this: void) { for (const e of table.values()) yield { m: e.m, disk: e.disk } }
    }, this.opts.log)
    this.journal = journal
    for (const r of records.values()) this.index(r.m.name, undefined, { m: r.m, disk: r.disk, state: r.m.deleted ? 'deleted' : 'fetching' })
    return records
  }

  async close (): Promise<void> {
    await this.status.close()
    await this.journal?.close()
  }

  /** Rewrites .peerfs-status now. */
  async writeStatus (): Promise<void> { await this.status.write() }

  get (name: string): Entry | undefined { return this.table.get(name) }
  get size (): number { return this.table.size }
  names (): IterableIterator<string> { return this.table.keys() }
  /** Names in the table at or under rel. */
  namesUnder (rel: string): string[] { return [...this.table.keys()].filter(n => n === rel || n.startsWith(rel + '/')) }
  hasObject (sha: string): boolean { return this.objects.has(sha) }
  addObject (sha: string): void { this.objects.add(sha) }

  /** Where to read content for sha from: the tree if a name holds it, else objects/. */
  contentPath (sha: string, hint: string): string | undefined {
    const e = this.table.get(hint)
    if (e?.m.sha256 === sha && e.state === 'ok') return this.real(hint)
    for (const n of this.bySha.get(sha) ?? []) if (this.table.get(n)?.state === 'ok') return this.real(n)
    return this.objects.has(sha) ? this.objectPath(sha) : undefined
  }

  private index (name: string, prev: Entry | undefined, e: Entry): string[] {
    const unshadow: string[] = []
    const wasLive = prev !== undefined && !prev.m.deleted
    const isLive = !e.m.deleted
    if (wasLive !== isLive) {
      for (const a of ancestors(name)) {
        const n = (this.liveUnder.get(a) ?? 0) + (isLive ? 1 : -1)
        if (n > 0) this.liveUnder.set(a, n)
        else {
          this.liveUnder.delete(a)
          if (this.table.get(a)?.m.deleted === false) unshadow.push(a)
        }
      }
    }
    if (prev !== undefined && wasLive) {
      const s = this.bySha.get(prev.m.sha256)
      s?.delete(name)
      if (s?.size === 0) this.bySha.delete(prev.m.sha256)
    }
    if (isLive) {
      let s = this.bySha.get(e.m.sha256)
      if (s === undefined) this.bySha.set(e.m.sha256, s = new Set())
      s.add(name)
    }
    if (prev === undefined) this.status.added(name)
    this.table.set(name, e)
    if (prev?.m !== e.m) this.summary.set(name, e.m.version, itemHash(e.m))
    return unshadow
  }

  /**
   * Sets a name's record. Returns when it is durable, and the folders whose
   * shadowed file manifests may now come back (their last live name went).
   */
  record (name: string, m: Manifest, disk: DiskStamp | null, state: EntryState): { durable: Promise<void>, unshadow: string[] } {
    const prev = this.table.get(name)
    const unshadow = this.index(name, prev, { m, disk, state })
    this.status.changed()
    const same = prev !== undefined && prev.m === m && prev.disk === disk
    const durable = same || this.journal === undefined ? Promise.resolve() : this.journal.append({ m, disk })
    if (prev !== undefined && prev.m.sha256 !== m.sha256) void this.dropObjectIfUnneeded(prev.m.sha256)
    return { durable, unshadow }
  }

  setState (name: string, state: EntryState): void {
    const e = this.table.get(name)
    if (e === undefined || e.state === state) return
    e.state = state
    e.line = undefined
    this.status.changed()
    if (state === 'ok' || state === 'deleted' || state === 'ignored') void this.dropObjectIfUnneeded(e.m.sha256)
  }

  liveBelow (name: string): number { return this.liveUnder.get(name) ?? 0 }

  /** An object stays while a live entry with its hash may still need it. */
  private needsObject (sha: string, except?: string): boolean {
    for (const n of this.bySha.get(sha) ?? []) {
      const s = this.table.get(n)?.state
      if (n !== except && (s === 'fetching' || s === 'pending' || s === 'blocked' || s === 'shadowed')) return true
    }
    return false
  }

  /** Removes objects/<sha> unless a live entry may still need it. */
  async gcObject (sha: string): Promise<void> { await this.dropObjectIfUnneeded(sha) }

  private async dropObjectIfUnneeded (sha: string): Promise<void> {
    if (sha === '' || !this.objects.has(sha) || this.needsObject(sha)) return
    this.objects.delete(sha)
    await rm(this.objectPath(sha), { force: true })
  }

  /**
   * Brings data/<name> to the entry's manifest where it can. Never throws
   * for one name's trouble: it ends 'blocked' and is logged.
   */
  async settle (name: string): Promise<Settled> {
    const e = this.table.get(name)
    if (e === undefined) return { kind: 'done', changed: false }
    try {
      return await this.settleEntry(name, e)
    } catch (err) {
      this.opts.log.error({ name: escapeName(name), err: fsErrorOf(err, 'settle').message }, 'managed file left as it is')
      this.setState(name, 'blocked')
      return { kind: 'done', changed: false }
    }
  }

  private async settleEntry (name: string, e: Entry): Promise<Settled> {
    const { m } = e
    const file = this.real(name)
    const busy = (): Settled | undefined => {
      if (!this.opts.writing(name)) return undefined
      this.setState(name, 'pending')
      return { kind: 'wait', on: name }
    }
    if (m.deleted) {
      if (e.disk !== null) {
        const wait = busy()
        if (wait !== undefined) return wait
      }
      const st = lstatOrUndefined(file)
      let changed = false
      if (e.disk !== null && st?.isFile() === true) {
        unlinkSync(file)
        this.pruneParents(name)
        changed = true
      }
      if (e.disk !== null || e.state !== 'deleted') await this.record(name, m, null, 'deleted').durable
      return { kind: 'done', changed }
    }
    if (this.opts.ignored(name)) {
      this.setState(name, 'ignored')
      return { kind: 'done', changed: false }
    }
    if (this.liveBelow(name) > 0) return busy() ?? await this.shadow(name, e)
    if (e.disk?.sha256 === m.sha256 && lstatOrUndefined(file)?.isFile() === true) {
      this.setState(name, 'ok')
      return { kind: 'done', changed: false }
    }
    if (m.size > this.opts.maxFileBytes) return this.block(name, `over files_max_bytes (${m.size} bytes)`)
    // Fetched even while the file is open here, so the close finds it ready.
    if (m.size > 0 && !this.objects.has(m.sha256)) {
      this.setState(name, 'fetching')
      return { kind: 'fetch' }
    }
    const wait = busy()
    if (wait !== undefined) return wait
    for (const a of ancestors(name)) {
      const st = lstatOrUndefined(this.real(a))
      if (st === undefined) break
      if (st.isDirectory()) continue
      const ea = this.table.get(a)
      if (st.isFile() && ea !== undefined && !ea.m.deleted && ea.disk !== null) {
        if (this.opts.writing(a)) {
          this.setState(name, 'pending')
          return { kind: 'wait', on: a }
        }
        return { kind: 'displace', name: a }
      }
      return this.block(name, `${escapeName(a)} is in the way and not a managed file`)
    }
    const st = lstatOrUndefined(file)
    if (st?.isDirectory() === true) {
      if (!onlyFolders(file)) return this.block(name, 'a folder with unmanaged files is in the way')
      rmSync(file, { recursive: true })
    } else if (st !== undefined && (!st.isFile() || e.disk === null)) {
      return this.block(name, 'a local file that is not published is in the way')
    }
    await this.install(name, m, file)
    return { kind: 'done', changed: true }
  }

  private block (name: string, why: string): Settled {
    this.opts.log.warn({ name: escapeName(name), why }, 'managed file not placed')
    this.setState(name, 'blocked')
    return { kind: 'done', changed: false }
  }

  /** Cuts the content over: one rename, checked against writers in the same tick. */
  private async install (name: string, m: Manifest, dest: string): Promise<void> {
    const parent = path.dirname(dest)
    mkdirSync(parent, { recursive: true, mode: 0o755 })
    let src = this.objectPath(m.sha256)
    const keep = m.size === 0 || this.needsObject(m.sha256, name)
    if (keep) {
      src = path.join(this.opts.dir, 'partial', `${m.sha256}.${process.hrtime.bigint()}.copy`)
      if (m.size === 0) {
        const fh = await open(src, 'wx', 0o644)
        await fh.sync()
        await fh.close()
      } else {
        await copyFile(this.objectPath(m.sha256), src)
      }
    }
    try {
      await setTimes(src, m.version, m.version)
      if (this.opts.writing(name)) throw new Error('opened for writing during the install')
      renameSync(src, dest)
    } catch (err) {
      if (keep) await rm(src, { force: true })
      throw err
    }
    if (!keep) this.objects.delete(m.sha256)
    const stamp = stampOf(lstatSync(dest), m.sha256)
    await (this.journal as Journal).syncDir(parent)
    await this.record(name, m, stamp, 'ok').durable
  }

  private async shadow (name: string, e: Entry): Promise<Settled> {
    const st = lstatOrUndefined(this.real(name))
    if (e.disk !== null && st?.isFile() === true) {
      await this.moveAside(name, e)
      return { kind: 'done', changed: true }
    }
    if (e.disk !== null) await this.record(name, e.m, null, 'shadowed').durable
    else this.setState(name, 'shadowed')
    return { kind: 'done', changed: false }
  }

  /**
   * Sets a managed file on disk aside into objects/, so a folder can take
   * its name. Caller holds its lock. 'changed': the file is not what we
   * recorded; publish it first.
   */
  async displace (name: string): Promise<'done' | 'changed'> {
    const e = this.table.get(name)
    if (e === undefined || e.m.deleted || e.disk === null || this.opts.writing(name)) return 'done'
    const st = lstatOrUndefined(this.real(name))
    if (st?.isFile() !== true) return 'done'
    // Bytes that are not the recorded ones must be published, not filed under the old hash.
    if (!sameStamp(e.disk, st)) return 'changed'
    await this.moveAside(name, e)
    return 'done'
  }

  private async moveAside (name: string, e: Entry): Promise<void> {
    const sha = (e.disk as DiskStamp).sha256
    const keep = sha === e.m.sha256 && !this.objects.has(sha)
    if (keep) {
      renameSync(this.real(name), this.objectPath(sha))
      this.objects.add(sha)
    } else {
      unlinkSync(this.real(name))
    }
    await this.record(name, e.m, null, 'shadowed').durable
  }

  /** Removes folders a removal left empty, up to the top. */
  private pruneParents (name: string): void {
    for (const a of ancestors(name).reverse()) {
      try {
        rmdirSync(this.real(a))
      } catch {
        return
      }
    }
  }
}
