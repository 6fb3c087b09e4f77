// select(), poll() and epoll on tree files, from separate processes.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Daemon, ROOT, eventually, makeNetwork, py, sh, startNetwork, teardown, waitState } from '../helpers/net.js'

const procs = new Set<ChildProcess>()
afterEach(async () => {
  for (const p of procs) p.kill('SIGKILL')
  procs.clear()
  await teardown()
})

async function pair (): Promise<[Daemon, Daemon]> {
  const netw = await makeNetwork(['alpha', 'beta'])
  const ds = await startNetwork(netw)
  const a = ds.get('alpha') as Daemon
  await waitState(a, 'beta')
  return [a, ds.get('beta') as Daemon]
}

/** The pollhandles the daemon holds, from a fresh SIGUSR1 status report. */
async function pollHandlesHeld (d: Daemon): Promise<number> {
  const reports = (): string[] => d.stderr.split('\n').slice(0, -1).filter(l => l.includes('status report'))
  const seen = reports().length
  process.kill(d.pid, 'SIGUSR1')
  await eventually(() => reports().length > seen, 'a status report')
  return (JSON.parse(reports().at(-1) as string) as { fuse: { pollHandles: number } }).fuse.pollHandles
}

/** Runs a Python program that prints lines; onLine answers them. */
function pyLines (code: string, args: string[], onLine: (line: string) => void | Promise<void>): Promise<string[]> {
  const p = spawn('python3', ['-c', code, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  procs.add(p)
  const lines: string[] = []
  let buf = ''
  p.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      lines.push(line)
      void onLine(line)
    }
  })
  return new Promise((resolve) => p.on('exit', () => resolve(lines)))
}

describe('readiness of tree files', () => {
  it('svc/NN is not ready with nothing waiting, and ready when a request arrives, for select, poll and epoll', async () => {
    const [a, b] = await pair()
    const lines = await pyLines(`
import os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)
for kind in ('select', 'poll', 'epoll'):
    if kind == 'select':
        wait = lambda t: select.select([fd], [], [], t)[0]
    elif kind == 'poll':
        p = select.poll(); p.register(fd, select.POLLIN); wait = lambda t: p.poll(t * 1000)
    else:
        e = select.epoll(); e.register(fd, select.EPOLLIN); wait = lambda t: e.poll(t)
    idle = bool(wait(0.2))
    print('waiting', kind, flush=True)
    t = time.monotonic()
    ready = bool(wait(10))
    took = time.monotonic() - t
    req = os.read(fd, 1000)
    os.write(fd, b'ok')
    print('result', kind, idle, ready, req.split(b'\\n')[1].decode(), flush=True)
`, [b.path('svc/21')], async (line) => {
      if (line.startsWith('waiting')) await sh(`printf ${line.split(' ')[1]} > ${a.path('peers/beta/svc/21')}`)
    })
    expect(lines.filter(l => l.startsWith('result'))).toEqual([
      'result select False True select',
      'result poll False True poll',
      'result epoll False True epoll'
    ])
  })

  it('a C program waits on five service files with select() and answers the right one', async () => {
    const [a, b] = await pair()
    const bin = path.join(b.spec.dir, 'select5')
    const cc = await sh(`cc -O2 -Wall -o ${bin} ${path.join(ROOT, 'test/fixtures/select5.c')}`)
    expect(cc.stderr).toBe('')
    const files = ['40', '41', '42', '43', '44'].map(n => b.path('svc', n))
    const p = spawn(bin, ['3', ...files], { stdio: ['ignore', 'pipe', 'inherit'] })
    procs.add(p)
    const exited = new Promise(resolve => p.on('exit', resolve))
    const out: string[] = []
    await new Promise<void>((resolve) => p.stdout?.on('data', (d: Buffer) => {
      out.push(...d.toString().trim().split('\n'))
      if (out.includes('ready')) resolve()
    }))
    const svc = a.path('peers/beta/svc')
    for (const n of ['42', '40', '44']) {
      expect((await sh(`printf hi-${n} > ${svc}/${n}; cat ${svc}/${n}`)).stdout).toBe(`answered ${n}: hi-${n}`)
    }
    await exited
    expect(out).toEqual(['ready', '42', '40', '44'])
  })

  it('non-blocking reads give EAGAIN; a request file is readable once its reply is there', async () => {
    const [a, b] = await pair()
    // A server that replies only when told to, after the caller has seen EAGAIN.
    const slow = spawn('python3', ['-c', 'import os,sys\nfd=os.open(sys.argv[1],os.O_RDWR)\nprint("ready",flush=True)\nd=os.read(fd,100)\nsys.stdin.readline()\nos.write(fd,b"late")', b.path('svc/22')], { stdio: ['pipe', 'pipe', 'inherit'] })
    procs.add(slow)
    await new Promise(resolve => slow.stdout?.once('data', resolve))
    const lines = await pyLines(`
import errno, os, select, sys
mnt_a, mnt_b = sys.argv[1], sys.argv[2]
def eagain(fd):
    try:
        os.read(fd, 100); return 'data'
    except BlockingIOError:
        return 'EAGAIN'
srv = os.open(mnt_b + '/svc/23', os.O_RDWR | os.O_NONBLOCK)
ev = os.open(mnt_a + '/events', os.O_RDONLY | os.O_NONBLOCK)
print('server', eagain(srv), 'events', eagain(ev), flush=True)
fd = os.open(mnt_a + '/peers/beta/svc/22', os.O_RDWR | os.O_NONBLOCK)
w = select.select([], [fd], [], 0)[1]
os.write(fd, b'are you there')
print('writable', bool(w), 'before', eagain(fd), bool(select.select([fd], [], [], 0)[0]), flush=True)
print('after', bool(select.select([fd], [], [], 10)[0]), os.read(fd, 100).decode(), flush=True)
`, [a.spec.mnt, b.spec.mnt], (line) => {
      if (line.startsWith('writable')) slow.stdin?.write('reply now\n')
    })
    expect(lines).toEqual([
      'server EAGAIN events EAGAIN',
      'writable True before EAGAIN False',
      'after True late'
    ])
  })

  it('events wakes a poller when a peer goes down', async () => {
    const [a, b] = await pair()
    const lines = await pyLines(`
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
print('waiting', flush=True)
r = select.select([fd], [], [], 15)[0]
print('woken', bool(r), os.read(fd, 4096).decode().split()[1:3] if r else '')
`, [a.path('events')], async (line) => {
      if (line === 'waiting') {
        // Kill beta only once the poller waits in select (its pollhandle is held).
        await eventually(async () => await pollHandlesHeld(a) > 0, 'the poller waiting in select')
        await b.kill('SIGKILL')
      }
    })
    expect(lines.at(-1)).toBe("woken True ['beta', 'down']")
  })

  it('10,000 poll cycles leave no pollhandle behind and do not grow the daemon', async () => {
    const [a] = await pair()
    const rss = async (): Promise<number> => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${a.pid}/status`, 'utf8'))?.[1])
    const cycles = `
import os, select, sys
n = int(sys.argv[2])
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)
p = select.poll(); p.register(fd, select.POLLIN)
for i in range(n): p.poll(0.5)
os.close(fd)
print('done')
`
    expect((await py(cycles, [a.path('svc/24'), '1000'], 60_000)).stdout.trim()).toBe('done')
    const before = await rss()
    expect((await py(cycles, [a.path('svc/24'), '10000'], 120_000)).stdout.trim()).toBe('done')
    const after = await rss()
    process.kill(a.pid, 'SIGUSR1')
    await eventually(() => a.stderr.includes('status report'), 'status report')
    const report = JSON.parse(a.stderr.split('\n').filter(l => l.includes('status report')).at(-1) as string)
    expect(report.fuse).toEqual({ openHandles: 0, pollHandles: 0 })
    expect(after - before).toBeLessThan(8 * 1024)
  }, 180_000)
})
