// A peer that advertises 3,000 managed-file manifests with bad signatures
// (spoken from this process, as a configured peer): the daemon keeps
// answering, its link to its other peer stays up and keeps replicating,
// and the refusals are logged as a few summary lines.
import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { parsePublicKey } from '../../src/lib/keys.js'
import type { WireManifest } from '../../src/transport/messages/files.js'
import type { Message } from '../../src/transport/messages/index.js'
import { EventRecorder } from '../helpers/events.js'
import { closeAll, linkAs } from '../helpers/hostile.js'
import { Daemon, eventually, makeNetwork, py, readText, sh, startNetwork, teardown, waitState } from '../helpers/net.js'

afterEach(async () => {
  EventRecorder.stopAll()
  closeAll()
  await teardown()
})

describe('a hostile managed-files peer', () => {
  it('3,000 manifests with bad signatures neither freeze the daemon nor break its other link', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'mallory'], {
      links: [['alpha', 'beta'], ['alpha', 'mallory']],
      peer: { 'alpha>mallory': { address: null } },
      extra: { alpha: 'gossip_ms = 300\n', beta: 'gossip_ms = 300\n' }
    })
    const ds = await startNetwork(netw, ['alpha', 'beta'])
    const a = ds.get('alpha') as Daemon
    const b = ds.get('beta') as Daemon
    await waitState(a, 'beta')
    const events = await EventRecorder.open(a.path('events'))

    const { link } = await linkAs(netw.node('mallory'), netw.node('alpha'))
    let acks = 0
    link.on('message', (m: Message) => { if (m.type === 'fack') acks++ })

    // Signed, it claims, by beta, whom alpha trusts: alpha must check each signature it gets to.
    const signer = parsePublicKey(netw.node('beta').publicKey).sign
    const forged = (i: number): WireManifest => ({ name: `evil/n${i}`, version: Date.now() + 1000, size: 10, deleted: false, sha256: randomBytes(32), signer, sig: randomBytes(64) })
    const echoes = py(`
import os, sys
fails = 0
for i in range(300):
    try:
        fd = os.open(sys.argv[1], os.O_RDWR); os.write(fd, b'ping'); r = os.read(fd, 100); os.close(fd)
        if r != b'ping': fails += 1
    except OSError as e:
        fails += 1; print(e, file=sys.stderr)
print(fails)
`, [b.path('peers/alpha/svc/01')], 120_000)
    // All at once, past any window, then the rest as acks come back.
    for (let i = 0; i < 3000; i += 250) {
      link.send({ type: 'fadv', manifests: Array.from({ length: 250 }, (_, k) => forged(i + k)) })
    }
    await eventually(() => acks === 12, 'every advert acknowledged (processed or dropped)', 60_000)
    const r = await echoes
    expect(r.stdout.trim()).toBe('0')

    // The other link still replicates, and nothing forged was accepted.
    await sh(`echo still-fine > ${b.path('files/after-attack')}`)
    await eventually(async () => (await readText(a.path('files/after-attack'))) === 'still-fine\n', 'beta\'s file on alpha', 15_000)
    expect((await sh(`ls ${a.path('files')}`)).stdout).not.toMatch(/evil/)
    expect(await readText(a.path('files/.peerfs-status'))).not.toMatch(/evil/)
    const summaries = a.stderr.split('\n').filter(l => l.includes('refused file manifests'))
    expect(summaries.length).toBeGreaterThan(0)
    expect(summaries.length).toBeLessThanOrEqual(12)
    expect(summaries.join('\n')).toMatch(/bad signature/)
    link.close()
    await sh(`echo down-check > ${a.path('files/zz-last')}`)
    await eventually(async () => (await readText(b.path('files/zz-last'))) === 'down-check\n', 'alpha\'s last file on beta', 15_000)
    expect((await readText(a.path('peers/beta/state'))).trim()).toBe('up')
    expect(events.matching(/ beta (down|dead)/)).toEqual([])
  })
})
