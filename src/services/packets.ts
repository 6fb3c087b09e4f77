// Packet channels (pkt/NN): the local readers and writers of each channel,
// a packet session per peer (packets-remote.ts), end-to-end flow control
// (packets-flow.ts), and the in-band `<peer> up` / `<peer> down` records.
//
// Packets go only to peers that are up and have a reader on the channel
// (their pstate says which, and says again when it changes); `up` and
// `down` records mark exactly the packet session's transitions. A peer
// 'opening' (link up, its pstate not yet heard) is asked again every
// HELLO_RETRY_MS.
//
// Invariants:
// - A sender never has more than the peer's window of one channel unread;
//   credits come in quarter-window steps as readers here consume, and a
//   window found full is probed so packets lost with a replaced link
//   cannot hold it shut.
// - Packets to one peer leave in the order taken, only in the session
//   they were taken in: a link loss, or the peer starting a new session,
//   fails the writes still waiting and keeps nothing for the next link.
//   Packets that arrived stay readable until the next session begins.
// - Bounded: a channel holds at most a window plus one packet per peer
//   (a peer that ignores the window loses the excess); a reader's up/down
//   records at MAX_EVENTS; waiting writes at MAX_BLOCKED per channel; one
//   window per peer and channel. Every drop is counted in peers/<id>/status.
import { randomInt } from 'node:crypto'
import type { Clock } from '../lib/clock.js'
import { E, FsError } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import { isService, svcName } from '../lib/svc.js'
import type { Handler } from '../transport/messages/codec.js'
import { packetCost, type PktMessage } from '../transport/messages/pkt.js'
import { Channel, Session, type Held } from './packets-channel.js'
import type { RecvWindow } from './packets-flow.js'
import { Remote, type RemoteEnv } from './packets-remote.js'

export { MAX_EVENTS } from './packets-channel.js'
export { PROBE_MS } from './packets-remote.js'
export const HELLO_RETRY_MS = 1000
export const MAX_BLOCKED = 1024

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

type Msg<T extends PktMessage['type']> = Extract<PktMessage, { type: T }>

export class Packets implements Handler<PktMessage> {
  private readonly remotes = new Map<string, Remote>()
  private readonly channels = new Map<number, Channel>()
  private readonly dirty = new Set<Remote>()
  private flushing = false
  private seq = 0
  private readonly defer: (fn: () => void) => void
  private readonly newSession: () => number
  private readonly remoteEnv: RemoteEnv

  constructor (private readonly opts: PacketsOptions) {
    this.defer = opts.defer ?? ((fn) => setImmediate(fn))
    this.newSession = opts.newSession ?? (() => randomInt(1, 2 ** 32))
    this.remoteEnv = { clock: opts.clock, log: opts.log, send: opts.send, dirty: (r) => this.markDirty(r) }
  }

  get maxPacketBytes (): number { return this.opts.maxPacketBytes }

  // Local readers and writers (the tree's PacketHost)

  open (chan: number, reads: boolean, wake: () => void): Session {
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
    for (const r of this.remotes.values()) if (r.state === 'up') s.note(++this.seq, r.id, 'up', this.opts.log)
    if (c.readers === 1) this.announce()
    return s
  }

  /** The next packet for a reader of s's channel (its up/down records are its own). */
  take (s: Session): Held | undefined {
    const held = s.channel.queue.shift()
    if (held !== undefined) this.consumed(held, s.chan)
    return held
  }

  send (chan: number, to: string, payload: Buffer, nonblock: boolean): void | Promise<void> {
    const targets = this.targets(chan, to, payload.length)
    const full = targets.filter(r => !r.room(chan))
    if (full.length === 0) {
      for (const r of targets) r.transmit(chan, payload)
      return
    }
    for (const r of full) r.counts.waited++
    if (nonblock) throw new FsError(E.EAGAIN, `window of pkt/${svcName(chan)} to ${full.map(r => r.id).join(' ')} is full`)
    const c = this.channels.get(chan) as Channel
    if (c.blocked.length >= MAX_BLOCKED) throw new FsError(E.ENOBUFS, `${MAX_BLOCKED} writes already wait on pkt/${svcName(chan)}`)
    return new Promise((resolve, reject) => c.blocked.push({ to, payload, resolve, reject }))
  }

  writable (chan: number): boolean {
    for (const r of this.remotes.values()) {
      if (r.state === 'up' && r.hasReader(chan) && !r.room(chan)) return false
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
    r.stopSending()
    this.dirty.delete(r)
    this.pumpAll()
    if (wasUp) this.note(peer, 'down')
    if (!this.opts.peers().some(p => p.id === peer)) this.remotes.delete(peer)
  }

  status (peer: string): Array<[string, string | number]> {
    return (this.remotes.get(peer) ?? new Remote(peer, this.remoteEnv)).status()
  }

  stop (): void {
    for (const r of this.remotes.values()) {
      this.opts.clock.clearTimeout(r.hello)
      r.stopSending()
      r.state = 'down'
    }
    for (const c of this.channels.values()) {
      for (const b of c.blocked) b.reject(new FsError(E.EHOSTUNREACH, 'the daemon is stopping'))
      c.blocked = []
    }
  }

  // Messages from peers (Handler<PktMessage>)

  pstate (peer: string, m: Msg<'pstate'>): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state === 'down') return
    if (m.session !== r.theirs) {
      if (r.theirs !== 0) {
        // The peer lost its side of our session (it saw the link drop and
        // we did not): what was in flight is gone, start again.
        this.opts.log.debug({ peer }, 'peer started a new packet session')
        if (r.state === 'up') this.note(peer, 'down')
        r.state = 'opening'
        this.restart(r)
      }
      r.theirs = m.session
    }
    r.channels = m.channels
    r.maxPacket = m.maxPacket
    r.setWindow(m.window)
    if (m.ask) this.sendState(r, false)
    if (r.state === 'opening') {
      r.state = 'up'
      this.opts.clock.clearTimeout(r.hello)
      this.note(peer, 'up')
    }
    // Its readers changed: waiting writes may now go, or fail.
    this.pumpAll()
    for (const c of this.channels.values()) c.wake()
  }

  pkt (peer: string, m: Msg<'pkt'>): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state === 'down' || m.session !== r.mine) {
      if (r !== undefined) r.counts.dropped += m.payloads.length
      return
    }
    const c = this.channels.get(m.chan)
    const reading = c !== undefined && c.readers > 0
    const w = r.recvWindow(m.chan)
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
    if (held) c?.wake()
    this.maybeCredit(r, m.chan, w, !reading)
  }

  pcredit (peer: string, m: Msg<'pcredit'>): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state !== 'up' || m.session !== r.theirs || !r.credited(m.chan, m.consumed)) return
    this.pump(m.chan)
    this.channels.get(m.chan)?.wake()
  }

  pprobe (peer: string, m: Msg<'pprobe'>): void {
    const r = this.remotes.get(peer)
    if (r === undefined || r.state === 'down' || m.session !== r.mine) return
    const w = r.recvWindow(m.chan)
    if (w.probe(m.offset) > 0) r.counts.lost++
    // Always answer: the credit that would have opened the window may be the thing lost.
    r.credit(m.chan, w)
  }

  // Inside

  /** r has packets batched: they leave together once the current burst of work is over. */
  private markDirty (r: Remote): void {
    this.dirty.add(r)
    if (this.flushing) return
    this.flushing = true
    this.defer(() => {
      this.flushing = false
      for (const d of this.dirty) d.flush()
      this.dirty.clear()
    })
  }

  private remote (peer: string): Remote {
    let r = this.remotes.get(peer)
    if (r === undefined) {
      r = new Remote(peer, this.remoteEnv)
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
      if (targets.filter(r => !r.room(chan)).length > 0) {
        c.blocked.push(b)
        continue
      }
      for (const r of targets) r.transmit(chan, b.payload)
      b.resolve()
    }
  }

  private pumpAll (): void {
    for (const chan of this.channels.keys()) this.pump(chan)
  }

  /** A reader took (or a close dropped) a held packet. */
  private consumed (held: Held, chan: number, dropped = false): void {
    const r = this.remotes.get(held.peer)
    const w = r?.recvWindowOf(chan, held.epoch)
    if (r === undefined || w === undefined) return
    w.take(held.end, held.cost)
    this.maybeCredit(r, chan, w, dropped)
  }

  private maybeCredit (r: Remote, chan: number, w: RecvWindow, now: boolean): void {
    if (w.consumed > w.credited && (now || w.due(this.opts.windowBytes / 4))) r.credit(chan, w)
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
    r.trySend({ type: 'pstate', session: r.mine, channels, window: this.opts.windowBytes, maxPacket: this.opts.maxPacketBytes, ask })
  }

  /** Our readers changed: every linked peer hears it. */
  private announce (): void {
    for (const r of this.remotes.values()) if (r.state !== 'down') this.sendState(r, false)
  }

  /** A new session with r: windows from zero, and its packets of the last one still unread dropped (counted). */
  private restart (r: Remote): void {
    r.restart()
    this.dirty.delete(r)
    for (const c of this.channels.values()) r.counts.dropped += c.dropFrom(r.id)
  }

  private note (peer: string, event: 'up' | 'down'): void {
    for (const c of this.channels.values()) c.note(++this.seq, peer, event, this.opts.log)
  }
}
