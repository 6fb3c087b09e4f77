// Links over real loopback sockets, with an in-process relay between the
// two ends that can tamper with, replay or drop records after the handshake.
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { systemClock } from '../../src/lib/clock.js'
import { E, ProtocolError } from '../../src/lib/errors.js'
import { encodePublicKey, identityFromSeed } from '../../src/lib/keys.js'
import { decodeHello, encodeHello, sharedFeatures } from '../../src/transport/hello.js'
import { isRefusal, keyText, Link, LinkError, Refusal, type LinkOptions } from '../../src/transport/link.js'
import { keyPairFromSecret } from '../../src/transport/noise.js'
import { RecordDecoder, encodeRecord, MAGIC } from '../../src/transport/records.js'
import type { Message } from '../../src/transport/messages/index.js'
import { FakeClock } from '../helpers/clock.js'

const alice = keyPairFromSecret(identityFromSeed(new Uint8Array(32).fill(1)).dhSecret)
const bob = keyPairFromSecret(identityFromSeed(new Uint8Array(32).fill(2)).dhSecret)
const carol = keyPairFromSecret(identityFromSeed(new Uint8Array(32).fill(3)).dhSecret)

const cleanups: (() => void)[] = []
afterEach(() => { for (const c of cleanups.splice(0)) c() })

async function tcpPair (): Promise<[net.Socket, net.Socket]> {
  const srv = net.createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const accepted = new Promise<net.Socket>((resolve) => srv.once('connection', resolve))
  const c = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1')
  const s = await accepted
  srv.close()
  cleanups.push(() => { c.destroy(); s.destroy() })
  return [c, s]
}

type Tamper = (rec: Buffer, index: number) => Buffer[]

/** Relays initiator->responder records through tamper (after the magic). */
async function relayedLinks (tamper: Tamper, opts: Partial<LinkOptions> = {}): Promise<{ a: Link, b: Link }> {
  const [a1, x] = await tcpPair()
  const [y, b1] = await tcpPair()
  const dec = new RecordDecoder()
  let magic = false
  let n = 0
  x.on('data', (chunk: Buffer) => {
    dec.push(chunk)
    if (!magic) {
      const m = dec.takeRaw(MAGIC.length)
      if (m === undefined) return
      y.write(m)
      magic = true
    }
    for (let r = dec.next(); r !== undefined; r = dec.next()) for (const out of tamper(r, n++)) y.write(encodeRecord(out))
  })
  y.on('data', (chunk: Buffer) => x.write(chunk))
  const base = { localId: 'x', clock: systemClock, keepaliveMs: 1000, downAfterMs: 5000, handshakeTimeoutMs: 2000 }
  const a = new Link(a1, { ...base, ...opts, localId: 'alice', role: 'initiator', staticKey: alice, expectedKey: bob.public })
  const b = new Link(b1, { ...base, ...opts, localId: 'bob', role: 'responder', staticKey: bob, authorize: (k) => { if (Buffer.from(k).equals(Buffer.from(alice.public))) return 'alice'; throw new Error('unknown key') } })
  cleanups.push(() => { a.close(); b.close() })
  return { a, b }
}

const once = <T>(l: Link, ev: 'up' | 'proved' | 'closed' | 'message'): Promise<T> => new Promise(resolve => l.once(ev, resolve as () => void))

describe('link', () => {
  it('completes the handshake, authenticates both ends and carries messages both ways', async () => {
    const { a, b } = await relayedLinks((r) => [r])
    await Promise.all([once(a, 'up'), once(b, 'up')])
    expect(b.peerId).toBe('alice')
    expect(a.peerId).toBe('bob')
    // Each end learned the optional messages the other takes.
    expect([...a.features]).toEqual(['xstream'])
    expect([...b.features]).toEqual(['xstream'])
    const got = once<Message>(b, 'message')
    a.send({ type: 'req', tx: 7, svc: 1, payload: Buffer.alloc(200_000, 5) })
    const m = await got
    expect(m).toMatchObject({ type: 'req', tx: 7, svc: 1 })
    expect((m as { payload: Buffer }).payload.equals(Buffer.alloc(200_000, 5))).toBe(true)
  })

  it('is proven once the peer answers on it, not by the handshake and its confirmation', async () => {
    const { a, b } = await relayedLinks((r) => [r])
    await Promise.all([once(a, 'up'), once(b, 'up')])
    expect(a.proven).toBe(false)
    const proved = once(a, 'proved')
    b.send({ type: 'rep', tx: 1, status: 0, payload: Buffer.from('x') })
    await proved
    expect(a.proven).toBe(true)
  })

  it('drops the link when a record is tampered with', async () => {
    const { a, b } = await relayedLinks((r, i) => {
      if (i === 3) { const t = Buffer.from(r); t[t.length - 1] ^= 1; return [t] }
      return [r]
    })
    await Promise.all([once(a, 'up'), once(b, 'up')])
    const closed = once<Error>(b, 'closed')
    a.send({ type: 'req', tx: 1, svc: 1, payload: Buffer.from('x') })
    a.send({ type: 'req', tx: 2, svc: 1, payload: Buffer.from('y') })
    expect((await closed).message).toMatch(/bad authentication tag/)
  })

  it('drops the link on a replayed record', async () => {
    const { a, b } = await relayedLinks((r, i) => i === 2 ? [r, r] : [r])
    await Promise.all([once(a, 'up'), once(b, 'up')])
    const seen: Message[] = []
    b.on('message', (m) => seen.push(m))
    const closed = once<Error>(b, 'closed')
    a.send({ type: 'req', tx: 1, svc: 1, payload: Buffer.from('once') })
    expect((await closed).message).toMatch(/bad authentication tag/)
    expect(seen.length).toBeLessThanOrEqual(1)
  })

  it('drops the link when records are reordered', async () => {
    let held: Buffer | undefined
    const { a, b } = await relayedLinks((r, i) => {
      if (i === 2) { held = r; return [] }
      if (i === 3 && held !== undefined) return [r, held]
      return [r]
    })
    await Promise.all([once(a, 'up'), once(b, 'up')])
    const closed = once<Error>(b, 'closed')
    a.send({ type: 'req', tx: 1, svc: 1, payload: Buffer.from('1') })
    a.send({ type: 'req', tx: 2, svc: 1, payload: Buffer.from('2') })
    expect((await closed).message).toMatch(/bad authentication tag/)
  })

  it('refuses a responder whose key is not the one dialed', async () => {
    const [c, s] = await tcpPair()
    const base = { clock: systemClock, keepaliveMs: 1000, downAfterMs: 5000, handshakeTimeoutMs: 2000 }
    const a = new Link(c, { ...base, localId: 'alice', role: 'initiator', staticKey: alice, expectedKey: bob.public })
    const b = new Link(s, { ...base, localId: 'carol', role: 'responder', staticKey: carol, authorize: () => 'alice' })
    cleanups.push(() => { a.close(); b.close() })
    expect((await once<Error>(a, 'closed')).message).toMatch(/different key than configured/)
  })

  it('refuses bad magic from a caller', async () => {
    const [c, s] = await tcpPair()
    const b = new Link(s, { clock: systemClock, keepaliveMs: 1000, downAfterMs: 5000, handshakeTimeoutMs: 2000, localId: 'bob', role: 'responder', staticKey: bob, authorize: () => 'x' })
    cleanups.push(() => b.close())
    const closed = once<Error>(b, 'closed')
    c.write('GET / HTTP/1.1\r\n\r\n')
    expect((await closed).message).toMatch(/bad magic/)
  })

  it('declares a silent peer gone after down_after_ms, on the injected clock', async () => {
    const clock = new FakeClock()
    let silent = false
    const { b } = await relayedLinks((r) => silent ? [] : [r], { clock, keepaliveMs: 100, downAfterMs: 300 })
    await once(b, 'up')
    silent = true
    let reason: Error | undefined
    b.on('closed', (err) => { reason = err })
    clock.advance(250)
    expect(b.state).toBe('up')
    clock.advance(100)
    expect(b.state).toBe('closed')
    expect(reason?.message).toMatch(/silent for 300 ms/)
  })
})

describe('link bounds', () => {
  const MiB = 1 << 20

  /** alice's raw socket, so a test can stop her reading; bob echoes every request. */
  async function echoPair (opts: Partial<LinkOptions> = {}): Promise<{ a: Link, b: Link, aSocket: net.Socket, maxOwed: () => number }> {
    const [c, s] = await tcpPair()
    const base = { clock: systemClock, keepaliveMs: 1000, downAfterMs: 60_000, handshakeTimeoutMs: 2000 }
    const a = new Link(c, { ...base, localId: 'alice', role: 'initiator', staticKey: alice, expectedKey: bob.public })
    const b = new Link(s, { ...base, ...opts, localId: 'bob', role: 'responder', staticKey: bob, authorize: () => 'alice' })
    cleanups.push(() => { a.close(); b.close() })
    let max = 0
    b.on('message', (m) => {
      if (m.type !== 'req' || b.state !== 'up') return
      b.send({ type: 'rep', tx: m.tx, status: 0, payload: m.payload })
      max = Math.max(max, b.owedBytes)
    })
    await Promise.all([once(a, 'up'), once(b, 'up')])
    return { a, b, aSocket: c, maxOwed: () => max }
  }

  const until = async (check: () => boolean, what: string): Promise<void> => {
    for (let i = 0; i < 500 && !check(); i++) await new Promise(resolve => setTimeout(resolve, 10))
    if (!check()) throw new Error(`never: ${what}`)
  }

  it('stops reading a peer that owes more than maxQueuedBytes, and reads again once it drains under half', async () => {
    const { a, b, aSocket, maxOwed } = await echoPair({ maxQueuedBytes: MiB })
    aSocket.pause()
    const payload = Buffer.alloc(256 << 10, 7)
    let sent = 0
    const replies: number[] = []
    a.on('message', (m) => { if (m.type === 'rep') replies.push(m.tx) })
    // Enough to fill both kernels' buffers and then bob's bound.
    for (let i = 0; i < 400 && !b.paused; i++) {
      while (a.queuedBytes < MiB && sent < 400) a.send({ type: 'req', tx: ++sent, svc: 1, payload })
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    expect(b.paused).toBe(true)
    // One chunk's worth of requests may be answered after the mark is passed.
    expect(maxOwed()).toBeLessThanOrEqual(MiB + 2 * payload.length)
    const atPause = maxOwed()
    aSocket.resume()
    await until(() => replies.length === sent, 'every request answered')
    expect(b.paused).toBe(false)
    expect(maxOwed()).toBe(atPause)
    expect(replies).toEqual(Array.from({ length: sent }, (_, i) => i + 1))
  })

  it('drops a peer that takes none of our bytes for down_after_ms, although it keeps sending', async () => {
    const clock = new FakeClock()
    // A bound it never reaches: only the stall can end the link.
    const { a, b, aSocket } = await echoPair({ clock, keepaliveMs: 100, downAfterMs: 300, maxQueuedBytes: 1 << 30 })
    aSocket.pause()
    const payload = Buffer.alloc(256 << 10, 7)
    let got = 0
    b.on('message', () => { got++ })
    let tx = 0
    const sendOne = async (): Promise<void> => {
      const n = got
      a.send({ type: 'req', tx: ++tx, svc: 1, payload })
      await until(() => got > n || b.state === 'closed', 'bob heard alice')
    }
    // Fill the kernel buffers until bob's own socket refuses more.
    while (b.queuedBytes === 0 && tx < 400) await sendOne()
    expect(b.queuedBytes).toBeGreaterThan(0)
    let reason: Error | undefined
    b.on('closed', (err) => { reason = err })
    for (let i = 0; i < 3 && b.state === 'up'; i++) {
      clock.advance(100)
      await sendOne()
    }
    expect(b.state).toBe('closed')
    expect(reason?.message).toMatch(/peer is not reading: \d+ bytes waiting, none taken for 300 ms/)
    // Everything it held is released.
    expect(b.queuedBytes).toBe(0)
    expect(b.owedBytes).toBe(0)
  })

  it('tells a caller with an unknown key why, and the caller never sees the link up', async () => {
    const [c, s] = await tcpPair()
    const base = { clock: systemClock, keepaliveMs: 1000, downAfterMs: 5000, handshakeTimeoutMs: 2000 }
    const a = new Link(c, { ...base, localId: 'alice', role: 'initiator', staticKey: alice, expectedKey: bob.public })
    const b = new Link(s, { ...base, localId: 'bob', role: 'responder', staticKey: bob, authorize: () => { throw new Refusal('refused-key', 'unknown key') } })
    cleanups.push(() => { a.close(); b.close() })
    let up = false
    a.on('up', () => { up = true })
    const err = await once<LinkError>(a, 'closed')
    expect(err.message).toMatch(/^refused our key/)
    expect(err.bye).toBe('refused-key')
    expect(isRefusal(err)).toBe(true)
    expect(up).toBe(false)
    expect(b.state).toBe('closed')
    expect(b.closeReason).toBeInstanceOf(Refusal)
  })

  it('closes a caller the admission check refuses before answering its first message', async () => {
    const [c, s] = await tcpPair()
    const base = { clock: systemClock, keepaliveMs: 1000, downAfterMs: 5000, handshakeTimeoutMs: 2000 }
    let asked = 0
    const b = new Link(s, { ...base, localId: 'bob', role: 'responder', staticKey: bob, authorize: () => 'alice', admit: () => { asked++; return new LinkError(E.EBUSY, 'busy') } })
    cleanups.push(() => b.close())
    let answered = 0
    c.on('data', (d: Buffer) => { answered += d.length })
    const closed = once<Error>(b, 'closed')
    c.write(Buffer.concat([MAGIC, encodeRecord(Buffer.alloc(32, 9))]))
    expect((await closed).message).toBe('busy')
    expect(asked).toBe(1)
    expect(answered).toBe(0)
  })

  it('hears of no optional messages from an older peer\'s hello, ignores names it does not know, and refuses a malformed list', () => {
    const hello = (o: object): Buffer => Buffer.from(JSON.stringify({ v: 1, id: 'old', ...o }))
    expect(decodeHello(encodeHello('new', undefined)).f).toEqual(['xstream'])
    expect([...sharedFeatures(decodeHello(hello({})))]).toEqual([])
    expect([...sharedFeatures(decodeHello(hello({ f: ['xstream', 'from-the-future'] })))]).toEqual(['xstream'])
    expect(() => decodeHello(hello({ f: 'xstream' }))).toThrow(/f: at most 32 names/)
    expect(() => decodeHello(hello({ f: ['x'.repeat(33)] }))).toThrow(ProtocolError)
    expect(() => decodeHello(hello({ f: Array(33).fill('x') }))).toThrow(ProtocolError)
  })

  it('names a key as configs write it when the announced key matches the proven one', () => {
    const id = identityFromSeed(new Uint8Array(32).fill(4))
    const text = encodePublicKey(id.publicKey)
    expect(keyText(id.dhPublic, text)).toBe(text)
    expect(keyText(alice.public, text)).toBe(`${encodePublicKey(alice.public)} (X25519 half)`)
    expect(keyText(alice.public, undefined)).toMatch(/X25519 half/)
  })
})
