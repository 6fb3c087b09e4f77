// The one style every message family is written in: a message is u8 type
// then fields; a family module declares, per message, its type byte, its
// lane, and encode beside decode over the Writer and Reader below. Every
// length read from a peer is checked against its limit before anything
// is allocated, and a message must be consumed exactly.
import { ProtocolError } from '../../lib/errors.js'
import type { Lane } from '../records.js'

/** Longest string field (a relative path, a reason). */
export const MAX_STR = 4096

/** Builds one message from parts; concatenated once at the end. */
export class Writer {
  private readonly parts: Buffer[] = []
  private size = 0

  constructor (type: number) { this.u8(type) }

  private push (b: Buffer): this {
    this.parts.push(b)
    this.size += b.length
    return this
  }

  u8 (n: number): this { return this.push(Buffer.from([n])) }
  u32 (n: number): this {
    const b = Buffer.allocUnsafe(4)
    b.writeUInt32BE(n)
    return this.push(b)
  }

  u64 (n: number | bigint): this {
    const b = Buffer.allocUnsafe(8)
    b.writeBigUInt64BE(BigInt(n))
    return this.push(b)
  }

  /** Fixed-size bytes (a hash, an id): the reader knows the length. */
  fixed (b: Uint8Array, len: number): this {
    if (b.length !== len) throw new RangeError(`field of ${b.length} bytes, expected ${len}`)
    return this.push(Buffer.from(b.buffer, b.byteOffset, b.length))
  }

  str (s: string): this {
    const b = Buffer.from(s, 'utf8')
    if (b.length > MAX_STR) throw new RangeError(`string of ${b.length} bytes over ${MAX_STR}`)
    const len = Buffer.allocUnsafe(2)
    len.writeUInt16BE(b.length)
    return this.push(len).push(b)
  }

  /** u32-length-prefixed bytes. */
  bytes (b: Buffer): this { return this.u32(b.length).push(b) }
  /** The rest of the message: must be the last field. */
  rest (b: Buffer): this { return this.push(b) }
  json (x: unknown): this { return this.bytes(Buffer.from(JSON.stringify(x))) }

  done (): Buffer { return this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.size) }

  /**
   * The message as pieces to send in order: runs of small fields joined,
   * large fields (bulk data) as given, so they are not copied on the way
   * to the cipher.
   */
  pieces (): Buffer[] {
    const out: Buffer[] = []
    let run: Buffer[] = []
    for (const p of this.parts) {
      if (p.length < LARGE_FIELD) {
        run.push(p)
        continue
      }
      if (run.length > 0) out.push(Buffer.concat(run))
      run = []
      out.push(p)
    }
    if (run.length > 0) out.push(Buffer.concat(run))
    return out
  }
}

/** A field this large is worth a piece of its own rather than a copy. */
const LARGE_FIELD = 4096

/** A cursor over one received message that refuses to read past its end. */
export class Reader {
  private off = 1
  constructor (private readonly b: Buffer) {}

  get type (): number { return this.b[0] }

  take (n: number, what: string): Buffer {
    if (this.b.length - this.off < n) throw new ProtocolError(`message type ${this.b[0]} is shorter than its ${what}`)
    const out = this.b.subarray(this.off, this.off + n)
    this.off += n
    return out
  }

  u8 (what: string): number { return this.take(1, what)[0] }
  u32 (what: string): number { return this.take(4, what).readUInt32BE(0) }
  big64 (what: string): bigint { return this.take(8, what).readBigUInt64BE(0) }
  u64 (what: string): number {
    const n = this.big64(what)
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`${what} ${n} out of range`)
    return Number(n)
  }

  /** A copy, so the field outlives the record buffer it came in. */
  fixed (n: number, what: string): Buffer { return Buffer.from(this.take(n, what)) }

  str (what: string): string {
    const n = this.take(2, what).readUInt16BE(0)
    if (n > MAX_STR) throw new ProtocolError(`${what} of ${n} bytes over ${MAX_STR}`)
    return this.take(n, what).toString('utf8')
  }

  bytes (what: string, max: number): Buffer {
    const n = this.u32(`${what} length`)
    if (n > max) throw new ProtocolError(`${what} of ${n} bytes over ${max}`)
    return this.take(n, what)
  }

  json (what: string, max: number): unknown {
    const b = this.bytes(what, max)
    try {
      return JSON.parse(b.toString('utf8'))
    } catch {
      throw new ProtocolError(`${what} is not JSON`)
    }
  }

  /** One of a closed list, by index. */
  pick<T> (list: readonly T[], what: string): T {
    const i = this.u8(what)
    if (i >= list.length) throw new ProtocolError(`unknown ${what} ${i}`)
    return list[i]
  }

  rest (): Buffer {
    const out = this.b.subarray(this.off)
    this.off = this.b.length
    return out
  }

  end (what: string): void {
    if (this.off !== this.b.length) throw new ProtocolError(`${this.b.length - this.off} stray bytes after ${what}`)
  }
}

/** How one message is carried: its type byte, its lane, encode and decode. */
export interface Spec<M> {
  code: number
  lane: Lane
  encode: (w: Writer, m: M) => Writer
  decode: (r: Reader) => M
}

/** A family: one Spec per message type of the union M. */
export type Family<M extends { type: string }> = { [K in M['type']]: Spec<Extract<M, { type: K }>> }

/**
 * A typed handler for a family, one method per message (the way
 * Syncthing's protocol calls its Model): the router calls it with the
 * peer the message came from.
 */
export type Handler<M extends { type: string }, P = string> = { [K in M['type']]: (peer: P, m: Extract<M, { type: K }>) => void }
