// The peer's reconnect schedule and state machine, on a fake clock.
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { parsePublicKey, encodePublicKey, identityFromSeed } from '../../src/lib/keys.js'
import { silentLogger } from '../../src/lib/log.js'
import { LinkError, type Link } from '../../src/transport/link.js'
import type { Message } from '../../src/transport/messages/index.js'
import { Peer, type PeerState } from '../../src/transport/peer.js'
import { FakeClock } from '../helpers/clock.js'

class FakeLink extends EventEmitter {
  state = 'handshake'
  role = 'initiator'
  initiatorKey = new Uint8Array(32)
  proven = false
  txBytes = 0
  rxBytes = 0
  close (err?: Error): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.emit('closed', err)
  }

  sent: Message[] = []
  goodbye (): void { this.close() }
  send (m: Message): void { this.sent.push(m) }
}

/** How a dial ends, 10 ms after it starts. */
type Outcome = 'refused-connection' | 'refused-key' | 'up-then-closed' | 'up' | 'up-answered-then-closed'

function makePeer (budget: number, outcome: Outcome = 'refused-connection') {
  const clock = new FakeClock()
  const dials: number[] = []
  const links: FakeLink[] = []
  const key = parsePublicKey(encodePublicKey(identityFromSeed(new Uint8Array(32).fill(9)).publicKey))
  const peer = new Peer({ id: 'beta', key, address: { host: '127.0.0.1', port: 1 }, requestTimeoutMs: 1000, inboxQuotaBytes: 0 }, {
    clock,
    log: silentLogger,
    settings: { retryBudget: budget, backoffMinMs: 100, backoffMaxMs: 1000, handshakeTimeoutMs: 500, requestWindowBytes: 1 << 20 },
    serve: async () => Buffer.alloc(0),
    deliver: () => {},
    dial: () => {
      dials.push(clock.now())
      const l = new FakeLink()
      links.push(l)
      clock.setTimeout(() => {
        if (outcome === 'refused-connection') l.close(new Error('refused'))
        else if (outcome === 'refused-key') l.close(new LinkError(13, 'refused our key', 'refused-key'))
        else {
          l.state = 'up'
          peer.attach(l as unknown as Link)
          if (outcome === 'up-answered-then-closed') {
            l.proven = true
            l.emit('proved')
          }
          if (outcome !== 'up') clock.setTimeout(() => l.close(new LinkError(104, 'connection closed by peer')), 10)
        }
      }, 10)
      return l as unknown as Link
    }
  })
  const states: PeerState[] = []
  peer.on('state', (s) => states.push(s))
  return { clock, dials, links, peer, states }
}

describe('peer reconnect', () => {
  it('backs off exponentially with jitter, then is dead after the retry budget', () => {
    const { clock, dials, peer, states } = makePeer(4)
    peer.start()
    clock.advance(60_000)
    expect(dials).toHaveLength(5)
    const gaps = dials.slice(1).map((t, i) => t - dials[i] - 10)
    // random() = 0.5: delay = 3/4 of min(max, 100 * 2^n).
    expect(gaps).toEqual([75, 150, 300, 600])
    expect(peer.state).toBe('dead')
    expect(states).toEqual(['dead'])
    expect(clock.pending).toBe(0)
  })

  it('is revived by reset and dials again with a full budget', () => {
    const { clock, dials, peer } = makePeer(1)
    peer.start()
    clock.advance(10_000)
    expect(peer.state).toBe('dead')
    const before = dials.length
    peer.control('reset')
    expect(peer.state).toBe('down')
    expect(peer.retriesLeft).toBe(1)
    clock.advance(10_000)
    expect(dials.length).toBe(before + 2)
    expect(peer.state).toBe('dead')
  })

  it('fails requests at once when dead, and after the deadline when unreachable', async () => {
    const { clock, peer } = makePeer(100)
    peer.start()
    const pending = peer.request(1, Buffer.from('x'), 500).catch((e: Error) => e)
    clock.advance(600)
    expect(await pending).toMatchObject({ errno: 113 })
    const dead = makePeer(0)
    dead.peer.start()
    dead.clock.advance(100)
    expect(dead.peer.state).toBe('dead')
    await expect(dead.peer.request(1, Buffer.from('x'), 500)).rejects.toMatchObject({ errno: 113, message: /is dead/ })
  })

  it('stays down after ctl disconnect until reconnect', () => {
    const { clock, dials, peer } = makePeer(100)
    peer.start()
    peer.control('disconnect')
    const n = dials.length
    clock.advance(60_000)
    expect(dials.length).toBe(n)
    expect(peer.state).toBe('down')
    peer.control('reconnect')
    expect(dials.length).toBe(n + 1)
  })
})

describe('peer links never flap', () => {
  it('a dial the peer refuses spends the budget and waits the longest backoff; never up', () => {
    const { clock, dials, peer, states } = makePeer(3, 'refused-key')
    peer.start()
    clock.advance(1)
    clock.advance(20)
    expect(peer.retriesLeft).toBe(2)
    expect(peer.lastError).toBe('refused our key')
    clock.advance(60_000)
    // random() = 0.5: 3/4 of backoffMaxMs each time, from the first refusal on.
    expect(dials.slice(1).map((t, i) => t - dials[i] - 10)).toEqual([750, 750, 750])
    expect(states).toEqual(['dead'])
    expect(clock.pending).toBe(0)
  })

  it('a link closed before the peer sent anything on it is a failed attempt: backoff grows, the budget runs out', () => {
    const { clock, dials, peer, states } = makePeer(3, 'up-then-closed')
    peer.start()
    clock.advance(60_000)
    expect(dials).toHaveLength(4)
    expect(dials.slice(1).map((t, i) => t - dials[i] - 20)).toEqual([75, 150, 300])
    expect(states).toEqual(['up', 'down', 'up', 'down', 'up', 'down', 'up', 'down', 'dead'])
    expect(peer.state).toBe('dead')
  })

  it('a link the peer answered on refills the budget and is redialled at the shortest backoff', () => {
    const { clock, dials, peer, states } = makePeer(3, 'up-answered-then-closed')
    peer.start()
    clock.advance(5000)
    // Each link worked, then broke: the budget is full again each time.
    expect(peer.retriesLeft).toBe(3)
    expect(dials.slice(1, 4).map((t, i) => t - dials[i] - 20)).toEqual([75, 75, 75])
    expect(states.slice(0, 4)).toEqual(['up', 'down', 'up', 'down'])
    peer.stop()
  })
})

describe('peer request window', () => {
  it('sends one request however large, and holds more, in order, until the window has room', async () => {
    const { clock, links, peer } = makePeer(3, 'up')
    peer.start()
    clock.advance(20)
    const link = links[0]
    const big = Buffer.alloc(700 << 10)
    const first = peer.request(1, big, 5000)
    const second = peer.request(1, big, 5000)
    const small = peer.request(1, Buffer.alloc(10), 5000)
    await new Promise(resolve => setImmediate(resolve))
    // The small one would fit, but waits its turn behind the second.
    expect(link.sent.map(m => m.type === 'req' ? m.payload.length : 0)).toEqual([700 << 10])
    link.emit('message', { type: 'rep', tx: 1, status: 0, payload: Buffer.from('one') })
    await new Promise(resolve => setImmediate(resolve))
    expect(link.sent.map(m => m.type === 'req' ? m.payload.length : 0)).toEqual([700 << 10, 700 << 10, 10])
    expect((await first).toString()).toBe('one')
    link.emit('message', { type: 'rep', tx: 2, status: 0, payload: Buffer.from('two') })
    link.emit('message', { type: 'rep', tx: 3, status: 0, payload: Buffer.from('small') })
    expect((await small).toString()).toBe('small')
    expect((await second).toString()).toBe('two')
  })

  it('a request waiting for the window fails with ETIMEDOUT at its deadline', async () => {
    const { clock, peer } = makePeer(3, 'up')
    peer.start()
    clock.advance(20)
    const first = peer.request(1, Buffer.alloc(900 << 10), 5000).catch((e: Error) => e)
    const second = peer.request(1, Buffer.alloc(900 << 10), 1000).catch((e: Error) => e)
    await new Promise(resolve => setImmediate(resolve))
    clock.advance(1000)
    expect(await second).toMatchObject({ errno: 110, message: /no room to send/ })
    clock.advance(5000)
    expect(await first).toMatchObject({ errno: 110 })
  })
})
