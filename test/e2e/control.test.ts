// Operating a running daemon: ctl commands, unmount from outside, SIGHUP
// reload, and a dead peer revived by calling in.
import { readFile, writeFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { EventRecorder } from '../helpers/events.js'
import { CLI, Daemon, eventually, isMounted, makeNetwork, readText, sh, startNetwork, teardown, peerState, waitState } from '../helpers/net.js'

afterEach(async () => {
  EventRecorder.stopAll()
  await teardown()
})

describe('control', () => {
  it('ctl disconnect holds a peer down (refusing its calls) until reconnect; bad commands fail the write', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    const b = ds.get('beta') as Daemon
    await waitState(a, 'beta')
    const events = await EventRecorder.open(a.path('events'))
    expect((await sh(`echo disconnect > ${a.path('peers/beta/ctl')}`)).code).toBe(0)
    expect(await peerState(a, 'beta')).toBe('down')
    // beta redials (fast test timings) and is refused meanwhile, and is told why.
    await eventually(() => a.stderr.includes('"reason":"disconnected"'), 'alpha refused a redial of beta')
    expect(await readText(b.path('peers/alpha/status'))).toMatch(/^last_error: disconnected by peer/m)
    expect(await peerState(a, 'beta')).toBe('down')
    await events.waitFor(/ beta down disconnected by ctl/)
    expect((await sh(`echo reconnect > ${a.path('peers/beta/ctl')}`)).code).toBe(0)
    await waitState(a, 'beta')

    // coreutils echo reports the errno (dash's builtin says "I/O error" for any).
    const bad = await sh(`/bin/echo bogus > ${a.path('peers/beta/ctl')}`)
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toMatch(/Invalid argument/)
    expect((await readText(a.path('peers/beta/ctl')))).toMatch(/commands: reconnect reset disconnect/)
  })

  it('exits 0 when unmounted from outside with peerfs unmount', async () => {
    const netw = await makeNetwork(['alpha'])
    const d = new Daemon(netw.node('alpha'))
    await d.start()
    expect((await sh(`node ${CLI} unmount ${netw.node('alpha').mnt}`)).code).toBe(0)
    expect(await d.exit).toBe(0)
    expect(await isMounted(netw.node('alpha').mnt)).toBe(false)
  })

  it('adds and removes peers on SIGHUP without dropping the others', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'gamma'])
    const cfg = netw.node('alpha').config
    const full = await readFile(cfg, 'utf8')
    const withoutGamma = full.slice(0, full.indexOf('[[peer]]\nid = "gamma"'))
    await writeFile(cfg, withoutGamma)
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    await waitState(a, 'beta')
    expect((await sh(`ls ${a.path('peers')}`)).stdout.split('\n')).not.toContain('gamma')
    const events = await EventRecorder.open(a.path('events'))

    await writeFile(cfg, full)
    process.kill(a.pid, 'SIGHUP')
    await waitState(a, 'gamma')
    await writeFile(cfg, withoutGamma)
    process.kill(a.pid, 'SIGHUP')
    await eventually(async () => !(await sh(`ls ${a.path('peers')}`)).stdout.includes('gamma'), 'gamma gone')
    expect(await peerState(a, 'beta')).toBe('up')
    expect(events.matching(/ beta (down|up)/)).toEqual([])

    await writeFile(cfg, full + 'bogus = 1\n')
    process.kill(a.pid, 'SIGHUP')
    await eventually(() => a.stderr.includes('reload failed'), 'reload refused')
    expect(a.stderr).toMatch(/bogus: unknown key/)
    expect(await peerState(a, 'beta')).toBe('up')
  })

  it('a dead peer fails at once, and comes back when it calls in', async () => {
    const netw = await makeNetwork(['alpha', 'beta'], { extra: { alpha: 'retry_budget = 1\n' } })
    const a = new Daemon(netw.node('alpha'))
    await a.start()
    await waitState(a, 'beta', 'dead')
    // Shells ignore close errors on redirections; the outcome stays for cat.
    const r = await sh(`cd ${a.path('peers/beta/svc')} && echo x > 01; cat 01`)
    expect(r.stderr).toMatch(/No route to host/)
    expect(await readText(a.path('peers/beta/status'))).toMatch(/^last_error: socket: connect ECONNREFUSED/m)
    const b = new Daemon(netw.node('beta'))
    await b.start()
    await waitState(a, 'beta')
  })
})
