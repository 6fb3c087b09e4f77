// Packet channels (pkt/NN): local readers of each channel, a packet
// session and windows per peer, end-to-end flow control, and the in-band
// `<peer> up` / `<peer> down` records.
//
// A peer is 'down' (no link), 'opening' (link up, its pstate not yet
// heard: we ask again every HELLO_RETRY_MS) or 'up'. Packets are sent only
// to peers that are up and have a reader on the channel (their pstate
// says which); `up` and `down` records mark exactly those transitions.
//
// Invariants:
// - A sender never has more than the peer's window of one channel unread
//   (packets-flow.ts); credits come in quarter-window steps as readers
//   here consume. A window found full is probed every PROBE_MS so packets
//   lost with a replaced link cannot hold it shut.
// - Packets to one peer leave in the order taken and are sent only in the
//   session they were taken in: a link loss, or the peer starting a new
//   session, fails the writes still waiting and keeps nothing for the
//   next link.
// - Bounded: a channel holds at most a window plus one packet per peer
//   (a peer that ignores the window loses the excess, counted); a reader's
//   up/down records at MAX_EVENTS; waiting writes at MAX_BLOCKED per
//   channel; windows per peer at one per channel. Every drop is counted in
//   the peer's status.
import { randomInt } from 'node:crypto'
import type { PacketHost, PacketRecord, PacketSession } from '../fs/backend.js'
import type { Clock, Timer } from '../lib/clock.js'
import { E, FsError, type PeerfsError } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import { isService, svcName } from '../lib/svc.js'
import type { Handler } from '../transport/messages/codec.js'
import { MAX_BATCH, packetCost, type PktMessage } from '../transport/messages/pkt.js'
import { RecvWindow, SendWindow } from './packets-flow.js'

export const HELLO_RETRY_MS = 1000
export const PROBE_MS = 500
export const MAX_EVENTS = 1024
export const MAX_BLOCKED = 1024
/** Packets taken in one burst for one peer and channel travel in one message up to this size. */
const BATCH_BYTES = 60 << 10

export interface PacketsOptions {
  maxPacketBytes: number
  windowBytes: number
  clock: Clock
  log: Logger
  /** Sends to a peer; throws when its link is gone. */
  send: (peer: string, m: PktMessage) => void
  /** The configured peers, by id and alias. */
  peers: () => ReadonlyArray<{ id: string, alias?: string }>
  /** Runs fn after the current burst of work (default setImmediate): packets taken meanwhile share a message. */
  defer?: (fn: () => void) => void
  newSession?: () => number
}

type RemoteState = 'down' | 'opening' | 'up'

interface Counts { pktsOut: number, bytesOut: number, pktsIn: number, bytesIn: number, waited: number, refused: number, dropped: number, lost: number }

interface Batch { chan: number, offset: number, payloads: Buffer[], bytes: number }

/** One peer as the packet service sees it. */
class Remote {
  state: RemoteState = 'down'
  /** Our session: packets to us carry it. */
  mine = 0
  /** Theirs: packets we send carry it; 0 until heard. */
  theirs = 0
  channels = 0n
  window = 0
  maxPacket = 0
  /** Bumped whenever the receive side restarts, so old packets credit nothing. */
  epoch = 0
  hello: Timer | undefined
  /** Warned once that it sends past its window. */
  warned = false
  readonly out = new Map<number, SendWindow>()
  readonly in = new Map<number, RecvWindow>()
  readonly batches = new Map<number, Batch>()
  readonly probes = new Map<number, Timer>()
  readonly counts: Counts = { pktsOut: 0, bytesOut: 0, pktsIn: 0, bytesIn: 0, waited: 0, refused: 0, dropped: 0, lost: 0 }

  constructor (readonly id: string) {}

  hasReader (chan: number): boolean { return ((this.channels >> BigInt(chan)) & 1n) === 1n }
}

interface Held { seq: number, peer: string, epoch: number, payload: Buffer, end: number, cost: number }
interface Note { seq: number, peer: string, event: 'up' | 'down' }
interface Blocked { to: string, payload: Buffer, resolve: () => void, reject: (err: PeerfsError) => void }

class Channel {
  /** Every open handle, woken when readiness changes; `readers` of them take packets. */
  readonly sessions = new Set<Session>()
  readers = 0
  queue: Held[] = []
  blocked: Blocked[] = []
}

class Session implements PacketSession {
  readonly notes: Note[] = []
  closed = false

  constructor (private readonly host: Packets, readonly chan: number, readonly channel: Channel, readonly reads: boolean, readonly wake: () => void) {}

  next (): PacketRecord | undefined { return this.reads ? this.host.next(this) : undefined }
  send (to: string, payload: Buffer, nonblock: boolean): void | Promise<void> { return this.host.send(this.chan, to, payload, nonblock) }
  readable (): boolean { return this.reads && (this.notes.length > 0 || this.channel.queue.length > 0) }
  writable (): boolean { return this.host.writable(this.chan) }
  close (): void { this.host.close(this) }
}

export class Packets implements PacketHost, Handler<PktMessage> {
  private readonly remotes = new Map<string, Remote>()
  private readonly channels = new Map<number, Channel>()
  private readonly dirty = new Set<Remote>()
  private flushing = false
  private seq = 0
  private readonly defer: (fn: () => void) => void
  private readonly newSession: () => number

  constructor (private readonly opts: PacketsOptions) {
    this.defer = opts.defer ?? ((fn) => setImmediate(fn))
    this.newSession = opts.newSession ?? (() => randomInt(1, 2 ** 32))
  }

  get maxPacketBytes (): number { return this.opts.maxPacketBytes }

  // Local readers and writers (PacketHost)

  open (chan: number, reads: boolean, wake: () => void): PacketSession {
    if (!isService(chan)) throw new FsError(E.ENOENT, `no packet channel ${chan}`)
    let c = this.channels.get(chan)
    if (c === undefined) {
      c = new Channel()
      this.channels.set(chan, c)
    }
    const s = new Session(this, chan, c, reads, wake)
    c.sessions.add(s)
    if (!reads) return s
    c.readers++
    // A new reader learns who is there from its first reads.
    for (const r of this.remotes.values()) if (r.state === 'up') s.notes.push({ seq: ++this.seq, peer: r.id, event: 'up' })
    if (c.readers === 1) this.announce()
    return s
  }

  next (s: Session): PacketRecord | undefined {
    const note = s.notes[0]
    const held = s.channel.queue[0]
    if (note !== undefined && (held === undefined || note.seq < held.seq)) {
      s.notes.shift()
      return { peer: note.peer, event: note.event }
    }
    if (held === undefined) return undefined
    s.channel.queue.shift()
    this.consumed(held, s.chan)
    return { peer: held.peer, payload: held.payload }
  }

  send (chan: number, to: string, payload: Buffer, nonblock: boolean): void | Promise<void> {
    const targets = this.targets(chan, to, payload.length)
    const full = this.full(chan, targets)
    if (full.length === 0) {
      for (const r of targets) this.transmit(r, chan, payload)
      return
    }
    for (const r of full) r.counts.waited++
    const names = full.map(r => r.id).join(' ')
    if (nonblock) throw new FsError(E.EAGAIN, `window of pkt/${svcName(chan)} to ${names} is full`)
    const c = this.channels.get(chan) as Channel
    if (c.blocked.length >= MAX_BLOCKED) throw new FsError(E.ENOBUFS, `${MAX_BLOCKED} writes already wait on pkt/${svcName(chan)}`)
    return new Promise((resolve, reject) => c.blocked.push({ to, payload, resolve, reject }))
  }

  writable (chan: number): boolean {
    for (const r of this.remotes.values()) {
      if (r.state === 'up' && r.hasReader(chan) && this.full(chan, [r]).length > 0) return false
    }
    return true
  }

  close (s: Session): void {
    if (s.closed) return
    s.closed = true
    const c = s.channel
    c.sessions.delete(s)
    if (s.reads && --c.readers === 0) {
      // The last reader left: what waits here can never be read. It is
      // credited so the senders' windows stay true, and counted.
      for (const held of c.queue) {
        this.remote(held.peer).counts.dropped++
        this.consumed(held, s.chan, true)
      }
      c.queue = []
      this.announce()
    }
    if (c.sessions.size === 0 && c.blocked.length === 0) this.channels.delete(s.chan)
  }

  // The link (wired by the daemon)

  linkUp (peer: string): void {
    const r = this.remote(peer)
    if (r.state !== 'down') this.linkDown(peer)
    r.state = 'opening'
    r.mine = this.newSession()
    r.theirs = 0
    this.restart(r)
    this.sendState(r, true)
    this.armHello(r)
  }

  linkDown (peer: string): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state === 'down') return
    const wasUp = r.state === 'up'
    r.state = 'down'
    r.theirs = 0
    this.opts.clock.clearTimeout(r.hello)
    this.stopSending(r)
    this.pumpAll()
    if (wasUp) this.note(peer, 'down')
    if (!this.opts.peers().some(p => p.id === peer)) this.remotes.delete(peer)
  }

  status (peer: string): Array<[string, string | number]> {
    const r = this.remotes.get(peer)
    const c = r?.counts ?? { pktsOut: 0, bytesOut: 0, pktsIn: 0, bytesIn: 0, waited: 0, refused: 0, dropped: 0, lost: 0 }
    const chans = r === undefined || r.state !== 'up' ? [] : Array.from({ length: 63 }, (_, i) => i + 1).filter(n => r.hasReader(n)).map(svcName)
    return [
      ['pkt_state', r?.state ?? 'down'],
      ['pkt_channels', chans.length === 0 ? '-' : chans.join(' ')],
      ['pkt_out', c.pktsOut],
      ['pkt_out_bytes', c.bytesOut],
      ['pkt_in', c.pktsIn],
      ['pkt_in_bytes', c.bytesIn],
      ['pkt_writes_waited', c.waited],
      ['pkt_refused', c.refused],
      ['pkt_dropped', c.dropped],
      ['pkt_lost', c.lost]
    ]
  }

  stop (): void {
    for (const r of this.remotes.values()) {
      this.opts.clock.clearTimeout(r.hello)
      this.stopSending(r)
      r.state = 'down'
    }
    for (const c of this.channels.values()) {
      for (const b of c.blocked) b.reject(new FsError(E.EHOSTUNREACH, 'the daemon is stopping'))
      c.blocked = []
    }
  }

  // Messages from peers (Handler<PktMessage>)

  pstate (peer: string, m: Extract<PktMessage, { type: 'pstate' }>): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state === 'down') return
    if (m.session !== r.theirs) {
      if (r.theirs !== 0) {
        // The peer lost its side of our session (it saw the link drop and
        // we did not): what was in flight is gone, start again.
        this.opts.log.debug({ peer }, 'peer started a new packet session')
        if (r.state === 'up') this.note(peer, 'down')
        r.state = 'opening'
        this.stopSending(r)
        this.restart(r)
      }
      r.theirs = m.session
    }
    r.channels = m.channels
    r.window = m.window
    r.maxPacket = m.maxPacket
    for (const w of r.out.values()) w.window = m.window
    if (m.ask) this.sendState(r, false)
    if (r.state === 'opening') {
      r.state = 'up'
      this.opts.clock.clearTimeout(r.hello)
      this.note(peer, 'up')
    }
    // Its readers changed: waiting writes may now go, or fail.
    this.pumpAll()
    this.wakeAll()
  }

  pkt (peer: string, m: Extract<PktMessage, { type: 'pkt' }>): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state === 'down' || m.session !== r.mine) {
      if (r !== undefined) r.counts.dropped += m.payloads.length
      return
    }
    const c = this.channels.get(m.chan)
    const reading = c !== undefined && c.readers > 0
    const w = this.recvWindow(r, m.chan)
    const limit = this.opts.windowBytes + packetCost(this.opts.maxPacketBytes)
    let offset = m.offset
    let held = false
    for (const payload of m.payloads) {
      const cost = packetCost(payload.length)
      const gap = w.arrive(offset, cost)
      offset += cost
      if (gap === undefined) {
        r.counts.dropped++
        continue
      }
      if (gap > 0) r.counts.lost++
      r.counts.pktsIn++
      r.counts.bytesIn += payload.length
      if (!reading) {
        r.counts.refused++
        w.settle()
      } else if (payload.length > this.opts.maxPacketBytes || w.queuedCost + cost > limit) {
        if (!r.warned) this.opts.log.warn({ peer, chan: m.chan }, 'peer sends past its packet window or size; dropping the excess')
        r.warned = true
        r.counts.dropped++
        w.settle()
      } else {
        w.hold(cost)
        c.queue.push({ seq: ++this.seq, peer, epoch: r.epoch, payload, end: offset, cost })
        held = true
      }
    }
    if (held) for (const s of (c as Channel).sessions) s.wake()
    this.maybeCredit(r, m.chan, w, !reading)
  }

  pcredit (peer: string, m: Extract<PktMessage, { type: 'pcredit' }>): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state !== 'up' || m.session !== r.theirs) return
    const w = r.out.get(m.chan)
    if (w === undefined || !w.credit(m.consumed)) return
    this.pump(m.chan)
    for (const s of this.channels.get(m.chan)?.sessions ?? []) s.wake()
  }

  pprobe (peer: string, m: Extract<PktMessage, { type: 'pprobe' }>): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state === 'down' || m.session !== r.mine) return
    const w = this.recvWindow(r, m.chan)
    if (w.probe(m.offset) > 0) r.counts.lost++
    // Always answer: the credit that would have opened the window may be the thing lost.
    this.credit(r, m.chan, w)
  }

  // Inside

  private remote (peer: string): Remote {
    let r = this.remotes.get(peer)
    if (r === undefined) {
      r = new Remote(peer)
      this.remotes.set(peer, r)
    }
    return r
  }

  /** The peers a packet to `to` goes to; throws the errno a writer must see. */
  private targets (chan: number, to: string, size: number): Remote[] {
    if (size > this.opts.maxPacketBytes) throw new FsError(E.EMSGSIZE, `packet of ${size} bytes over max_packet_bytes ${this.opts.maxPacketBytes}`)
    let targets: Remote[]
    if (to === '*') {
      const up = [...this.remotes.values()].filter(r => r.state === 'up')
      if (up.length === 0) throw new FsError(E.EHOSTUNREACH, 'no peer is up')
      targets = up.filter(r => r.hasReader(chan))
      if (targets.length === 0) throw new FsError(E.ECONNREFUSED, `no peer that is up reads pkt/${svcName(chan)}`)
    } else {
      const p = this.opts.peers().find(x => x.id === to) ?? this.opts.peers().find(x => x.alias === to)
      if (p === undefined) throw new FsError(E.ENOENT, `no peer ${to}`)
      const r = this.remotes.get(p.id)
      if (r === undefined || r.state !== 'up') throw new FsError(E.EHOSTUNREACH, `${p.id} is not up`)
      if (!r.hasReader(chan)) throw new FsError(E.ECONNREFUSED, `no reader of pkt/${svcName(chan)} on ${p.id}`)
      targets = [r]
    }
    for (const r of targets) {
      if (size > r.maxPacket) throw new FsError(E.EMSGSIZE, `packet of ${size} bytes over ${r.id}'s max_packet_bytes ${r.maxPacket}`)
    }
    return targets
  }

  /** Those of targets whose window on chan is full; each gets a probe armed. */
  private full (chan: number, targets: Remote[]): Remote[] {
    const full = targets.filter(r => !this.sendWindow(r, chan).room)
    for (const r of full) this.armProbe(r, chan)
    return full
  }

  private sendWindow (r: Remote, chan: number): SendWindow {
    let w = r.out.get(chan)
    if (w === undefined) {
      w = new SendWindow(r.window)
      r.out.set(chan, w)
    }
    return w
  }

  private recvWindow (r: Remote, chan: number): RecvWindow {
    let w = r.in.get(chan)
    if (w === undefined) {
      w = new RecvWindow()
      r.in.set(chan, w)
    }
    return w
  }

  private transmit (r: Remote, chan: number, payload: Buffer): void {
    const offset = this.sendWindow(r, chan).take(packetCost(payload.length))
    r.counts.pktsOut++
    r.counts.bytesOut += payload.length
    let b = r.batches.get(chan)
    if (b !== undefined && (b.payloads.length >= MAX_BATCH || b.bytes + payload.length > BATCH_BYTES)) {
      this.sendBatch(r, b)
      b = undefined
    }
    if (b === undefined) {
      b = { chan, offset, payloads: [], bytes: 0 }
      r.batches.set(chan, b)
    }
    b.payloads.push(payload)
    b.bytes += payload.length
    this.dirty.add(r)
    if (!this.flushing) {
      this.flushing = true
      this.defer(() => this.flush())
    }
  }

  private flush (): void {
    this.flushing = false
    for (const r of this.dirty) this.flushRemote(r)
    this.dirty.clear()
  }

  private flushRemote (r: Remote): void {
    for (const b of r.batches.values()) this.sendBatch(r, b)
  }

  private sendBatch (r: Remote, b: Batch): void {
    r.batches.delete(b.chan)
    // A failed send means the link just went: linkDown follows and fails what waits.
    this.trySend(r, { type: 'pkt', session: r.theirs, chan: b.chan, offset: b.offset, payloads: b.payloads })
  }

  /** Retries the writes waiting on chan, in order; each goes, fails, or waits on. */
  private pump (chan: number): void {
    const c = this.channels.get(chan)
    if (c === undefined || c.blocked.length === 0) return
    const waiting = c.blocked
    c.blocked = []
    for (const b of waiting) {
      let targets: Remote[]
      try {
        targets = this.targets(chan, b.to, b.payload.length)
      } catch (err) {
        b.reject(err as FsError)
        continue
      }
      if (this.full(chan, targets).length > 0) {
        c.blocked.push(b)
        continue
      }
      for (const r of targets) this.transmit(r, chan, b.payload)
      b.resolve()
    }
  }

  private pumpAll (): void {
    for (const chan of this.channels.keys()) this.pump(chan)
  }

  /** A reader took (or a close dropped) a held packet. */
  private consumed (held: Held, chan: number, dropped = false): void {
    const r = this.remotes.get(held.peer)
    if (r === undefined || r.epoch !== held.epoch) return
    const w = r.in.get(chan)
    if (w === undefined) return
    w.take(held.end, held.cost)
    this.maybeCredit(r, chan, w, dropped)
  }

  private maybeCredit (r: Remote, chan: number, w: RecvWindow, now: boolean): void {
    if (w.consumed > w.credited && (now || w.due(this.opts.windowBytes / 4))) this.credit(r, chan, w)
  }

  private credit (r: Remote, chan: number, w: RecvWindow): void {
    if (r.state === 'down') return
    w.credited = w.consumed
    this.trySend(r, { type: 'pcredit', session: r.mine, chan, consumed: w.consumed })
  }

  private armProbe (r: Remote, chan: number): void {
    if (r.probes.has(chan)) return
    r.probes.set(chan, this.opts.clock.setTimeout(() => {
      r.probes.delete(chan)
      const w = r.out.get(chan)
      if (r.state !== 'up' || w === undefined || w.room) return
      this.flushRemote(r)
      this.trySend(r, { type: 'pprobe', session: r.theirs, chan, offset: w.sent })
      this.armProbe(r, chan)
    }, PROBE_MS))
  }

  private armHello (r: Remote): void {
    r.hello = this.opts.clock.setTimeout(() => {
      if (r.state !== 'opening') return
      this.sendState(r, true)
      this.armHello(r)
    }, HELLO_RETRY_MS)
  }

  private sendState (r: Remote, ask: boolean): void {
    let channels = 0n
    for (const [n, c] of this.channels) if (c.readers > 0) channels |= 1n << BigInt(n)
    this.trySend(r, { type: 'pstate', session: r.mine, channels, window: this.opts.windowBytes, maxPacket: this.opts.maxPacketBytes, ask })
  }

  /** Our readers changed: every linked peer hears it. */
  private announce (): void {
    for (const r of this.remotes.values()) if (r.state !== 'down') this.sendState(r, false)
  }

  /** Ends what was being sent to r: batches not yet out are lost with the link, probes stop. */
  private stopSending (r: Remote): void {
    r.batches.clear()
    this.dirty.delete(r)
    for (const t of r.probes.values()) this.opts.clock.clearTimeout(t)
    r.probes.clear()
  }

  /** A new session with r: windows from zero, and its unread packets of the last one dropped (counted). */
  private restart (r: Remote): void {
    r.out.clear()
    r.in.clear()
    r.epoch++
    for (const c of this.channels.values()) {
      const before = c.queue.length
      c.queue = c.queue.filter(h => h.peer !== r.id)
      r.counts.dropped += before - c.queue.length
    }
  }

  private note (peer: string, event: 'up' | 'down'): void {
    for (const c of this.channels.values()) {
      for (const s of c.sessions) {
        if (!s.reads) continue
        if (s.notes.length >= MAX_EVENTS) {
          s.notes.shift()
          this.opts.log.warn({ peer, chan: s.chan }, 'a pkt reader fell behind on up/down records; the oldest was dropped')
        }
        s.notes.push({ seq: ++this.seq, peer, event })
        s.wake()
      }
    }
  }

  private wakeAll (): void {
    for (const c of this.channels.values()) for (const s of c.sessions) s.wake()
  }

  private trySend (r: Remote, m: PktMessage): void {
    try {
      this.opts.send(r.id, m)
    } catch (err) {
      this.opts.log.debug({ peer: r.id, type: m.type, err: (err as Error).message }, 'packet message not sent: link gone')
    }
  }
}
