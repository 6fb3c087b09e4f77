// pkt/NN end to end between two daemons: select() and poll() readiness
// with the window, two readers sharing a channel, and 100,000 packets in
// order. Programs are Python in their own processes, as users run them.
import { spawn, type ChildProcess } from 'node:child_process'
import { afterEach, describe, expect, it } from 'vitest'
import { Daemon, eventually, makeNetwork, py, readText, startNetwork, teardown, waitState } from '../helpers/net.js'

const procs = new Set<ChildProcess>()
afterEach(async () => {
  for (const p of procs) p.kill('SIGKILL')
  procs.clear()
  await teardown()
})

async function pair (extra: Record<string, string> = {}): Promise<[Daemon, Daemon]> {
  const ds = await startNetwork(await makeNetwork(['alpha', 'beta'], { extra }))
  const a = ds.get('alpha') as Daemon
  await waitState(a, 'beta')
  return [a, ds.get('beta') as Daemon]
}

/** Waits until d knows that peer has a reader on pkt/chan. */
async function waitReader (d: Daemon, peer: string, chan: string): Promise<void> {
  await eventually(async () => new RegExp(`^pkt_channels: .*\\b${chan}\\b`, 'm').test(await readText(d.path('peers', peer, 'status'))), `${d.spec.id} sees a reader of pkt/${chan} on ${peer}`)
}

async function status (d: Daemon, peer: string): Promise<Record<string, string>> {
  const text = await readText(d.path('peers', peer, 'status'))
  return Object.fromEntries(text.trim().split('\n').map(l => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]))
}

interface Lines { lines: string[], exited: Promise<number | null>, send: (line: string) => void, proc: ChildProcess }

/** A Python program in its own process; its stdout lines are collected, stdin lines sent. */
function pyProc (code: string, args: string[]): Lines {
  const proc = spawn('python3', ['-c', code, ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
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
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  return { lines, exited, proc, send: (line) => proc.stdin?.write(line + '\n') }
}

async function line (p: Lines, text: string | RegExp, timeoutMs = 20_000): Promise<string> {
  const match = (l: string): boolean => typeof text === 'string' ? l === text : text.test(l)
  await eventually(() => p.lines.some(match), `a line ${String(text)}; got ${JSON.stringify(p.lines.slice(-5))}`, timeoutMs, 20)
  return p.lines.find(match) as string
}

// Python helpers every program here starts with.
const PRELUDE = `
import errno, os, select, signal, sys, time
def drain(fd):
    out = []
    while True:
        try:
            out.append(os.read(fd, 1 << 17))
        except BlockingIOError:
            return out
def send_when_read(fd, rec, limit=10):
    # The first write after the peer's reader opened may race the news of it.
    end = time.monotonic() + limit
    while True:
        try:
            return os.write(fd, rec)
        except ConnectionRefusedError:
            if time.monotonic() > end: raise
            time.sleep(0.02)
`

describe('pkt/NN readiness and flow control', () => {
  it('select() reports readable when a packet arrives, and writable only while the window allows', async () => {
    const [a, b] = await pair({ beta: 'pkt_window_bytes = 4096\n' })
    const r = await py(PRELUDE + `
fa = os.open(sys.argv[1] + '/pkt/05', os.O_RDWR | os.O_NONBLOCK)
fb = os.open(sys.argv[2] + '/pkt/05', os.O_RDWR | os.O_NONBLOCK)
print('first', drain(fb))
print('idle readable', bool(select.select([fb], [], [], 0.2)[0]))
send_when_read(fa, b'beta 5\\nhello')
print('readable', bool(select.select([fb], [], [], 10)[0]), os.read(fb, 1000))
print('writable', bool(select.select([], [fa], [], 0)[1]))
n = 0
while n < 1000:
    try:
        os.write(fa, b'beta 64\\n' + b'x' * 64); n += 1
    except BlockingIOError:
        break
print('full after', n, 'writable', bool(select.select([], [fa], [], 0.3)[1]))
got = len(drain(fb))
print('drained', got == n, 'writable', bool(select.select([], [fa], [], 10)[1]))
`, [a.spec.mnt, b.spec.mnt])
    expect(r.stderr).toBe('')
    // A window of 4096 bytes, 128 per packet (64 + 64 overhead) after the
    // first (69): taken while under the window, so 32 more.
    expect(r.stdout.trim().split('\n')).toEqual([
      "first [b'alpha up\\n']",
      'idle readable False',
      "readable True b'alpha 5\\nhello'",
      'writable True',
      'full after 32 writable False',
      'drained True writable True'
    ])
    expect(await status(a, 'beta')).toMatchObject({ pkt_out: '33', pkt_writes_waited: '1' })
  })

  it('poll() POLLOUT clears when the reader stops reading and returns when it resumes', async () => {
    const [a, b] = await pair({ beta: 'pkt_window_bytes = 8192\n' })
    const reader = pyProc(`
import os, sys
fd = os.open(sys.argv[1] + '/pkt/06', os.O_RDONLY)
print('open', flush=True)
n = 0
while True:
    if os.read(fd, 1 << 17).endswith(b'\\n'): continue
    n += 1
`, [b.spec.mnt])
    await line(reader, 'open')
    await waitReader(a, 'beta', '06')
    const writer = pyProc(PRELUDE + `
fd = os.open(sys.argv[1] + '/pkt/06', os.O_RDWR | os.O_NONBLOCK)
p = select.poll(); p.register(fd, select.POLLOUT)
def pollout(ms):
    return any(ev & select.POLLOUT for _, ev in p.poll(ms))
def put():
    try:
        os.write(fd, b'beta 100\\n' + b'y' * 100); return True
    except BlockingIOError:
        return False
sent = 0
while sent < 2000:
    if not pollout(10000): print('stuck', sent, flush=True); sys.exit(1)
    sent += put()
print('flowing', sent, flush=True)
sys.stdin.readline()
for i in range(1000):
    if not pollout(1000):
        print('blocked', flush=True); break
    put()
sys.stdin.readline()
print('resumed', pollout(10000), flush=True)
`, [a.spec.mnt])
    await line(writer, 'flowing 2000')
    reader.proc.kill('SIGSTOP')
    writer.send('stopped')
    await line(writer, 'blocked')
    reader.proc.kill('SIGCONT')
    writer.send('continued')
    expect(await line(writer, /^resumed/)).toBe('resumed True')
    expect(await writer.exited).toBe(0)
  })

  it('two readers of one channel share its packets without loss or duplication', async () => {
    const [a, b] = await pair()
    const READ = `
import os, sys
fd = os.open(sys.argv[1] + '/pkt/08', os.O_RDONLY)
print('open', flush=True)
while True:
    rec = os.read(fd, 1 << 17)
    head, _, body = rec.partition(b'\\n')
    if head.split()[1] not in (b'up', b'down'): print(int(body), flush=True)
`
    const readers = [pyProc(READ, [b.spec.mnt]), pyProc(READ, [b.spec.mnt])]
    await Promise.all(readers.map(async r => await line(r, 'open')))
    await waitReader(a, 'beta', '08')
    const N = 2000
    const w = await py(PRELUDE + `
fd = os.open(sys.argv[1] + '/pkt/08', os.O_WRONLY)
for i in range(0, ${N}, 10):
    os.write(fd, b''.join(b'beta %d\\n%d' % (len(b'%d' % j), j) for j in range(i, i + 10)))
`, [a.spec.mnt])
    expect(w.stderr).toBe('')
    const got = (): number[] => readers.flatMap(r => r.lines.filter(l => l !== 'open').map(Number))
    await eventually(() => got().length >= N, `${N} packets read`, 20_000)
    const all = got()
    expect(all).toHaveLength(N)
    expect(new Set(all).size).toBe(N)
    expect(Math.min(...all)).toBe(0)
    expect(Math.max(...all)).toBe(N - 1)
    for (const r of readers) expect(r.lines.length).toBeGreaterThan(1)
  })

  it('100,000 packets arrive in order, none lost, and the counts say so', async () => {
    const [a, b] = await pair()
    const N = 100_000
    const reader = pyProc(`
import os, sys
fd = os.open(sys.argv[1] + '/pkt/09', os.O_RDONLY)
print('open', flush=True)
want = 0
while want < ${N}:
    rec = os.read(fd, 1 << 17)
    head, _, body = rec.partition(b'\\n')
    if head.split()[1] in (b'up', b'down'): continue
    if int(body) != want: print('out of order', want, body, flush=True); sys.exit(1)
    want += 1
print('ok', want, flush=True)
`, [b.spec.mnt])
    await line(reader, 'open')
    await waitReader(a, 'beta', '09')
    const w = await py(PRELUDE + `
fd = os.open(sys.argv[1] + '/pkt/09', os.O_WRONLY)
for i in range(0, ${N}, 100):
    buf = b''.join(b'beta 64\\n' + (b'%d' % j).ljust(64) for j in range(i, i + 100))
    while buf:
        buf = buf[os.write(fd, buf):]
`, [a.spec.mnt], 120_000)
    expect(w.stderr).toBe('')
    expect(await line(reader, /^(ok|out of order)/, 120_000)).toBe(`ok ${N}`)
    expect(await status(a, 'beta')).toMatchObject({ pkt_out: String(N), pkt_out_bytes: String(N * 64) })
    expect(await status(b, 'alpha')).toMatchObject({ pkt_in: String(N), pkt_dropped: '0', pkt_lost: '0', pkt_refused: '0' })
  }, 180_000)
})
