// Outbox to inbox file transfer.
//
// Sender (one per peer): the files in the outbox folder are the queue. A
// scan picks the next transfer: one large file alone, or up to batchFiles
// small ones packed into a tar bundle in the spool. The transfer is offered
// under a random xid (persisted, so a restart offers the same one); the
// receiver answers with the offset it already holds durably, and data flows
// from there in packets, at most windowBytes unacknowledged. After the last
// packet the sender sends the SHA-256 of the whole and the file's mode and
// mtime (read at the end, so `cp -p` setting them after close is carried).
// Only when the receiver reports it delivered are the files removed from the
// outbox, and only those unchanged since they were read.
//
// Receiver: partial data lives in the state folder, never in the inbox; it
// is fsynced before each acknowledgement. When the hash matches, each file
// is given its mode and mtime and renamed into the inbox, so it appears
// whole or not at all. Names are checked (relative, no "..", no dot-files
// reserved for us, limits), tar entries other than files and folders are
// refused, and so is a transfer over the sender's inbox quota.
import { createHash, randomBytes, type Hash } from 'node:crypto'
import { constants as fsc } from 'node:fs'
import { chmod, copyFile, lstat, mkdir, open, readdir, readFile, rename, rm, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import tar from 'tar-stream'
import type { Clock, Timer } from '../lib/clock.js'
import { E, PeerfsError } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import { fsErrorOf, fsyncDir, setTimes, writeDurable } from '../lib/durable.js'
import { Waiters } from '../lib/wait.js'
import { XID_BYTES, type Message, type XferKind } from './messages/index.js'

export interface TransferSettings {
  batchFiles: number
  batchMs: number
  packetBytes: number
  windowBytes: number
  largeFileBytes: number
  bundleMaxBytes: number
  ackEveryBytes: number
  retryMs: number
}

export interface XferLink {
  isUp: () => boolean
  send: (m: Message) => void
}

type Xoffer = Extract<Message, { type: 'xoffer' }>
type Xdata = Extract<Message, { type: 'xdata' }>
type Xend = Extract<Message, { type: 'xend' }>

const NAME_MAX = 255
const PATH_MAX = 4096
const DEPTH_MAX = 64
const RESERVED = '.peerfs-'

/** Checks a relative path from a peer; returns why it is refused, or undefined. */
export function badRelPath (rel: string): string | undefined {
  if (rel === '') return 'empty name'
  if (Buffer.byteLength(rel) > PATH_MAX) return 'path too long'
  if (rel.includes('\0')) return 'NUL in name'
  if (rel.startsWith('/')) return 'absolute path'
  const parts = rel.split('/')
  if (parts.length > DEPTH_MAX) return 'path too deep'
  for (const p of parts) {
    if (p === '' || p === '.') return 'empty path component'
    if (p === '..') return '".." in path'
    if (Buffer.byteLength(p) > NAME_MAX) return 'name too long'
    if (p.startsWith(RESERVED)) return 'reserved name'
  }
  return undefined
}

const isVisible = (rel: string): boolean => rel.split('/').every(p => !p.startsWith('.'))

interface Item { rel: string, size: number, mtimeMs: number }

interface Current {
  xid: string
  kind: XferKind
  name: string
  size: number
  items: Item[]
  /** File to send: the outbox file itself, or the bundle in the spool. */
  source: string
}

class Cancelled extends Error {}

export interface OutboxStats {
  files: number
  bytes: number
  transfer: string
  progress: string
  rateBps: number
}

export class OutboxSender {
  private current: Current | undefined
  private readonly writers = new Map<string, number>()
  /** Refused files and their mtime: not offered again until they change. */
  private readonly refused = new Map<string, number>()
  private scanTimer: Timer | undefined
  private firstReady: number | undefined
  private readyCount = 0
  private running = false
  /** A scan was asked for while one ran: it may have missed the change. */
  private rerun = false
  private stopped = false
  private acked = 0
  private startedAt = 0
  private startOffset = 0
  private readonly replies = new Waiters()
  private reply: Message | undefined
  private queued = { files: 0, bytes: 0 }

  constructor (
    readonly peerId: string,
    private readonly outbox: string,
    private readonly spool: string,
    private readonly link: XferLink,
    private readonly opts: { clock: Clock, log: Logger, settings: TransferSettings, onSent?: (rel: string) => void }
  ) {}

  async start (): Promise<void> {
    await mkdir(this.outbox, { recursive: true, mode: 0o700 })
    await mkdir(this.spool, { recursive: true, mode: 0o700 })
    const saved = await readFile(path.join(this.spool, 'current.json'), 'utf8').catch(() => undefined)
    if (saved !== undefined) {
      try {
        this.current = JSON.parse(saved) as Current
      } catch (err) {
        this.opts.log.error({ peer: this.peerId, err: (err as Error).message }, 'unreadable transfer state; starting over')
      }
    }
    this.scheduleScan(0)
  }

  stop (): void {
    this.stopped = true
    this.opts.clock.clearTimeout(this.scanTimer)
    this.replies.notify()
  }

  // Hooks from the outbox folder.

  writing (rel: string, delta: number): void {
    const n = (this.writers.get(rel) ?? 0) + delta
    if (n <= 0) this.writers.delete(rel)
    else this.writers.set(rel, n)
  }

  ready (rel: string): void {
    this.refused.delete(rel)
    this.readyCount++
    this.firstReady ??= this.opts.clock.now()
    stat(path.join(this.outbox, rel)).then((st) => {
      const s = this.opts.settings
      const now = st.size >= s.largeFileBytes || this.readyCount >= s.batchFiles
      this.scheduleScan(now ? 0 : Math.max(0, (this.firstReady ?? 0) + s.batchMs - this.opts.clock.now()))
    }, () => this.scheduleScan(this.opts.settings.batchMs))
  }

  gone (rel: string): void {
    const cur = this.current
    if (cur === undefined) return
    if (cur.items.some(it => it.rel === rel || it.rel.startsWith(rel + '/'))) {
      this.opts.log.info({ peer: this.peerId, rel }, 'file removed from the outbox; cancelling its transfer')
      this.cancel('removed from the outbox')
    }
  }

  linkUp (): void { this.scheduleScan(0) }

  linkDown (): void { this.replies.notify() }

  stats (): OutboxStats {
    const cur = this.current
    const elapsed = (this.opts.clock.now() - this.startedAt) / 1000
    return {
      files: this.queued.files,
      bytes: this.queued.bytes,
      transfer: cur === undefined ? '-' : cur.kind === 'file' ? cur.name : `${cur.items.length} files in one tar`,
      progress: cur === undefined ? '-' : `${this.acked}/${cur.size} bytes (${cur.size === 0 ? 100 : Math.floor(this.acked * 100 / cur.size)}%)`,
      rateBps: cur === undefined || elapsed <= 0 ? 0 : Math.round((this.acked - this.startOffset) / elapsed)
    }
  }

  onMessage (m: Message): void {
    const cur = this.current
    if (cur === undefined || !('xid' in m) || m.xid.toString('hex') !== cur.xid) return
    if (m.type === 'xack') {
      if (m.offset > this.acked) this.acked = m.offset
      this.replies.notify()
    } else if (m.type === 'xaccept' || m.type === 'xdone') {
      this.reply = m
      this.replies.notify()
    }
  }

  private scheduleScan (ms: number): void {
    if (this.stopped) return
    this.opts.clock.clearTimeout(this.scanTimer)
    this.scanTimer = this.opts.clock.setTimeout(() => { void this.run() }, ms)
  }

  private cancel (why: string): void {
    const cur = this.current
    if (cur === undefined) return
    try {
      if (this.link.isUp()) this.link.send({ type: 'xcancel', xid: Buffer.from(cur.xid, 'hex') })
    } catch {
      // The receiver drops the partial when the same xid is never offered again.
    }
    this.current = undefined
    this.acked = 0
    this.reply = { type: 'xcancel', xid: Buffer.from(cur.xid, 'hex') }
    this.replies.notify()
    void this.forget(cur).then(() => this.opts.log.debug({ peer: this.peerId, why }, 'transfer cancelled'))
    this.scheduleScan(this.opts.settings.batchMs)
  }

  private async forget (cur: Current): Promise<void> {
    await rm(path.join(this.spool, 'current.json'), { force: true })
    if (cur.kind === 'tar') await rm(cur.source, { force: true })
  }

  private async run (): Promise<void> {
    if (this.stopped) return
    if (this.running) {
      this.rerun = true
      return
    }
    this.running = true
    this.rerun = false
    try {
      for (;;) {
        if (this.stopped) return
        if (!this.link.isUp()) {
          // Nothing to send now, but status should count what waits.
          await this.waiting()
          return
        }
        const cur = this.current ?? await this.pick()
        if (cur === undefined) return
        const outcome = await this.send(cur)
        if (outcome === 'again') continue
        if (outcome === 'later') {
          this.scheduleScan(this.opts.settings.retryMs)
          return
        }
      }
    } catch (err) {
      this.opts.log.error({ peer: this.peerId, err }, 'outbox transfer failed; retrying')
      this.scheduleScan(this.opts.settings.retryMs)
    } finally {
      this.running = false
      this.firstReady = undefined
      this.readyCount = 0
      if (this.rerun) this.scheduleScan(0)
    }
  }

  /** Files waiting, in path order: visible, not being written, not refused. */
  private async waiting (): Promise<Item[]> {
    const out: Item[] = []
    const walk = async (rel: string): Promise<void> => {
      const names = await readdir(path.join(this.outbox, rel)).catch(() => [] as string[])
      for (const name of names.sort()) {
        if (name.startsWith('.')) continue
        const r = rel === '' ? name : `${rel}/${name}`
        const st = await lstat(path.join(this.outbox, r)).catch(() => undefined)
        if (st === undefined) continue
        if (st.isDirectory()) await walk(r)
        else if (st.isFile() && !this.writers.has(r) && this.refused.get(r) !== st.mtimeMs) out.push({ rel: r, size: st.size, mtimeMs: st.mtimeMs })
      }
    }
    await walk('')
    this.queued = { files: out.length, bytes: out.reduce((n, it) => n + it.size, 0) }
    return out
  }

  private async pick (): Promise<Current | undefined> {
    const items = await this.waiting()
    if (items.length === 0) return undefined
    const s = this.opts.settings
    const xid = randomBytes(XID_BYTES).toString('hex')
    const large = items.find(it => it.size >= s.largeFileBytes)
    let cur: Current
    if (large !== undefined) {
      cur = { xid, kind: 'file', name: large.rel, size: large.size, items: [large], source: path.join(this.outbox, large.rel) }
    } else {
      const batch: Item[] = []
      let bytes = 0
      for (const it of items) {
        if (batch.length >= s.batchFiles || (batch.length > 0 && bytes + it.size > s.bundleMaxBytes)) break
        batch.push(it)
        bytes += it.size
      }
      const source = path.join(this.spool, `bundle-${xid}.tar`)
      const size = await this.bundle(batch, source)
      if (size === undefined) return undefined
      cur = { xid, kind: 'tar', name: '', size, items: batch, source }
    }
    await writeDurable(path.join(this.spool, 'current.json'), JSON.stringify(cur))
    this.current = cur
    return cur
  }

  /** Packs the files into a tar at dest; undefined if one changed meanwhile (scan again). */
  private async bundle (items: Item[], dest: string): Promise<number | undefined> {
    const pack = tar.pack()
    const fh = await open(dest, 'w', 0o600)
    let size = 0
    const drain = (async () => {
      for await (const chunk of pack as AsyncIterable<Buffer>) {
        await fh.write(chunk)
        size += chunk.length
      }
    })()
    try {
      for (const it of items) {
        const file = path.join(this.outbox, it.rel)
        const [data, st] = await Promise.all([readFile(file), stat(file)])
        if (st.size !== it.size || st.mtimeMs !== it.mtimeMs || data.length !== it.size) {
          pack.destroy()
          await drain.catch(() => {})
          return undefined
        }
        await new Promise<void>((resolve, reject) => pack.entry({
          name: it.rel, size: data.length, mode: st.mode & 0o7777, mtime: st.mtime, type: 'file', pax: { mtime: (st.mtimeMs / 1000).toFixed(6) }
        }, data, (err) => err == null ? resolve() : reject(err)))
      }
      pack.finalize()
      await drain
      await fh.sync()
      return size
    } finally {
      await fh.close()
    }
  }

  /**
   * Waits until ready() holds. A cancel or a lost link throws Cancelled, the
   * receiver's verdict (xdone, final or mid-way) Answered, silence ETIMEDOUT.
   */
  private async waitFor (ready: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = this.opts.clock.now() + timeoutMs
    for (;;) {
      if (ready()) return
      const r = this.reply
      if (r?.type === 'xcancel' || !this.link.isUp() || this.stopped) throw new Cancelled()
      if (r?.type === 'xdone') {
        this.reply = undefined
        throw new Answered(r.result, r.reason)
      }
      const left = deadline - this.opts.clock.now()
      if (left <= 0) throw new PeerfsError(E.ETIMEDOUT, `no answer from ${this.peerId} to the transfer`)
      await new Promise<void>((resolve) => {
        const t = this.opts.clock.setTimeout(resolve, left)
        void this.replies.wait().then(() => {
          this.opts.clock.clearTimeout(t)
          resolve()
        })
      })
    }
  }

  /** One attempt at the current transfer: done (next), again (now), or later. */
  private async send (cur: Current): Promise<'done' | 'again' | 'later'> {
    const xid = Buffer.from(cur.xid, 'hex')
    const s = this.opts.settings
    if (cur.kind === 'file') {
      const st = await stat(cur.source).catch(() => undefined)
      if (st === undefined || st.size !== cur.size || st.mtimeMs !== cur.items[0].mtimeMs) {
        this.cancel('changed before it was sent')
        return 'again'
      }
    }
    let fh: FileHandle | undefined
    try {
      this.reply = undefined
      this.link.send({ type: 'xoffer', xid, kind: cur.kind, size: cur.size, window: s.windowBytes, name: cur.name })
      await this.waitFor(() => this.reply?.type === 'xaccept', 30_000)
      const accepted = this.reply as Message | undefined
      const offset = Math.min(accepted?.type === 'xaccept' ? accepted.offset : 0, cur.size)
      this.reply = undefined
      fh = await open(cur.source, 'r')
      const hash = createHash('sha256')
      await hashRange(fh, hash, 0, offset)
      this.acked = offset
      this.startOffset = offset
      this.startedAt = this.opts.clock.now()
      const buf = Buffer.allocUnsafe(s.packetBytes)
      let pos = offset
      while (pos < cur.size) {
        const sent = pos
        await this.waitFor(() => sent - this.acked < s.windowBytes, 30_000)
        const { bytesRead } = await fh.read(buf, 0, Math.min(s.packetBytes, cur.size - pos), pos)
        if (bytesRead === 0) throw new Cancelled()
        const data = Buffer.from(buf.subarray(0, bytesRead))
        hash.update(data)
        this.link.send({ type: 'xdata', xid, offset: pos, data })
        pos += bytesRead
      }
      const st = await fh.stat()
      if (cur.kind === 'file' && (st.size !== cur.size || st.mtimeMs !== cur.items[0].mtimeMs)) {
        this.cancel('changed while it was sent')
        return 'again'
      }
      this.link.send({ type: 'xend', xid, sha256: hash.digest(), mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) })
      // The verdict arrives as xdone, which waitFor throws as Answered.
      await this.waitFor(() => false, 120_000)
      return 'later'
    } catch (err) {
      if (err instanceof Answered) return await this.finish(cur, err.result, err.message)
      if (err instanceof Cancelled) return this.current === undefined ? 'again' : 'later'
      if (err instanceof PeerfsError && err.errno === E.ETIMEDOUT) {
        this.opts.log.warn({ peer: this.peerId }, err.message)
        return 'later'
      }
      throw err
    } finally {
      await fh?.close()
    }
  }

  private async finish (cur: Current, result: 'ok' | 'retry' | 'refused', reason: string): Promise<'done' | 'again' | 'later'> {
    if (result === 'retry') {
      this.opts.log.info({ peer: this.peerId, reason }, 'peer cannot take the transfer now; will retry')
      return 'later'
    }
    if (result === 'refused') {
      this.opts.log.error({ peer: this.peerId, files: cur.items.map(i => i.rel), reason }, 'peer refused the transfer; the files stay in the outbox until they change')
      for (const it of cur.items) this.refused.set(it.rel, it.mtimeMs)
    } else {
      for (const it of cur.items) {
        const file = path.join(this.outbox, it.rel)
        const st = await stat(file).catch(() => undefined)
        if (st === undefined || st.size !== it.size || st.mtimeMs !== it.mtimeMs) continue
        await unlink(file).catch(() => {})
        await this.pruneDirs(path.dirname(it.rel))
        this.opts.onSent?.(it.rel)
      }
      this.opts.log.info({ peer: this.peerId, files: cur.items.length, bytes: cur.size }, 'transfer delivered')
    }
    this.current = undefined
    this.acked = 0
    await this.forget(cur)
    return 'done'
  }

  /** Removes folders the delivery emptied, up to the outbox itself. */
  private async pruneDirs (rel: string): Promise<void> {
    while (rel !== '.' && rel !== '' && isVisible(rel)) {
      try {
        await rmdir(path.join(this.outbox, rel))
      } catch {
        return
      }
      rel = path.dirname(rel)
    }
  }
}

class Answered extends Error {
  constructor (readonly result: 'ok' | 'retry' | 'refused', reason: string) { super(reason) }
}

async function hashRange (fh: FileHandle, hash: Hash, from: number, to: number): Promise<void> {
  const buf = Buffer.allocUnsafe(1 << 20)
  for (let pos = from; pos < to;) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), pos)
    if (bytesRead === 0) throw new Error('file shorter than its acknowledged offset')
    hash.update(buf.subarray(0, bytesRead))
    pos += bytesRead
  }
}

interface Partial {
  xid: string
  kind: XferKind
  name: string
  size: number
  /** Bytes fsynced and acknowledged. */
  offset: number
}

interface Incoming extends Partial {
  fh: FileHandle
  hash: Hash
  written: number
  /** Acknowledge at least this often: a quarter of the sender's window. */
  ackEvery: number
}

export interface InboxOptions {
  log: Logger
  settings: TransferSettings
  inboxOf: (peer: string) => string
  quotaOf: (peer: string) => number
  onReceived: (peer: string, rel: string) => void
}

/** The receiving side for every peer; partial data under <partialRoot>/<peer>/. */
export class InboxReceiver {
  private readonly active = new Map<string, Incoming>()
  private readonly chains = new Map<string, Promise<void>>()

  constructor (private readonly partialRoot: string, private readonly opts: InboxOptions) {}

  /** Messages of one peer are handled in order, one at a time. */
  onMessage (peer: string, m: Message, send: (r: Message) => void): void {
    const prev = this.chains.get(peer) ?? Promise.resolve()
    const next = prev.then(async () => await this.handle(peer, m, send)).catch((err: unknown) => {
      this.opts.log.error({ peer, err }, 'inbox transfer step failed')
    })
    this.chains.set(peer, next)
  }

  private dir (peer: string): string { return path.join(this.partialRoot, peer) }
  private key (peer: string, xid: Buffer): string { return `${peer}/${xid.toString('hex')}` }

  private async handle (peer: string, m: Message, send: (r: Message) => void): Promise<void> {
    switch (m.type) {
      case 'xoffer': return await this.offer(peer, m, send)
      case 'xdata': return await this.data(peer, m, send)
      case 'xend': return await this.end(peer, m, send)
      case 'xcancel': return await this.drop(peer, m.xid)
    }
  }

  private async offer (peer: string, m: Xoffer, send: (r: Message) => void): Promise<void> {
    const done = (result: 'retry' | 'refused', reason: string): void => {
      this.opts.log.warn({ peer, name: m.name, result, reason }, 'transfer not accepted')
      send({ type: 'xdone', xid: m.xid, result, reason })
    }
    if (m.kind === 'file') {
      const bad = badRelPath(m.name)
      if (bad !== undefined) return done('refused', `${bad}: ${JSON.stringify(m.name.slice(0, 200))}`)
    }
    const quota = this.opts.quotaOf(peer)
    if (quota > 0) {
      const used = await duBytes(this.opts.inboxOf(peer))
      if (used + m.size > quota) return done('retry', `over the inbox quota: ${used} + ${m.size} bytes > ${quota}`)
    }
    const k = this.key(peer, m.xid)
    const old = this.active.get(k)
    if (old !== undefined) {
      await old.fh.close().catch(() => {})
      this.active.delete(k)
    }
    await mkdir(this.dir(peer), { recursive: true, mode: 0o700 })
    const base = path.join(this.dir(peer), m.xid.toString('hex'))
    let meta: Partial = { xid: m.xid.toString('hex'), kind: m.kind, name: m.name, size: m.size, offset: 0 }
    const saved = await readFile(`${base}.json`, 'utf8').then(t => JSON.parse(t) as Partial, () => undefined)
    if (saved !== undefined && saved.kind === m.kind && saved.name === m.name && saved.size === m.size) meta = saved
    try {
      const fh = await open(`${base}.part`, fsc.O_RDWR | fsc.O_CREAT, 0o600)
      await fh.truncate(meta.offset)
      const hash = createHash('sha256')
      await hashRange(fh, hash, 0, meta.offset)
      await writeDurable(`${base}.json`, JSON.stringify(meta))
      const ackEvery = Math.max(64 << 10, Math.min(this.opts.settings.ackEveryBytes, Math.floor(m.window / 4)))
      this.active.set(k, { ...meta, fh, hash, written: meta.offset, ackEvery })
    } catch (err) {
      const e = fsErrorOf(err, 'inbox partial')
      return done(e.errno === E.ENOSPC ? 'retry' : 'refused', e.message)
    }
    send({ type: 'xaccept', xid: m.xid, offset: meta.offset })
  }

  private async data (peer: string, m: Xdata, send: (r: Message) => void): Promise<void> {
    const inc = this.active.get(this.key(peer, m.xid))
    // Data sent before a re-offer, or for a cancelled transfer: not ours.
    if (inc === undefined || m.offset !== inc.written) return
    if (inc.written + m.data.length > inc.size) {
      await this.drop(peer, m.xid)
      send({ type: 'xdone', xid: m.xid, result: 'refused', reason: 'more data than offered' })
      return
    }
    try {
      await inc.fh.write(m.data, 0, m.data.length, inc.written)
      inc.hash.update(m.data)
      inc.written += m.data.length
      if (inc.written - inc.offset >= inc.ackEvery || inc.written === inc.size) {
        await inc.fh.datasync()
        inc.offset = inc.written
        await writeDurable(path.join(this.dir(peer), `${inc.xid}.json`), JSON.stringify({ xid: inc.xid, kind: inc.kind, name: inc.name, size: inc.size, offset: inc.offset }))
        send({ type: 'xack', xid: m.xid, offset: inc.offset })
      }
    } catch (err) {
      const e = fsErrorOf(err, 'inbox partial')
      this.opts.log.error({ peer, err: e.message }, 'cannot store incoming data; the sender will retry')
      await this.drop(peer, m.xid)
      send({ type: 'xdone', xid: m.xid, result: 'retry', reason: e.message })
    }
  }

  private async drop (peer: string, xid: Buffer): Promise<void> {
    const k = this.key(peer, xid)
    const inc = this.active.get(k)
    this.active.delete(k)
    await inc?.fh.close().catch(() => {})
    const base = path.join(this.dir(peer), xid.toString('hex'))
    await rm(`${base}.part`, { force: true })
    await rm(`${base}.json`, { force: true })
    await rm(`${base}.staging`, { force: true, recursive: true })
  }

  private async end (peer: string, m: Xend, send: (r: Message) => void): Promise<void> {
    const inc = this.active.get(this.key(peer, m.xid))
    if (inc === undefined) return send({ type: 'xdone', xid: m.xid, result: 'retry', reason: 'unknown transfer; offer it again' })
    const reply = (result: 'ok' | 'retry' | 'refused', reason: string): void => send({ type: 'xdone', xid: m.xid, result, reason })
    if (inc.written !== inc.size || !inc.hash.copy().digest().equals(m.sha256)) {
      this.opts.log.error({ peer, name: inc.name, written: inc.written, size: inc.size }, 'transfer failed its SHA-256 check; discarded')
      await this.drop(peer, m.xid)
      return reply('retry', 'SHA-256 mismatch; send it again')
    }
    const part = path.join(this.dir(peer), `${inc.xid}.part`)
    try {
      await inc.fh.sync()
      await inc.fh.close()
      const inbox = this.opts.inboxOf(peer)
      await mkdir(inbox, { recursive: true, mode: 0o700 })
      let delivered: string[]
      if (inc.kind === 'file') {
        await placeFile(part, inbox, inc.name, m.mode, m.mtimeMs)
        delivered = [inc.name]
      } else {
        delivered = await this.unpack(part, path.join(this.dir(peer), `${inc.xid}.staging`), inbox)
      }
      await this.drop(peer, m.xid)
      for (const rel of delivered) this.opts.onReceived(peer, rel)
      reply('ok', `${delivered.length} files`)
    } catch (err) {
      await this.drop(peer, m.xid)
      if (err instanceof Refusal) {
        this.opts.log.error({ peer, reason: err.message }, 'refused a transfer')
        return reply('refused', err.message)
      }
      const e = fsErrorOf(err, 'inbox delivery')
      this.opts.log.error({ peer, err: e.message }, 'cannot deliver into the inbox; the sender will retry')
      reply('retry', e.message)
    }
  }

  /** Extracts a verified bundle aside, checking every entry, then moves the files in. */
  private async unpack (part: string, staging: string, inbox: string): Promise<string[]> {
    await rm(staging, { recursive: true, force: true })
    await mkdir(staging, { recursive: true, mode: 0o700 })
    const files: { rel: string, tmp: string, mode: number, mtimeMs: number }[] = []
    const ex = tar.extract()
    const fh = await open(part, 'r')
    const feed = (async () => {
      try {
        for await (const chunk of fh.createReadStream()) if (!ex.write(chunk)) await new Promise<void>(resolve => ex.once('drain', () => resolve()))
        ex.end(undefined)
      } catch (err) {
        ex.destroy(err as Error)
      }
    })()
    try {
      let n = 0
      for await (const entry of ex) {
        const h = entry.header
        const bad = badRelPath(h.name.replace(/\/$/, ''))
        if (bad !== undefined) throw new Refusal(`tar entry ${JSON.stringify(h.name.slice(0, 200))}: ${bad}`)
        if (h.type === 'directory') {
          entry.resume()
          continue
        }
        if (h.type !== 'file') throw new Refusal(`tar entry ${JSON.stringify(h.name.slice(0, 200))} is a ${h.type}; only files and folders are accepted`)
        const tmp = path.join(staging, String(n++))
        const out = await open(tmp, 'w', 0o600)
        try {
          for await (const chunk of entry) await out.write(chunk as Buffer)
        } finally {
          await out.close()
        }
        const pax = h.pax as Record<string, string> | null | undefined
        const mtimeMs = pax?.mtime !== undefined ? Math.floor(Number(pax.mtime) * 1000) : h.mtime.getTime()
        files.push({ rel: h.name, tmp, mode: h.mode, mtimeMs })
      }
      await feed
    } finally {
      await fh.close()
    }
    // Durable before any is visible: the staged files' data, a few fsyncs at
    // a time, then each one renamed in and each folder synced once.
    for (let i = 0; i < files.length; i += 16) {
      await Promise.all(files.slice(i, i + 16).map(async f => {
        const h = await open(f.tmp, 'r')
        try { await h.sync() } finally { await h.close() }
      }))
    }
    const dirs = new Set<string>()
    for (const f of files) dirs.add(await placeFile(f.tmp, inbox, f.rel, f.mode, f.mtimeMs, false))
    for (const d of dirs) await fsyncDir(d)
    return files.map(f => f.rel)
  }
}

class Refusal extends Error {}

/**
 * Moves tmp to inbox/rel atomically, with mode and mtime; refuses to follow
 * links. Returns the folder it went into, synced unless syncDir is false
 * (the caller syncs each folder of a batch once).
 */
async function placeFile (tmp: string, inbox: string, rel: string, mode: number, mtimeMs: number, syncDir = true): Promise<string> {
  const bad = badRelPath(rel)
  if (bad !== undefined) throw new Refusal(`${JSON.stringify(rel.slice(0, 200))}: ${bad}`)
  const parts = rel.split('/')
  let dir = inbox
  for (const p of parts.slice(0, -1)) {
    dir = path.join(dir, p)
    const st = await lstat(dir).catch(() => undefined)
    if (st === undefined) await mkdir(dir, { mode: 0o755 })
    else if (!st.isDirectory()) throw new Refusal(`${rel}: ${p} exists in the inbox and is not a folder`)
  }
  const dest = path.join(inbox, rel)
  const existing = await lstat(dest).catch(() => undefined)
  if (existing !== undefined && !existing.isFile()) throw new Refusal(`${rel} exists in the inbox and is not a file`)
  await chmod(tmp, mode & 0o777)
  await setTimes(tmp, mtimeMs, mtimeMs)
  try {
    await rename(tmp, dest)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err
    // A configured inbox on another filesystem: copy beside, then rename.
    const near = path.join(dir, `${RESERVED}${path.basename(tmp)}`)
    await copyFile(tmp, near)
    await chmod(near, mode & 0o777)
    await setTimes(near, mtimeMs, mtimeMs)
    const fh = await open(near, 'r')
    await fh.sync()
    await fh.close()
    await rename(near, dest)
    await unlink(tmp)
  }
  if (syncDir) await fsyncDir(dir)
  return dir
}

async function duBytes (dir: string): Promise<number> {
  let n = 0
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.isFile()) n += (await stat(p).catch(() => ({ size: 0 }))).size
    }
  }
  await walk(dir)
  return n
}

