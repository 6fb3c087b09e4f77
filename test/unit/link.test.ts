// Links over real loopback sockets, with an in-process relay between the
// two ends that can tamper with, replay or drop records after the handshake.
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { systemClock } from '../../src/lib/clock.js'
import { identityFromSeed } from '../../src/lib/keys.js'
import { Link, type LinkOptions } from '../../src/transport/link.js'
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

const once = <T>(l: Link, ev: 'up' | 'closed' | 'message'): Promise<T> => new Promise(resolve => l.once(ev, resolve as () => void))

describe('link', () => {
  it('completes the handshake, authenticates both ends and carries messages both ways', async () => {
    const { a, b } = await relayedLinks((r) => [r])
    await Promise.all([once(a, 'up'), once(b, 'up')])
    expect(b.peerId).toBe('alice')
    expect(a.peerId).toBe('bob')
    const got = once<Message>(b, 'message')
    a.send({ type: 'req', tx: 7, svc: 1, payload: Buffer.alloc(200_000, 5) })
    const m = await got
    expect(m).toMatchObject({ type: 'req', tx: 7, svc: 1 })
    expect((m as { payload: Buffer }).payload.equals(Buffer.alloc(200_000, 5))).toBe(true)
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
