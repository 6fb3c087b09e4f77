// Two packet services in one process over a fake link (every message goes
// through the codec) with a fake clock: windows, credits, probes, sessions,
// errno, and every bound at its limit.
import { describe, expect, it } from 'vitest'
import { E, type PeerfsError } from '../../src/lib/errors.js'
import { silentLogger } from '../../src/lib/log.js'
import type { PacketRecord, PacketSession } from '../../src/fs/backend.js'
import { HELLO_RETRY_MS, MAX_BLOCKED, MAX_EVENTS, PROBE_MS, Packets } from '../../src/services/packets.js'
import { decodeMessage, encodeMessage } from '../../src/transport/messages/index.js'
import { packetCost, type PktMessage } from '../../src/transport/messages/pkt.js'
import { FakeClock } from '../helpers/clock.js'

const WINDOW = 1024
const EMPTY = Buffer.alloc(0)
/** Packets of an empty payload that fill WINDOW. */
const PER_WINDOW = WINDOW / packetCost(0)

function rig () {
  const clock = new FakeClock()
  const deferred: Array<() => void> = []
  const wire: Array<{ from: string, to: string, bytes: Buffer }> = []
  let linked = false
  let drop: ((m: PktMessage, from: string) => boolean) | undefined
  let session = 100
  const nodes = new Map<string, Packets>()
  const make = (id: string, other: string, alias: string): Packets => new Packets({
    maxPacketBytes: 1000,
    windowBytes: WINDOW,
    clock,
    log: silentLogger,
    send: (to, m) => {
      if (!linked) throw new Error('link down')
      if (drop?.(m, id) === true) return
      wire.push({ from: id, to, bytes: encodeMessage(m) })
    },
    peers: () => [{ id: other, alias }],
    defer: (fn) => deferred.push(fn),
    newSession: () => ++session
  })
  nodes.set('alpha', make('alpha', 'beta', 'ET'))
  nodes.set('beta', make('beta', 'alpha', 'WT'))
  const run = (): void => {
    while (deferred.length > 0 || wire.length > 0) {
      while (deferred.length > 0) (deferred.shift() as () => void)()
      const w = wire.shift()
      if (w === undefined) continue
      const m = decodeMessage(w.bytes) as PktMessage
      const h = (nodes.get(w.to) as Packets)[m.type] as (peer: string, m: PktMessage) => void
      h.call(nodes.get(w.to), w.from, m)
    }
  }
  return {
    clock,
    a: nodes.get('alpha') as Packets,
    b: nodes.get('beta') as Packets,
    run,
    dropWhere (f: typeof drop) { drop = f },
    connect () {
      linked = true
      nodes.get('alpha')?.linkUp('beta')
      nodes.get('beta')?.linkUp('alpha')
      run()
    },
    disconnect () {
      linked = false
      wire.length = 0
      nodes.get('alpha')?.linkDown('beta')
      nodes.get('beta')?.linkDown('alpha')
    },
    advance (ms: number) {
      clock.advance(ms)
      run()
    }
  }
}

function reader (p: Packets, chan: number, reads = true): { s: PacketSession, wakes: () => number, all: () => PacketRecord[] } {
  let wakes = 0
  const s = p.open(chan, reads, () => { wakes++ })
  return {
    s,
    wakes: () => wakes,
    all: () => {
      const out: PacketRecord[] = []
      for (let r = s.next(); r !== undefined; r = s.next()) out.push(r)
      return out
    }
  }
}

function errnoOf (fn: () => unknown): number | undefined {
  try {
    fn()
  } catch (err) {
    return (err as PeerfsError).errno
  }
  return undefined
}

const stat = (p: Packets, peer: string): Record<string, string | number> => Object.fromEntries(p.status(peer))

describe('packet windows and credits', () => {
  it('takes packets while the window has room, then EAGAIN; credit comes in quarter-window steps as the reader consumes', () => {
    const t = rig()
    const rb = reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5)
    expect(rb.all()).toEqual([{ peer: 'alpha', event: 'up' }])
    expect(w.s.writable()).toBe(true)
    for (let i = 0; i < PER_WINDOW; i++) expect(w.s.send('beta', EMPTY, true)).toBeUndefined()
    expect(w.s.writable()).toBe(false)
    expect(errnoOf(() => w.s.send('beta', EMPTY, true))).toBe(E.EAGAIN)
    t.run()
    // A quarter window minus one packet read: no credit yet.
    for (let i = 0; i < PER_WINDOW / 4 - 1; i++) expect(rb.s.next()).toEqual({ peer: 'alpha', payload: EMPTY })
    t.run()
    expect(w.s.writable()).toBe(false)
    rb.s.next()
    const before = w.wakes()
    t.run()
    expect(w.s.writable()).toBe(true)
    expect(w.wakes()).toBeGreaterThan(before)
    expect(stat(t.a, 'beta')).toMatchObject({ pkt_out: PER_WINDOW, pkt_writes_waited: 1 })
    expect(stat(t.b, 'alpha')).toMatchObject({ pkt_in: PER_WINDOW, pkt_dropped: 0 })
  })

  it('a blocking send waits for credit, then goes, in order', async () => {
    const t = rig()
    const rb = reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5, false)
    for (let i = 0; i < PER_WINDOW; i++) w.s.send('beta', Buffer.from([i]), false)
    let done = false
    const waiting = w.s.send('beta', Buffer.from('last'), false)
    expect(waiting).toBeInstanceOf(Promise)
    void (waiting as Promise<void>).then(() => { done = true })
    t.run()
    await Promise.resolve()
    expect(done).toBe(false)
    const got = rb.all().slice(1)
    t.run()
    await waiting
    t.run()
    got.push(...rb.all())
    expect(got.map(r => r.event === undefined ? r.payload.toString('latin1') : r.event)).toEqual([...Array.from({ length: PER_WINDOW }, (_, i) => String.fromCharCode(i)), 'last'])
  })

  it('a link loss fails the waiting writes with EHOSTUNREACH and gives each reader a down record', async () => {
    const t = rig()
    reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5)
    for (let i = 0; i < PER_WINDOW; i++) w.s.send('beta', EMPTY, false)
    const waiting = w.s.send('beta', EMPTY, false) as Promise<void>
    t.disconnect()
    await expect(waiting).rejects.toMatchObject({ errno: E.EHOSTUNREACH })
    expect(w.all()).toEqual([{ peer: 'beta', event: 'up' }, { peer: 'beta', event: 'down' }])
    expect(errnoOf(() => w.s.send('beta', EMPTY, true))).toBe(E.EHOSTUNREACH)
    expect(errnoOf(() => w.s.send('*', EMPTY, true))).toBe(E.EHOSTUNREACH)
    expect(w.s.writable()).toBe(true)
    // The next link starts with a whole window.
    t.connect()
    for (let i = 0; i < PER_WINDOW; i++) expect(w.s.send('beta', EMPTY, true)).toBeUndefined()
  })

  it('packets lost with a replaced link free the window after a probe', () => {
    const t = rig()
    const rb = reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5)
    t.dropWhere((m) => m.type === 'pkt')
    for (let i = 0; i < PER_WINDOW; i++) w.s.send('beta', EMPTY, true)
    t.run()
    t.dropWhere(undefined)
    expect(w.s.writable()).toBe(false)
    t.advance(PROBE_MS - 1)
    expect(w.s.writable()).toBe(false)
    t.advance(1)
    expect(w.s.writable()).toBe(true)
    expect(stat(t.b, 'alpha')).toMatchObject({ pkt_lost: 1, pkt_in: 0 })
    w.s.send('beta', Buffer.from('after'), true)
    t.run()
    expect(rb.all().slice(1)).toEqual([{ peer: 'alpha', payload: Buffer.from('after') }])
  })

  it('a lost credit is sent again when the sender probes', () => {
    const t = rig()
    const rb = reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5)
    t.dropWhere((m) => m.type === 'pcredit')
    for (let i = 0; i < PER_WINDOW; i++) w.s.send('beta', EMPTY, true)
    t.run()
    rb.all()
    t.run()
    t.dropWhere(undefined)
    expect(w.s.writable()).toBe(false)
    t.advance(PROBE_MS)
    expect(w.s.writable()).toBe(true)
    expect(stat(t.b, 'alpha')).toMatchObject({ pkt_lost: 0 })
  })
})

describe('packet sessions and readers', () => {
  it('a write to a peer without a reader is ECONNREFUSED; unknown names ENOENT; too big EMSGSIZE; aliases work', () => {
    const t = rig()
    t.connect()
    const w = reader(t.a, 7)
    expect(errnoOf(() => w.s.send('beta', EMPTY, true))).toBe(E.ECONNREFUSED)
    expect(errnoOf(() => w.s.send('*', EMPTY, true))).toBe(E.ECONNREFUSED)
    expect(errnoOf(() => w.s.send('gamma', EMPTY, true))).toBe(E.ENOENT)
    expect(errnoOf(() => w.s.send('beta', Buffer.alloc(1001), true))).toBe(E.EMSGSIZE)
    const rb = reader(t.b, 7)
    t.run()
    expect(stat(t.a, 'beta')).toMatchObject({ pkt_channels: '07' })
    w.s.send('ET', Buffer.from('hi'), true)
    t.run()
    expect(rb.all()).toEqual([{ peer: 'alpha', event: 'up' }, { peer: 'alpha', payload: Buffer.from('hi') }])
  })

  it('the last reader closing drops what waited, counted and credited, and later writes are refused', () => {
    const t = rig()
    const rb = reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5)
    for (let i = 0; i < PER_WINDOW; i++) w.s.send('beta', EMPTY, true)
    t.run()
    rb.s.close()
    t.run()
    expect(stat(t.b, 'alpha')).toMatchObject({ pkt_dropped: PER_WINDOW })
    expect(errnoOf(() => w.s.send('beta', EMPTY, true))).toBe(E.ECONNREFUSED)
    const again = reader(t.b, 5)
    t.run()
    for (let i = 0; i < PER_WINDOW; i++) expect(w.s.send('beta', EMPTY, true)).toBeUndefined()
    t.run()
    expect(again.all()).toHaveLength(PER_WINDOW + 1)
  })

  it('two readers of one channel share its packets: each goes to one of them', () => {
    const t = rig()
    const r1 = reader(t.b, 5)
    const r2 = reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5)
    for (let i = 0; i < 10; i++) w.s.send('beta', Buffer.from([i]), true)
    t.run()
    const got: number[] = []
    for (let i = 0; i < 6; i++) {
      const r = (i % 2 === 0 ? r1 : r2).s.next()
      if (r?.event === undefined && r !== undefined) got.push(r.payload[0])
    }
    for (const r of [...r1.all(), ...r2.all()]) if (r.event === undefined) got.push(r.payload[0])
    expect(got.sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  })

  it('records come in arrival order: packets, then down; what is unread when the next link comes up is dropped, counted', () => {
    const t = rig()
    const ra = reader(t.a, 5)
    t.connect()
    const w = reader(t.b, 5, false)
    w.s.send('alpha', Buffer.from('one'), true)
    w.s.send('alpha', Buffer.from('two'), true)
    t.run()
    t.disconnect()
    expect(ra.all()).toEqual([
      { peer: 'beta', event: 'up' },
      { peer: 'beta', payload: Buffer.from('one') },
      { peer: 'beta', payload: Buffer.from('two') },
      { peer: 'beta', event: 'down' }
    ])
    t.connect()
    w.s.send('alpha', Buffer.from('three'), true)
    t.run()
    t.disconnect()
    t.connect()
    expect(ra.all()).toEqual([{ peer: 'beta', event: 'up' }, { peer: 'beta', event: 'down' }, { peer: 'beta', event: 'up' }])
    expect(stat(t.a, 'beta')).toMatchObject({ pkt_in: 3, pkt_dropped: 1 })
  })

  it('the hello is asked for again until the peer answers', () => {
    const t = rig()
    reader(t.b, 5)
    t.dropWhere((m, from) => m.type === 'pstate' && from === 'beta')
    t.connect()
    const w = reader(t.a, 5)
    expect(stat(t.a, 'beta')).toMatchObject({ pkt_state: 'opening' })
    expect(errnoOf(() => w.s.send('beta', EMPTY, true))).toBe(E.EHOSTUNREACH)
    t.dropWhere(undefined)
    t.advance(HELLO_RETRY_MS)
    expect(stat(t.a, 'beta')).toMatchObject({ pkt_state: 'up', pkt_channels: '05' })
    expect(w.all()).toEqual([{ peer: 'beta', event: 'up' }])
  })

  it('a peer that starts a new session while we stayed up gives down then up, and windows start again', () => {
    const t = rig()
    const rb = reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5)
    for (let i = 0; i < PER_WINDOW; i++) w.s.send('beta', EMPTY, true)
    t.run()
    // beta saw the link drop and come back; alpha did not.
    t.b.linkDown('alpha')
    t.b.linkUp('alpha')
    t.run()
    expect(w.all()).toEqual([{ peer: 'beta', event: 'up' }, { peer: 'beta', event: 'down' }, { peer: 'beta', event: 'up' }])
    expect(w.s.writable()).toBe(true)
    w.s.send('beta', Buffer.from('new'), true)
    t.run()
    const got = rb.all().filter(r => r.event === undefined)
    expect(got).toEqual([{ peer: 'alpha', payload: Buffer.from('new') }])
  })
})

describe('packet bounds', () => {
  it('a peer that sends past the window loses the excess, counted', () => {
    const t = rig()
    const rb = reader(t.b, 5)
    t.connect()
    const session = (t.b as unknown as { remotes: Map<string, { mine: number }> }).remotes.get('alpha')?.mine as number
    const n = Math.floor((WINDOW + packetCost(1000)) / packetCost(0)) + 5
    t.b.pkt('alpha', { type: 'pkt', session, chan: 5, offset: 0, payloads: Array.from({ length: n }, () => EMPTY) })
    expect(rb.all().length - 1).toBe(n - 5)
    expect(stat(t.b, 'alpha')).toMatchObject({ pkt_dropped: 5 })
  })

  it(`a reader keeps at most ${MAX_EVENTS} up/down records`, () => {
    const t = rig()
    const ra = reader(t.a, 5)
    for (let i = 0; i < MAX_EVENTS; i++) {
      t.connect()
      t.disconnect()
    }
    const all = ra.all()
    expect(all).toHaveLength(MAX_EVENTS)
    expect(all.at(-1)).toEqual({ peer: 'beta', event: 'down' })
  })

  it(`at most ${MAX_BLOCKED} writes wait on one channel; the next gets ENOBUFS`, () => {
    const t = rig()
    reader(t.b, 5)
    t.connect()
    const w = reader(t.a, 5)
    for (let i = 0; i < PER_WINDOW; i++) w.s.send('beta', EMPTY, false)
    const waiting: Array<Promise<void>> = []
    for (let i = 0; i < MAX_BLOCKED; i++) waiting.push(w.s.send('beta', EMPTY, false) as Promise<void>)
    expect(errnoOf(() => w.s.send('beta', EMPTY, false))).toBe(E.ENOBUFS)
    t.disconnect()
    return Promise.allSettled(waiting).then(rs => expect(rs.every(r => r.status === 'rejected')).toBe(true))
  })
})
