// Admission of unauthenticated callers at its bounds, on a fake clock; and
// the config keys that set them.
import { describe, expect, it } from 'vitest'
import { parseConfig, type LinkLimits } from '../../src/config.js'
import type { Logger } from '../../src/lib/log.js'
import { Admission } from '../../src/transport/admission.js'
import { FakeClock } from '../helpers/clock.js'

const LIMITS: LinkLimits = { queueBytes: 1 << 20, bulkInFlightBytes: 256 << 10, handshakeTimeoutMs: 5000, maxUnauthenticated: 4, maxUnauthenticatedPerAddress: 2, handshakesPerS: 10, refusalLogMs: 10_000 }

function make (limits: Partial<LinkLimits> = {}): { adm: Admission, clock: FakeClock, lines: Array<{ obj: Record<string, unknown>, msg: string }> } {
  const clock = new FakeClock()
  const lines: Array<{ obj: Record<string, unknown>, msg: string }> = []
  const log = { warn: (obj: Record<string, unknown>, msg: string) => lines.push({ obj, msg }) } as unknown as Logger
  return { adm: new Admission({ ...LIMITS, ...limits }, clock, log), clock, lines }
}

describe('admission', () => {
  it('holds at most maxUnauthenticated callers, and maxUnauthenticatedPerAddress from one address', () => {
    const { adm } = make()
    expect(adm.enter('10.0.0.1')).toBeUndefined()
    expect(adm.enter('10.0.0.1')).toBeUndefined()
    expect(adm.enter('10.0.0.1')).toBe('too_many_from_address')
    expect(adm.enter('10.0.0.2')).toBeUndefined()
    expect(adm.enter('10.0.0.3')).toBeUndefined()
    expect(adm.enter('10.0.0.4')).toBe('too_many_unauthenticated')
    expect(adm.unauthenticated).toBe(4)
    adm.leave('10.0.0.1')
    expect(adm.enter('10.0.0.4')).toBeUndefined()
    for (const a of ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4']) adm.leave(a)
    expect(adm.unauthenticated).toBe(0)
    // An address with nothing held is forgotten: leaving again changes nothing.
    adm.leave('10.0.0.4')
    expect(adm.unauthenticated).toBe(0)
  })

  it('starts handshakesPerS handshakes in a burst, then as many per second', () => {
    const { adm, clock } = make()
    let ok = 0
    for (let i = 0; i < 100; i++) if (adm.takeHandshake()) ok++
    expect(ok).toBe(10)
    clock.advance(500)
    ok = 0
    for (let i = 0; i < 100; i++) if (adm.takeHandshake()) ok++
    expect(ok).toBe(5)
    clock.advance(60_000)
    ok = 0
    for (let i = 0; i < 100; i++) if (adm.takeHandshake()) ok++
    expect(ok).toBe(10)
  })

  it('logs the first refusal at once, then one summary per interval with counts per reason', () => {
    const { adm, clock, lines } = make()
    adm.refused('unknown_key', { from: '10.0.0.9:1', err: 'unknown key K' })
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatchObject({ msg: 'refused incoming connection', obj: { reason: 'unknown_key', err: 'unknown key K' } })
    for (let i = 0; i < 10_000; i++) adm.refused(i % 2 === 0 ? 'closed' : 'handshake_rate', { from: `10.0.0.1:${i}` })
    expect(lines).toHaveLength(1)
    clock.advance(10_000)
    expect(lines).toHaveLength(2)
    expect(lines[1].obj).toMatchObject({ refused: { closed: 5000, handshake_rate: 5000 }, total: 10_000, examples: { closed: { from: '10.0.0.1:0' } } })
    expect(lines[1].msg).toBe('refused incoming connections: 10000 in 10000 ms')
    // A quiet interval ends the summaries; the next refusal is logged at once.
    clock.advance(10_000)
    expect(lines).toHaveLength(2)
    expect(clock.pending).toBe(0)
    adm.refused('protocol', { from: '10.0.0.1:5' })
    expect(lines).toHaveLength(3)
    adm.stop()
    expect(clock.pending).toBe(0)
  })
})

describe('link limits in the config', () => {
  const BASE = 'id = "alpha"\nkey = "alpha.key"\nstate = "s"\n'
  const parse = (text: string) => parseConfig('/etc/peerfs/alpha.toml', text)

  it('has defaults', () => {
    expect(parse(BASE).limits).toEqual({ queueBytes: 16 << 20, bulkInFlightBytes: 2 << 20, handshakeTimeoutMs: 5000, maxUnauthenticated: 64, maxUnauthenticatedPerAddress: 8, handshakesPerS: 20, refusalLogMs: 10_000 })
  })

  it('reads every key and refuses inconsistent ones, naming them', () => {
    const c = parse(`${BASE}link_queue_bytes = 33554432\nlink_bulk_in_flight_bytes = 1048576\nhandshake_timeout_ms = 2000\nmax_unauthenticated = 10\nmax_unauthenticated_per_address = 3\nhandshakes_per_s = 5\nrefusal_log_ms = 1000\n`)
    expect(c.limits).toEqual({ queueBytes: 32 << 20, bulkInFlightBytes: 1 << 20, handshakeTimeoutMs: 2000, maxUnauthenticated: 10, maxUnauthenticatedPerAddress: 3, handshakesPerS: 5, refusalLogMs: 1000 })
    expect(() => parse(`${BASE}max_unauthenticated = 4\n`)).toThrow(/max_unauthenticated_per_address: must not be larger than max_unauthenticated \(4\)/)
    expect(() => parse(`${BASE}link_queue_bytes = 1048576\n`)).toThrow(/link_queue_bytes: must not be smaller than window_bytes/)
    expect(() => parse(`${BASE}link_bulk_in_flight_bytes = 131072\n`)).toThrow(/link_bulk_in_flight_bytes: must be between/)
    expect(() => parse(`${BASE}handshake_timeout_ms = 1\n`)).toThrow(/handshake_timeout_ms: must be between/)
  })
})
