// The fuse-native patch on its own (test/fixtures/pollfs.cjs, no peerfs):
// poll with notify, pollhandles freed, interrupts reaching a blocked read,
// closes of OPEN_NOFLUSH files answered without a flush.
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ROOT, py, sh, tempDir } from '../helpers/net.js'

let fs: ChildProcess | undefined
let mnt = ''
afterEach(async () => {
  fs?.kill('SIGKILL')
  fs = undefined
  await sh(`fusermount -uz ${mnt}`)
})

interface PollFs {
  proc: ChildProcess
  /** Resolves with the next line starting with prefix (bounded in time). */
  next: (prefix: string) => Promise<string>
}

async function mountPollFs (onLine: (line: string) => void = () => {}): Promise<PollFs> {
  mnt = path.join(await tempDir(), 'mnt')
  const proc = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/pollfs.cjs'), mnt], { stdio: ['ignore', 'pipe', 'inherit'] })
  fs = proc
  const waiting = new Set<(line: string) => boolean>()
  let buf = ''
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      onLine(line)
      for (const w of [...waiting]) if (w(line)) waiting.delete(w)
    }
  })
  const next = async (prefix: string): Promise<string> => await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pollfs printed no "${prefix}" line`)), 10_000)
    waiting.add((line) => {
      if (!line.startsWith(prefix)) return false
      clearTimeout(timer)
      resolve(line)
      return true
    })
  })
  const mounted = next('mounted')
  await Promise.race([mounted, new Promise((_resolve, reject) => proc.once('exit', (code) => reject(new Error(`pollfs exited ${code}`))))])
  return { proc, next }
}

describe('patched fuse-native', () => {
  it('poll: not ready, then woken by notifyPoll for select, poll and epoll', async () => {
    // Wake only a poller that waits: once the Python side says it is about
    // to block and pollfs says a pollhandle is armed (for epoll, at register).
    let waiting = false
    let armed = false
    const maybeWake = (): void => {
      if (!waiting || !armed) return
      waiting = false
      armed = false
      fs?.kill('SIGUSR2')
    }
    await mountPollFs((line) => {
      if (line !== 'armed') return
      armed = true
      maybeWake()
    })
    const p = spawn('python3', ['-c', `
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
out = []
for kind in ('select', 'poll', 'epoll'):
    while True:          # drain
        try: os.read(fd, 100)
        except BlockingIOError: break
    if kind == 'select':
        first = select.select([fd], [], [], 0)[0]; wait = lambda: select.select([fd], [], [], 5)[0]
    elif kind == 'poll':
        p = select.poll(); p.register(fd, select.POLLIN); first = p.poll(0); wait = lambda: p.poll(5000)
    else:
        e = select.epoll(); e.register(fd, select.EPOLLIN); first = e.poll(0); wait = lambda: e.poll(5)
    print('waiting', flush=True)
    out.append('%s %s %s' % (kind, bool(first), bool(wait())))
print(';'.join(out), flush=True)
`, path.join(mnt, 'ready')], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    p.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      for (; out.startsWith('waiting\n'); out = out.slice('waiting\n'.length)) {
        waiting = true
        maybeWake()
      }
    })
    await new Promise(resolve => p.on('exit', resolve))
    expect(out.trim()).toBe('select False True;poll False True;epoll False True')
  })

  it('frees every pollhandle: none left after thousands of polls and a close', async () => {
    const { proc, next } = await mountPollFs()
    const r = await py(`
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
p = select.poll(); p.register(fd, select.POLLIN)
for i in range(3000): p.poll(1)
os.close(fd)
print('done')
`, [path.join(mnt, 'ready')], 60_000)
    expect(r.stdout.trim()).toBe('done')
    const live = next('live ')
    proc.kill('SIGUSR1')
    expect(await live).toBe('live 0')
  })

  it('answers the close of a file opened with OPEN_NOFLUSH without calling flush', async () => {
    const { proc, next } = await mountPollFs()
    const r = await py(`
import os, sys
for name in ('ready', 'noflush'):
    for i in range(50): os.close(os.open(os.path.join(sys.argv[1], name), os.O_RDONLY))
print('done')
`, [mnt])
    expect(r.stdout.trim()).toBe('done')
    const counts = next('flushes ')
    proc.kill('SIGUSR1')
    expect(await counts).toBe('flushes ready=50 noflush=0')
  })

  it('interrupts a read blocked in the filesystem when its caller gets a signal', async () => {
    await mountPollFs()
    const r = await py(`
import os, signal, sys
class Alarm(Exception): pass
def ring(*a): raise Alarm()
# Python retries a read that fails with EINTR unless the handler raises.
signal.signal(signal.SIGALRM, ring)
signal.setitimer(signal.ITIMER_REAL, 0.5)
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.read(fd, 10); print('read returned')
except Alarm:
    print('interrupted')
`, [path.join(mnt, 'block')])
    expect(r.stdout.trim()).toBe('interrupted')
    // And a killed reader does not hang: timeout sends SIGTERM, cat exits.
    const k = await sh(`timeout -s TERM 0.5 cat ${path.join(mnt, 'block')}; echo rc=$?`)
    expect(k.stdout.trim()).toBe('rc=124')
  })
})
