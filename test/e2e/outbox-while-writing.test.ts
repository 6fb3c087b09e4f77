// The outbox sends while it is still being written into, as cp -r does:
// files closed go while another is open, and a folder their delivery
// emptied stays for the next file the writer puts there.
import { afterEach, describe, expect, it } from 'vitest'
import { eventually, py, readText, sh, startPair, teardown } from '../helpers/net.js'

afterEach(async () => { await teardown() })

// Holds slow.bin open for writing the whole time; writes d/f0..f4, waits
// (on the events file) until each is reported sent, then writes d/f5.
const WRITER = `
import os, sys, time
mnt, out = sys.argv[1], sys.argv[2]
ev = os.open(os.path.join(mnt, 'events'), os.O_RDONLY)
slow = open(os.path.join(out, 'slow.bin'), 'wb')
slow.write(b'x' * 1000); slow.flush()
os.makedirs(os.path.join(out, 'd'))
for i in range(5):
    with open(os.path.join(out, 'd', 'f%d' % i), 'w') as f: f.write('file %d\\n' % i)
want, buf, end = {'d/f%d' % i for i in range(5)}, b'', time.monotonic() + 30
while want and time.monotonic() < end:
    buf += os.read(ev, 65536)
    *lines, buf = buf.split(b'\\n')
    for l in lines:
        p = l.decode().split(' ')
        if len(p) >= 4 and p[2] == 'sent': want.discard(p[3])
if want: sys.exit('not sent: %s' % sorted(want))
with open(os.path.join(out, 'd', 'f5'), 'w') as f: f.write('file 5\\n')
slow.write(b'y'); slow.close()
print('ok')
`

describe('outbox while it is written', () => {
  it('sends closed files while another is still open, and keeps the folder they emptied for the next file written there', async () => {
    const { a, b } = await startPair('outbox_prune_ms = 1000\n')
    const r = await py(WRITER, [a.path(), a.path('peers/beta/outbox')], 60_000)
    expect(r.stderr).toBe('')
    expect(r.stdout).toBe('ok\n')
    const inbox = b.path('peers/alpha/inbox')
    await eventually(async () => (await sh(`cat ${inbox}/d/f5`)).stdout === 'file 5\n', 'd/f5 delivered', 30_000)
    await eventually(async () => (await sh(`stat -c %s ${inbox}/slow.bin`)).stdout === '1001\n', 'slow.bin delivered whole', 30_000)
    expect((await sh(`cd ${inbox} && find . -type f | sort`)).stdout).toBe(['./d/f0', './d/f1', './d/f2', './d/f3', './d/f4', './d/f5', './slow.bin', ''].join('\n'))
    // Once nothing is written, the folders the deliveries emptied go too.
    await eventually(async () => (await sh(`find ${a.path('peers/beta/outbox')} -mindepth 1`)).stdout === '', 'outbox empty', 30_000)
    expect(await readText(a.path('peers/beta/status'))).toMatch(/^outbox_files: 0$/m)
  }, 120_000)

  it('keeps a folder delivery emptied for a writer that comes back within outbox_prune_ms (rsync -a sets the folders\' times last), then removes it', async () => {
    const { a, b } = await startPair('outbox_prune_ms = 5000\n')
    const out = a.path('peers/beta/outbox')
    expect((await sh(`mkdir -p ${out}/t/d && echo hi > ${out}/t/d/f`)).code).toBe(0)
    await eventually(async () => (await sh(`cat ${b.path('peers/alpha/inbox/t/d/f')}`)).stdout === 'hi\n', 't/d/f delivered')
    await eventually(async () => (await sh(`find ${out} -type f`)).stdout === '', 't/d/f gone from the outbox')
    // Past the old prune (1 s of quiet, checked each second), which rsync
    // could outwait on a busy machine before it set the folders' times: exit 23.
    await new Promise(resolve => setTimeout(resolve, 2500))
    const touched = await sh(`touch -c -d @1600000000 ${out}/t/d ${out}/t && stat -c '%F %Y' ${out}/t/d`)
    expect(touched.stderr).toBe('')
    expect(touched.stdout).toBe('directory 1600000000\n')
    await eventually(async () => (await sh(`find ${out} -mindepth 1`)).stdout === '', 'the emptied folders gone', 15_000)
  }, 60_000)
})
