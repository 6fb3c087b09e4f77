// A peer that advertises 3,000 managed-file manifests with bad signatures
// (spoken from this process, as a configured peer): the daemon keeps
// answering, its link to its other peer stays up and keeps replicating,
// and the refusals are logged as a few summary lines.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { systemClock } from '../../src/lib/clock.js'
import { parsePublicKey, readKeyFile } from '../../src/lib/keys.js'
import type { WireManifest } from '../../src/transport/messages/files.js'
import { Link } from '../../src/transport/link.js'
import type { Message } from '../../src/transport/messages/index.js'
import { keyPairFromSecret } from '../../src/transport/noise.js'
import { watchEvents } from '../helpers/events.js'
import { Daemon, eventually, makeNetwork, py, readText, sh, startNetwork, teardown, waitState } from '../helpers/net.js'

afterEach(teardown)

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
    const downs = watchEvents(a.path('events'), ' beta (down|dead)', 60_000)
    await downs.ready

    const me = await readKeyFile(netw.node('mallory').keyFile)
    const link = new Link(net.connect(netw.node('alpha').port, '127.0.0.1'), {
      role: 'initiator', localId: 'mallory', staticKey: keyPairFromSecret(me.dhSecret), expectedKey: parsePublicKey(netw.node('alpha').publicKey).dh,
      clock: systemClock, keepaliveMs: 1000, downAfterMs: 5000, handshakeTimeoutMs: 5000
    })
    await new Promise(resolve => link.once('up', resolve))
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
    downs.stop()
    expect(await downs.line).toBe('')
  })
})
