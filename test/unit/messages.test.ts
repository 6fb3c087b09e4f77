import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ProtocolError } from '../../src/lib/errors.js'
import {
  LANE_LIMITS, MAX_FRAGMENT_DATA, Reassembler, RecordDecoder, decodeFragment,
  encodeFragment, encodeRecord
} from '../../src/transport/records.js'
import { decodeMessage, encodeMessage, encodePieces, type Message } from '../../src/transport/messages/index.js'

const message = fc.oneof(
  fc.record({ type: fc.constant('ping' as const), id: fc.nat({ max: 0xffffffff }) }),
  fc.record({ type: fc.constant('pong' as const), id: fc.nat({ max: 0xffffffff }) }),
  fc.record({ type: fc.constant('credit' as const), bytes: fc.nat({ max: 0xffffffff }) }),
  fc.record({ type: fc.constant('req' as const), tx: fc.nat({ max: 0xffffffff }), svc: fc.integer({ min: 1, max: 63 }), payload: fc.uint8Array({ maxLength: 300 }).map(a => Buffer.from(a)) }),
  fc.record({ type: fc.constant('rep' as const), tx: fc.nat({ max: 0xffffffff }), status: fc.nat({ max: 255 }), payload: fc.uint8Array({ maxLength: 300 }).map(a => Buffer.from(a)) }),
  fc.record({ type: fc.constant('bye' as const), reason: fc.constantFrom('shutdown' as const, 'superseded' as const) }),
  fc.record({ type: fc.constant('dreq' as const), epoch: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), seq: fc.nat(), svc: fc.integer({ min: 1, max: 63 }), created: fc.nat(), payload: fc.uint8Array({ maxLength: 300 }).map(a => Buffer.from(a)) }),
  fc.record({ type: fc.constant('xoffer' as const), xid: fc.uint8Array({ minLength: 16, maxLength: 16 }).map(a => Buffer.from(a)), kind: fc.constantFrom('file' as const, 'tar' as const, 'stream' as const), size: fc.nat(), window: fc.nat(), name: fc.string({ maxLength: 100 }) }),
  fc.record({ type: fc.constant('xaccept' as const), xid: fc.uint8Array({ minLength: 16, maxLength: 16 }).map(a => Buffer.from(a)), offset: fc.nat() }),
  fc.record({ type: fc.constant('xdata' as const), xid: fc.uint8Array({ minLength: 16, maxLength: 16 }).map(a => Buffer.from(a)), offset: fc.nat(), data: fc.uint8Array({ maxLength: 300 }).map(a => Buffer.from(a)) }),
  fc.record({ type: fc.constant('xend' as const), xid: fc.uint8Array({ minLength: 16, maxLength: 16 }).map(a => Buffer.from(a)), sha256: fc.uint8Array({ minLength: 32, maxLength: 32 }).map(a => Buffer.from(a)), mode: fc.nat(), mtimeMs: fc.nat() }),
  fc.record({ type: fc.constant('xdone' as const), xid: fc.uint8Array({ minLength: 16, maxLength: 16 }).map(a => Buffer.from(a)), result: fc.constantFrom('ok' as const, 'retry' as const, 'refused' as const), reason: fc.string({ maxLength: 100 }) }),
  fc.record({ type: fc.constant('xcancel' as const), xid: fc.uint8Array({ minLength: 16, maxLength: 16 }).map(a => Buffer.from(a)) }),
  fc.record({ type: fc.constant('dack' as const), epoch: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), seq: fc.nat(), result: fc.constantFrom('done' as const, 'refused' as const, 'retry' as const, 'dup' as const), status: fc.nat({ max: 255 }), payload: fc.uint8Array({ maxLength: 300 }).map(a => Buffer.from(a)) })
)

describe('messages', () => {
  it('keep bulk data out of the copy when encoded in pieces', () => {
    const data = Buffer.alloc(65_000, 3)
    const m: Message = { type: 'xdata', xid: Buffer.alloc(16, 1), offset: 7, data }
    const pieces = encodePieces(m)
    expect(pieces.length).toBe(2)
    expect(pieces[1]).toBe(data)
    expect(Buffer.concat(pieces).equals(encodeMessage(m))).toBe(true)
  })

  it('round-trip', () => {
    fc.assert(fc.property(message, (m: Message) => {
      expect(decodeMessage(encodeMessage(m))).toEqual(m)
    }))
  })

  it('refuse malformed input with a ProtocolError, never another exception', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
      try {
        decodeMessage(Buffer.from(bytes))
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError)
      }
    }))
    expect(() => decodeMessage(Buffer.from([3, 0, 0, 0, 1, 64]))).toThrow(/service 64 outside/)
    expect(() => decodeMessage(Buffer.from([1, 0, 0]))).toThrow(/shorter/)
    expect(() => decodeMessage(Buffer.from([99]))).toThrow(/unknown message type 99/)
  })
})

describe('records', () => {
  it('decode under any chunking, one byte at a time included', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 2000 }), { maxLength: 8 }), fc.integer({ min: 1, max: 50 }), (bodies, step) => {
      const stream = Buffer.concat(bodies.map(b => encodeRecord(b)))
      const d = new RecordDecoder()
      const out: Buffer[] = []
      for (let i = 0; i < stream.length; i += step) {
        d.push(stream.subarray(i, i + step))
        for (let r = d.next(); r !== undefined; r = d.next()) out.push(Buffer.from(r))
      }
      expect(out.map(b => b.toString('hex'))).toEqual(bodies.map(b => Buffer.from(b).toString('hex')))
      expect(d.takeRaw(1)).toBeUndefined()
    }))
  })

  it('copy a record only when it straddles reads, and then only its own bytes', () => {
    const a = encodeRecord(Buffer.alloc(40_000, 1))
    const b = encodeRecord(Buffer.alloc(40_000, 2))
    const stream = Buffer.concat([a, b])
    const d = new RecordDecoder()
    d.push(stream.subarray(0, 65_536))
    d.push(stream.subarray(65_536))
    const first = d.next() as Buffer
    expect(first.buffer).toBe(stream.buffer)
    const second = d.next() as Buffer
    expect(second.equals(Buffer.alloc(40_000, 2))).toBe(true)
    expect(second.buffer.byteLength).toBe(40_000)
  })

  it('refuse to encode a body over the Noise message limit', () => {
    expect(() => encodeRecord(Buffer.alloc(65536))).toThrow(RangeError)
  })
})

describe('fragments', () => {
  it('reassemble per lane, with lanes interleaved', () => {
    const r = new Reassembler()
    expect(r.push({ lane: 2, last: false, data: Buffer.from('bu') })).toBeUndefined()
    expect(r.push({ lane: 1, last: true, data: Buffer.from('tx') })?.toString()).toBe('tx')
    expect(r.push({ lane: 2, last: true, data: Buffer.from('lk') })?.toString()).toBe('bulk')
  })

  it('refuse a message over its lane limit before buffering it', () => {
    const r = new Reassembler()
    const big = Buffer.alloc(MAX_FRAGMENT_DATA)
    expect(() => {
      for (let n = 0; n <= LANE_LIMITS[0] / big.length + 1; n++) r.push({ lane: 0, last: false, data: big })
    }).toThrow(/exceeds/)
  })

  it('refuse unknown lanes and flags', () => {
    expect(() => decodeFragment(Buffer.from([3, 0]))).toThrow(/unknown lane/)
    expect(() => decodeFragment(Buffer.from([0, 2]))).toThrow(/unknown fragment flags/)
    expect(() => decodeFragment(Buffer.from([0]))).toThrow(/shorter than its header/)
    expect(decodeFragment(encodeFragment({ lane: 1, last: true, data: Buffer.from('x') }))).toEqual({ lane: 1, last: true, data: Buffer.from('x') })
  })
})
