// The packet family's codec: every message round-trips, and malformed
// input is a ProtocolError, never another exception.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ProtocolError } from '../../src/lib/errors.js'
import { decodeMessage, encodeMessage, familyOf, laneOf, type Message } from '../../src/transport/messages/index.js'
import { LANE_CONTROL, LANE_TX } from '../../src/transport/records.js'

const chan = fc.integer({ min: 1, max: 63 })
const session = fc.nat({ max: 0xffffffff })
const offset = fc.nat()
const channels = fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }).map(b => b << 1n)

const message = fc.oneof(
  fc.record({ type: fc.constant('pstate' as const), session, channels, window: fc.nat({ max: 0xffffffff }), maxPacket: fc.nat({ max: 1 << 20 }), ask: fc.boolean() }),
  fc.record({ type: fc.constant('pkt' as const), session, chan, offset, payloads: fc.array(fc.uint8Array({ maxLength: 200 }).map(a => Buffer.from(a)), { minLength: 1, maxLength: 20 }) }),
  fc.record({ type: fc.constant('pcredit' as const), session, chan, consumed: offset }),
  fc.record({ type: fc.constant('pprobe' as const), session, chan, offset })
)

describe('pkt messages', () => {
  it('round-trip, as the pkt family, credits on the control lane and the rest in order on one lane', () => {
    fc.assert(fc.property(message, (m: Message) => {
      expect(decodeMessage(encodeMessage(m))).toEqual(m)
      expect(familyOf(m)).toBe('pkt')
      expect(laneOf(m)).toBe(m.type === 'pcredit' ? LANE_CONTROL : LANE_TX)
    }))
  })

  it('refuse malformed input with a ProtocolError, never another exception', () => {
    fc.assert(fc.property(fc.constantFrom(40, 41, 42, 43), fc.uint8Array({ maxLength: 60 }), (code, bytes) => {
      try {
        decodeMessage(Buffer.from([code, ...bytes]))
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError)
      }
    }))
  })

  it('refuse channel 0 or 64, an empty or oversized batch, channel 0 announced, and a truncated packet', () => {
    const credit = (c: number): Buffer => Buffer.concat([Buffer.from([42, 0, 0, 0, 1, c]), Buffer.alloc(8)])
    expect(() => decodeMessage(credit(0))).toThrow(/channel 0 outside/)
    expect(() => decodeMessage(credit(64))).toThrow(/channel 64 outside/)
    const batch = (n: number): Buffer => {
      const b = Buffer.alloc(18)
      b[0] = 41
      b[5] = 5
      b.writeUInt32BE(n, 14)
      return b
    }
    expect(() => decodeMessage(batch(0))).toThrow(/0 packets/)
    expect(() => decodeMessage(batch(100_000))).toThrow(/100000 packets/)
    const state = encodeMessage({ type: 'pstate', session: 1, channels: 1n, window: 1, maxPacket: 1, ask: false })
    expect(() => decodeMessage(state)).toThrow(/channel 0 announced/)
    const one = encodeMessage({ type: 'pkt', session: 1, chan: 5, offset: 0, payloads: [Buffer.from('hello')] })
    expect(() => decodeMessage(one.subarray(0, one.length - 1))).toThrow(/shorter/)
  })
})
