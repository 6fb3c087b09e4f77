// Wire formats, declared once, encode beside decode.
//
// Stream:   MAGIC, then records. A record is u16 BE length + body (Noise
//           limits a message to 65535 bytes). During the handshake a body
//           is a Noise handshake message; after it, a ChaCha20-Poly1305
//           ciphertext whose plaintext is a fragment.
// Fragment: u8 lane, u8 flags (bit 0: last fragment of its message), data.
//           Messages are cut into fragments so a lane with higher priority
//           (control, then transactions) can pass a bulk message mid-way;
//           fragments of one lane are never interleaved with each other.
// Message:  u8 type, then fields as below. Every length is checked against
//           its limit before anything is allocated.
import { ProtocolError } from '../errors.js'
import { MAX_MESSAGE, TAGLEN } from './noise.js'

export const MAGIC = Buffer.from('PFS\x01', 'latin1')
export const PROLOGUE = Buffer.from('peerfs/1 Noise_XX', 'latin1')
export const PROTOCOL = 'Noise_XX_25519_ChaChaPoly_SHA256'

export type Lane = 0 | 1 | 2
export const LANE_CONTROL: Lane = 0
export const LANE_TX: Lane = 1
export const LANE_BULK: Lane = 2
export const LANES = 3

export const FRAGMENT_HEADER = 2
export const MAX_FRAGMENT_DATA = MAX_MESSAGE - TAGLEN - FRAGMENT_HEADER
const FLAG_LAST = 1

/** Largest message each lane accepts from a peer, after reassembly. */
export const LANE_LIMITS: readonly number[] = [64 << 10, (16 << 20) + 64, (16 << 20) + (64 << 10)]

/**
 * Incremental decoder for u16-length-prefixed records: accepts any
 * chunking, one byte at a time included, and never buffers more than one
 * record past what it was given.
 */
export class RecordDecoder {
  private chunks: Buffer[] = []
  private buffered = 0

  push (chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.length
  }

  /** The next whole record's body, or undefined until it has arrived. */
  next (): Buffer | undefined {
    if (this.buffered < 2) return undefined
    const len = this.peek(2).readUInt16BE(0)
    if (this.buffered < 2 + len) return undefined
    return this.take(2 + len).subarray(2)
  }

  /** Takes n raw bytes (the magic), or undefined if not yet there. */
  takeRaw (n: number): Buffer | undefined {
    return this.buffered < n ? undefined : this.take(n)
  }

  get pending (): number { return this.buffered }

  private peek (n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)]
    return this.chunks[0]
  }

  private take (n: number): Buffer {
    const all = this.peek(n)
    const out = all.subarray(0, n)
    const rest = all.subarray(n)
    if (rest.length > 0) this.chunks[0] = rest
    else this.chunks.shift()
    this.buffered -= n
    return out
  }
}

export function encodeRecord (body: Uint8Array): Buffer {
  if (body.length > MAX_MESSAGE) throw new RangeError(`record body of ${body.length} bytes exceeds ${MAX_MESSAGE}`)
  const out = Buffer.allocUnsafe(2 + body.length)
  out.writeUInt16BE(body.length, 0)
  out.set(body, 2)
  return out
}

export interface Fragment { lane: Lane, last: boolean, data: Buffer }

export function encodeFragment (f: Fragment): Buffer {
  const out = Buffer.allocUnsafe(FRAGMENT_HEADER + f.data.length)
  out[0] = f.lane
  out[1] = f.last ? FLAG_LAST : 0
  out.set(f.data, FRAGMENT_HEADER)
  return out
}

export function decodeFragment (b: Buffer): Fragment {
  if (b.length < FRAGMENT_HEADER) throw new ProtocolError(`fragment of ${b.length} bytes is shorter than its header`)
  const lane = b[0]
  if (lane >= LANES) throw new ProtocolError(`unknown lane ${lane}`)
  if ((b[1] & ~FLAG_LAST) !== 0) throw new ProtocolError(`unknown fragment flags 0x${b[1].toString(16)}`)
  return { lane: lane as Lane, last: (b[1] & FLAG_LAST) !== 0, data: b.subarray(FRAGMENT_HEADER) }
}

/** Reassembles fragments per lane, refusing any message over its lane's limit. */
export class Reassembler {
  private readonly parts: Buffer[][] = Array.from({ length: LANES }, () => [])
  private readonly sizes: number[] = new Array<number>(LANES).fill(0)

  constructor (private readonly limits: readonly number[] = LANE_LIMITS) {}

  push (f: Fragment): Buffer | undefined {
    const size = this.sizes[f.lane] + f.data.length
    if (size > this.limits[f.lane]) throw new ProtocolError(`message on lane ${f.lane} exceeds ${this.limits[f.lane]} bytes`)
    if (f.last) {
      const parts = this.parts[f.lane]
      this.parts[f.lane] = []
      this.sizes[f.lane] = 0
      return parts.length === 0 ? f.data : Buffer.concat([...parts, f.data], size)
    }
    this.parts[f.lane].push(f.data)
    this.sizes[f.lane] = size
    return undefined
  }
}

// Messages.

export type Message =
  | { type: 'ping', id: number }
  | { type: 'pong', id: number }
  | { type: 'req', tx: number, svc: number, payload: Buffer }
  | { type: 'rep', tx: number, status: number, payload: Buffer }
  | { type: 'bye', reason: ByeReason }
  | { type: 'dreq', epoch: bigint, seq: number, svc: number, created: number, payload: Buffer }
  | { type: 'dack', epoch: bigint, seq: number, result: DackResult, status: number, payload: Buffer }
  // File transfer (outbox -> inbox). xid names one transfer: a single file
  // (kind 'file', name = its relative path) or a tar of many (kind 'tar').
  | { type: 'xoffer', xid: Buffer, kind: XferKind, size: number, window: number, name: string }
  | { type: 'xaccept', xid: Buffer, offset: number }
  | { type: 'xdata', xid: Buffer, offset: number, data: Buffer }
  | { type: 'xack', xid: Buffer, offset: number }
  | { type: 'xend', xid: Buffer, sha256: Buffer, mode: number, mtimeMs: number }
  | { type: 'xdone', xid: Buffer, result: XferResult, reason: string }
  | { type: 'xcancel', xid: Buffer }
  // Managed files: signed manifests (JSON, checked by the layer above), a
  // request for one version's content, and the content with its manifest.
  | { type: 'fadvert', manifests: unknown[] }
  | { type: 'fget', name: string, sha256: string }
  | { type: 'fput', manifest: unknown, data: Buffer }

export type XferKind = 'file' | 'tar'
const XFER_KINDS: readonly XferKind[] = ['file', 'tar']
/** ok: delivered; retry: not now (disk full, over quota, bad hash); refused: never (bad names). */
export type XferResult = 'ok' | 'retry' | 'refused'
const XFER_RESULTS: readonly XferResult[] = ['ok', 'retry', 'refused']
export const XID_BYTES = 16
const MAX_NAME = 4096

/**
 * The receiver's answer to a deferred request. 'done': applied, status is
 * the outcome (0 or a wire error code), payload the reply. 'refused':
 * final error without applying (EACCES, EMSGSIZE). 'retry': not applied
 * yet (no server, queue full, still pending); send it again later. 'dup':
 * applied long ago, outcome no longer kept.
 */
export type DackResult = 'done' | 'refused' | 'retry' | 'dup'
const DACK_RESULTS: readonly DackResult[] = ['done', 'refused', 'retry', 'dup']

/** Why the sender is about to close the link. */
export type ByeReason = 'shutdown' | 'superseded'
const BYE_REASONS: readonly ByeReason[] = ['shutdown', 'superseded']

const T_PING = 1
const T_PONG = 2
const T_REQ = 3
const T_REP = 4
const T_BYE = 5
const T_DREQ = 6
const T_DACK = 7
const T_XOFFER = 8
const T_XACCEPT = 9
const T_XDATA = 10
const T_XACK = 11
const T_XEND = 12
const T_XDONE = 13
const T_XCANCEL = 14
const T_FADVERT = 15
const T_FGET = 16
const T_FPUT = 17

export function laneOf (m: Message): Lane {
  if (m.type === 'xdata' || m.type === 'fput') return LANE_BULK
  return m.type === 'ping' || m.type === 'pong' || m.type === 'bye' ? LANE_CONTROL : LANE_TX
}

/** Transfer messages: u8 type, xid, then the fields of each. */
function encodeXfer (type: number, xid: Buffer, rest: Buffer[]): Buffer {
  if (xid.length !== XID_BYTES) throw new RangeError('xid must be 16 bytes')
  return Buffer.concat([Buffer.from([type]), xid, ...rest])
}

const u64 = (n: number): Buffer => {
  const b = Buffer.allocUnsafe(8)
  b.writeBigUInt64BE(BigInt(n))
  return b
}

const str = (s: string): Buffer => {
  const b = Buffer.from(s, 'utf8')
  if (b.length > MAX_NAME) throw new RangeError(`name of ${b.length} bytes`)
  const len = Buffer.allocUnsafe(2)
  len.writeUInt16BE(b.length)
  return Buffer.concat([len, b])
}

/** A cursor over one received message that refuses to read past its end. */
class Reader {
  private off = 1
  constructor (private readonly b: Buffer) {}
  take (n: number, what: string): Buffer {
    if (this.b.length - this.off < n) throw new ProtocolError(`message type ${this.b[0]} too short for ${what}`)
    const out = this.b.subarray(this.off, this.off + n)
    this.off += n
    return out
  }

  u8 (what: string): number { return this.take(1, what)[0] }
  u32 (what: string): number { return this.take(4, what).readUInt32BE(0) }
  u64 (what: string): number { return safeNumber(this.take(8, what).readBigUInt64BE(0)) }
  str (what: string): string {
    const n = this.take(2, what).readUInt16BE(0)
    if (n > MAX_NAME) throw new ProtocolError(`${what} of ${n} bytes over ${MAX_NAME}`)
    return this.take(n, what).toString('utf8')
  }

  rest (): Buffer { return this.b.subarray(this.off) }
  end (what: string): void {
    if (this.off !== this.b.length) throw new ProtocolError(`${this.b.length - this.off} stray bytes after ${what}`)
  }
}

function pick<T> (list: readonly T[], i: number, what: string): T {
  if (i >= list.length) throw new ProtocolError(`unknown ${what} ${i}`)
  return list[i]
}

export function encodeMessage (m: Message): Buffer {
  switch (m.type) {
    case 'ping':
    case 'pong': {
      const b = Buffer.allocUnsafe(5)
      b[0] = m.type === 'ping' ? T_PING : T_PONG
      b.writeUInt32BE(m.id, 1)
      return b
    }
    case 'req':
    case 'rep': {
      const b = Buffer.allocUnsafe(6 + m.payload.length)
      b[0] = m.type === 'req' ? T_REQ : T_REP
      b.writeUInt32BE(m.tx, 1)
      b[5] = m.type === 'req' ? m.svc : m.status
      b.set(m.payload, 6)
      return b
    }
    case 'bye':
      return Buffer.from([T_BYE, BYE_REASONS.indexOf(m.reason)])
    case 'dreq': {
      const b = Buffer.allocUnsafe(26 + m.payload.length)
      b[0] = T_DREQ
      b.writeBigUInt64BE(m.epoch, 1)
      b.writeBigUInt64BE(BigInt(m.seq), 9)
      b[17] = m.svc
      b.writeBigUInt64BE(BigInt(m.created), 18)
      b.set(m.payload, 26)
      return b
    }
    case 'xoffer':
      return encodeXfer(T_XOFFER, m.xid, [Buffer.from([XFER_KINDS.indexOf(m.kind)]), u64(m.size), u64(m.window), str(m.name)])
    case 'xaccept':
      return encodeXfer(T_XACCEPT, m.xid, [u64(m.offset)])
    case 'xdata':
      return encodeXfer(T_XDATA, m.xid, [u64(m.offset), m.data])
    case 'xack':
      return encodeXfer(T_XACK, m.xid, [u64(m.offset)])
    case 'xend': {
      const mode = Buffer.allocUnsafe(4)
      mode.writeUInt32BE(m.mode)
      return encodeXfer(T_XEND, m.xid, [m.sha256, mode, u64(m.mtimeMs)])
    }
    case 'xdone':
      return encodeXfer(T_XDONE, m.xid, [Buffer.from([XFER_RESULTS.indexOf(m.result)]), str(m.reason)])
    case 'xcancel':
      return encodeXfer(T_XCANCEL, m.xid, [])
    case 'fadvert':
      return Buffer.concat([Buffer.from([T_FADVERT]), Buffer.from(JSON.stringify(m.manifests))])
    case 'fget':
      return Buffer.concat([Buffer.from([T_FGET]), str(m.name), str(m.sha256)])
    case 'fput': {
      const manifest = Buffer.from(JSON.stringify(m.manifest))
      const len = Buffer.allocUnsafe(4)
      len.writeUInt32BE(manifest.length)
      return Buffer.concat([Buffer.from([T_FPUT]), len, manifest, m.data])
    }
    case 'dack': {
      const b = Buffer.allocUnsafe(19 + m.payload.length)
      b[0] = T_DACK
      b.writeBigUInt64BE(m.epoch, 1)
      b.writeBigUInt64BE(BigInt(m.seq), 9)
      b[17] = DACK_RESULTS.indexOf(m.result)
      b[18] = m.status
      b.set(m.payload, 19)
      return b
    }
  }
}

function decodeXfer (b: Buffer): Message {
  const r = new Reader(b)
  const xid = Buffer.from(r.take(XID_BYTES, 'xid'))
  let m: Message
  switch (b[0]) {
    case T_XOFFER: m = { type: 'xoffer', xid, kind: pick(XFER_KINDS, r.u8('kind'), 'transfer kind'), size: r.u64('size'), window: r.u64('window'), name: r.str('name') }; break
    case T_XACCEPT: m = { type: 'xaccept', xid, offset: r.u64('offset') }; break
    case T_XDATA: return { type: 'xdata', xid, offset: r.u64('offset'), data: r.rest() }
    case T_XACK: m = { type: 'xack', xid, offset: r.u64('offset') }; break
    case T_XEND: m = { type: 'xend', xid, sha256: Buffer.from(r.take(32, 'sha256')), mode: r.u32('mode'), mtimeMs: r.u64('mtime') }; break
    case T_XDONE: m = { type: 'xdone', xid, result: pick(XFER_RESULTS, r.u8('result'), 'transfer result'), reason: r.str('reason') }; break
    default: m = { type: 'xcancel', xid }
  }
  r.end(m.type)
  return m
}

function parseJson (b: Buffer, what: string): unknown {
  if (b.length > MAX_NAME * 256) throw new ProtocolError(`${what} of ${b.length} bytes is too long`)
  try {
    return JSON.parse(b.toString('utf8'))
  } catch {
    throw new ProtocolError(`${what} is not JSON`)
  }
}

function safeNumber (n: bigint): number {
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`counter ${n} out of range`)
  return Number(n)
}

export function decodeMessage (b: Buffer): Message {
  if (b.length < 1) throw new ProtocolError('empty message')
  const need = (n: number): void => {
    if (b.length < n) throw new ProtocolError(`message type ${b[0]} of ${b.length} bytes is shorter than ${n}`)
  }
  switch (b[0]) {
    case T_PING:
    case T_PONG:
      need(5)
      if (b.length !== 5) throw new ProtocolError(`ping/pong of ${b.length} bytes, expected 5`)
      return { type: b[0] === T_PING ? 'ping' : 'pong', id: b.readUInt32BE(1) }
    case T_REQ:
      need(6)
      if (b[5] < 1 || b[5] > 63) throw new ProtocolError(`request for service ${b[5]} outside 1..63`)
      return { type: 'req', tx: b.readUInt32BE(1), svc: b[5], payload: b.subarray(6) }
    case T_REP:
      need(6)
      return { type: 'rep', tx: b.readUInt32BE(1), status: b[5], payload: b.subarray(6) }
    case T_DREQ: {
      need(26)
      if (b[17] < 1 || b[17] > 63) throw new ProtocolError(`deferred request for service ${b[17]} outside 1..63`)
      return { type: 'dreq', epoch: b.readBigUInt64BE(1), seq: safeNumber(b.readBigUInt64BE(9)), svc: b[17], created: safeNumber(b.readBigUInt64BE(18)), payload: b.subarray(26) }
    }
    case T_DACK: {
      need(19)
      if (b[17] >= DACK_RESULTS.length) throw new ProtocolError(`unknown deferred ack result ${b[17]}`)
      return { type: 'dack', epoch: b.readBigUInt64BE(1), seq: safeNumber(b.readBigUInt64BE(9)), result: DACK_RESULTS[b[17]], status: b[18], payload: b.subarray(19) }
    }
    case T_XOFFER: case T_XACCEPT: case T_XDATA: case T_XACK: case T_XEND: case T_XDONE: case T_XCANCEL:
      return decodeXfer(b)
    case T_FADVERT: {
      const manifests = parseJson(b.subarray(1), 'file advert')
      if (!Array.isArray(manifests)) throw new ProtocolError('file advert is not a list')
      return { type: 'fadvert', manifests }
    }
    case T_FGET: {
      const r = new Reader(b)
      const m: Message = { type: 'fget', name: r.str('name'), sha256: r.str('sha256') }
      r.end('fget')
      return m
    }
    case T_FPUT: {
      const r = new Reader(b)
      const n = r.u32('manifest length')
      const manifest = parseJson(r.take(n, 'manifest'), 'file manifest')
      return { type: 'fput', manifest, data: r.rest() }
    }
    case T_BYE:
      if (b.length !== 2 || b[1] >= BYE_REASONS.length) throw new ProtocolError('malformed bye')
      return { type: 'bye', reason: BYE_REASONS[b[1]] }
    default:
      throw new ProtocolError(`unknown message type ${b[0]}`)
  }
}
