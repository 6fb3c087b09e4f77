// A configured peer that sends 1 MiB echo requests and never reads the
// replies: the daemon stops reading it once it owes link_queue_bytes,
// drops it after down_after_ms without progress, and frees what the link
// held; the link to a well-behaved peer stays up throughout. The attack
// runs twice: the second must not need more memory than the first (what
// the first link held was released, not kept).
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, linkAs, rssMb } from '../helpers/hostile.js'
import { Daemon, eventually, makeNetwork, peerState, sh, teardown, waitState, type NodeSpec } from '../helpers/net.js'

afterEach(async () => {
  closeAll()
  await teardown()
})

/** One attack, until the daemon drops it; its peak RSS. */
async function attack (a: Daemon, mallory: NodeSpec, alpha: NodeSpec, drops: number): Promise<{ peak: number, sent: number }> {
  // Mallory's own link must not give up on the silence it causes.
  const { link, socket } = await linkAs(mallory, alpha, { downAfterMs: 120_000 })
  await waitState(a, 'mallory')
  socket.pause()
  let closed = false
  link.on('closed', () => { closed = true })
  const payload = Buffer.alloc(1 << 20, 0x61)
  let peak = 0
  let sent = 0
  const dropped = (): boolean => a.stderr.split('peer is not reading').length > drops + 1
  const end = Date.now() + 30_000
  while (Date.now() < end && !dropped()) {
    // Keep our own side's memory small: send only as fast as alpha takes it.
    while (!closed && link.queuedBytes < (4 << 20) && sent < 2000) link.send({ type: 'req', tx: ++sent, svc: 1, payload })
    await new Promise(resolve => setTimeout(resolve, 20))
    peak = Math.max(peak, await rssMb(a.pid))
  }
  expect(dropped(), `alpha's log:\n${a.stderr.slice(-3000)}`).toBe(true)
  link.close()
  return { peak, sent }
}

describe('a peer that never reads', () => {
  it('is slowed then dropped, the daemon under 150 MB; what it held is freed; the other link stays up', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'mallory'], {
      links: [['alpha', 'beta'], ['alpha', 'mallory']],
      peer: { 'alpha>mallory': { address: null } }
    })
    const a = new Daemon(netw.node('alpha'))
    const b = new Daemon(netw.node('beta'))
    await Promise.all([a.start(), b.start()])
    await waitState(a, 'beta')
    const before = await rssMb(a.pid)

    const first = await attack(a, netw.node('mallory'), netw.node('alpha'), 0)
    await waitState(a, 'mallory', 'down')
    expect(a.stderr.split('\n').some(l => l.includes('peer mallory down') && l.includes('peer is not reading'))).toBe(true)
    expect(await peerState(a, 'beta')).toBe('up')
    expect((await sh(`cd ${a.path('peers/beta/svc')} && echo still > 01; cat 01`)).stdout).toBe('still\n')
    let after = first.peak
    // Freed buffers go back to the allocator; how much of it the C library
    // hands back to the kernel is up to it, so this waits for some, not all.
    await eventually(async () => (after = await rssMb(a.pid)) < first.peak - 3, 'memory given back', 20_000, 250).catch(() => {})

    // The peer redials and does it again (its backoff state is the daemon's, not ours).
    const second = await attack(a, netw.node('mallory'), netw.node('alpha'), 1)
    await waitState(a, 'mallory', 'down')
    let after2 = second.peak
    await eventually(async () => (after2 = await rssMb(a.pid)) < second.peak - 3, 'memory given back again', 20_000, 250).catch(() => {})
    console.log(`never-reads: alpha RSS before ${before.toFixed(1)} MB; attack 1 (${first.sent} x 1 MiB sent) peak ${first.peak.toFixed(1)}, after ${after.toFixed(1)}; attack 2 (${second.sent} sent) peak ${second.peak.toFixed(1)}, after ${after2.toFixed(1)} MB`)
    expect(first.peak).toBeLessThan(150)
    expect(second.peak).toBeLessThan(150)
    expect(after).toBeLessThan(first.peak)
    expect(second.peak).toBeLessThan(first.peak + 15)
    expect(await peerState(a, 'beta')).toBe('up')
  })
})
