// Files created in an outbox, the way cp and cp -r create them: in one
// step, so a read-only source arrives read-only without the daemon needing
// root's override of file modes; and the created descriptor goes past the
// page cache (direct_io) while a file opened again keeps it, so in-place
// edits through a shared mmap still work. A writer's open never fails with
// ENOENT because a delivery removed the last version under it.
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Daemon, eventually, makeNetwork, py, sh, startPair, teardown, waitState } from '../helpers/net.js'

afterEach(teardown)

/** The daemon as a non-root owner would run it: no CAP_DAC_OVERRIDE, so a 0444 file is not writable even by its owner. */
const WITHOUT_MODE_OVERRIDE = ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--']

describe('files created in an outbox', () => {
  it('takes cp and cp -r of read-only files from a daemon without mode override, and delivers them read-only', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const a = new Daemon(netw.node('alpha'), WITHOUT_MODE_OVERRIDE)
    const b = new Daemon(netw.node('beta'))
    await Promise.all([a.start(), b.start()])
    await waitState(a, 'beta')
    const src = netw.dir
    await sh(`mkdir ${src}/ro && for i in 1 2 3; do echo "file $i" > ${src}/ro/f$i; done && echo one > ${src}/one && chmod 444 ${src}/one ${src}/ro/f*`)
    const cp = await sh(`cp ${src}/one ${a.path('peers/beta/outbox/')} && cp -r ${src}/ro ${a.path('peers/beta/outbox/')}`)
    expect(cp.stderr).toBe('')
    expect(cp.code).toBe(0)
    const inbox = b.path('peers/alpha/inbox')
    const modes = async (): Promise<string> => (await sh(`cd ${inbox} && stat -c '%n %a' one ro/f1 ro/f2 ro/f3 2>/dev/null`)).stdout
    await eventually(async () => await modes() === 'one 444\nro/f1 444\nro/f2 444\nro/f3 444\n', 'all four delivered', 60_000)
    expect((await sh(`cat ${inbox}/one ${inbox}/ro/f3`)).stdout).toBe('one\nfile 3\n')
  })

  it('reads back through the creating descriptor, and sends an in-place edit made through a shared mmap', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const a = new Daemon(netw.node('alpha'))
    await a.start()
    const outbox = a.path('peers/beta/outbox')
    const r = await py(`
import mmap, os, sys
p = os.path.join(sys.argv[1], 'edited')
fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b'0123456789' * 1000)
back = os.pread(fd, 10, 5000)
os.close(fd)
fd = os.open(p, os.O_RDWR)
m = mmap.mmap(fd, 0)
m[0:4] = b'EDIT'
m.flush(); m.close(); os.close(fd)
print(back.decode(), open(p, 'rb').read(8).decode())
`, [outbox])
    expect(r.stderr).toBe('')
    expect(r.stdout.trim()).toBe('0123456789 EDIT4567')
    const b = new Daemon(netw.node('beta'))
    await b.start()
    const dest = b.path('peers/alpha/inbox/edited')
    await eventually(async () => (await sh(`test -e ${dest}`)).code === 0, 'delivered', 60_000)
    expect((await sh(`head -c 14 ${dest}`)).stdout).toBe('EDIT4567890123')
  })

  it('never answers a writer\'s open(O_CREAT|O_TRUNC) with ENOENT while deliveries remove the last versions of the same names; the last version of each arrives', async () => {
    const { a, b } = await startPair()
    // 20 names rewritten for 5 s while each version is delivered and removed:
    // the kernel's lookup finds a version its delivery then removes.
    const r = await py(`
import os, sys, time
out = sys.argv[1]; errs = 0; n = 0; end = time.time() + 5
while time.time() < end:
    for k in range(20):
        n += 1
        try:
            fd = os.open(os.path.join(out, 'n%d' % k), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, b'%08d' % n); os.close(fd)
        except FileNotFoundError:
            errs += 1
    time.sleep(0.001)
for k in range(20):
    with open(os.path.join(out, 'n%d' % k), 'w') as f: f.write('last')
print(n, errs)
`, [a.path('peers/beta/outbox')], 60_000)
    const [n, errs] = r.stdout.trim().split(' ').map(Number)
    expect(n).toBeGreaterThan(1000)
    expect(errs).toBe(0)
    const inbox = b.path('peers/alpha/inbox')
    await eventually(async () => {
      for (let k = 0; k < 20; k++) if ((await readFile(path.join(inbox, `n${k}`), 'utf8').catch(() => '')) !== 'last') return false
      return true
    }, 'the last version of every name delivered', 60_000)
  }, 120_000)
})
