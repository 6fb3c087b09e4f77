// The inbox side of transfers, for every peer: offers, partials, acks,
// and delivery records (on disk as receiver-store.ts describes).
//
// Invariants:
// - Partial data never shows in the inbox; a file appears there by a rename
//   (delivery.ts), after the whole transfer matched its SHA-256.
// - Exactly once: a transfer's record is durable before its first file is
//   renamed into the inbox, and with the renames it reads as delivered
//   (receiver-store.ts), before xdone ok is sent; a second offer or a late
//   cancel of that xid gets xdelivered, and the record goes only when the
//   sender says xforget (or after maxAgeMs). Placing is idempotent per
//   file, so a crash mid-batch places the rest.
// - Nothing leaks: every open transfer belongs to its peer's table, at most
//   maxPartials per peer (open or resumable on disk; the least recently
//   active is dropped beyond it); its fd closes when the peer's link goes.
//   A transfer opens no file before its first data. Partials count against
//   the peer's quota; those nobody comes back for go after maxAgeMs.
// - One peer's messages are handled in order, one at a time.
// - A stream (a file its sender still writes) takes data up to what the
//   quota and the disks leave at its offer, and is dropped past it. Its
//   records say 'stream', which never reads as delivered. Its end fixes
//   its size; it is recorded as a file of that size before it is placed.
//   A later offer of the xid as a 'file' of at least what is durable
//   resumes it.
import { mkdir, rm, truncate } from 'node:fs/promises'
import path from 'node:path'
import type { Clock, Timer } from '../../lib/clock.js'
import { fsErrorOf } from '../../lib/durable.js'
import type { Logger } from '../../lib/log.js'
import { KeyedLock } from '../../lib/lock.js'
import { treeBytes } from '../../lib/walk.js'
import type { Handler } from '../../transport/messages/codec.js'
import type { XferKind, XferMessage, XferResult, XferToReceiver } from '../../transport/messages/xfer.js'
import { unpackBundle } from './bundle.js'
import { noRoom, placeAll, placeError, streamRoom } from './delivery.js'
import { Partial } from './partial.js'
import { ReceiverStore, type Held, type RecvRecord } from './receiver-store.js'
import { Progress, Refusal, label, type StatusPairs, type TransferSettings, type XferLink } from './shared.js'

type Msg<T extends XferMessage['type']> = Extract<XferMessage, { type: T }>

/** A transfer being received; owned by its peer's table. */
interface Incoming {
  peer: string
  xid: string
  kind: XferKind
  name: string
  size: number
  /** Most bytes it may bring: its size, or for a stream what the quota and the disks leave. */
  limit: number
  part: Partial
  /** Bytes a record on disk says are durable. */
  offset: number
  /** Write and acknowledge every this many bytes: at most a quarter of the sender's window. */
  ackEvery: number
  /** When offset last moved; a record is due every checkpointBytes or checkpointMs. */
  checkpointAt: number
  /** The checkpoint in progress, which anything that saves this record or closes the transfer awaits first. */
  checkpointing: Promise<void> | undefined
  progress: Progress
  touched: number
}

export interface InboxOptions {
  clock: Clock
  log: Logger
  settings: TransferSettings
  link: (peer: string) => XferLink
  inboxOf: (peer: string) => string
  quotaOf: (peer: string) => number
  onReceived: (peer: string, rel: string) => void
}

export class InboxReceiver {
  private readonly open = new Map<string, Map<string, Incoming>>()
  private readonly lock = new KeyedLock<string>()
  private readonly store: ReceiverStore
  private sweepTimer: Timer | undefined
  private stopped = false

  /** The router's entry: one method per message a sender sends. */
  readonly handler: Handler<XferToReceiver> = {
    xoffer: (peer, m) => this.serial(peer, async () => await this.offer(peer, m)),
    xdata: (peer, m) => this.serial(peer, async () => await this.data(peer, m)),
    xend: (peer, m) => this.serial(peer, async () => await this.end(peer, m)),
    xcancel: (peer, m) => this.serial(peer, async () => await this.cancel(peer, m)),
    xforget: (peer, m) => this.serial(peer, async () => await this.forget(peer, m))
  }

  constructor (partialRoot: string, private readonly opts: InboxOptions) {
    this.store = new ReceiverStore(partialRoot)
  }

  /** Sweeps what a crash left and what is too old, then every quarter of maxAgeMs (at most hourly). */
  async start (): Promise<void> {
    for (const peer of await this.store.peers()) await this.store.dropTemps(peer)
    await this.sweep()
  }

  stop (): void {
    this.stopped = true
    this.opts.clock.clearTimeout(this.sweepTimer)
    for (const t of this.open.values()) for (const inc of t.values()) void inc.part.close()
    this.open.clear()
  }

  /** The peer's link is gone: its open transfers are closed; what is durable stays for a resume. */
  linkDown (peer: string): void {
    this.serial(peer, async () => {
      for (const inc of [...this.open.get(peer)?.values() ?? []]) {
        await this.close(peer, inc.xid)
        if (inc.offset === 0) await rm(this.store.part(peer, inc.xid), { force: true })
      }
    })
  }

  status (peer: string): StatusPairs {
    let cur: Incoming | undefined
    for (const inc of this.open.get(peer)?.values() ?? []) if (cur === undefined || inc.touched >= cur.touched) cur = inc
    if (cur === undefined) return [['incoming', '-'], ['incoming_progress', '-'], ['incoming_bytes_per_s', 0]]
    return [
      ['incoming', cur.kind !== 'tar' ? label(cur.name) : `${label(cur.name === '' ? 'files' : cur.name)} in one tar`],
      ['incoming_progress', cur.progress.text()],
      ['incoming_bytes_per_s', cur.progress.bytesPerS(this.opts.clock.now())]
    ]
  }

  private serial (peer: string, fn: () => Promise<void>): void {
    this.lock.run(peer, fn).catch((err: unknown) => this.opts.log.error({ peer, err }, 'inbox transfer step failed'))
  }

  private send (peer: string, m: XferMessage): void {
    try {
      this.opts.link(peer).send(m)
    } catch {
      // The link is gone; the sender offers again when it is back.
    }
  }

  private verdict (peer: string, xid: Buffer, result: XferResult, reason: string): void {
    this.send(peer, { type: 'xdone', xid, result, reason })
  }

  private table (peer: string): Map<string, Incoming> {
    let t = this.open.get(peer)
    if (t === undefined) {
      t = new Map()
      this.open.set(peer, t)
    }
    return t
  }

  private async close (peer: string, xid: string): Promise<void> {
    const t = this.open.get(peer)
    const inc = t?.get(xid)
    await inc?.checkpointing
    t?.delete(xid)
    if (t?.size === 0) this.open.delete(peer)
    await inc?.part.close()
  }

  private async offer (peer: string, m: Msg<'xoffer'>): Promise<void> {
    const xid = m.xid.toString('hex')
    const { log, settings, clock } = this.opts
    const notNow = (result: 'retry' | 'refused', reason: string): void => {
      log.warn({ peer, xid, name: m.name, result, reason }, 'transfer not accepted')
      this.verdict(peer, m.xid, result, reason)
    }
    const inbox = this.opts.inboxOf(peer)
    if (m.kind !== 'tar') {
      const bad = placeError(inbox, m.name)
      if (bad !== undefined) return notNow('refused', bad)
    }
    // A second offer starts again from what is durable.
    await this.close(peer, xid)
    const rec = await this.store.load(peer, xid)
    if (rec?.phase === 'delivered') return this.send(peer, { type: 'xdelivered', xid: m.xid })
    if (rec?.phase === 'placing') return await this.place(peer, rec)
    const same = rec !== undefined && rec.name === m.name && ((rec.kind === m.kind && rec.size === m.size) || (rec.kind === 'stream' && m.kind === 'file' && m.size >= rec.offset))
    let offset = same ? rec.offset : 0
    if (offset === 0) await this.store.drop(peer, xid)
    const held = await this.store.held(peer)
    const quota = this.opts.quotaOf(peer)
    let quotaLeft = Infinity
    if (quota > 0) {
      // A batch that could never fit is the sender's to split; a file that big waits for the quota to be raised.
      if (m.kind === 'tar' && m.size > quota) return notNow('refused', `a batch of ${m.size} bytes is over the inbox quota of ${quota} bytes`)
      const used = await treeBytes(inbox) + held.reduce((n, h) => n + (h.xid === xid ? 0 : h.bytes), 0)
      if (used + m.size > quota) return notNow('retry', `over the inbox quota: ${used} + ${m.size} bytes > ${quota}`)
      quotaLeft = quota - used
    }
    await mkdir(this.store.dir(peer), { recursive: true, mode: 0o700 })
    await mkdir(inbox, { recursive: true, mode: 0o700 })
    // A stream's size is not known: it may bring what the quota and the disks leave, and past it it is dropped, not left to fill the disk.
    let limit = m.size
    if (m.kind === 'stream') {
      limit = Math.min(quotaLeft, offset + await streamRoom(this.store.dir(peer), inbox))
    } else {
      const room = await noRoom(this.store.dir(peer), inbox, m.size, offset, m.kind === 'tar')
      if (room?.split === true) {
        // A refused batch is split by its sender, which drops this transfer: so is what is held of it here.
        await this.store.drop(peer, xid)
        return notNow('refused', room.reason)
      }
      if (room !== undefined) return notNow('retry', room.reason)
    }
    await this.makeRoom(peer, xid, held)
    const file = this.store.part(peer, xid)
    let part = Partial.fresh(file)
    if (offset > 0) {
      try {
        part = await Partial.resume(file, offset)
      } catch (err) {
        log.warn({ peer, xid, err: (err as Error).message }, 'partial unreadable; receiving from the start')
        offset = 0
      }
    }
    const now = clock.now()
    const ackEvery = Math.max(64 << 10, Math.min(settings.ackEveryBytes, Math.floor(m.window / 4)))
    this.table(peer).set(xid, {
      peer, xid, kind: m.kind, name: m.name, size: m.size, limit, part, offset, ackEvery, checkpointAt: now, checkpointing: undefined, progress: new Progress(m.kind === 'stream' ? undefined : m.size, offset, now), touched: now
    })
    this.send(peer, { type: 'xaccept', xid: m.xid, offset })
  }

  /** Keeps the peer below maxPartials transfers besides xid, dropping the least recently active. */
  private async makeRoom (peer: string, xid: string, held: Held[]): Promise<void> {
    const last = new Map<string, number>()
    for (const h of held) if (h.phase !== 'delivered' && h.xid !== xid) last.set(h.xid, h.mtimeMs)
    for (const inc of this.open.get(peer)?.values() ?? []) if (inc.xid !== xid) last.set(inc.xid, Math.max(inc.touched, last.get(inc.xid) ?? 0))
    const oldest = [...last].sort((a, b) => a[1] - b[1])
    while (oldest.length >= this.opts.settings.maxPartials) {
      const [victim] = oldest.shift() as [string, number]
      this.opts.log.warn({ peer, xid: victim, max: this.opts.settings.maxPartials }, 'too many transfers in progress from this peer; dropping the least recently active')
      await this.close(peer, victim)
      await this.store.drop(peer, victim)
    }
  }

  private async data (peer: string, m: Msg<'xdata'>): Promise<void> {
    const xid = m.xid.toString('hex')
    const inc = this.open.get(peer)?.get(xid)
    // Data sent before a re-offer, or for a cancelled transfer: not ours.
    if (inc === undefined || m.offset !== inc.part.received) return
    inc.touched = this.opts.clock.now()
    if (inc.part.received + m.data.length > inc.limit) {
      await this.close(peer, xid)
      await this.store.drop(peer, xid)
      if (inc.kind === 'stream') return this.verdict(peer, m.xid, 'retry', `no room: the stream passed the ${inc.limit} bytes the quota and the disk left at its offer`)
      return this.verdict(peer, m.xid, 'refused', 'more data than offered')
    }
    const part = inc.part
    try {
      const before = part.written
      await part.append(m.data, inc.ackEvery)
      inc.progress.done = part.received
      if (inc.kind !== 'stream' && part.received === inc.size) {
        // All of it: durable and recorded before the end is taken (a single file's record of all
        // its bytes is what reads as delivered once its .part is renamed in).
        await part.finish()
        await inc.checkpointing
        await this.checkpoint(inc)
      } else if (part.written > before && inc.checkpointing === undefined && (part.written - inc.offset >= this.opts.settings.checkpointBytes || inc.touched - inc.checkpointAt >= this.opts.settings.checkpointMs)) {
        inc.checkpointing = this.checkpoint(inc)
          .catch((err: unknown) => this.opts.log.warn({ peer, err: (err as Error).message }, 'cannot record a partial transfer; a resume starts earlier'))
          .finally(() => { inc.checkpointing = undefined })
      }
      if (part.written > before) this.send(peer, { type: 'xack', xid: m.xid, offset: part.written })
    } catch (err) {
      const e = fsErrorOf(err, 'inbox partial')
      this.opts.log.error({ peer, err: e.message }, 'cannot store incoming data; the sender will retry')
      // What is durable stays: the next offer resumes from it.
      await this.close(peer, xid)
      await truncate(this.store.part(peer, xid), inc.offset).catch(() => {})
      this.verdict(peer, m.xid, 'retry', e.message)
    }
  }

  /**
   * Makes what is written durable and records it: an fdatasync and a
   * durable record, tens of ms. Taken per acknowledgement, they held a
   * gigabyte to 70 MB/s; so they are rare (checkpointBytes, checkpointMs)
   * and out of the peer's turn (its data goes on meanwhile), except the
   * last. One at a time per transfer, which close() waits for, so a record
   * lands only while its transfer is open, and only forward.
   */
  private async checkpoint (inc: Incoming): Promise<void> {
    const upto = await inc.part.sync()
    if (upto <= inc.offset) return
    await this.store.save(inc.peer, { xid: inc.xid, phase: 'receiving', kind: inc.kind, name: inc.name, size: inc.size, offset: upto })
    inc.offset = upto
    inc.checkpointAt = this.opts.clock.now()
  }

  /**
   * A stream that passed its hash is a file of what it brought: made
   * durable and recorded so before it is placed, so that with its .part
   * renamed in it reads as delivered.
   */
  private async sized (inc: Incoming): Promise<void> {
    await inc.part.finish()
    await inc.checkpointing
    inc.kind = 'file'
    inc.size = inc.limit = inc.part.received
    await this.store.save(inc.peer, { xid: inc.xid, phase: 'receiving', kind: 'file', name: inc.name, size: inc.size, offset: inc.size })
    inc.offset = inc.size
  }

  private async end (peer: string, m: Msg<'xend'>): Promise<void> {
    const xid = m.xid.toString('hex')
    const inc = this.open.get(peer)?.get(xid)
    if (inc === undefined) return this.verdict(peer, m.xid, 'retry', 'unknown transfer; offer it again')
    if ((inc.kind !== 'stream' && inc.part.received !== inc.size) || !inc.part.hash.copy().digest().equals(m.sha256)) {
      this.opts.log.error({ peer, name: inc.name, received: inc.part.received, size: inc.size }, 'transfer failed its SHA-256 check; discarded')
      await this.close(peer, xid)
      await this.store.drop(peer, xid)
      return this.verdict(peer, m.xid, 'retry', 'SHA-256 mismatch; send it again')
    }
    if (inc.kind === 'stream') {
      try {
        await this.sized(inc)
      } catch (err) {
        const e = fsErrorOf(err, 'inbox partial')
        this.opts.log.error({ peer, err: e.message }, 'cannot record a streamed file; the sender will retry')
        await this.close(peer, xid)
        return this.verdict(peer, m.xid, 'retry', e.message)
      }
    }
    const part = this.store.part(peer, xid)
    const rec: RecvRecord = { xid, phase: 'placing', kind: inc.kind, name: inc.name, size: inc.size, offset: inc.size }
    try {
      try {
        // An empty file sent no data, so nothing opened its partial yet.
        await inc.part.finish()
      } finally {
        await this.close(peer, xid)
      }
      if (inc.kind === 'file') {
        // Its record of all its bytes is on disk (the final checkpoint wrote it; an empty
        // file's is written now): once the .part is renamed in, that record reads as delivered.
        if (inc.size === 0) await this.store.save(peer, { ...rec, phase: 'receiving' })
        rec.files = [{ rel: inc.name, mode: m.mode, mtimeMs: m.mtimeMs }]
      } else {
        rec.files = await unpackBundle(part, this.store.staging(peer, xid), rel => placeError(this.opts.inboxOf(peer), rel))
        await this.store.save(peer, rec)
        await rm(part, { force: true })
      }
    } catch (err) {
      if (err instanceof Refusal) {
        this.opts.log.error({ peer, reason: err.message }, 'refused a transfer')
        await this.store.drop(peer, xid)
        return this.verdict(peer, m.xid, 'refused', err.message)
      }
      // Verified and kept (its record says all of it is here): a second offer only unpacks again.
      await rm(this.store.staging(peer, xid), { recursive: true, force: true })
      const e = fsErrorOf(err, 'inbox delivery')
      this.opts.log.error({ peer, err: e.message }, 'cannot unpack a transfer; the sender will retry')
      return this.verdict(peer, m.xid, 'retry', e.message)
    }
    await this.place(peer, rec)
  }

  /** Places what a verified transfer has not placed yet and says so; what is left on disk then reads as delivered. */
  private async place (peer: string, rec: RecvRecord): Promise<void> {
    const xid = Buffer.from(rec.xid, 'hex')
    const staging = this.store.staging(peer, rec.xid)
    const files = (rec.files ?? []).map((f, i) => ({
      ...f, src: rec.kind === 'file' ? this.store.part(peer, rec.xid) : path.join(staging, String(i)), tag: `${rec.xid}-${i}`
    }))
    try {
      const inbox = this.opts.inboxOf(peer)
      await mkdir(inbox, { recursive: true, mode: 0o700 })
      const out = await placeAll(files, inbox)
      for (const s of out.refused) this.opts.log.error({ peer, rel: s.rel, why: s.why }, 'cannot place a received file; dropped')
      for (const rel of out.placed) this.opts.onReceived(peer, rel)
      if (out.blocked.length > 0) {
        // Kept staged; the sender offers it again with its backoff, and the rest was placed once.
        const why = `${out.blocked.length} file(s) cannot be placed yet: ${out.blocked[0].why}`
        this.opts.log.warn({ peer, files: out.blocked.slice(0, 20).map(b => b.rel), why }, 'cannot place a received file until what is in its way is moved; the sender will retry')
        return this.verdict(peer, xid, 'retry', why)
      }
      await this.store.dropData(peer, rec.xid)
      this.verdict(peer, xid, 'ok', `${out.placed.length} files`)
    } catch (err) {
      const e = fsErrorOf(err, 'inbox delivery')
      this.opts.log.error({ peer, err: e.message }, 'cannot deliver into the inbox; the sender will retry')
      this.verdict(peer, xid, 'retry', e.message)
    }
  }

  private async cancel (peer: string, m: Msg<'xcancel'>): Promise<void> {
    const xid = m.xid.toString('hex')
    const rec = await this.store.load(peer, xid)
    // Verified and being placed: too late to cancel; it is delivered.
    if (rec?.phase === 'delivered') return this.send(peer, { type: 'xdelivered', xid: m.xid })
    if (rec?.phase === 'placing') return await this.place(peer, rec)
    await this.close(peer, xid)
    await this.store.drop(peer, xid)
    this.send(peer, { type: 'xforgot', xid: m.xid })
  }

  private async forget (peer: string, m: Msg<'xforget'>): Promise<void> {
    const xid = m.xid.toString('hex')
    const rec = await this.store.load(peer, xid)
    if (rec !== undefined && rec.phase !== 'delivered') {
      // The sender forgets only what it has cleared from its outbox as
      // delivered, so it never offers this again: were it kept, it would be
      // asked for again every retry, for ever. What was verified is placed
      // first (the next forget finds it delivered); what was not is dropped.
      this.opts.log.warn({ peer, xid, phase: rec.phase, kind: rec.kind, name: rec.name }, 'asked to forget a transfer not delivered here')
      if (rec.phase === 'placing') return await this.place(peer, rec)
      await this.close(peer, xid)
    }
    await this.store.drop(peer, xid)
    this.send(peer, { type: 'xforgot', xid: m.xid })
  }

  /** Removes what no sender came back for within maxAgeMs. */
  private async sweep (): Promise<void> {
    if (this.stopped) return
    const { clock, settings, log } = this.opts
    for (const peer of await this.store.peers()) {
      await this.lock.run(peer, async () => {
        for (const h of await this.store.held(peer)) {
          if (this.open.get(peer)?.has(h.xid) === true || clock.now() - h.mtimeMs <= settings.maxAgeMs) continue
          log.info({ peer, xid: h.xid, phase: h.phase, bytes: h.bytes }, 'removing a transfer its sender abandoned')
          await this.store.drop(peer, h.xid)
        }
      })
    }
    const every = Math.min(3600_000, Math.max(1000, Math.floor(settings.maxAgeMs / 4)))
    this.sweepTimer = clock.setTimeout(() => { void this.sweep().catch((err: unknown) => log.error({ err }, 'partial sweep failed')) }, every)
  }
}
