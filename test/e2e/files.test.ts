// Managed files on real mounts, on a line alpha - beta - gamma: files cross
// the middle node, the newest version wins everywhere, deletions spread,
// a node that was down catches up, and an untrusted signer is refused.
import { readFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { EventRecorder } from '../helpers/events.js'
import { Daemon, eventually, makeNetwork, readText, sh, startNetwork, teardown, type Network } from '../helpers/net.js'

afterEach(async () => {
  EventRecorder.stopAll()
  await teardown()
})

const text = async (d: Daemon, name: string): Promise<string | undefined> =>
  await readFile(d.path('files', name), 'utf8').catch(() => undefined)

/** Puts files_trust = [the given nodes' keys] into a node's config. */
async function trust (netw: Network, node: string, ids: string[]): Promise<void> {
  const keys = ids.map(id => `"${netw.node(id).publicKey}"`).join(', ')
  await sh(`sed -i '0,/^\\[\\[peer\\]\\]/s//files_trust = [${keys}]\\n[[peer]]/' ${netw.node(node).config}`)
}

/** alpha - beta - gamma; by default a node trusts only its own peers, so the line shares one trust list. */
async function line () {
  const netw = await makeNetwork(['alpha', 'beta', 'gamma'], {
    links: [['alpha', 'beta'], ['beta', 'gamma']],
    extra: { alpha: 'gossip_ms = 300\n', beta: 'gossip_ms = 300\n', gamma: 'gossip_ms = 300\n' }
  })
  for (const id of ['alpha', 'beta', 'gamma']) await trust(netw, id, ['alpha', 'beta', 'gamma'])
  const ds = await startNetwork(netw)
  const [a, b, g] = ['alpha', 'beta', 'gamma'].map(id => ds.get(id) as Daemon)
  await eventually(async () => (await readText(b.path('status'))).includes('peers: 2 (2 up)'), 'line up', 15_000)
  return { netw, a, b, g }
}

describe('managed files', () => {
  it('a file written on alpha appears on gamma, byte-identical, through beta; a newer write on gamma comes back', async () => {
    const { netw, a, b, g } = await line()
    const events = await EventRecorder.open(g.path('events'))
    await sh(`head -c 300000 /dev/urandom > ${netw.dir}/blob && cp ${netw.dir}/blob ${a.path('files/blob')}`)
    await sh(`mkdir -p ${a.path('files/conf')} && echo v1 > ${a.path('files/conf/app.conf')}`)
    await eventually(async () => await text(g, 'conf/app.conf') === 'v1\n', 'conf on gamma', 15_000)
    await eventually(async () => (await sh(`cmp ${netw.dir}/blob ${g.path('files/blob')}`)).code === 0, 'blob on gamma', 15_000)
    expect(await events.waitFor(/ file conf\/app\.conf$/)).toMatch(/^\d{13} gamma file conf\/app\.conf$/)
    // beta knows alpha by name; gamma, which does not, shows alpha's key.
    await eventually(async () => /^conf\/app\.conf\t\d+\t3\talpha\t[0-9a-f]{64}\tok$/m.test(await readText(b.path('files/.peerfs-status'))), 'status on beta')
    // echo > truncates first (on the open handle); only the final content is published.
    await sh(`echo v2 > ${g.path('files/conf/app.conf')}`)
    await eventually(async () => await text(a, 'conf/app.conf') === 'v2\n', 'v2 back on alpha', 15_000)
    expect(g.stderr.match(/"name":"conf\/app\.conf"[^\n]*published managed file/g)).toHaveLength(1)
    expect(await text(b, 'conf/app.conf')).toBe('v2\n')
    await eventually(async () => /^conf\/app\.conf\t\d+\t3\tgamma\t[0-9a-f]{64}\tok$/m.test(await readText(b.path('files/.peerfs-status'))), 'signed by gamma')
  })

  it('a node down during an update catches up, and its older version never replaces the newer one', async () => {
    const { netw, a, b, g } = await line()
    await sh(`echo old > ${a.path('files/x')}`)
    await eventually(async () => await text(g, 'x') === 'old\n', 'old on gamma', 15_000)
    await g.kill('SIGKILL')
    await sh(`echo new > ${a.path('files/x')}`)
    await eventually(async () => await text(b, 'x') === 'new\n', 'new on beta', 15_000)
    const g2 = new Daemon(netw.node('gamma'))
    await g2.start()
    // gamma still holds "old" at first and offers it; it must lose.
    await eventually(async () => await text(g2, 'x') === 'new\n', 'gamma caught up', 15_000)
    // Anything gamma offered beta before this marker has reached alpha by the time the marker has.
    await sh(`echo after > ${g2.path('files/marker')}`)
    await eventually(async () => await text(a, 'marker') === 'after\n', 'marker from gamma on alpha', 15_000)
    expect(await text(a, 'x')).toBe('new\n')
    expect(await text(b, 'x')).toBe('new\n')
  })

  it('a delete on beta disappears everywhere', async () => {
    const { a, b, g } = await line()
    await sh(`echo doomed > ${a.path('files/doomed')}`)
    await eventually(async () => await text(g, 'doomed') === 'doomed\n', 'on gamma', 15_000)
    expect((await sh(`rm ${b.path('files/doomed')}`)).code).toBe(0)
    await eventually(async () => await text(a, 'doomed') === undefined && await text(g, 'doomed') === undefined, 'gone everywhere', 15_000)
    await eventually(async () => /^doomed\t\d+\tdeleted\tbeta\t-\tdeleted$/m.test(await readText(a.path('files/.peerfs-status'))), 'tombstone listed on alpha')
    await eventually(async () => /^doomed\t\d+\tdeleted\t/m.test(await readText(g.path('files/.peerfs-status'))), 'tombstone listed on gamma')
  })

  it('refuses a file signed by an untrusted key', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'mallory'], {
      links: [['alpha', 'beta'], ['beta', 'mallory']],
      extra: { alpha: 'gossip_ms = 300\n', beta: 'gossip_ms = 300\n', mallory: 'gossip_ms = 300\n' }
    })
    await trust(netw, 'beta', ['alpha', 'beta'])
    const ds = await startNetwork(netw)
    const [a, b, m] = ['alpha', 'beta', 'mallory'].map(id => ds.get(id) as Daemon)
    await eventually(async () => (await readText(b.path('status'))).includes('peers: 2 (2 up)'), 'up', 15_000)
    await sh(`echo evil > ${m.path('files/evil')}`)
    await sh(`echo fine > ${a.path('files/fine')}`)
    await eventually(async () => await text(b, 'fine') === 'fine\n', 'trusted file arrives', 15_000)
    await eventually(() => b.stderr.includes('untrusted key'), 'refusal logged', 15_000)
    expect(await text(b, 'evil')).toBeUndefined()
    expect(await text(a, 'evil')).toBeUndefined()
  })
})
