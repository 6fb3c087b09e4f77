// The outbox sender for one peer. The files in its outbox folder are the
// queue (queue.ts); a transfer is one large file alone, or small ones in a
// tar bundle, saved (sender-store.ts) before it is offered, so a restart
// offers the same xid and the receiver resumes it or says it has it.
//
// One attempt (attempt.ts) at a time; its phase goes
//   idle -> preparing -> offering -> sending -> ending -> idle
// driven by the receiver's answers (`answers`) and one timer. An attempt
// ends on a verdict, a lost link, a cancel or silence; `gen` counts
// attempts, so an async step of one that ended stops where it is.
//
// Invariants:
// - A file leaves the outbox only once the receiver has placed it durably
//   (xdone ok, or xdelivered for a transfer delivered before), and only if
//   unchanged since it was read; then `sent <path>` is reported, xforget
//   lets the receiver drop its record, and xforgot ours.
// - A cancel (its files left the outbox) is saved and sent until answered.
// - A transfer the receiver cannot take now is set aside with backoff
//   (book.ts) and the next one goes.
// - A file is in at most one saved transfer; at most maxTransfers are saved.
// - A stream (a file sent while its one writer still writes it in order,
//   to a peer that takes them) sends only what was written. At the close
//   its record is saved as a file of the size written before its end
//   goes, so a restart offers that file (the receiver resumes the stream)
//   or hears it was delivered. Anything else (a write out of order, a
//   second writer, a file other than what was streamed at the close, a
//   restart before the close, a writer pausing while other files wait,
//   the receiver unable to take it now) cancels it, and the file goes as
//   usual once closed (after a restart, once released: queue.ts).
// - rsync's temp file (.name.XXXXXX) streams under the name it will be
//   renamed to; its close only ends its data, and the rename to that name
//   (with rsync's times set) is the close above. A rename elsewhere, a
//   removal, a file of that name waiting or in a transfer, or no rename
//   within RENAME_WAIT_MS cancels it, and the file goes by whatever name
//   it is given.
import { lstatSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import type { Clock, Timer } from '../../lib/clock.js'
import { SerialLock } from '../../lib/lock.js'
import type { Logger } from '../../lib/log.js'
import { yieldLoop } from '../../lib/wait.js'
import type { Handler } from '../../transport/messages/codec.js'
import { XSTREAM, type XferMessage, type XferToSender } from '../../transport/messages/xfer.js'
import { Attempt } from './attempt.js'
import { TransferBook, describe } from './book.js'
import { itemOf, sameFile, type Item } from './bundle.js'
import { OutboxQueue, RESCAN_MS, type FileFacts, type Growing } from './queue.js'
import { SenderStore, type SentRecord } from './sender-store.js'
import { label, type StatusPairs, type TransferSettings, type XferLink } from './shared.js'

/** Data sent per turn of the event loop: about half a millisecond of hashing and sealing. */
const SEND_SLICE_BYTES = 256 << 10

/** A stream whose writer wrote nothing for this long gives way to files that wait. */
const STREAM_PAUSE_MS = 1000

/** rsync renames its temp file as soon as it has set its times and mode: a stream of one not renamed by then is cancelled. */
const RENAME_WAIT_MS = 5000

type Phase = 'idle' | 'preparing' | 'offering' | 'sending' | 'ending' | 'stopped'
type Msg<T extends XferMessage['type']> = Extract<XferMessage, { type: T }>

export interface SenderOptions {
  clock: Clock
  log: Logger
  settings: TransferSettings
  /** Where the files open for writing are kept (lib/writers.ts). */
  writerLog: string
  onSent?: (rel: string) => void
}

export class OutboxSender {
  private phase: Phase = 'idle'
  private att: Attempt | undefined
  private gen = 0
  private readonly book: TransferBook
  private readonly store: SenderStore
  private readonly queue: OutboxQueue
  /** Disk work on records and the outbox, in order. */
  private readonly lock = new SerialLock()
  private kickTimer: Timer | undefined
  private kickAt = 0
  private answerTimer: Timer | undefined
  /** step() was asked for while an attempt was being prepared. */
  private again = false
  /** Why the last attempt to prepare a transfer failed (a full spool disk), for status; cleared by the next that works. */
  private notPrepared: string | undefined
  /** The next transfer is being packed while the current one is sent. */
  private prefetching = false
  /** Streams of rsync's temp files, closed, waiting for the rename into place (bounded by the saved transfers). */
  private readonly unrenamed = new Map<string, { rec: SentRecord, end: number, timer: Timer }>()
  /** Delivered transfers whose files could not all leave the outbox: the timer of the next try (bounded by the saved transfers). */
  private readonly clearing = new Map<string, Timer>()

  /** The router's entry: the receiver's answers. */
  readonly answers: Handler<XferToSender> = {
    xaccept: (_peer, m) => this.onAccept(m),
    xack: (_peer, m) => this.onAck(m),
    xdone: (_peer, m) => this.onDone(m),
    xdelivered: (_peer, m) => this.delivered(m.xid.toString('hex')),
    xforgot: (_peer, m) => this.onForgot(m)
  }

  constructor (
    readonly peerId: string,
    private readonly outbox: string,
    spool: string,
    private readonly link: XferLink,
    private readonly opts: SenderOptions
  ) {
    this.store = new SenderStore(spool, outbox)
    this.book = new TransferBook(opts.settings.retryMs, opts.settings.retryMaxMs)
    this.queue = new OutboxQueue(outbox, this.store, opts.settings, opts.clock, (rel) => this.book.claimed(rel), opts.writerLog)
  }

  async start (): Promise<void> {
    await mkdir(this.outbox, { recursive: true, mode: 0o700 })
    await mkdir(this.store.dir, { recursive: true, mode: 0o700 })
    await mkdir(path.dirname(this.opts.writerLog), { recursive: true, mode: 0o700 })
    const bad = (file: string, err: Error): void => this.opts.log.error({ peer: this.peerId, file, err: err.message }, 'unreadable transfer record; its files are sent again')
    for (const rec of await this.store.load(bad)) {
      // The writer of a stream not closed went with the process that served it: cancelled, its file waits as unclosed.
      if (rec.kind === 'stream' && rec.phase === 'send') {
        this.opts.log.info({ peer: this.peerId, xid: rec.xid, file: rec.name }, 'a stream its writer had not closed is cancelled')
        rec.phase = 'cancel'
        await this.store.save(rec)
      }
      this.book.add(rec)
    }
    await this.store.keepReserve()
    const unclosed = await this.queue.loadUnclosed()
    if (unclosed.length > 0) {
      this.opts.log.warn({ peer: this.peerId, count: unclosed.length, files: unclosed.slice(0, 20) }, 'files still open for writing when peerfs last stopped are not sent until written again, touched or removed')
    }
    // What waits, for status while the link is down, and for the first pick
    // (which queues behind it); a large outbox does not hold up the start.
    this.lock.run(async () => await this.queue.scan()).catch((err: unknown) => this.opts.log.error({ peer: this.peerId, err }, 'cannot scan the outbox'))
    this.kick(0)
    // Folders a kill -9 left emptied: they go once the outbox is quiet.
    this.queue.pruneSoon()
  }

  stop (): void {
    this.endAttempt()
    this.phase = 'stopped'
    this.opts.clock.clearTimeout(this.kickTimer)
    for (const source of [...this.unrenamed.keys()]) this.forgetRename(source)
    for (const t of this.clearing.values()) this.opts.clock.clearTimeout(t)
    this.clearing.clear()
    this.queue.stop()
  }

  // Hooks from the outbox folder: O(1) per file (the queue is in memory).

  writing (rel: string, delta: number): void {
    const closed = this.queue.writing(rel, delta)
    // A touch while it was open may have made it due at this close.
    if (delta < 0 && this.queue.lookAgain(rel)) this.due()
    const rec = this.book.stream(rel)
    if (rec === undefined) return
    if (delta > 0) this.cancel(rec, 'opened by a second writer while it was streamed')
    else if (closed !== undefined) this.sized(rec, closed)
  }

  /** A write to rel failed: the file is short of what its writer meant, so it is held, not sent as it is. */
  writeFailed (rel: string, why: string): void {
    this.opts.log.warn({ peer: this.peerId, file: label(rel), reason: why }, 'a write to an outbox file failed; it is not sent until written again, touched or removed')
    this.queue.failed(rel)
  }

  /** The tree's grew hook: a file being written in order holds end bytes (undefined: not in order any more). */
  grew (rel: string, end: number | undefined): void {
    const before = this.queue.growth(rel)?.end ?? 0
    const g = this.queue.grew(rel, end)
    const rec = this.book.stream(rel)
    if (rec !== undefined) {
      if (g?.ok !== true) return this.cancel(rec, 'written out of order while it was streamed')
      const att = this.att
      if (att?.rec === rec) {
        att.limit = g.end
        if (att.due) this.pump()
      }
      return
    }
    // Once, as it passes the size a stream needs (not at every write): a pick
    // that does not take it now is followed by one at each transfer's end.
    const t = this.opts.settings.largeFileBytes
    if (g?.ok === true && before < t && g.end >= t && this.streams()) this.kick(0)
  }

  /** st: the file's stat as the hook saw it; without it (a folder), a scan looks. */
  ready (rel: string, st?: FileFacts): void {
    this.queue.ready(rel, st)
    this.due()
  }

  /** Picks when what the queue holds is due. */
  private due (): void {
    // While the link is down nothing is picked (linkUp kicks): no timer per file.
    const ms = this.link.isUp() ? this.queue.dueIn(this.opts.clock.now(), this.streams()) : undefined
    if (ms !== undefined) this.kick(ms)
  }

  /** The peer takes streams. */
  private streams (): boolean { return this.link.supports?.(XSTREAM) === true }

  gone (rel: string): void {
    if (this.queue.gone(rel)) return
    for (const rec of this.book.holding(rel)) if (this.book.standing(rec) === 'send') this.cancel(rec, 'removed from the outbox')
  }

  linkUp (): void {
    this.book.newLink()
    this.kick(0)
  }

  linkDown (): void {
    this.endAttempt()
    this.book.newLink()
  }

  status (): StatusPairs {
    const att = this.att
    const now = this.opts.clock.now()
    const q = this.queue.queued
    const u = this.book.unsent()
    const refused = this.queue.refusedStatus
    return [
      ['outbox_files', q.files + u.files],
      ['outbox_bytes', q.bytes + u.bytes],
      ['outbox_unclosed', this.queue.unclosedCount],
      ['outbox_refused', refused.files],
      ['outbox_refused_last', refused.last],
      ['transfer', att === undefined ? '-' : describe(att.rec)],
      ['transfer_progress', att === undefined ? '-' : att.progress.text()],
      ['transfer_bytes_per_s', att === undefined ? 0 : att.progress.bytesPerS(now)],
      ['transfer_waiting', this.notPrepared ?? this.book.waiting(now)]
    ]
  }

  /** Runs step() after ms, unless it is due sooner already. */
  private kick (ms: number): void {
    if (this.phase === 'stopped') return
    const at = this.opts.clock.now() + ms
    if (this.kickTimer !== undefined && this.kickAt <= at) return
    this.opts.clock.clearTimeout(this.kickTimer)
    this.kickAt = at
    this.kickTimer = this.opts.clock.setTimeout(() => {
      this.kickTimer = undefined
      this.step()
    }, ms)
  }

  private step (): void {
    if (this.phase !== 'idle') {
      // What changed may have come after the running pick: look again after it.
      this.again = true
      if (this.phase !== 'preparing') {
        this.yieldStream()
        this.prefetch()
      }
      return
    }
    // Nothing to send now; the queue in memory counts what waits.
    if (!this.link.isUp()) return
    for (const { rec, type } of this.book.toTell(this.opts.clock.now())) this.tell(rec, type)
    this.phase = 'preparing'
    this.again = false
    const gen = this.gen
    this.lock.run(async () => await this.next()).then((rec) => {
      this.notPrepared = undefined
      this.offer(gen, rec)
    }, (err: unknown) => {
      this.notPrepared = `cannot prepare a transfer: ${(err as Error).message}`
      this.opts.log.error({ peer: this.peerId, err }, 'cannot prepare an outbox transfer; retrying')
      if (this.gen !== gen || this.phase !== 'preparing') return
      this.phase = 'idle'
      this.kick(this.opts.settings.retryMs)
    })
  }

  /** The transfer to try now: a saved one whose wait is over, else a new one; under the lock. */
  private async next (): Promise<SentRecord | undefined> {
    const { settings, clock } = this.opts
    if (this.queue.scanWanted(this.book.toSend().length === 0)) await this.queue.scan()
    for (const rec of this.book.due(clock.now())) {
      let why: string | undefined
      // The peer came back as a version that cannot decode a stream (it would close the link).
      if (rec.kind === 'stream' && !this.streams()) why = 'the peer no longer takes streams'
      // A closed stream of rsync's temp file is intact while it waits for its rename.
      else if (!this.unrenamed.has(rec.items[0].rel) && !await this.queue.intact(rec)) why = 'changed or gone before it was sent'
      if (why === undefined) return rec
      if (this.mark(rec, why)) await this.saveCancel(rec)
    }
    if (this.book.size >= settings.maxTransfers) return undefined
    return await this.queue.build((rec) => this.book.add(rec), this.streams())
  }

  /**
   * A stream whose writer paused gives way to the files that wait (they
   * would wait for its close): it is cancelled and goes as a file once
   * closed. Until the pause is long enough, looks again when it would be.
   */
  private yieldStream (): void {
    const att = this.att
    if (att === undefined || att.rec.kind !== 'stream') return
    const now = this.opts.clock.now()
    const others = this.book.due(now).some(r => r !== att.rec) ? 0 : this.queue.dueIn(now, false)
    if (others === undefined) return
    const g = this.queue.growth(att.rec.items[0].rel)
    // Closed: it is being recorded as a file (or waits for its rename), and its end goes next.
    if (g === undefined) return
    const idle = now - g.lastAt
    const wait = Math.max(others, STREAM_PAUSE_MS - idle)
    if (wait > 0) return this.kick(wait)
    this.queue.unstream(att.rec.items[0].rel)
    this.cancel(att.rec, `its writer paused ${idle} ms while other files wait`)
  }

  /**
   * The stream's writer closed it: saved as a file of the size written,
   * then the rest and its end go. A file other than what was streamed
   * (longer, say, when the writer reopened a file that had a tail) is
   * cancelled and goes as a file.
   */
  private sized (rec: SentRecord, g: Growing): void {
    const source = rec.items[0].rel
    const st = lstatSync(this.store.source(rec), { throwIfNoEntry: false })
    if (!g.ok || st?.isFile() !== true || st.size !== g.end) return this.cancel(rec, 'not what was streamed once closed')
    if (source === rec.name) return this.commit(rec, itemOf(source, st))
    // rsync's temp file: its times, mode and name are set after the close; the rename commits it.
    const timer = this.opts.clock.setTimeout(() => {
      if (this.unrenamed.get(source)?.rec === rec) this.cancel(rec, `not renamed to ${rec.name} within ${RENAME_WAIT_MS} ms of its close`)
    }, RENAME_WAIT_MS)
    this.unrenamed.set(source, { rec, end: st.size, timer })
  }

  /** The tree's renamed hook: a closed stream of rsync's temp file commits once renamed to the name it was sent under. */
  renamed (from: string, to: string): void {
    const w = this.unrenamed.get(from)
    if (w === undefined) return
    this.forgetRename(from)
    if (this.book.stream(from) !== w.rec) return
    if (to !== w.rec.name) return this.cancel(w.rec, `renamed to ${to}, not ${w.rec.name} as it was streamed`)
    if (this.queue.targetBusy(to)) return this.cancel(w.rec, `another ${to} waits to be sent`)
    const st = lstatSync(path.join(this.outbox, to), { throwIfNoEntry: false })
    if (st?.isFile() !== true || st.size !== w.end) return this.cancel(w.rec, 'not what was streamed once renamed')
    // Claimed under its new name before the rename's gone() and ready() arrive.
    this.book.moveFile(w.rec, to)
    this.commit(w.rec, itemOf(to, st))
  }

  private forgetRename (source: string): void {
    this.opts.clock.clearTimeout(this.unrenamed.get(source)?.timer)
    this.unrenamed.delete(source)
  }

  /** Saves a stream whose writer is done as a file of item's size, then sends the rest and the end. */
  private commit (rec: SentRecord, item: Item): void {
    this.lock.run(async () => {
      if (this.book.stream(item.rel) !== rec) return
      await this.store.save({ ...rec, kind: 'file', size: item.size, items: [item] })
      rec.kind = 'file'
      rec.size = item.size
      rec.items = [item]
      const att = this.att
      if (att?.rec === rec) {
        att.sized()
        this.pump()
      }
    }).catch((err: unknown) => {
      this.opts.log.error({ peer: this.peerId, err }, 'cannot record a streamed file; it goes again as a file')
      this.cancel(rec, 'its record could not be saved')
    })
  }

  /**
   * Packs the next transfer while the current one is sent, once a batch is
   * due, so it is offered as soon as the current one ends; at most one
   * waits so.
   */
  private prefetch (): void {
    const now = this.opts.clock.now()
    if (this.prefetching || !this.link.isUp() || this.queue.dueIn(now, this.streams()) !== 0 || this.queue.needsScan) return
    if (this.book.size >= this.opts.settings.maxTransfers || this.book.due(now).some(r => r !== this.att?.rec)) return
    this.prefetching = true
    this.lock.run(async () => await this.queue.build((rec) => this.book.add(rec), this.streams()))
      .catch((err: unknown) => this.opts.log.error({ peer: this.peerId, err }, 'cannot prepare an outbox transfer'))
      .finally(() => {
        this.prefetching = false
        if (this.phase === 'idle') this.kick(0)
      })
  }

  private offer (gen: number, rec: SentRecord | undefined): void {
    if (this.gen !== gen || this.phase !== 'preparing') return
    this.phase = 'idle'
    if (rec === undefined) {
      const now = this.opts.clock.now()
      const wake = this.book.nextWake(now)
      const due = this.queue.dueIn(now, this.streams())
      if (this.again) this.kick(0)
      // Due, yet nothing was made (each file changed as it was packed): not again at once.
      else if (due !== undefined && this.book.size < this.opts.settings.maxTransfers) this.kick(Math.max(due, this.opts.settings.batchMs))
      else if (wake !== undefined) this.kick(wake - now)
      else this.kick(RESCAN_MS)
      return
    }
    const att = this.att = new Attempt(rec, this.opts.clock.now())
    this.phase = 'offering'
    if (this.trySend({ type: 'xoffer', xid: att.xid, kind: rec.kind, size: rec.size, window: this.opts.settings.windowBytes, name: rec.name })) this.arm()
  }

  private onAccept (m: Msg<'xaccept'>): void {
    const att = this.att
    if (att === undefined || this.phase !== 'offering' || !m.xid.equals(att.xid)) return
    const closed = this.unrenamed.get(att.rec.items[0].rel)
    if (closed !== undefined) {
      if (m.offset > closed.end) return this.cancel(att.rec, 'not written in order any more')
      att.limit = closed.end
    } else if (att.rec.kind === 'stream') {
      const g = this.queue.growth(att.rec.items[0].rel)
      if (g?.ok !== true || m.offset > g.end) return this.cancel(att.rec, 'not written in order any more')
      att.limit = g.end
    }
    this.phase = 'sending'
    this.arm()
    const gen = this.gen
    att.start(this.store.source(att.rec), Math.min(m.offset, att.limit), () => this.opts.clock.now())
      .then((open) => { if (open) this.pump() }, (err: unknown) => this.failed(gen, err))
  }

  private onAck (m: Msg<'xack'>): void {
    const att = this.att
    if (att === undefined || (this.phase !== 'sending' && this.phase !== 'ending') || !m.xid.equals(att.xid)) return
    att.ack(m.offset)
    this.arm()
    this.pump()
  }

  /** Sends data while the window allows; then the end, once all of it is sent. */
  private pump (): void {
    const att = this.att
    if (att === undefined || this.phase !== 'sending' || !att.isOpen || att.pumping) return
    att.pumping = true
    const gen = this.gen
    const { packetBytes, windowBytes } = this.opts.settings
    void (async () => {
      let turn = 0
      while (this.gen === gen && att.due && att.pos - att.acked < windowBytes) {
        const chunk = await att.read(packetBytes)
        if (this.gen !== gen) return
        if (chunk.length === 0) return this.cancel(att.rec, 'shortened while it was sent')
        if (!this.trySend({ type: 'xdata', xid: att.xid, offset: att.pos, data: chunk })) return
        att.pos += chunk.length
        // Packets read ahead come without I/O; hashed and sealed in one turn
        // they would hold a FUSE operation or a transaction for milliseconds.
        if ((turn += chunk.length) >= SEND_SLICE_BYTES) {
          turn = 0
          await yieldLoop()
        }
      }
      if (this.gen !== gen) return
      if (att.rec.kind === 'stream') {
        // Its writer's next write or its close pumps again. Until then the
        // receiver may keep what came in memory, unacknowledged (it writes
        // in batches): only a full window is owed an answer.
        if (att.pos - att.acked >= windowBytes) this.arm()
        else this.opts.clock.clearTimeout(this.answerTimer)
        return
      }
      if (att.pos < att.size) return
      const st = await att.stat()
      if (this.gen !== gen) return
      if (att.rec.kind === 'file' && !sameFile(att.rec.items[0], st)) return this.cancel(att.rec, 'changed while it was sent')
      this.phase = 'ending'
      if (this.trySend({ type: 'xend', xid: att.xid, sha256: att.hash.digest(), mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) })) this.arm()
    })().catch((err: unknown) => this.failed(gen, err)).finally(() => { att.pumping = false })
  }

  private onDone (m: Msg<'xdone'>): void {
    const xid = m.xid.toString('hex')
    const rec = this.book.get(xid)
    if (rec === undefined) return
    if (m.result === 'ok') return this.delivered(xid)
    if (this.att?.rec === rec) this.endAttempt()
    if (m.result === 'retry' && rec.kind === 'stream' && rec.phase === 'send') {
      // Its size, known at the close, lets the receiver judge it then (room, quota): tried again as a stream it would fail alike.
      this.queue.unstream(rec.name)
      return this.cancel(rec, `peer cannot take it as it is written: ${m.reason}`)
    }
    if (m.result === 'retry' || rec.phase === 'cancel') {
      // A cancel answered so: the receiver could not finish placing what it came too late for; ask again later.
      const wait = this.book.setAside(rec, m.reason, this.opts.clock.now())
      this.opts.log.info({ peer: this.peerId, xid: rec.xid, transfer: describe(rec), reason: m.reason, retryInMs: wait }, 'peer cannot take the transfer now; set aside')
    } else {
      if (rec.kind === 'tar' && this.queue.split(rec.items)) {
        this.opts.log.warn({ peer: this.peerId, files: rec.items.length, reason: m.reason }, 'peer refused a batch; sending its files in smaller batches to find those it refuses')
      } else {
        this.opts.log.error({ peer: this.peerId, files: rec.items.map(i => i.rel), reason: m.reason }, 'peer refused the transfer; the files stay in the outbox until they change')
        this.queue.refuse(rec.items, m.reason)
      }
      this.book.remove(xid)
      // Those changed since they were read are new versions.
      this.queue.requeue(rec.items)
      void this.lock.run(async () => await this.store.drop(rec))
    }
    this.kick(0)
  }

  /** The receiver has placed the transfer: its unchanged files leave the outbox. */
  private delivered (xid: string): void {
    const rec = this.book.get(xid)
    if (rec === undefined) return
    if (this.att?.rec === rec) this.endAttempt()
    // Not under the lock: its files are its own (claimed), so the next
    // transfer is picked meanwhile instead of after.
    if (this.book.deliver(rec)) void this.clear(rec)
    this.kick(0)
  }

  /**
   * A delivered transfer's files leave the outbox, then its forget goes.
   * Until every unchanged one is gone the record stays and claims them: one
   * left in the outbox unclaimed would be sent again, and a restart before
   * they are gone delivers nothing twice either (the receiver answers the
   * record as delivered, and this runs again). So a clear that fails is
   * tried again, with the record's backoff, for as long as it takes.
   */
  private async clear (rec: SentRecord): Promise<void> {
    this.clearing.delete(rec.xid)
    let why: string
    try {
      const stuck = await this.queue.clear(rec)
      if (stuck.length === 0) {
        this.cleared(rec).catch((err: unknown) => this.opts.log.error({ peer: this.peerId, xid: rec.xid, err }, 'cannot finish a delivered transfer'))
        return
      }
      why = `cannot remove ${stuck.length} delivered file(s) from the outbox: ${label(stuck[0].rel)}: ${stuck[0].why}`
    } catch (err) {
      why = `cannot clear delivered files from the outbox: ${(err as Error).message}`
    }
    if (this.phase === 'stopped' || this.book.get(rec.xid) !== rec) return
    const wait = this.book.setAside(rec, why, this.opts.clock.now())
    this.opts.log.error({ peer: this.peerId, xid: rec.xid, reason: why, retryInMs: wait }, 'delivered files stay in the outbox, not sent again; retrying')
    this.clearing.set(rec.xid, this.opts.clock.setTimeout(() => { void this.clear(rec) }, wait))
  }

  private async cleared (rec: SentRecord): Promise<void> {
    // What the delivery freed on a full disk goes to the reserve first, then to batches again.
    await this.store.keepReserve()
    await this.queue.checkRoom()
    for (const it of rec.items) this.opts.onSent?.(it.rel)
    this.opts.log.info({ peer: this.peerId, xid: rec.xid, files: rec.items.length, bytes: rec.size }, 'transfer delivered')
    this.book.cleared(rec)
    // A file of the same name written meanwhile is a new one.
    this.queue.requeue(rec.items)
    this.tell(rec, 'xforget')
    this.queue.pruneSoon()
  }

  private onForgot (m: Msg<'xforgot'>): void {
    const xid = m.xid.toString('hex')
    const rec = this.book.get(xid)
    const standing = rec === undefined ? undefined : this.book.standing(rec)
    if (rec === undefined || (standing !== 'cancel' && standing !== 'confirm')) return
    this.book.remove(xid)
    // A cancelled transfer's files still in the outbox wait again.
    if (standing === 'cancel') this.queue.requeue(rec.items)
    void this.lock.run(async () => await this.store.drop(rec))
    this.kick(0)
  }

  private cancel (rec: SentRecord, why: string): void {
    if (!this.mark(rec, why)) return
    void this.lock.run(async () => await this.saveCancel(rec))
    this.kick(0)
  }

  /** Turns a transfer into a cancel; false if it is one already, or delivered. */
  private mark (rec: SentRecord, why: string): boolean {
    if (this.att?.rec === rec) this.endAttempt()
    this.forgetRename(rec.items[0].rel)
    if (this.book.standing(rec) !== 'send') return false
    this.book.cancelled(rec)
    this.opts.log.info({ peer: this.peerId, xid: rec.xid, files: rec.items.length, why }, 'cancelling a transfer')
    return true
  }

  private async saveCancel (rec: SentRecord): Promise<void> {
    await this.store.save(rec)
    await this.store.dropBundle(rec)
    this.tell(rec, 'xcancel')
  }

  /**
   * Sends a cancel or a forget; one that cannot go now goes when the link is
   * back, one not answered within retryMs goes again (a link replaced by a
   * simultaneous dial loses what was on it without going down).
   */
  private tell (rec: SentRecord, type: 'xcancel' | 'xforget'): void {
    if (!this.link.isUp()) return
    try {
      this.link.send({ type, xid: Buffer.from(rec.xid, 'hex') })
      this.book.told(rec.xid, this.opts.clock.now())
      this.kick(this.opts.settings.retryMs)
    } catch {}
  }

  /** Sends m for the current attempt; a link that is gone ends the attempt (it resumes when the link is back). */
  private trySend (m: XferMessage): boolean {
    try {
      this.link.send(m)
      return true
    } catch {
      this.endAttempt()
      return false
    }
  }

  /** (Re)starts the wait for the receiver's next answer. */
  private arm (): void {
    const gen = this.gen
    this.opts.clock.clearTimeout(this.answerTimer)
    this.answerTimer = this.opts.clock.setTimeout(() => {
      if (this.gen === gen) this.failed(gen, new Error(`no answer in ${this.opts.settings.timeoutMs} ms`))
    }, this.opts.settings.timeoutMs)
  }

  /** The attempt failed here (or the receiver fell silent): set it aside, go on with the next. */
  private failed (gen: number, err: unknown): void {
    const att = this.att
    if (this.gen !== gen || att === undefined) return
    this.opts.log.warn({ peer: this.peerId, xid: att.rec.xid, err: (err as Error).message }, 'outbox transfer failed; set aside')
    this.endAttempt()
    this.book.setAside(att.rec, (err as Error).message, this.opts.clock.now())
    this.kick(0)
  }

  private endAttempt (): void {
    const att = this.att
    this.att = undefined
    this.gen++
    this.opts.clock.clearTimeout(this.answerTimer)
    if (this.phase !== 'stopped') this.phase = 'idle'
    att?.close()
  }
}
