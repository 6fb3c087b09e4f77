// Managed files at a size where sending every manifest every round broke
// down: 2,000 files on a line alpha - beta - gamma, and a node cut off
// during 500 updates that catches up once it is back.
import { afterEach, describe, expect, it } from 'vitest'
import { EventRecorder } from '../helpers/events.js'
import { Daemon, eventually, makeNetwork, py, readText, sh, startNetwork, teardown, waitState, type Network } from '../helpers/net.js'

afterEach(async () => {
  EventRecorder.stopAll()
  await teardown()
})

/** Waits until the recorder has seen `file` events for n distinct names matching re. */
async function files (rec: EventRecorder, re: RegExp, n: number, timeoutMs: number): Promise<void> {
  await eventually(() => new Set(rec.matching(re).map(l => l.split(' ')[3])).size >= n, `${n} file events`, timeoutMs, 250)
}

async function trustAll (netw: Network): Promise<void> {
  const keys = [...netw.nodes.values()].map(n => `"${n.publicKey}"`).join(', ')
  for (const n of netw.nodes.values()) await sh(`sed -i '0,/^\\[\\[peer\\]\\]/s//files_trust = [${keys}]\\n[[peer]]/' ${n.config}`)
}

async function line (): Promise<{ netw: Network, a: Daemon, b: Daemon, g: Daemon }> {
  const ids = ['alpha', 'beta', 'gamma']
  const netw = await makeNetwork(ids, {
    links: [['alpha', 'beta'], ['beta', 'gamma']],
    extra: Object.fromEntries(ids.map(id => [id, 'gossip_ms = 500\n']))
  })
  await trustAll(netw)
  const ds = await startNetwork(netw)
  const [a, b, g] = ids.map(id => ds.get(id) as Daemon)
  await waitState(b, 'alpha')
  await waitState(b, 'gamma')
  return { netw, a, b, g }
}

/** Writes files dir/f0..f(n-1) with the given content prefix, one open/write/close each, as a program would. */
async function writeMany (root: string, n: number, prefix: string): Promise<void> {
  const r = await py(`
import os, sys
root, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    d = os.path.join(root, 'd%02d' % (i % 20))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'f%04d' % i), 'w') as f: f.write('%s %d\\n' % (prefix, i))
`, [root, String(n), prefix], 120_000)
  expect(r.stderr).toBe('')
}

/** One digest of every managed file's name and bytes, read through the mount. */
async function digest (root: string): Promise<string> {
  const r = await py(`
import hashlib, os, sys
h, root, n = hashlib.sha256(), sys.argv[1], 0
for dp, dns, fns in os.walk(root):
    dns[:] = sorted(d for d in dns if not d.startswith('.'))
    for f in sorted(fns):
        if f.startswith('.'): continue
        p = os.path.join(dp, f); h.update(p[len(root):].encode() + b'\\0' + open(p, 'rb').read()); n += 1
print(n, h.hexdigest())
`, [root], 60_000)
  return r.stdout.trim()
}

describe('managed files at scale', () => {
  it('2,000 files written on alpha arrive on beta and gamma, byte-identical', async () => {
    const { a, b, g } = await line()
    const onGamma = await EventRecorder.open(g.path('events'))
    await writeMany(a.path('files'), 2000, 'content of')
    await files(onGamma, / gamma file d\d\d\/f\d{4}$/, 2000, 90_000)
    const want = await digest(a.path('files'))
    expect(want).toMatch(/^2000 /)
    expect(await digest(b.path('files'))).toBe(want)
    expect(await digest(g.path('files'))).toBe(want)
    await eventually(async () => (await readText(g.path('files/.peerfs-status'))).split('\n').filter(l => l.endsWith('\tok')).length === 2000, 'status on gamma lists 2,000', 30_000)
    // Bounded by its own waits, not by vitest's default of 60 s, which a loaded machine ran past.
  }, 150_000)

  it('a node cut off during 500 updates catches up when it is back', async () => {
    const { a, b, g } = await line()
    const onGamma = await EventRecorder.open(g.path('events'))
    await writeMany(a.path('files'), 500, 'v1')
    await files(onGamma, / gamma file d\d\d\/f\d{4}$/, 500, 60_000)
    await sh(`echo disconnect > ${b.path('peers/gamma/ctl')}`)
    await waitState(b, 'gamma', 'down')
    const onBeta = await EventRecorder.open(b.path('events'))
    await writeMany(a.path('files'), 500, 'v2')
    await files(onBeta, / beta file d\d\d\/f\d{4}$/, 500, 60_000)
    await sh(`rm ${a.path('files/d00/f0000')} ${a.path('files/d01/f0001')}`)
    await eventually(async () => (await sh(`ls ${b.path('files/d00/f0000')}`)).code !== 0, 'removal on beta', 15_000)
    expect(await readText(g.path('files/d05/f0005'))).toBe('v1 5\n')
    await sh(`echo reconnect > ${b.path('peers/gamma/ctl')}`)
    const want = await digest(a.path('files'))
    expect(want).toMatch(/^498 /)
    await eventually(async () => await digest(g.path('files')) === want, 'gamma caught up', 60_000, 500)
    expect(await readText(g.path('files/d05/f0005'))).toBe('v2 5\n')
  }, 150_000)
})
