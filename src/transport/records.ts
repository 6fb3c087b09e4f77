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
    const len = this.peek(2).readUInt16BE(0)
    if (this.buffered < 2 + len) return undefined
    return this.take(2 + len).subarray(2)
  }

  /** Takes n raw bytes (the magic), or undefined if not yet there. */
  takeRaw (n: number): Buffer | undefined {
    return this.buffered < n ? undefined : this.take(n)
  }

  /** The first chunk, joined with as many following ones as make n bytes. */
  private peek (n: number): Buffer {
    if (this.chunks[0].length < n) {
      let have = 0
      let k = 0
      while (have < n) have += this.chunks[k++].length
      this.chunks.splice(0, k, Buffer.concat(this.chunks.slice(0, k), have))
    }
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

const NO_AD = Buffer.alloc(0)

/**
 * A fragment sealed into one record, encodeRecord(encrypt(encodeFragment(f))),
 * as the pieces to write in order: without the intermediate copies (bulk
 * data passes here once per 64 KiB).
 */
export function sealFragment (cs: CipherState, f: Fragment): Buffer[] {
  const body = FRAGMENT_HEADER + f.data.length + TAGLEN
  if (body > MAX_MESSAGE) throw new RangeError(`record body of ${body} bytes exceeds ${MAX_MESSAGE}`)
  const prefix = Buffer.allocUnsafe(2)
  prefix.writeUInt16BE(body, 0)
  return [prefix, ...cs.encryptParts(NO_AD, [Buffer.from([f.lane, f.last ? FLAG_LAST : 0]), f.data])]
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
