// The link's framing, declared once, encode beside decode. Messages
// themselves are declared by family in ./messages/.
//
// Stream:   MAGIC, then records. A record is u16 BE length + body (Noise
//           limits a message to 65535 bytes). During the handshake a body
//           is a Noise handshake message; after it, a ChaCha20-Poly1305
//           ciphertext whose plaintext is a fragment.
// Fragment: u8 lane, u8 flags (bit 0: last fragment of its message), data.
//           Messages are cut into fragments so a lane with higher priority
//           (control, then transactions) can pass a bulk message mid-way;
//           fragments of one lane are never interleaved with each other.
import { ProtocolError } from '../lib/errors.js'
import { MAX_MESSAGE, TAGLEN, type CipherState } from './noise.js'

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

/** Bytes a record of a fragment carrying n data bytes takes on the wire. */
export const recordBytes = (n: number): number => 2 + FRAGMENT_HEADER + n + TAGLEN

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
    const first = this.chunks[0]
    const len = first.length >= 2 ? first.readUInt16BE(0) : (first[0] << 8) | this.chunks[1][0]
    if (this.buffered < 2 + len) return undefined
    this.skip(2)
    return this.take(len)
  }

  /** Takes n raw bytes (the magic), or undefined if not yet there. */
  takeRaw (n: number): Buffer | undefined {
    return this.buffered < n ? undefined : this.take(n)
  }

  private skip (n: number): void {
    this.buffered -= n
    while (n > 0) {
      const c = this.chunks[0]
      if (c.length > n) {
        this.chunks[0] = c.subarray(n)
        return
      }
      this.chunks.shift()
      n -= c.length
    }
  }

  /**
   * n bytes from the front: a view of the first chunk if they are all in
   * it, else a copy of exactly those bytes (records straddle 64 KiB reads;
   * joining whole chunks would copy up to half a record more each time).
   */
  private take (n: number): Buffer {
    if (n === 0) return Buffer.alloc(0)
    const first = this.chunks[0]
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      this.buffered -= n
      return first.subarray(0, n)
    }
    const out = Buffer.allocUnsafe(n)
    let off = 0
    while (off < n) {
      const c = this.chunks[0]
      const k = Math.min(c.length, n - off)
      c.copy(out, off, 0, k)
      off += k
      if (k === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(k)
    }
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

const NO_AD = Buffer.alloc(0)

/**
 * A fragment sealed into one record, encodeRecord(encrypt(encodeFragment(f))),
 * as the pieces to write in order: without the intermediate copies (bulk
 * data passes here once per 64 KiB). The fragment's data may come in pieces.
 */
export function sealFragment (cs: CipherState, lane: Lane, last: boolean, data: Buffer[]): Buffer[] {
  let n = 0
  for (const d of data) n += d.length
  const body = FRAGMENT_HEADER + n + TAGLEN
  if (body > MAX_MESSAGE) throw new RangeError(`record body of ${body} bytes exceeds ${MAX_MESSAGE}`)
  const prefix = Buffer.allocUnsafe(2)
  prefix.writeUInt16BE(body, 0)
  return [prefix, ...cs.encryptParts(NO_AD, [Buffer.from([lane, last ? FLAG_LAST : 0]), ...data])]
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
