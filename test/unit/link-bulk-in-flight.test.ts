// The bound on bulk bytes in flight, over an in-memory wire whose "kernel"
// takes every byte at once (as loopback's autotuned socket buffers take
// megabytes): without the bound a transaction would queue there behind all
// the bulk the link was given.
import { Duplex } from 'node:stream'
import { afterEach, describe, expect, it } from 'vitest'
import { systemClock, type Clock } from '../../src/lib/clock.js'
import { identityFromSeed } from '../../src/lib/keys.js'
import { CREDIT_EVERY, DEFAULT_MAX_BULK_IN_FLIGHT_BYTES } from '../../src/transport/credit.js'
import { Link, type LinkOptions } from '../../src/transport/link.js'
import { keyPairFromSecret } from '../../src/transport/noise.js'
import type { Message } from '../../src/transport/messages/index.js'
import { FakeClock } from '../helpers/clock.js'

const alice = keyPairFromSecret(identityFromSeed(new Uint8Array(32).fill(1)).dhSecret)
const bob = keyPairFromSecret(identityFromSeed(new Uint8Array(32).fill(2)).dhSecret)

/** One direction of the wire: delivers what is written, or holds it while held. */
class Wire {
  held = false
  heldBytes = 0
  private readonly pending: Buffer[] = []
  to: Duplex | undefined

  carry (chunk: Buffer): void {
    if (this.held) {
      this.pending.push(chunk)
      this.heldBytes += chunk.length
    } else {
      setImmediate(() => this.to?.push(chunk))
    }
  }

  release (): void {
    this.held = false
    for (const c of this.pending.splice(0)) this.carry(c)
    this.heldBytes = 0
  }
}

const ends: Duplex[] = []
const links: Link[] = []
afterEach(() => {
  for (const l of links.splice(0)) l.close()
  for (const e of ends.splice(0)) e.destroy()
})

function end (out: Wire): Duplex {
  // A high-water mark no test reaches: write() never refuses, like a kernel with room.
  const d = new Duplex({ writableHighWaterMark: 1 << 30, read () {}, write (chunk: Buffer, _enc, cb) { out.carry(chunk); cb() } })
  ends.push(d)
  return d
}

/** opts go to alice; bob only hears, so he never declares her silent. */
async function pair (opts: Partial<LinkOptions> = {}, clock: Clock = systemClock): Promise<{ a: Link, b: Link, ab: Wire, ba: Wire }> {
  const ab = new Wire()
  const ba = new Wire()
  const sa = end(ab)
  const sb = end(ba)
  ab.to = sb
  ba.to = sa
  const base = { clock, keepaliveMs: 100, downAfterMs: 300, handshakeTimeoutMs: 2000 }
  const a = new Link(sa, { ...base, ...opts, localId: 'alice', role: 'initiator', staticKey: alice, expectedKey: bob.public })
  const b = new Link(sb, { ...base, downAfterMs: 60_000, localId: 'bob', role: 'responder', staticKey: bob, authorize: () => 'alice' })
  links.push(a, b)
  await Promise.all([new Promise(resolve => a.once('up', resolve)), new Promise(resolve => b.once('up', resolve))])
  return { a, b, ab, ba }
}

const xid = Buffer.alloc(16, 9)
const PACKET = 65_000
/** A record carrying one xdata of PACKET bytes: u16 length, lane and flags, type, xid, offset, data, tag. */
const RECORD = 2 + 2 + 1 + 16 + 8 + PACKET + 16

function sendBulk (a: Link, count: number): void {
  for (let i = 0; i < count; i++) a.send({ type: 'xdata', xid, offset: i * PACKET, data: Buffer.alloc(PACKET, i) })
}

const until = async (check: () => boolean, what: string): Promise<void> => {
  for (let i = 0; i < 500 && !check(); i++) await new Promise(resolve => setTimeout(resolve, 10))
  if (!check()) throw new Error(`never: ${what}`)
}

describe('bulk in flight', () => {
  it('lets a transaction queued behind 8 MiB of bulk pass all but the bound of it, and still delivers every byte in order', async () => {
    const { a, b, ab } = await pair()
    const got: Message[] = []
    b.on('message', (m) => got.push(m))
    ab.held = true
    sendBulk(a, 128)
    a.send({ type: 'req', tx: 1, svc: 1, payload: Buffer.from('ping') }, { ours: true })
    // The wire took only the bound of bulk (and the request); the rest waits in the link.
    expect(ab.heldBytes).toBeLessThan(DEFAULT_MAX_BULK_IN_FLIGHT_BYTES + RECORD + 100)
    expect(a.queuedBytes).toBeGreaterThan(128 * PACKET - DEFAULT_MAX_BULK_IN_FLIGHT_BYTES - RECORD)
    ab.release()
    await until(() => got.length === 129, 'every message arrives')
    const before = got.findIndex(m => m.type === 'req')
    expect(before).toBeLessThanOrEqual(Math.ceil(DEFAULT_MAX_BULK_IN_FLIGHT_BYTES / RECORD))
    const offsets = got.filter(m => m.type === 'xdata').map(m => (m as { offset: number }).offset)
    expect(offsets).toEqual(Array.from({ length: 128 }, (_, i) => i * PACKET))
    await until(() => a.bulkInFlightBytes < CREDIT_EVERY, 'the peer credits what it read')
  })

  it('sends bulk without waiting for credits while it does not read the peer, so neither end waits on the other', async () => {
    const { a, b, ab } = await pair({ maxQueuedBytes: 1 << 20 })
    let got = 0
    b.on('message', () => { got++ })
    ab.held = true
    sendBulk(a, 64)
    // Over maxQueuedBytes the link stops reading, where credits would wait unread: the bulk
    // over the mark went out instead of leaving the link paused for good.
    expect(a.paused).toBe(false)
    expect(a.queuedBytes).toBeLessThanOrEqual(1 << 20)
    expect(ab.heldBytes).toBeGreaterThan(3 << 20)
    ab.release()
    await until(() => got === 64, 'every message arrives')
  })

  it('drops a peer that credits none of our bulk for down_after_ms, although it keeps sending', async () => {
    const clock = new FakeClock()
    const { a, ab } = await pair({}, clock)
    ab.held = true
    sendBulk(a, Math.ceil(2 * DEFAULT_MAX_BULK_IN_FLIGHT_BYTES / PACKET))
    let reason: Error | undefined
    a.on('closed', (err) => { reason = err })
    // bob's keepalives reach alice, so she hears him; he reads nothing of hers.
    for (let i = 0; i < 3 && a.state === 'up'; i++) {
      clock.advance(100)
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    expect(a.state).toBe('closed')
    expect(reason?.message).toMatch(/peer is not reading: \d+ bytes waiting, none taken for 300 ms/)
  })

  it('closes the link on a credit for bulk bytes never sent', async () => {
    const { a, b } = await pair()
    const closed = new Promise<Error | undefined>(resolve => a.once('closed', resolve))
    b.send({ type: 'credit', bytes: 1000 })
    expect((await closed)?.message).toMatch(/credit for 1000 bulk bytes, 0 in flight/)
  })
})
