// One authenticated, encrypted TCP link to a peer.
//
// States: 'handshake' -> 'up' -> 'closed'. Anything unexpected in a state
// (bad magic, a bad tag, a replayed or reordered record, which fails its
// tag because nonces are counters, an unknown message) closes the link with
// the reason. close() is idempotent and the 'closed' event fires once.
// Writes go through three lanes (control, transactions, bulk), one fragment
// at a time and only while the socket accepts more, so a transaction never
// waits behind more than one bulk fragment.
import { EventEmitter } from 'node:events'
import type { Duplex } from 'node:stream'
import type { Clock, Timer } from '../lib/clock.js'
import { E, ProtocolError, PeerfsError } from '../lib/errors.js'
import { CipherState, HandshakeState, NoiseError, type KeyPair } from './noise.js'
import {
  MAGIC, PROLOGUE, PROTOCOL, LANES, MAX_FRAGMENT_DATA, Reassembler, RecordDecoder,
  decodeFragment, encodeFragment, encodeRecord
} from './records.js'
import { decodeMessage, encodeMessage, laneOf, type ByeReason, type Message } from './messages/index.js'

export type LinkState = 'handshake' | 'up' | 'closed'
export type Role = 'initiator' | 'responder'

/** Why a link closed; errno is what a caller waiting on it is told. */
export class LinkError extends PeerfsError {}

export interface LinkOptions {
  role: Role
  localId: string
  staticKey: KeyPair
  /** Initiator: the responder key we dialed. A different key is refused. */
  expectedKey?: Uint8Array
  /** Responder: maps the caller's proven key to a peer id, or throws to refuse. */
  authorize?: (remoteKey: Uint8Array, claimedId: string) => string
  clock: Clock
  keepaliveMs: number
  downAfterMs: number
  handshakeTimeoutMs: number
}

interface Hello { v: number, id: string }

function encodeHello (id: string): Buffer {
  return Buffer.from(JSON.stringify({ v: 1, id }))
}

function decodeHello (b: Buffer): Hello {
  let h: unknown
  try {
    h = JSON.parse(b.toString('utf8'))
  } catch {
    throw new ProtocolError('handshake payload is not JSON')
  }
  const o = h as Hello
  if (typeof o !== 'object' || o === null || o.v !== 1 || typeof o.id !== 'string' || o.id.length > 64) {
    throw new ProtocolError('handshake payload is not {v:1,id}')
  }
  return o
}

interface Outgoing { data: Buffer, off: number }

export declare interface Link {
  on(event: 'up', fn: () => void): this
  on(event: 'message', fn: (m: Message) => void): this
  on(event: 'closed', fn: (err: Error | undefined) => void): this
}

export class Link extends EventEmitter {
  state: LinkState = 'handshake'
  peerId = ''
  remoteKey: Uint8Array | undefined
  rttMs: number | undefined
  txBytes = 0
  rxBytes = 0
  closeReason: Error | undefined

  private readonly hs: HandshakeState
  private readonly decoder = new RecordDecoder()
  private readonly reassembler = new Reassembler()
  private readonly lanes: Outgoing[][] = Array.from({ length: LANES }, () => [])
  private send_: CipherState | undefined
  private recv_: CipherState | undefined
  private magicSeen: boolean
  private waitingDrain = false
  private timer: Timer | undefined
  private lastRx: number
  private pingSeq = 0
  private pingSentAt = new Map<number, number>()

  constructor (private readonly socket: Duplex, private readonly opts: LinkOptions) {
    super()
    this.hs = new HandshakeState({ protocolName: PROTOCOL, initiator: opts.role === 'initiator', prologue: PROLOGUE, s: opts.staticKey })
    this.magicSeen = opts.role === 'initiator'
    this.lastRx = opts.clock.now()
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (err: Error) => this.close(new LinkError(E.ECONNRESET, `socket: ${err.message}`)))
    socket.on('close', () => this.close(new LinkError(E.ECONNRESET, 'connection closed by peer')))
    socket.on('drain', () => {
      this.waitingDrain = false
      this.pump()
    })
    this.timer = opts.clock.setTimeout(() => this.close(new LinkError(E.ETIMEDOUT, 'handshake timed out')), opts.handshakeTimeoutMs)
    if (opts.role === 'initiator') this.writeRaw(Buffer.concat([MAGIC, encodeRecord(this.hs.writeMessage())]))
  }

  /** The initiator's static key: links between one pair are ranked by it. */
  get initiatorKey (): Uint8Array {
    return this.opts.role === 'initiator' ? this.opts.staticKey.public : this.remoteKey ?? new Uint8Array(0)
  }

  get role (): Role { return this.opts.role }

  get queuedBytes (): number {
    let n = 0
    for (const lane of this.lanes) for (const o of lane) n += o.data.length - o.off
    return n
  }

  send (m: Message): void {
    if (this.state !== 'up') throw new LinkError(E.EHOSTUNREACH, `link is ${this.state}`)
    this.lanes[laneOf(m)].push({ data: encodeMessage(m), off: 0 })
    this.pump()
  }

  /** Tells the peer why, then closes; the bye goes out ahead of queued data. */
  goodbye (reason: ByeReason, err?: Error): void {
    if (this.state === 'up') {
      for (const lane of this.lanes) lane.length = 0
      this.send({ type: 'bye', reason })
      this.socket.end()
    }
    this.close(err)
  }

  close (err?: Error): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.closeReason = err
    this.opts.clock.clearTimeout(this.timer)
    // end() flushes a goodbye already written; destroy() cuts a link that
    // failed. Either way no further data of ours is sent.
    if (this.socket.writableEnded) {
      const cut = this.opts.clock.setTimeout(() => this.socket.destroy(), 1000)
      this.socket.once('finish', () => {
        this.opts.clock.clearTimeout(cut)
        this.socket.destroy()
      })
    } else {
      this.socket.destroy()
    }
    for (const lane of this.lanes) lane.length = 0
    this.emit('closed', err)
  }

  // A method, not an inline compare: handlers called in a loop may close us.
  private isClosed (): boolean { return this.state === 'closed' }

  private writeRaw (b: Buffer): boolean {
    this.txBytes += b.length
    return this.socket.write(b)
  }

  private onData (chunk: Buffer): void {
    if (this.state === 'closed') return
    this.rxBytes += chunk.length
    this.lastRx = this.opts.clock.now()
    this.decoder.push(chunk)
    try {
      if (!this.magicSeen) {
        const magic = this.decoder.takeRaw(MAGIC.length)
        if (magic === undefined) return
        if (!magic.equals(MAGIC)) throw new ProtocolError('not a peerfs peer (bad magic)')
        this.magicSeen = true
      }
      for (let rec = this.decoder.next(); rec !== undefined && !this.isClosed(); rec = this.decoder.next()) {
        if (this.state === 'handshake') this.onHandshake(rec)
        else this.onRecord(rec)
      }
    } catch (err) {
      this.close(err instanceof NoiseError ? new ProtocolError(err.message) : err as Error)
    }
  }

  private onHandshake (rec: Buffer): void {
    const payload = this.hs.readMessage(rec)
    if (this.opts.role === 'initiator') {
      const rs = this.hs.remoteStatic as Uint8Array
      if (this.opts.expectedKey !== undefined && !Buffer.from(rs).equals(Buffer.from(this.opts.expectedKey))) {
        throw new LinkError(E.EACCES, 'the node at that address has a different key than configured')
      }
      this.peerId = decodeHello(payload).id
      this.remoteKey = rs
      this.writeRaw(encodeRecord(this.hs.writeMessage(encodeHello(this.opts.localId))))
      this.finishHandshake()
    } else if (!this.hs.done) {
      this.writeRaw(encodeRecord(this.hs.writeMessage(encodeHello(this.opts.localId))))
    } else {
      const rs = this.hs.remoteStatic as Uint8Array
      const hello = decodeHello(payload)
      if (this.opts.authorize === undefined) throw new LinkError(E.EACCES, 'no authorizer')
      this.peerId = this.opts.authorize(rs, hello.id)
      this.remoteKey = rs
      this.finishHandshake()
    }
  }

  private finishHandshake (): void {
    const keys = this.hs.split()
    this.send_ = keys.send
    this.recv_ = keys.recv
    this.state = 'up'
    this.opts.clock.clearTimeout(this.timer)
    this.lastRx = this.opts.clock.now()
    this.scheduleKeepalive()
    this.emit('up')
  }

  private onRecord (rec: Buffer): void {
    const plain = (this.recv_ as CipherState).decryptWithAd(Buffer.alloc(0), rec)
    const msgBytes = this.reassembler.push(decodeFragment(plain))
    if (msgBytes === undefined) return
    const m = decodeMessage(msgBytes)
    if (m.type === 'ping') {
      this.send({ type: 'pong', id: m.id })
    } else if (m.type === 'bye') {
      this.close(new LinkError(m.reason === 'superseded' ? E.EALREADY : E.ECONNRESET, `peer closed the link (${m.reason})`))
    } else if (m.type === 'pong') {
      const sent = this.pingSentAt.get(m.id)
      if (sent !== undefined) {
        this.rttMs = this.opts.clock.now() - sent
        this.pingSentAt.delete(m.id)
      }
    } else {
      this.emit('message', m)
    }
  }

  private scheduleKeepalive (): void {
    this.timer = this.opts.clock.setTimeout(() => {
      if (this.state !== 'up') return
      const silent = this.opts.clock.now() - this.lastRx
      if (silent >= this.opts.downAfterMs) {
        this.close(new LinkError(E.EHOSTUNREACH, `peer silent for ${silent} ms`))
        return
      }
      const id = this.pingSeq = (this.pingSeq + 1) >>> 0
      // Unanswered pings are forgotten once the link would be down anyway.
      if (this.pingSentAt.size > 64) this.pingSentAt.clear()
      this.pingSentAt.set(id, this.opts.clock.now())
      this.send({ type: 'ping', id })
      this.scheduleKeepalive()
    }, this.opts.keepaliveMs)
  }

  private pump (): void {
    while (!this.waitingDrain && this.state === 'up') {
      const lane = this.lanes.findIndex(l => l.length > 0)
      if (lane < 0) return
      const out = this.lanes[lane][0]
      const n = Math.min(MAX_FRAGMENT_DATA, out.data.length - out.off)
      const data = out.data.subarray(out.off, out.off + n)
      out.off += n
      const last = out.off === out.data.length
      if (last) this.lanes[lane].shift()
      const sealed = (this.send_ as CipherState).encryptWithAd(Buffer.alloc(0), encodeFragment({ lane: lane as 0 | 1 | 2, last, data }))
      if (!this.writeRaw(encodeRecord(sealed))) this.waitingDrain = true
    }
  }
}
