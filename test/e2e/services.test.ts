// Services on real mounts: servers are Python processes reading svc/NN on
// one node, callers are sh and Python on another.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Daemon, ROOT, eventually, makeNetwork, py, readText, sh, startNetwork, startPair, teardown, waitState } from '../helpers/net.js'

const SERVER = path.join(ROOT, 'test/fixtures/server.py')
const servers = new Set<ChildProcess>()

afterEach(async () => {
  for (const s of servers) s.kill('SIGKILL')
  servers.clear()
  await teardown()
})

/** Starts the fixture server on a mount; resolves when it has opened svc/NN. */
async function startServer (d: Daemon, svc: string, log: string, args: string[] = []): Promise<ChildProcess> {
  const p = spawn('python3', [SERVER, d.path('svc', svc), log, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  servers.add(p)
  await new Promise<void>((resolve, reject) => {
    p.stdout?.once('data', () => resolve())
    p.once('exit', (code) => reject(new Error(`server exited ${code}`)))
  })
  return p
}

const errnoOf = `
import errno, os, sys
def call(f, data, read=True):
    fd = os.open(f, os.O_RDWR)
    try:
        os.write(fd, data)
        return os.read(fd, 1 << 20).decode() if read else ''
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        try: os.close(fd)
        except OSError: pass
`

describe('services', () => {
  it('a Python server upper-cases requests and sees the header "alpha 6"', async () => {
    const { netw, a, b } = await startPair()
    const log = path.join(netw.dir, 'server.log')
    await startServer(b, '09', log)
    const r = await sh(`cd ${a.path('peers/beta/svc')} && printf hello! > 09; cat 09`)
    expect(r).toMatchObject({ code: 0, stdout: 'HELLO!' })
    expect(await readFile(log, 'utf8')).toBe('alpha 6 hello!\n')
    expect(await readText(a.path('peers/beta/svc/02'))).toMatch(/^services: 01 02 09$/m)
  })

  it('passes binary payloads unchanged both ways', async () => {
    const { a, b } = await startPair()
    const echo = spawn('python3', ['-c', `
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
print('ready', flush=True)
while True:
    d = os.read(fd, 1 << 21)
    head, _, payload = d.partition(b'\\n')
    n = int(head.split()[1])
    while len(payload) < n: payload += os.read(fd, 1 << 21)
    os.write(fd, payload[::-1])
`, b.path('svc/12')], { stdio: ['ignore', 'pipe', 'inherit'] })
    servers.add(echo)
    await new Promise(resolve => echo.stdout?.once('data', resolve))
    const r = await py(`
import os, sys, hashlib
data = bytes(range(256)) * 4000 + b'\\n\\x00end'
fd = os.open(sys.argv[1], os.O_RDWR)
os.write(fd, data)
got = b''
while True:
    b = os.read(fd, 1 << 20)
    if not b: break
    got += b
print(got == data[::-1], len(got))
`, [a.path('peers/beta/svc/12')])
    expect(r.stdout.trim()).toBe('True 1024005')
  })

  it('shares the load of one service among two servers, each reply to its own caller', async () => {
    const { netw, a, b } = await startPair()
    const logs = [path.join(netw.dir, 's1.log'), path.join(netw.dir, 's2.log')]
    await startServer(b, '20', logs[0], ['--tag', 'one:', '--delay', '0.01'])
    await startServer(b, '20', logs[1], ['--tag', 'two:', '--delay', '0.01'])
    const r = await py(`
import os, sys, threading
f = sys.argv[1]
res = {}
def one(i):
    fd = os.open(f, os.O_RDWR)
    os.write(fd, b'req-%03d' % i)
    res[i] = os.read(fd, 100).decode()
    os.close(fd)
ts = [threading.Thread(target=one, args=(i,)) for i in range(100)]
[t.start() for t in ts]; [t.join() for t in ts]
ok = all(res[i].split(':')[1] == 'REQ-%03d' % i for i in range(100))
print(ok, sum(1 for v in res.values() if v.startswith('one:')), sum(1 for v in res.values() if v.startswith('two:')))
`, [a.path('peers/beta/svc/20')], 60_000)
    const [ok, one, two] = r.stdout.trim().split(' ')
    expect(ok).toBe('True')
    expect(Number(one) + Number(two)).toBe(100)
    expect(Number(one)).toBeGreaterThan(0)
    expect(Number(two)).toBeGreaterThan(0)
  })

  it('answers ECONNREFUSED, ECONNRESET, ETIMEDOUT, EACCES and EMSGSIZE', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'gamma'], {
      extra: { beta: 'max_request_bytes = 1000\n[[service]]\nid = 30\nallow = ["gamma"]\n' },
      peer: { 'alpha>beta': { extra: 'request_timeout_ms = 1500' } }
    })
    const ds = await startNetwork(netw)
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    await waitState(ds.get('gamma') as Daemon, 'beta')
    // 31: a server that closes without replying; 32: one that never replies.
    const resetter = spawn('python3', ['-c', 'import os,sys\nfd=os.open(sys.argv[1],os.O_RDWR)\nprint("ready",flush=True)\nos.read(fd,100)\nos.close(fd)', b.path('svc/31')], { stdio: ['ignore', 'pipe', 'inherit'] })
    const sleeper = spawn('python3', ['-c', 'import os,sys,time\nfd=os.open(sys.argv[1],os.O_RDWR)\nprint("ready",flush=True)\nos.read(fd,100)\ntime.sleep(60)', b.path('svc/32')], { stdio: ['ignore', 'pipe', 'inherit'] })
    servers.add(resetter)
    servers.add(sleeper)
    await Promise.all([resetter, sleeper].map(async p => await new Promise(resolve => p.stdout?.once('data', resolve))))
    await startServer(b, '30', path.join(netw.dir, 's30.log'))
    await startServer((ds.get('gamma') as Daemon), '09', path.join(netw.dir, 'g.log'))
    const svc = a.path('peers/beta/svc')
    const r = await py(`${errnoOf}
d = sys.argv[1]
print(call(d + '/40', b'x'))
print(call(d + '/31', b'x'))
print(call(d + '/32', b'x'))
print(call(d + '/30', b'x'))
print(call(d + '/01', b'x' * 2000))
print(call(d + '/01', b'x' * (2 << 20)))
`, [svc], 30_000)
    expect(r.stdout.trim().split('\n')).toEqual(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EACCES', 'EMSGSIZE', 'EMSGSIZE'])
    // gamma is allowed on 30.
    expect((await sh(`cd ${(ds.get('gamma') as Daemon).path('peers/beta/svc')} && printf ok > 30; cat 30`)).stdout).toBe('OK')
  })
})

describe('deferred requests', () => {
  it('written while the peer is down, writer killed -9, then both up, then a server: each once, in order', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    let a = new Daemon(netw.node('alpha'))
    await a.start()
    for (let i = 1; i <= 5; i++) {
      expect((await sh(`echo job-${i} > ${a.path('peers/beta/defer/09')}`)).code).toBe(0)
    }
    expect(await readText(a.path('peers/beta/status'))).toMatch(/^deferred: 5$/m)
    await a.kill('SIGKILL')
    a = new Daemon(netw.node('alpha'))
    const b = new Daemon(netw.node('beta'))
    await Promise.all([a.start(), b.start()])
    await waitState(a, 'beta')
    expect(await readText(a.path('peers/beta/status'))).toMatch(/^deferred: 5$/m)
    const log = path.join(netw.dir, 'server.log')
    await startServer(b, '09', log)
    await eventually(async () => /^deferred: 0$/m.test(await readText(a.path('peers/beta/status'))), 'all delivered', 30_000)
    expect(await readFile(log, 'utf8')).toBe([1, 2, 3, 4, 5].map(i => `alpha 6 job-${i}`).join('\n') + '\n')
    const outcomes = await readText(a.path('peers/beta/defer/log'))
    expect(outcomes.trim().split('\n').map(l => l.split(' ').slice(1, 5).join(' '))).toEqual(
      [1, 2, 3, 4, 5].map(i => `#${i} svc 09 ok`))
    expect(outcomes).toContain('"JOB-1\\n"')
  })

  it('survives kill -9 of the receiver in the middle of delivery: each once, in order', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    let b = ds.get('beta') as Daemon
    await waitState(a, 'beta')
    const log = path.join(netw.dir, 'server.log')
    const s1 = await startServer(b, '09', log, ['--delay', '0.4'])
    for (let i = 1; i <= 5; i++) await sh(`echo job-${i} > ${a.path('peers/beta/defer/09')}`)
    await eventually(async () => (await readFile(log, 'utf8')).split('\n').length > 2, 'two seen', 20_000)
    await b.kill('SIGKILL')
    s1.kill('SIGKILL')
    b = new Daemon(netw.node('beta'))
    await b.start()
    await startServer(b, '09', log)
    await eventually(async () => /^deferred: 0$/m.test(await readText(a.path('peers/beta/status'))), 'all delivered', 30_000)
    const seen = (await readFile(log, 'utf8')).trim().split('\n')
    expect(seen).toEqual([1, 2, 3, 4, 5].map(i => `alpha 6 job-${i}`))
    // The one its server held when beta died has an outcome, not a second delivery.
    const outcomes = await readText(a.path('peers/beta/defer/log'))
    expect(outcomes.trim().split('\n')).toHaveLength(5)
  })

  it('fails close with ENOSPC when the spool disk is full, and loses nothing it accepted', async (ctx) => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const tiny = path.join(netw.dir, 'tiny')
    const m = await sh(`mkdir -p ${tiny} && mount -t tmpfs -o size=256k tmpfs ${tiny}`)
    if (m.code !== 0) ctx.skip()
    try {
      await sh(`sed -i 's|^state = "state"|state = "${tiny}"|' ${netw.node('alpha').config}`)
      const a = new Daemon(netw.node('alpha'))
      await a.start()
      const r = await py(`
import errno, os, sys
ok = 0
for i in range(20):
    fd = os.open(sys.argv[1], os.O_WRONLY)
    os.write(fd, bytes([65 + i]) * 40000)
    try:
        os.close(fd); ok += 1
    except OSError as e:
        print(ok, errno.errorcode[e.errno]); break
`, [a.path('peers/beta/defer/09')])
      const [accepted, err] = r.stdout.trim().split(' ')
      expect(err).toBe('ENOSPC')
      expect(Number(accepted)).toBeGreaterThan(0)
      expect(await readText(a.path('peers/beta/status'))).toMatch(new RegExp(`^deferred: ${accepted}$`, 'm'))
      // Everything accepted is delivered once beta and a server are there.
      const b = new Daemon(netw.node('beta'))
      await b.start()
      const log = path.join(netw.dir, 'server.log')
      await startServer(b, '09', log)
      await eventually(async () => /^deferred: 0$/m.test(await readText(a.path('peers/beta/status'))), 'delivered', 30_000)
      expect((await readFile(log, 'utf8')).trim().split('\n')).toHaveLength(Number(accepted))
      await a.kill('SIGTERM')
    } finally {
      await sh(`umount -l ${tiny}`)
    }
  })

  it('refuses an oversized deferred request at write time', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const a = new Daemon(netw.node('alpha'))
    await a.start()
    // The kernel turns the failing piece of one big write(2) into a short
    // write; the error then comes from close, and nothing is queued.
    const r = await py(`
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
data = b'x' * (2 << 20)
try:
    while data:
        data = data[os.write(fd, data):]
    print('written')
except OSError as e:
    print('write', errno.errorcode[e.errno])
try:
    os.close(fd); print('closed')
except OSError as e:
    print('close', errno.errorcode[e.errno])
`, [a.path('peers/beta/defer/09')])
    expect(r.stdout.trim().split('\n')).toEqual(['write EMSGSIZE', 'close EMSGSIZE'])
    expect(await readText(a.path('peers/beta/status'))).toMatch(/^deferred: 0$/m)
  })
})
