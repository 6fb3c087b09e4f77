// pkt/NN end to end across several peers: in-band up/down records when a
// peer is killed and restarted, `*` to every up peer, the errno of each
// write that cannot go, and examples/pkt-neighbours.py on three nodes.
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Daemon, ROOT, eventually, makeNetwork, py, readText, sh, startNetwork, teardown, waitState } from '../helpers/net.js'

const procs = new Set<ChildProcess>()
afterEach(async () => {
  for (const p of procs) p.kill('SIGKILL')
  procs.clear()
  await teardown()
})

interface Lines { lines: string[], exited: Promise<number | null> }

function run (cmd: string, args: string[]): Lines {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  procs.add(proc)
  const lines: string[] = []
  let buf = ''
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i))
      buf = buf.slice(i + 1)
    }
  })
  return { lines, exited: new Promise((resolve) => proc.on('exit', (code) => resolve(code))) }
}

/** Prints each record it reads from pkt/NN as one line: `<peer> up|down` or `<peer> <payload>`. */
const READER = `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print('open', flush=True)
while True:
    head, _, body = os.read(fd, 1 << 17).partition(b'\\n')
    peer, what = head.decode().split(' ')
    print(peer, what if what in ('up', 'down') else body.decode(), flush=True)
`

async function waitLines (p: Lines, want: (lines: string[]) => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  await eventually(() => want(p.lines), `${what}; got ${JSON.stringify(p.lines.slice(-6))}`, timeoutMs, 20)
}

async function waitReader (d: Daemon, peer: string, chan: string): Promise<void> {
  await eventually(async () => new RegExp(`^pkt_channels: .*\\b${chan}\\b`, 'm').test(await readText(d.path('peers', peer, 'status'))), `${d.spec.id} sees a reader of pkt/${chan} on ${peer}`)
}

describe('pkt/NN across peers', () => {
  it('a reader gets in-band down and up records when a peer is killed and restarted', async () => {
    const ds = await startNetwork(await makeNetwork(['alpha', 'beta']))
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    const r = run('python3', ['-c', READER, a.path('pkt/05')])
    await waitLines(r, l => l.includes('beta up'), 'beta up at open')
    await b.kill('SIGKILL')
    await waitLines(r, l => l.includes('beta down'), 'beta down')
    await b.start()
    await waitLines(r, l => l.filter(x => x === 'beta up').length === 2, 'beta up again')
    expect(r.lines).toEqual(['open', 'beta up', 'beta down', 'beta up'])
  })

  it('`*` reaches every peer that is up and reads the channel; one that is down is skipped', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'gamma', 'delta'], { links: [['alpha', 'beta'], ['alpha', 'gamma'], ['alpha', 'delta']] })
    const ds = await startNetwork(netw, ['alpha', 'beta', 'gamma'])
    const a = ds.get('alpha') as Daemon
    const readers = ['beta', 'gamma'].map(id => run('python3', ['-c', READER, (ds.get(id) as Daemon).path('pkt/05')]))
    for (const r of readers) await waitLines(r, l => l.includes('alpha up'), 'alpha up')
    await waitReader(a, 'beta', '05')
    await waitReader(a, 'gamma', '05')
    const w = await sh(`printf '* 5\\nhello' > ${a.path('pkt/05')}`)
    expect(w).toMatchObject({ code: 0, stderr: '' })
    for (const r of readers) await waitLines(r, l => l.includes('alpha hello'), 'the packet')
    for (const r of readers) expect(r.lines).toEqual(['open', 'alpha up', 'alpha hello'])
    for (const id of ['beta', 'gamma']) expect(await readText(a.path('peers', id, 'status'))).toMatch(/^pkt_out: 1$/m)
    expect(await readText(a.path('peers/delta/status'))).toMatch(/^pkt_out: 0$/m)
  })

  it('a write that cannot go fails with its errno: ENOENT, EHOSTUNREACH, ECONNREFUSED, EMSGSIZE, EINVAL; whole records before it are taken', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'delta'], { links: [['alpha', 'beta'], ['alpha', 'delta']], peer: { 'alpha>beta': { alias: 'ET' } }, extra: { alpha: 'max_packet_bytes = 1000\n' } })
    const ds = await startNetwork(netw, ['alpha', 'beta'])
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    const r = run('python3', ['-c', READER, b.path('pkt/05')])
    await waitLines(r, l => l.includes('alpha up'), 'alpha up')
    await waitReader(a, 'beta', '05')
    const out = await py(`
import errno, os, sys
def attempt(chan, rec):
    fd = os.open(sys.argv[1] + '/pkt/' + chan, os.O_WRONLY)
    try:
        return str(os.write(fd, rec))
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        os.close(fd)
print(attempt('05', b'nobody 1\\nx'))
print(attempt('05', b'delta 1\\nx'))
print(attempt('07', b'beta 1\\nx'))
print(attempt('07', b'* 1\\nx'))
print(attempt('05', b'beta 1001\\n' + b'x' * 1001))
print(attempt('05', b'beta 10\\nabc'))
print(attempt('05', b'beta\\nabc'))
print(attempt('05', b'beta 3\\none' + b'beta 10\\nab'))
print(attempt('05', b'ET 3\\ntwo' + b'nobody 1\\nx'))
`, [a.spec.mnt])
    expect(out.stderr).toBe('')
    expect(out.stdout.trim().split('\n')).toEqual(['ENOENT', 'EHOSTUNREACH', 'ECONNREFUSED', 'ECONNREFUSED', 'EMSGSIZE', 'EINVAL', 'EINVAL', '10', '8'])
    await waitLines(r, l => l.includes('alpha two'), 'the packets before the bad records')
    expect(r.lines).toEqual(['open', 'alpha up', 'alpha one', 'alpha two'])
  })

  it('examples/pkt-neighbours.py exchanges pings and pongs with every neighbour over one select() loop', async () => {
    const ds = await startNetwork(await makeNetwork(['alpha', 'beta', 'gamma']))
    const ids = ['alpha', 'beta', 'gamma']
    for (const id of ids) for (const other of ids) if (other !== id) await waitState(ds.get(id) as Daemon, other)
    const example = path.join(ROOT, 'examples/pkt-neighbours.py')
    const progs = ids.map(id => run('python3', [example, (ds.get(id) as Daemon).spec.mnt, '12', '--rounds', '5', '--every', '0.1', '--expect', ids.filter(x => x !== id).join(','), '--linger', '3', '--timeout', '30']))
    expect(await Promise.all(progs.map(async p => await p.exited))).toEqual([0, 0, 0])
    expect(progs[0].lines.at(-1)).toMatch(/^done beta:[5-9] gamma:[5-9]$/)
    expect(progs[1].lines).toContain('up alpha')
    expect(progs[1].lines.some(l => /^pong gamma \d+$/.test(l))).toBe(true)
  })
})
