// Links on real mounts: daemons in child processes, the tree used through
// sh, cat and Python as users would.
import { readFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { EventRecorder } from '../helpers/events.js'
import { Daemon, eventually, isMounted, makeNetwork, py, readText, sh, startNetwork, teardown, peerState, waitState } from '../helpers/net.js'
import { FaultProxy } from '../helpers/proxy.js'

afterEach(async () => {
  EventRecorder.stopAll()
  await teardown()
})

describe('links between daemons', () => {
  it('comes up on both sides, with status, tile alias and echo/info services', async () => {
    const netw = await makeNetwork(['alpha', 'beta'], { peer: { 'alpha>beta': { alias: 'ET' } } })
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    const b = ds.get('beta') as Daemon
    await eventually(async () => await peerState(a, 'beta') === 'up' && await peerState(b, 'alpha') === 'up', 'both links up')

    const status = await readText(a.path('peers/beta/status'))
    expect(status).toMatch(/^state: up$/m)
    expect(status).toMatch(/^rtt_ms: /m)
    expect(await readText(a.path('status'))).toMatch(/^beta\s+up\s/m)
    expect((await sh(`readlink ${a.path('tile/ET')}`)).stdout.trim()).toBe('../peers/beta')
    expect((await readText(a.path('tile/ET/state'))).trim()).toBe('up')

    const r = await sh(`cd ${a.path('peers/beta/svc')} && echo hi > 01; cat 01`)
    expect(r).toMatchObject({ code: 0, stdout: 'hi\n' })
    const info = await readText(a.path('peers/beta/svc/02'))
    expect(info).toMatch(/^id: beta$/m)
    expect(info).toMatch(/^services: 01 02$/m)
  })

  it('serves echo to a Python client, many handles in flight on one link', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    await waitState(a, 'beta')
    const r = await py(`
import os, sys, threading
f = sys.argv[1]
out = {}
def one(i):
    fd = os.open(f, os.O_RDWR)
    msg = ('request %d ' % i).encode() * (i + 1)
    os.write(fd, msg)
    got = b''
    while True:
        b = os.read(fd, 65536)
        if not b: break
        got += b
    os.close(fd)
    out[i] = got == msg
ts = [threading.Thread(target=one, args=(i,)) for i in range(50)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(out.values()))
`, [a.path('peers/beta/svc/01')])
    expect(r.stderr).toBe('')
    expect(r.stdout.trim()).toBe('50')
  })

  it('refuses an impostor with an unknown key while the real link stays up', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'mallory'], { links: [['alpha', 'beta'], ['alpha', 'mallory']] })
    // alpha forgets mallory: its config lists beta only, mallory still dials alpha.
    const alphaCfg = netw.node('alpha').config
    const text = await readFile(alphaCfg, 'utf8')
    await sh(`cat > ${alphaCfg} <<'EOF'\n${text.slice(0, text.indexOf('[[peer]]\nid = "mallory"'))}\nEOF`)
    const ds = await startNetwork(netw, ['alpha', 'beta'])
    const a = ds.get('alpha') as Daemon
    await waitState(a, 'beta')
    const events = await EventRecorder.open(a.path('events'))
    const m = new Daemon(netw.node('mallory'))
    await m.start()
    await eventually(() => a.stderr.includes('refused incoming connection') && a.stderr.includes('unknown key'), 'refusal logged')
    // The key as mallory's own config line would give it, so grep finds it.
    expect(a.stderr).toContain(`unknown key ${netw.node('mallory').publicKey}`)
    await eventually(async () => (await readText(m.path('peers/alpha/status'))).includes('last_error: refused our key'), 'mallory told why')
    expect(await peerState(m, 'alpha')).not.toBe('up')
    expect(await peerState(a, 'beta')).toBe('up')
    expect((await sh(`cd ${a.path('peers/beta/svc')} && echo still > 01; cat 01`)).stdout).toBe('still\n')
    expect(events.matching(/ beta down/)).toEqual([])
  })

  it('shows down in events when a peer is killed, up when it returns; reads fail fast meanwhile', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    const b = ds.get('beta') as Daemon
    await waitState(a, 'beta')
    const events = await EventRecorder.open(a.path('events'))
    await b.kill('SIGKILL')
    await waitState(a, 'beta', 'down')

    // py() is bounded: a hang fails the test rather than passing it.
    const r = await py(`
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.write(fd, b'anyone?')
try:
    os.read(fd, 100)
    print('no error')
except OSError as e:
    print(errno.errorcode[e.errno])
`, [a.path('peers/beta/svc/01')])
    expect(['EHOSTUNREACH', 'ETIMEDOUT']).toContain(r.stdout.trim())

    await b.start()
    await waitState(a, 'beta')
    await events.waitFor(/ beta up/)
    const lines = events.lines
    const down = lines.findIndex(l => / beta down/.test(l))
    const up = lines.findIndex((l, i) => i > down && / beta up/.test(l))
    expect(down).toBeGreaterThanOrEqual(0)
    expect(up).toBeGreaterThan(down)
    expect(lines[down]).toMatch(/^\d{13} beta down/)
  })

  it('reconnects after a byte is flipped in transit and never returns a corrupted reply', async () => {
    const netw = await makeNetwork(['alpha', 'beta'], { peer: { 'beta>alpha': { address: null } } })
    const proxy = new FaultProxy({ host: '127.0.0.1', port: netw.node('beta').port }, { flipAt: 3000 })
    await proxy.start()
    try {
      const cfg = netw.node('alpha').config
      await sh(`sed -i 's/127.0.0.1:${netw.node('beta').port}/127.0.0.1:${proxy.port}/' ${cfg}`)
      const ds = await startNetwork(netw)
      const a = ds.get('alpha') as Daemon
      await waitState(a, 'beta')
      const r = await py(`
import errno, os, sys, time
f = sys.argv[1]
ok = bad = failed = 0
deadline = time.time() + 15
i = 0
while time.time() < deadline and (ok < 40 or failed == 0):
    i += 1
    msg = (b'%06d' % i) * 50
    fd = os.open(f, os.O_RDWR)
    os.write(fd, msg)
    try:
        got = os.read(fd, 65536)
        if got == msg: ok += 1
        else: bad += 1
    except OSError as e:
        failed += 1
    os.close(fd)
print(ok, bad, failed)
`, [a.path('peers/beta/svc/01')], 30_000)
      const [ok, bad] = r.stdout.trim().split(' ').map(Number)
      expect(proxy.flipped).toBe(1)
      expect(bad).toBe(0)
      expect(ok).toBeGreaterThanOrEqual(40)
      expect(proxy.connections).toBeGreaterThanOrEqual(2)
      // beta received the flipped byte and dropped the link on the bad tag.
      expect((ds.get('beta') as Daemon).stderr).toContain('bad authentication tag')
    } finally {
      await proxy.close()
    }
  })
})

describe('daemon lifecycle', () => {
  it('refuses a bad config, naming the key', async () => {
    const netw = await makeNetwork(['alpha'])
    const cfg = netw.node('alpha').config
    await sh(`echo 'retry_budjet = 3' >> ${cfg}`)
    const d = new Daemon(netw.node('alpha'))
    await expect(d.start()).rejects.toThrow(/exited with 2/)
    expect(d.stderr).toContain('retry_budjet: unknown key')
    expect(d.stderr).toContain(cfg)
    expect(await isMounted(netw.node('alpha').mnt)).toBe(false)
  })

  it('refuses a key file readable by others', async () => {
    const netw = await makeNetwork(['alpha'])
    await sh(`chmod 644 ${netw.node('alpha').keyFile}`)
    const d = new Daemon(netw.node('alpha'))
    await expect(d.start()).rejects.toThrow(/exited with 2/)
    expect(d.stderr).toMatch(/key: .*readable by group or others/)
  })

  it('leaves no mount behind on SIGTERM and exits 0', async () => {
    const netw = await makeNetwork(['alpha'])
    const d = new Daemon(netw.node('alpha'))
    await d.start()
    expect(await isMounted(netw.node('alpha').mnt)).toBe(true)
    expect(await d.kill('SIGTERM')).toBe(0)
    expect(await isMounted(netw.node('alpha').mnt)).toBe(false)
  })

  it('unmounts when SIGINT and SIGTERM arrive together (Ctrl-C reaches the whole process group)', async () => {
    const netw = await makeNetwork(['alpha'])
    const d = new Daemon(netw.node('alpha'))
    await d.start()
    process.kill(d.pid, 'SIGINT')
    process.kill(d.pid, 'SIGTERM')
    expect(await d.exit).toBe(0)
    expect(await isMounted(netw.node('alpha').mnt)).toBe(false)
  })

  it('mounts again after kill -9 left a stale mount', async () => {
    const netw = await makeNetwork(['alpha'])
    const d = new Daemon(netw.node('alpha'))
    await d.start()
    await d.kill('SIGKILL')
    expect(await isMounted(netw.node('alpha').mnt)).toBe(true)
    await d.start()
    expect((await readText(d.path('status')))).toMatch(/^node: alpha$/m)
  })
})
