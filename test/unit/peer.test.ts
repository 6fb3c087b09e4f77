// The peer's reconnect schedule and state machine, on a fake clock.
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { parsePublicKey, encodePublicKey, identityFromSeed } from '../../src/lib/keys.js'
import { silentLogger } from '../../src/lib/log.js'
import type { Link } from '../../src/transport/link.js'
import { Peer, type PeerState } from '../../src/transport/peer.js'
import { FakeClock } from '../helpers/clock.js'

class FakeLink extends EventEmitter {
  state = 'handshake'
  role = 'initiator'
  initiatorKey = new Uint8Array(32)
  txBytes = 0
  rxBytes = 0
  close (err?: Error): void {
    if (this.state === 'closed') return
    this.state = 'closed'
    this.emit('closed', err)
  }

  goodbye (): void { this.close() }
  send (): void {}
}

function makePeer (budget: number) {
  const clock = new FakeClock()
  const dials: number[] = []
  const links: FakeLink[] = []
  const key = parsePublicKey(encodePublicKey(identityFromSeed(new Uint8Array(32).fill(9)).publicKey))
  const peer = new Peer({ id: 'beta', key, address: { host: '127.0.0.1', port: 1 }, requestTimeoutMs: 1000, inboxQuotaBytes: 0 }, {
    clock,
    log: silentLogger,
    settings: { retryBudget: budget, backoffMinMs: 100, backoffMaxMs: 1000, handshakeTimeoutMs: 500, stableMs: 1000, requestWindowBytes: 1 << 20 },
    serve: async () => Buffer.alloc(0),
    deliver: () => {},
    dial: () => {
      dials.push(clock.now())
      const l = new FakeLink()
      links.push(l)
      // Every dial fails 10 ms later, as a refused connection would.
      clock.setTimeout(() => l.close(new Error('refused')), 10)
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
