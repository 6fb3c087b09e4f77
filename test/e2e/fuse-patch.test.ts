// The fuse-native patch on its own (test/fixtures/pollfs.cjs, no peerfs):
// poll with notify, pollhandles freed, interrupts reaching a blocked read.
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

async function mountPollFs (): Promise<{ proc: ChildProcess, lines: string[] }> {
  mnt = path.join(await tempDir(), 'mnt')
  const proc = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/pollfs.cjs'), mnt], { stdio: ['ignore', 'pipe', 'inherit'] })
  fs = proc
  const lines: string[] = []
  await new Promise<void>((resolve, reject) => {
    proc.stdout?.on('data', (d: Buffer) => {
      lines.push(...d.toString().trim().split('\n'))
      if (lines.includes('mounted')) resolve()
    })
    proc.once('exit', (code) => reject(new Error(`pollfs exited ${code}`)))
  })
  return { proc, lines }
}

describe('patched fuse-native', () => {
  it('poll: not ready, then woken by notifyPoll for select, poll and epoll', async () => {
    const { proc } = await mountPollFs()
    const waker = setInterval(() => proc.kill('SIGUSR2'), 300)
    try {
      const r = await py(`
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
out = []
for kind in ('select', 'poll', 'epoll'):
    while True:          # drain
        try: os.read(fd, 100)
        except BlockingIOError: break
    if kind == 'select':
        first = select.select([fd], [], [], 0)[0]; then = select.select([fd], [], [], 5)[0]
    elif kind == 'poll':
        p = select.poll(); p.register(fd, select.POLLIN); first = p.poll(0); then = p.poll(5000)
    else:
        e = select.epoll(); e.register(fd, select.EPOLLIN); first = e.poll(0); then = e.poll(5)
    out.append('%s %s %s' % (kind, bool(first), bool(then)))
print(';'.join(out))
`, [path.join(mnt, 'ready')])
      expect(r.stdout.trim()).toBe('select False True;poll False True;epoll False True')
    } finally {
      clearInterval(waker)
    }
  })

  it('frees every pollhandle: none left after thousands of polls and a close', async () => {
    const { proc, lines } = await mountPollFs()
    const r = await py(`
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
p = select.poll(); p.register(fd, select.POLLIN)
for i in range(3000): p.poll(1)
os.close(fd)
print('done')
`, [path.join(mnt, 'ready')], 60_000)
    expect(r.stdout.trim()).toBe('done')
    proc.kill('SIGUSR1')
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(lines.at(-1)).toBe('live 0')
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
