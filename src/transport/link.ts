// One authenticated, encrypted TCP link to a peer.
//
// States: 'handshake' -> 'up' -> 'closed'. Anything unexpected in a state
// (bad magic, a bad tag, a replayed or reordered record, which fails its
// tag because nonces are counters, an unknown message) closes the link with
// the reason. close() is idempotent and the 'closed' event fires once.
// Writes go through three lanes (control, transactions, bulk), one fragment
// at a time and only while the socket accepts more, so a transaction never
// waits in our queue behind more than one bulk fragment. Nor behind much
// bulk in the kernel's socket buffers (on loopback they grow to megabytes,
// tens of milliseconds at wire speed): bulk records the peer has not yet
// read are bounded by maxBulkInFlightBytes; the peer credits what it reads
// on the control lane, and the rest of the bulk waits in its lane here.
//
// The initiator is 'up' only once the responder has accepted its key: the
// responder's first record after the Noise handshake is a ping (accepted)
// or a bye saying why it refuses, so a refused caller never sees 'up'.
// One module for one state machine: handshake, lanes, pressure and
// keepalive share the same socket and state, so they stay together.
//
// Bounds. Bytes queued for the peer, except our own transaction requests
// (the Peer's request window bounds those), are the peer's to drain: over
// maxQueuedBytes we stop reading its socket, so its requests cannot make
// us queue more, and read again under half. A peer that takes none of our
// bytes for downAfterMs is dropped whatever it sends us. close() releases
// every queue and buffer the link holds. While we do not read the peer,
// its credits cannot reach us, so bulk then goes out as the socket takes it
// (else we would wait on each other); a peer that credits none of our bulk
// for downAfterMs is dropped like one that takes no bytes.
import { EventEmitter } from 'node:events'
import type { Duplex } from 'node:stream'
import type { Clock, Timer } from '../lib/clock.js'
import { E, ProtocolError } from '../lib/errors.js'
import { byeError, LinkError, Refusal } from './errors.js'
import { decodeHello, encodeHello, keyText, sharedFeatures } from './hello.js'
import { CipherState, HandshakeState, NoiseError, type KeyPair } from './noise.js'
import {
  MAGIC, PROLOGUE, PROTOCOL, LANES, LANE_BULK, LANE_CONTROL, MAX_FRAGMENT_DATA, Reassembler, RecordDecoder,
  decodeFragment, encodeRecord, recordBytes, sealFragment
} from './records.js'
import { BulkCredit, DEFAULT_MAX_BULK_IN_FLIGHT_BYTES } from './credit.js'
import { decodeMessage, encodeMessage, encodePieces, laneOf, type ByeReason, type Message } from './messages/index.js'

export { isRefusal, LinkError, Refusal } from './errors.js'
export { keyText } from './hello.js'

export type LinkState = 'handshake' | 'up' | 'closed'
export type Role = 'initiator' | 'responder'

/** Default for maxQueuedBytes: a few of the largest requests. */
export const DEFAULT_MAX_QUEUED_BYTES = 16 << 20

export interface LinkOptions {
  role: Role
  localId: string
  staticKey: KeyPair
  /** Initiator: the responder key we dialed. A different key is refused. */
  expectedKey?: Uint8Array
  /** Our public key as configs write it, announced so the far side can log it in that form. */
  publicKey?: string
  /**
   * Responder: maps the caller's proven key to a peer id, or throws to
   * refuse (a Refusal tells the caller why). claimedKey is the caller's
   * announced key in config form, for logs.
   */
  authorize?: (remoteKey: Uint8Array, claimedId: string, claimedKey: string) => string
  /** Responder: asked before the first handshake message costs us any DH; an error refuses. */
  admit?: () => Error | undefined
  clock: Clock
  keepaliveMs: number
  downAfterMs: number
  handshakeTimeoutMs: number
  /** High-water mark of bytes the peer must drain before we read from it again. */
  maxQueuedBytes?: number
  /** Bulk-lane bytes written and not yet credited by the peer; more than CREDIT_EVERY. */
  maxBulkInFlightBytes?: number
}

/** A message being sent: the pieces not yet sent, of length bytes in all. owed: counts against maxQueuedBytes (everything but our own requests). */
interface Outgoing { pieces: Buffer[], length: number, sent: number, owed: boolean }

/** The next n bytes of a message, as pieces (no copy). */
function take (out: Outgoing, n: number): Buffer[] {
  const got: Buffer[] = []
  out.sent += n
  while (n > 0) {
    const p = out.pieces[0]
    if (p.length <= n) {
      got.push(p)
      out.pieces.shift()
      n -= p.length
    } else {
      got.push(p.subarray(0, n))
      out.pieces[0] = p.subarray(n)
      n = 0
    }
  }
  return got
}

export declare interface Link {
  on(event: 'up', fn: () => void): this
  on(event: 'proved', fn: () => void): this
  on(event: 'message', fn: (m: Message) => void): this
  on(event: 'closed', fn: (err: Error | undefined) => void): this
}

export class Link extends EventEmitter {
  state: LinkState = 'handshake'
  peerId = ''
  remoteKey: Uint8Array | undefined
  /** Optional messages both ends understand, known once the handshake is done. */
  features: ReadonlySet<string> = new Set()
  rttMs: number | undefined
  txBytes = 0
  rxBytes = 0
  closeReason: Error | undefined

  /** True while we do not read the peer's socket (it has not drained what it owes). */
  paused = false
  /** True once a message arrived after the link came up ('proved' fired). */
  proven = false
  /** The most owedBytes ever was: a link that came near its bound leaves garbage behind. */
  peakOwedBytes = 0

  private readonly hs: HandshakeState
  // Replaced, not cleared, on close: the buffers they hold go with them.
  private decoder = new RecordDecoder()
  private reassembler = new Reassembler()
  private lanes: Outgoing[][] = Array.from({ length: LANES }, () => [])
  private queued = 0
  private owed = 0
  private readonly maxQueued: number
  private readonly credit: BulkCredit
  private send_: CipherState | undefined
  private recv_: CipherState | undefined
  private magicSeen: boolean
  private admitted = false
  private waitingDrain = false
  /** Since when the socket has refused more of our bytes without draining. */
  private stalledSince: number | undefined
  private timer: Timer | undefined
  private lastRx: number
  private pingSeq = 0
  private readonly pingSentAt = new Map<number, number>()

  constructor (private readonly socket: Duplex, private readonly opts: LinkOptions) {
    super()
    this.hs = new HandshakeState({ protocolName: PROTOCOL, initiator: opts.role === 'initiator', prologue: PROLOGUE, s: opts.staticKey })
    this.magicSeen = opts.role === 'initiator'
    this.maxQueued = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES
    this.credit = new BulkCredit(opts.maxBulkInFlightBytes ?? DEFAULT_MAX_BULK_IN_FLIGHT_BYTES)
    this.lastRx = opts.clock.now()
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (err: Error) => this.close(new LinkError(E.ECONNRESET, `socket: ${err.message}`)))
    socket.on('close', () => this.close(new LinkError(E.ECONNRESET, this.state === 'handshake' ? 'connection closed by peer during the handshake' : 'connection closed by peer')))
    socket.on('drain', () => {
      this.waitingDrain = false
      this.stalledSince = undefined
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

  /** Bytes queued in the lanes, not yet handed to the socket. */
  get queuedBytes (): number { return this.queued }

  /** Of those, the bytes that count against maxQueuedBytes. */
  get owedBytes (): number { return this.owed }

  /** Bulk-lane bytes handed to the socket that the peer has not credited yet. */
  get bulkInFlightBytes (): number { return this.credit.inFlight }

  /**
   * Queues a message. ours: a message this side originated and whose
   * sender bounds itself (the Peer's request window); it does not count
   * against the bound that pauses reading. A bulk-lane message's large
   * fields are held, not copied, until written: their buffers must not be
   * reused meanwhile.
   */
  send (m: Message, opts: { ours?: boolean } = {}): void {
    if (this.state !== 'up') throw new LinkError(E.EHOSTUNREACH, `link is ${this.state}`)
    const lane = laneOf(m)
    // Bulk data is sent from the caller's buffers, not a copy: bulk producers
    // (transfer and files packets) read each packet into a fresh buffer.
    // Other lanes may carry buffers their producer reuses (a FUSE write's).
    const pieces = lane === LANE_BULK ? encodePieces(m) : [encodeMessage(m)]
    let length = 0
    for (const p of pieces) length += p.length
    const owed = opts.ours !== true
    this.lanes[lane].push({ pieces, length, sent: 0, owed })
    this.queued += length
    if (owed) this.owed += length
    this.peakOwedBytes = Math.max(this.peakOwedBytes, this.owed)
    this.pump()
  }

  /** Tells the peer why, then closes; the bye goes out ahead of queued data. */
  goodbye (reason: ByeReason, err?: Error): void {
    if (this.state === 'up') {
      this.dropQueued()
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
    this.dropQueued()
    this.decoder = new RecordDecoder()
    this.reassembler = new Reassembler()
    this.pingSentAt.clear()
    this.emit('closed', err)
  }

  private dropQueued (): void {
    this.lanes = Array.from({ length: LANES }, () => [])
    this.queued = 0
    this.owed = 0
  }

  // A method, not an inline compare: handlers called in a loop may close us.
  private isClosed (): boolean { return this.state === 'closed' }

  /** Writes bytes, or the pieces of one record in a single writev. */
  private writeRaw (b: Buffer | Buffer[]): boolean {
    let ok = true
    if (Array.isArray(b)) {
      this.socket.cork()
      for (const p of b) {
        this.txBytes += p.length
        ok = this.socket.write(p)
      }
      this.socket.uncork()
    } else {
      this.txBytes += b.length
      ok = this.socket.write(b)
    }
    if (!ok) this.stalledSince ??= this.opts.clock.now()
    return ok
  }

  private seal (lane: number, last: boolean, data: Buffer[]): Buffer[] {
    return sealFragment(this.send_ as CipherState, lane as 0 | 1 | 2, last, data)
  }

  /** Pauses reading over the high-water mark, resumes under half of it. */
  private checkPressure (): void {
    if (this.state === 'closed') return
    if (!this.paused && this.owed > this.maxQueued) {
      this.paused = true
      this.socket.pause()
      // Credits wait unread now: bulk goes out as the socket takes it.
      this.credit.waitingSince = undefined
      this.pump()
    } else if (this.paused && this.owed <= this.maxQueued / 2) {
      this.paused = false
      // We heard nothing while not listening; silence counts from now.
      this.lastRx = this.opts.clock.now()
      this.socket.resume()
    }
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
        // Noise done, keys split: the initiator waits for the responder's verdict as a transport record.
        if (this.state === 'handshake' && this.recv_ === undefined) this.onHandshake(rec)
        else this.onRecord(rec)
      }
      // One credit for what this chunk brought, not one per record.
      const bytes = this.state === 'up' ? this.credit.take() : undefined
      if (bytes !== undefined) this.send({ type: 'credit', bytes })
    } catch (err) {
      this.close(err instanceof NoiseError ? new ProtocolError(err.message) : err as Error)
    }
  }

  private onHandshake (rec: Buffer): void {
    if (!this.admitted && this.opts.role === 'responder') {
      const refusal = this.opts.admit?.()
      if (refusal !== undefined) throw refusal
      this.admitted = true
    }
    const payload = this.hs.readMessage(rec)
    if (this.opts.role === 'initiator') {
      const rs = this.hs.remoteStatic as Uint8Array
      const hello = decodeHello(payload)
      if (this.opts.expectedKey !== undefined && !Buffer.from(rs).equals(Buffer.from(this.opts.expectedKey))) {
        throw new LinkError(E.EACCES, `the node at that address has a different key than configured: ${keyText(rs, hello.key)}`)
      }
      this.peerId = hello.id
      this.remoteKey = rs
      this.features = sharedFeatures(hello)
      this.writeRaw(encodeRecord(this.hs.writeMessage(encodeHello(this.opts.localId, this.opts.publicKey))))
      this.splitKeys()
    } else if (!this.hs.done) {
      this.writeRaw(encodeRecord(this.hs.writeMessage(encodeHello(this.opts.localId, this.opts.publicKey))))
    } else {
      const rs = this.hs.remoteStatic as Uint8Array
      const hello = decodeHello(payload)
      this.remoteKey = rs
      this.features = sharedFeatures(hello)
      this.splitKeys()
      if (this.opts.authorize === undefined) throw new LinkError(E.EACCES, 'no authorizer')
      try {
        this.peerId = this.opts.authorize(rs, hello.id, keyText(rs, hello.key))
      } catch (err) {
        if (err instanceof Refusal) {
          this.writeRaw(this.seal(LANE_CONTROL, true, [encodeMessage({ type: 'bye', reason: err.reason })]))
          this.socket.end()
        }
        throw err
      }
      this.finishHandshake(true)
    }
  }

  private splitKeys (): void {
    const keys = this.hs.split()
    this.send_ = keys.send
    this.recv_ = keys.recv
  }

  /** confirm: the responder's first ping, the initiator's sign that we took its key. */
  private finishHandshake (confirm: boolean): void {
    this.state = 'up'
    this.opts.clock.clearTimeout(this.timer)
    this.lastRx = this.opts.clock.now()
    this.scheduleKeepalive()
    if (confirm) this.ping()
    this.emit('up')
  }

  private onRecord (rec: Buffer): void {
    const plain = (this.recv_ as CipherState).decryptWithAd(Buffer.alloc(0), rec)
    const f = decodeFragment(plain)
    if (f.lane === LANE_BULK) this.credit.read(2 + rec.length)
    const msgBytes = this.reassembler.push(f)
    if (msgBytes === undefined) return
    const m = decodeMessage(msgBytes)
    if (m.type === 'bye') {
      this.close(byeError(m.reason))
      return
    }
    if (this.state === 'handshake') {
      // The responder's first record: it accepted our key.
      this.finishHandshake(false)
      if (this.isClosed()) return
    } else if (!this.proven) {
      // The peer answers on this link: it works, beyond the handshake.
      this.proven = true
      this.emit('proved')
      if (this.isClosed()) return
    }
    if (m.type === 'ping') {
      this.send({ type: 'pong', id: m.id })
    } else if (m.type === 'credit') {
      this.credit.credited(m.bytes)
      this.pump()
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

  private ping (): void {
    const id = this.pingSeq = (this.pingSeq + 1) >>> 0
    // Unanswered pings are forgotten once the link would be down anyway.
    if (this.pingSentAt.size > 64) this.pingSentAt.clear()
    this.pingSentAt.set(id, this.opts.clock.now())
    this.send({ type: 'ping', id })
  }

  private scheduleKeepalive (): void {
    this.timer = this.opts.clock.setTimeout(() => {
      if (this.state !== 'up') return
      const now = this.opts.clock.now()
      const stalledSince = Math.min(this.stalledSince ?? now, this.credit.waitingSince ?? now)
      if (now - stalledSince >= this.opts.downAfterMs) {
        const waiting = this.queued + this.socket.writableLength
        this.close(new LinkError(E.EHOSTUNREACH, `peer is not reading: ${waiting} bytes waiting, none taken for ${now - stalledSince} ms`))
        return
      }
      // While we do not read, silence says nothing; the stall check above still runs.
      const silent = now - this.lastRx
      if (!this.paused && silent >= this.opts.downAfterMs) {
        this.close(new LinkError(E.EHOSTUNREACH, `peer silent for ${silent} ms`))
        return
      }
      this.ping()
      this.scheduleKeepalive()
    }, this.opts.keepaliveMs)
  }

  private pump (): void {
    while (!this.waitingDrain && this.state === 'up') {
      const lane = this.lanes.findIndex(l => l.length > 0)
      if (lane < 0) break
      if (lane === LANE_BULK && !this.paused && !this.credit.mayWrite(this.opts.clock.now())) break
      const out = this.lanes[lane][0]
      const n = Math.min(MAX_FRAGMENT_DATA, out.length - out.sent)
      const data = take(out, n)
      this.queued -= n
      if (out.owed) this.owed -= n
      const last = out.sent === out.length
      if (last) this.lanes[lane].shift()
      if (lane === LANE_BULK) this.credit.wrote(recordBytes(n))
      if (!this.writeRaw(this.seal(lane, last, data))) this.waitingDrain = true
    }
    this.checkPressure()
  }
}
