// The sender's queue: the files of the outbox folder that wait to be sent
// (visible, not being written, in no saved transfer, not refused as they
// are), held in memory and fed by the folder's hooks, so a file costs O(1)
// when it becomes ready and when it is taken (Syncthing's watcher). A full
// scan of the folder fills it at start, after an overflow, after a folder
// came into view, and as a rare consistency check (a file that reached the
// folder behind the tree's back).
//
// Invariants:
// - Bounded: at most maxQueued files are held. Past it the queue is
//   overflowed: further files are not held (they wait on disk) and, once
//   the queue has drained, a full scan takes the next maxQueued in path
//   order. Status then counts what that scan saw.
// - A file is held here or claimed (in a saved transfer, or being packed
//   into one), never both: a ready() of a claimed file is dropped, because
//   whoever ends the claim requeues its files (a delivered transfer's once
//   cleared: what changed since it was read stayed and waits again; a
//   refused or cancelled one's once it is dropped).
// - A batch is due when full (batchFiles or bundleMaxBytes), when a large
//   file waits, batchMs after the oldest small file it holds, or once
//   nothing was written in the outbox for QUIET_MS: the writer paused or
//   is done (the end of a cp -r), and waiting longer would only delay.
//   While a transfer is in flight, what arrives meanwhile makes the next
//   batch, so batches grow with the rate files come in.
// - A delivered file leaves the outbox (unless it changed since it was
//   read); the folders that empties go only once nothing was written in
//   the outbox for a while, so a cp -r still filling one keeps it.
// - A file the outbox created that its one writer writes in order (the
//   tree's grew hook) is growing; past largeFileBytes it may go as a
//   stream while it is written, when nothing else waits. It stops being a
//   candidate for good (until closed) at a write out of order, a second
//   writer, a truncate, or a rename away; the growing table holds only
//   files open for writing, and at most maxQueued.
// - A file the last run left unclosed (its writer was cut off when the
//   daemon died or stopped; lib/writers.ts) is not a file closed after
//   writing: it is not sent until it is released, by a writer closing it
//   again, a touch or chmod, a rename, or its removal. At most maxQueued.
// - The spool's disk is the outbox's. Once a batch finds no room there to
//   be packed, small files go one at a time as themselves (no copy in the
//   spool; each delivered frees its room) until the disk has twice that
//   batch free (checkRoom, after each delivery).
// - A batch the receiver refuses (one name it cannot place, a quota below
//   the batch's size) is split: its files go in batches of at most half
//   as many (caps), down to one file, which goes as itself and alone is
//   refused (until it changes) or set aside. So one bad file costs
//   log2(batchFiles) offers and holds back no other. Refused files and
//   caps are at most maxQueued each; past it the oldest refusal is
//   forgotten (that file is offered again at a scan), and a batch that
//   cannot be capped is refused whole, as before splitting existed.
import { randomBytes } from 'node:crypto'
import { lstatSync, mkdirSync, renameSync, unlinkSync } from 'node:fs'
import { readdir, rm, rmdir, stat, statfs, unlink } from 'node:fs/promises'
import path from 'node:path'
import type { Clock, Timer } from '../../lib/clock.js'
import { isNoRoom } from '../../lib/durable.js'
import { isHidden, isUnder, joinRel, rsyncTarget } from '../../lib/names.js'
import { yieldLoop } from '../../lib/wait.js'
import { walkFiles } from '../../lib/walk.js'
import { XID_BYTES } from '../../transport/messages/xfer.js'
import { itemOf, packBundle, sameFile, type FileStamp, type Item } from './bundle.js'
import type { SenderStore, SentRecord } from './sender-store.js'
import type { TransferSettings } from './shared.js'
import { WriterLog } from '../../lib/writers.js'

/** What a hook knows of a file it reports ready. */
export interface FileFacts extends FileStamp { isFile: () => boolean }

/** With nothing to send, the outbox is scanned this often (a file that came behind the tree's back). */
export const RESCAN_MS = 60_000

/** A pause of the writers this long makes the small files waiting a batch due. */
const QUIET_MS = 50

/** Unlinks in flight at once when a delivered transfer's files leave the outbox. */
const UNLINK_AT_ONCE = 2

/** Delivered files checked per turn of the event loop (a few microseconds each), so a cp -r's FUSE operations get in between. */
const STAT_SLICE = 256

/** A delivered file, unchanged, that could not be removed from the outbox, and why. */
export interface Stuck { rel: string, why: string }

/** seq: order of arrival, so a scan tells what came in while it walked. */
interface Held { item: Item, at: number, seq: number }

/** A file being written: its size so far (all in order while ok), and when it last grew. */
export interface Growing { end: number, ok: boolean, lastAt: number }

export class OutboxQueue {
  /** Open handles writing each file: not ready meanwhile. */
  private readonly writers = new Map<string, number>()
  /** Files being written that the grew hook reported, while open for writing. */
  private readonly growing = new Map<string, Growing>()
  /** Refused files and their mtime: not offered again until they change. */
  private readonly refused = new Map<string, number>()
  /** The last refusal, for status. */
  private lastRefusal = '-'
  /** Most files a batch holding this file may have: set when a batch holding it was refused. */
  private readonly caps = new Map<string, number>()
  /** A batch found no room in the spool: small files go one at a time, as themselves, until this many bytes are free there. */
  private lowSpace: number | undefined
  /**
   * Reported ready while a writer had them open (touch opens the file it
   * sets the times of): looked at again at the last close, which reports
   * nothing when the writer wrote nothing. Bounded by the writers.
   */
  private readonly readyAtClose = new Set<string>()
  /**
   * Delivered while a writer had them open (a logger that reopened a file
   * it appends to): not removed under that writer, whose next write would
   * go to a file nobody sends. At the last close, one still as delivered
   * goes; a changed one is reported ready and sent again. Bounded by the
   * writers.
   */
  private readonly deliveredOpen = new Map<string, Item>()
  /** The files open for writing, kept for the next start, and those the last run left unclosed. */
  private readonly writerLog: WriterLog
  /** Waiting files in the order they became ready, small and large apart. */
  private readonly small = new Map<string, Held>()
  private readonly large = new Map<string, Held>()
  private smallBytes = 0
  private largeBytes = 0
  private seq = 0
  /** Being packed into a transfer: claimed. */
  private readonly packing = new Set<string>()
  /** A full scan is due before the next pick. */
  private stale = true
  private lastScan = 0
  /** Files waiting beyond the bound: seen by the last scan, or turned away since (status only). */
  private beyond = { files: 0, bytes: 0 }
  /** Folders delivery emptied, removed once the outbox is quiet (bounded like the queue). */
  private readonly emptied = new Set<string>()
  /**
   * Every empty folder goes at the first quiet moment after start: those a
   * kill -9 left between a delivery and the prune it was waiting for.
   */
  private sweepAll = true
  /** Removals so far: each moves its files into a trash folder of its own. */
  private trashed = 0
  /** Last time a file was created, written or reported: folders are not removed under a writer. */
  lastActivity = 0
  private pruneTimer: Timer | undefined
  private stopped = false

  constructor (
    private readonly outbox: string,
    private readonly store: SenderStore,
    private readonly settings: TransferSettings,
    private readonly clock: Clock,
    /** In a saved transfer. */
    private readonly claimed: (rel: string) => boolean,
    writerLog: string
  ) {
    this.writerLog = new WriterLog(writerLog, outbox, settings.maxQueued)
  }

  /** Reads which files the last run left unclosed; they wait until released. */
  async loadUnclosed (): Promise<string[]> { return await this.writerLog.load() }

  get unclosedCount (): number { return this.writerLog.heldCount }

  private waits (rel: string, mtimeMs: number): boolean {
    return this.writers.has(rel) || this.writerLog.held(rel) || this.claimed(rel) || this.packing.has(rel) || this.refused.get(rel) === mtimeMs
  }

  get held (): number { return this.small.size + this.large.size }

  /** What waits to be sent, known here (the sender adds its saved transfers). */
  get queued (): { files: number, bytes: number } {
    return { files: this.held + this.beyond.files, bytes: this.smallBytes + this.largeBytes + this.beyond.bytes }
  }

  get needsScan (): boolean { return this.stale }

  /**
   * A scan is worth its walk: once the queue cannot fill a batch (it
   * overflowed, or a folder came into view), and every RESCAN_MS while
   * all is sent.
   */
  scanWanted (nothingUnsent: boolean): boolean {
    return (this.stale && this.held < this.settings.batchFiles) || (nothingUnsent && this.held === 0 && this.clock.now() - this.lastScan >= RESCAN_MS)
  }

  /** A writer opened or closed rel; returns what the file was as it grew, once its last writer closed. */
  writing (rel: string, delta: number): Growing | undefined {
    this.lastActivity = this.clock.now()
    const n = (this.writers.get(rel) ?? 0) + delta
    const g = this.growing.get(rel)
    if (n <= 0) {
      this.writers.delete(rel)
      this.growing.delete(rel)
      this.writerLog.closed(rel)
      const done = this.deliveredOpen.get(rel)
      this.deliveredOpen.delete(rel)
      // As delivered, it goes, and a ready() that came meanwhile is moot; changed, the close's ready() sends it again.
      if (done !== undefined && this.asDelivered(done)) {
        this.readyAtClose.delete(rel)
        void this.removeIfAsDelivered([done]).catch(() => {})
      }
      return g
    }
    if (n === 1 && !isHidden(rel)) this.writerLog.opened(rel)
    this.writers.set(rel, n)
    if (g !== undefined && n > 1) g.ok = false
    return undefined
  }

  /**
   * A write to rel failed: it waits, held as a file left unclosed is, until
   * written again, touched, renamed or removed. Hidden names are never
   * sent as themselves, and their rename releases them anyway.
   */
  failed (rel: string): void {
    if (isHidden(rel)) return
    this.writerLog.hold(rel)
    this.readyAtClose.delete(rel)
    this.forget(rel)
  }

  /** The grew hook: rel holds end bytes written in order, or (undefined) is not written so any more. */
  grew (rel: string, end: number | undefined): Growing | undefined {
    const now = this.lastActivity = this.clock.now()
    const n = this.writers.get(rel) ?? 0
    if (n === 0) return undefined
    let g = this.growing.get(rel)
    if (g === undefined) {
      if (this.growing.size >= this.settings.maxQueued) return undefined
      g = { end: 0, ok: n === 1, lastAt: now }
      this.growing.set(rel, g)
    }
    if (end === undefined) g.ok = false
    else g.end = end
    g.lastAt = now
    return g
  }

  growth (rel: string): Growing | undefined { return this.growing.get(rel) }

  /** rel goes as a file once closed, not as a stream. */
  unstream (rel: string): void {
    const g = this.growing.get(rel)
    if (g !== undefined) g.ok = false
  }

  /**
   * A file that may go as a stream now: growing in order past
   * largeFileBytes, in no transfer. rsync's temp file goes under the name
   * it will be renamed to, unless a file of that name waits to be sent or
   * is in a transfer: the peer would then get the two in any order.
   */
  private streamable (): string | undefined {
    for (const [rel, g] of this.growing) {
      if (!g.ok || g.end < this.settings.largeFileBytes || this.claimed(rel) || this.packing.has(rel)) continue
      const target = rsyncTarget(rel)
      if (target === undefined || !this.targetBusy(target)) return rel
    }
    return undefined
  }

  /** A file of this name waits, is written, or is in a transfer: a stream from rsync's temp file may not take the name. */
  targetBusy (target: string): boolean {
    return this.small.has(target) || this.large.has(target) || this.writers.has(target) || this.claimed(target) || this.packing.has(target)
  }

  get writersOpen (): number { return this.writers.size }

  /** A file (or a folder, whose files a scan finds) is ready: held, unless being written, claimed or refused as it is. */
  ready (rel: string, st: FileFacts | undefined): void {
    const now = this.lastActivity = this.clock.now()
    this.refused.delete(rel)
    this.writerLog.release(rel)
    if (st === undefined || !st.isFile()) {
      this.stale = true
      return
    }
    this.add(rel, st, now)
  }

  private add (rel: string, st: FileStamp, now: number): void {
    if (this.writers.has(rel)) {
      this.readyAtClose.add(rel)
      return
    }
    if (this.waits(rel, st.mtimeMs)) return
    this.forget(rel)
    if (this.held >= this.settings.maxQueued) {
      // Waits on disk; the scan after the queue drains finds it.
      this.stale = true
      this.beyond = { files: this.beyond.files + 1, bytes: this.beyond.bytes + st.size }
      return
    }
    const held = { item: itemOf(rel, st), at: now, seq: ++this.seq }
    if (st.size >= this.settings.largeFileBytes) {
      this.large.set(rel, held)
      this.largeBytes += st.size
    } else {
      this.small.set(rel, held)
      this.smallBytes += st.size
    }
  }

  private forget (rel: string): void {
    const s = this.small.get(rel)
    if (s !== undefined) {
      this.small.delete(rel)
      this.smallBytes -= s.item.size
    }
    const l = this.large.get(rel)
    if (l !== undefined) {
      this.large.delete(rel)
      this.largeBytes -= l.item.size
    }
  }

  /** The file or folder at rel went away; true if rel was a file held here (no saved transfer needs a look). */
  gone (rel: string): boolean {
    this.lastActivity = this.clock.now()
    this.refused.delete(rel)
    this.caps.delete(rel)
    for (const k of this.writerLog.heldUnder(rel)) this.writerLog.release(k)
    // A writer still open on it writes a file of another name now.
    for (const [k, g] of this.growing) if (k === rel || isUnder(k, rel)) g.ok = false
    const had = this.small.has(rel) || this.large.has(rel)
    if (had) {
      this.forget(rel)
      return true
    }
    for (const m of [this.small, this.large]) for (const k of m.keys()) if (isUnder(k, rel)) this.forget(k)
    for (const m of [this.refused, this.caps]) for (const k of m.keys()) if (isUnder(k, rel)) m.delete(k)
    return false
  }

  /** After a writer closed rel: holds it if a ready() came while it was open; true if it did. */
  lookAgain (rel: string): boolean {
    if (this.writers.has(rel) || !this.readyAtClose.delete(rel)) return false
    this.look(rel, this.clock.now())
    return true
  }

  /** Files a transfer no longer claims that are in the outbox still (changed, or not taken): looked at afresh. */
  requeue (items: Item[]): void {
    const now = this.clock.now()
    for (const it of items) this.look(it.rel, now)
  }

  /** Holds rel as it is on disk now, if it may go. */
  private look (rel: string, now: number): void {
    // Synchronous: microseconds in the daemon's own folder.
    const st = lstatSync(path.join(this.outbox, rel), { throwIfNoEntry: false })
    if (st?.isFile() === true && !isHidden(rel)) this.add(rel, st, now)
  }

  /** In how many ms a pick is worth making; undefined if nothing waits. streams: a growing file counts. */
  dueIn (now: number, streams: boolean): number | undefined {
    const s = this.settings
    if (this.large.size > 0 || this.small.size >= s.batchFiles || this.smallBytes >= s.bundleMaxBytes || (this.stale && this.held === 0)) return 0
    const first = this.small.values().next()
    if (first.done === true) return streams && this.streamable() !== undefined ? 0 : undefined
    return Math.max(0, Math.min(first.value.at + s.batchMs, this.lastActivity + Math.min(s.batchMs, QUIET_MS)) - now)
  }

  /** The receiver refused these files, as they are now, for this reason. */
  refuse (items: Item[], why: string): void {
    for (const it of items) {
      this.refused.delete(it.rel)
      if (this.refused.size >= this.settings.maxQueued) this.refused.delete(this.refused.keys().next().value as string)
      this.refused.set(it.rel, it.mtimeMs)
    }
    this.lastRefusal = `${items.length === 1 ? items[0].rel : `${items.length} files`}: ${why}`
  }

  get refusedStatus (): { files: number, last: string } {
    return { files: this.refused.size, last: this.lastRefusal }
  }

  /** After a delivery: batches again once the spool's disk has room for the one that did not fit. */
  async checkRoom (): Promise<void> {
    if (this.lowSpace === undefined) return
    const fs = await statfs(this.store.dir).catch(() => undefined)
    if (fs !== undefined && fs.bavail * fs.bsize >= this.lowSpace) this.lowSpace = undefined
  }

  /**
   * The receiver refused a batch of these files: they go again in batches
   * of at most half as many (a batch of one, as itself: its tar may be
   * what did not fit). False if that cannot be recorded (past the bound),
   * in which case the caller refuses them whole.
   */
  split (items: Item[]): boolean {
    if (this.caps.size + items.length > this.settings.maxQueued) return false
    const cap = Math.ceil(items.length / 2)
    for (const it of items) this.caps.set(it.rel, Math.min(cap, this.caps.get(it.rel) ?? cap))
    return true
  }

  /**
   * The full scan: the folder's files that wait, in path order, become the
   * queue (those held already keep their place), up to the bound.
   */
  async scan (): Promise<void> {
    this.stale = false
    this.lastScan = this.clock.now()
    const from = this.seq
    const found = new Map<string, Item>()
    let over = { files: 0, bytes: 0 }
    for await (const { rel, st } of walkFiles(this.outbox, { skipHidden: true })) {
      if (this.waits(rel, st.mtimeMs)) continue
      if (found.size < this.settings.maxQueued) found.set(rel, itemOf(rel, st))
      else over = { files: over.files + 1, bytes: over.bytes + st.size }
    }
    // What a hook reported while the walk went on stays, seen by the walk or not.
    for (const m of [this.small, this.large]) for (const [k, h] of [...m]) if (h.seq <= from && !found.has(k)) this.forget(k)
    const t = this.clock.now()
    for (const it of found.values()) {
      const h = this.small.get(it.rel) ?? this.large.get(it.rel)
      if (h === undefined || !sameFile(h.item, it)) this.add(it.rel, it, t)
    }
    this.beyond = over
    if (over.files > 0) this.stale = true
  }

  /** The source is still what the record was made from (a stream: still written in order). */
  async intact (rec: SentRecord): Promise<boolean> {
    if (rec.kind === 'stream') return this.growing.get(rec.items[0].rel)?.ok === true
    const st = await stat(this.store.source(rec)).catch(() => undefined)
    if (st === undefined || st.size !== rec.size) return false
    return rec.kind === 'tar' || sameFile(rec.items[0], st)
  }

  /**
   * A new transfer from the files that wait, saved and handed to claim
   * before anything could report its files again; undefined if none. The
   * oldest waiting goes first: a large file alone, else a batch of small
   * ones. A file that changed since it was reported is left out of the
   * batch and held again as it is now. With none waiting, and streams
   * allowed (the peer takes them), a growing file goes as a stream.
   */
  async build (claim: (rec: SentRecord) => void, streams: boolean): Promise<SentRecord | undefined> {
    const s = this.settings
    const base = { xid: randomBytes(XID_BYTES).toString('hex'), phase: 'send' as const, created: this.clock.now() }
    const l = this.large.values().next()
    const f = this.small.values().next()
    let batch: Item[] = []
    if (l.done !== true && (f.done === true || l.value.at <= f.value.at)) {
      batch = [l.value.item]
    } else {
      let bytes = 0
      let most = this.lowSpace !== undefined ? 1 : s.batchFiles
      for (const { item } of this.small.values()) {
        most = Math.min(most, this.caps.get(item.rel) ?? most)
        if (batch.length > 0 && (batch.length >= most || bytes + item.size > s.bundleMaxBytes)) break
        batch.push(item)
        bytes += item.size
      }
    }
    if (batch.length === 0) {
      const rel = streams ? this.streamable() : undefined
      if (rel === undefined) return undefined
      const rec: SentRecord = { ...base, kind: 'stream', name: rsyncTarget(rel) ?? rel, size: 0, items: [{ rel, size: 0, mtimeMs: 0 }] }
      this.packing.add(rel)
      try {
        await this.store.save(rec)
      } finally {
        this.packing.delete(rel)
      }
      // Written out of order or closed while the record was saved: it goes as a file instead.
      if (this.growing.get(rel)?.ok !== true) {
        await this.store.drop(rec)
        this.requeue(rec.items)
        return undefined
      }
      claim(rec)
      return rec
    }
    for (const it of batch) {
      this.forget(it.rel)
      this.packing.add(it.rel)
    }
    let rec: SentRecord | undefined
    const left: Item[] = []
    try {
      // One file of a refused batch goes as itself: the receiver's verdict on it is its own; so does one sent while the spool has no room.
      if (batch[0].size >= s.largeFileBytes || (batch.length === 1 && (this.caps.has(batch[0].rel) || this.lowSpace !== undefined))) {
        rec = { ...base, kind: 'file', name: batch[0].rel, size: batch[0].size, items: batch }
      } else {
        const packed = await packBundle(this.outbox, batch, this.store.bundle(base.xid))
        const taken = new Set(packed.items)
        left.push(...batch.filter(it => !taken.has(it)))
        if (packed.items.length > 0) rec = { ...base, kind: 'tar', name: `${packed.items.length} files`, size: packed.size, items: packed.items }
        else await rm(this.store.bundle(base.xid), { force: true })
      }
      if (rec !== undefined) {
        await this.store.save(rec)
        claim(rec)
      }
    } catch (err) {
      // Nothing was saved: every file waits again, and no bundle is left behind.
      rec = undefined
      left.splice(0, left.length, ...batch)
      await rm(this.store.bundle(base.xid), { force: true }).catch(() => {})
      // Its tar and a margin: one that fits would not leave the disk full again.
      if (isNoRoom(err)) this.lowSpace = 2 * batch.reduce((n, it) => n + it.size + 1024, 0)
      throw err
    } finally {
      for (const it of batch) this.packing.delete(it.rel)
      this.requeue(left)
    }
    return rec
  }

  /**
   * Removes a delivered transfer's files that are unchanged since they
   * were read, and its bundle; a changed one stays (requeued once the
   * transfer no longer claims it), and one a writer has open waits for its
   * close (deliveredOpen). The folders this empties go later, when the
   * outbox is quiet (see prune). Returns the unchanged files it could not
   * remove, with why: the caller keeps their claim and tries again, since
   * one left here unclaimed would be sent a second time.
   */
  async clear (rec: SentRecord): Promise<Stuck[]> {
    for (const it of rec.items) this.caps.delete(it.rel)
    const stuck = await this.removeIfAsDelivered(rec.items)
    await this.store.dropBundle(rec)
    return stuck
  }

  /** The file is as it was read for the transfer that delivered it. */
  private asDelivered (it: Item): boolean {
    const st = lstatSync(path.join(this.outbox, it.rel), { throwIfNoEntry: false })
    return st !== undefined && sameFile(it, st)
  }

  /**
   * Removes the delivered files that are as they were read (a changed one
   * stays, and goes again). Each is checked and moved out of the outbox in
   * one turn of this thread, which the tree's FUSE operations run on too:
   * no writer can open it between the check and the move, as one could
   * before an unlink in the thread pool (its new version was removed
   * then). The unlink, which frees the blocks, runs in the pool after.
   */
  private async removeIfAsDelivered (items: Item[]): Promise<Stuck[]> {
    const trashed: string[] = []
    const stuck: Stuck[] = []
    // Its own folder, made at the first file and removed once emptied: no
    // other call's removal races its renames.
    const trash = this.store.trash(++this.trashed)
    let made = false
    for (const [i, it] of items.entries()) {
      if (i > 0 && i % STAT_SLICE === 0) await yieldLoop()
      if (this.writers.has(it.rel)) {
        // Past the bound one stays in the outbox, and a scan sends it again: twice, never lost.
        if (this.deliveredOpen.size < this.settings.maxQueued) this.deliveredOpen.set(it.rel, it)
        continue
      }
      if (!this.asDelivered(it)) continue
      const from = path.join(this.outbox, it.rel)
      const to = path.join(trash, String(i))
      try {
        if (!made) {
          mkdirSync(trash, { recursive: true, mode: 0o700 })
          made = true
        }
        renameSync(from, to)
        trashed.push(to)
      } catch {
        // Not moved aside (the spool on another filesystem than the outbox, or
        // no room for the trash folder on a full disk): removed here, in this
        // turn all the same.
        try {
          unlinkSync(from)
        } catch (err) {
          stuck.push({ rel: it.rel, why: (err as Error).message })
          continue
        }
      }
      const dir = path.dirname(it.rel)
      if (dir !== '.' && this.emptied.size < this.settings.maxQueued) this.emptied.add(dir)
    }
    for (let i = 0; i < trashed.length; i += UNLINK_AT_ONCE) {
      await Promise.all(trashed.slice(i, i + UNLINK_AT_ONCE).map(async f => { await unlink(f).catch(() => {}) }))
    }
    if (made) await rmdir(trash).catch(() => {})
    return stuck
  }

  /** Removes the folders delivery emptied (after a start, every empty one) once the outbox is quiet for pruneMs. */
  pruneSoon (): void {
    if (this.pruneTimer !== undefined || this.stopped || (!this.sweepAll && this.emptied.size === 0)) return
    this.pruneTimer = this.clock.setTimeout(() => {
      this.pruneTimer = undefined
      void this.prune(this.clock.now()).then((done) => { if (!done) this.pruneSoon() })
    }, this.settings.pruneMs)
  }

  stop (): void {
    this.stopped = true
    this.clock.clearTimeout(this.pruneTimer)
    this.writerLog.close()
  }

  /**
   * Removes the folders delivery emptied, up to the outbox itself, unless
   * something was written in the outbox within pruneMs: a folder emptied
   * while cp -r is still filling it must stay for the file it creates next.
   */
  private async prune (now: number): Promise<boolean> {
    if (this.writers.size > 0 || now - this.lastActivity < this.settings.pruneMs) return false
    if (this.sweepAll) {
      this.sweepAll = false
      this.emptied.clear()
      await this.sweep('')
      return true
    }
    const dirs = [...this.emptied].sort().reverse()
    this.emptied.clear()
    for (let rel of dirs) {
      while (rel !== '.' && rel !== '' && !isHidden(rel)) {
        try {
          await rmdir(path.join(this.outbox, rel))
        } catch {
          break
        }
        rel = path.dirname(rel)
      }
    }
    return true
  }

  /** Removes the empty visible folders under rel (not rel itself if it is the outbox); true if rel is gone. */
  private async sweep (rel: string): Promise<boolean> {
    const entries = await readdir(path.join(this.outbox, rel), { withFileTypes: true }).catch(() => undefined)
    if (entries === undefined) return false
    let left = entries.length
    for (const e of entries) {
      if (e.isDirectory() && !e.name.startsWith('.') && await this.sweep(joinRel(rel, e.name))) left--
    }
    if (rel === '' || left > 0) return false
    return await rmdir(path.join(this.outbox, rel)).then(() => true, () => false)
  }

}
