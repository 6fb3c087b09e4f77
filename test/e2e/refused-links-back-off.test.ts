// A link the peer refuses never flaps: `ctl disconnect` there, or a wrong
// key for us there, is a failed attempt with backoff and the retry budget,
// and the peer's reason is in last_error. alpha dials beta through a
// proxy that counts alpha's attempts. Default timings (backoff 200 ms up
// to 10 s), as a user runs it.
import { readFile, writeFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { EventRecorder } from '../helpers/events.js'
import { Daemon, eventually, makeNetwork, readText, sh, startNetwork, teardown, waitState, type Network } from '../helpers/net.js'
import { FaultProxy } from '../helpers/proxy.js'

const proxies: FaultProxy[] = []
afterEach(async () => {
  EventRecorder.stopAll()
  for (const p of proxies.splice(0)) await p.close()
  await teardown()
})

/** Points alpha's dial of beta at a counting proxy. */
async function proxied (netw: Network): Promise<FaultProxy> {
  const proxy = new FaultProxy({ host: '127.0.0.1', port: netw.node('beta').port })
  await proxy.start()
  proxies.push(proxy)
  const cfg = netw.node('alpha').config
  await writeFile(cfg, (await readFile(cfg, 'utf8')).replace(`127.0.0.1:${netw.node('beta').port}`, `127.0.0.1:${proxy.port}`))
  return proxy
}

const WINDOW_MS = 10_000

async function status (d: Daemon, peer: string): Promise<Record<string, string>> {
  const text = await readText(d.path('peers', peer, 'status'))
  return Object.fromEntries(text.split('\n').filter(l => l.includes(': ')).map(l => [l.slice(0, l.indexOf(': ')), l.slice(l.indexOf(': ') + 2)]))
}

describe('links the peer refuses', () => {
  it('after ctl disconnect on beta, alpha backs off (a few attempts in 10 s), says "disconnected by peer", and never shows up', async () => {
    const netw = await makeNetwork(['alpha', 'beta'], { defaultTimings: true })
    const proxy = await proxied(netw)
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    const b = ds.get('beta') as Daemon
    await waitState(a, 'beta')
    await waitState(b, 'alpha')
    const events = await EventRecorder.open(a.path('events'))
    const before = proxy.connections

    expect((await sh(`echo disconnect > ${b.path('peers/alpha/ctl')}`)).code).toBe(0)
    await events.waitFor(/ beta down /)
    const start = Date.now()
    await eventually(async () => Date.now() - start >= WINDOW_MS, 'the observation window', WINDOW_MS + 5000, 200)
    const attempts = proxy.connections - before
    // It does keep trying (the first retry may fall just after the window).
    await eventually(() => proxy.connections > before, 'a retry', 15_000, 200)
    const st = await status(a, 'beta')
    console.log(`ctl disconnect: alpha made ${attempts} attempts in ${WINDOW_MS} ms; retries_left ${st.retries_left}; last_error: ${st.last_error}`)
    expect(attempts).toBeLessThanOrEqual(4)
    expect(st.last_error, `alpha's log:\n${a.stderr.slice(-3000)}`).toMatch(/disconnected by peer/)
    expect(Number(st.retries_left)).toBeLessThan(10)
    expect(events.matching(/ beta up/)).toEqual([])
    expect(events.matching(/ beta down/)).toHaveLength(1)

    // beta lets alpha back in: its own dial brings the link up at once.
    expect((await sh(`echo reconnect > ${b.path('peers/alpha/ctl')}`)).code).toBe(0)
    await waitState(a, 'beta')
  })

  it('with a wrong key for alpha on beta, alpha backs off (a few attempts in 10 s), says "refused our key"; beta logs the key as configs write it', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'mallory'], { links: [['alpha', 'beta']], defaultTimings: true })
    const bcfg = netw.node('beta').config
    await writeFile(bcfg, (await readFile(bcfg, 'utf8')).replace(netw.node('alpha').publicKey, netw.node('mallory').publicKey))
    const proxy = await proxied(netw)
    const ds = await startNetwork(netw, ['alpha', 'beta'])
    const a = ds.get('alpha') as Daemon
    const b = ds.get('beta') as Daemon
    const events = await EventRecorder.open(a.path('events'))
    await eventually(async () => (await status(a, 'beta')).last_error?.includes('refused our key') === true, 'alpha told why', 15_000)
    const before = proxy.connections
    const start = Date.now()
    await eventually(async () => Date.now() - start >= WINDOW_MS, 'the observation window', WINDOW_MS + 5000, 200)
    const attempts = proxy.connections - before
    const st = await status(a, 'beta')
    console.log(`wrong key: alpha made ${attempts} attempts in ${WINDOW_MS} ms (${proxy.connections} in all); retries_left ${st.retries_left}; last_error: ${st.last_error}`)
    expect(attempts).toBeLessThanOrEqual(4)
    expect(st.last_error, `alpha's log:\n${a.stderr.slice(-3000)}`).toMatch(/refused our key/)
    expect(st.state).not.toBe('up')
    expect(events.matching(/ beta up/)).toEqual([])
    // The key beta refused, in the form alpha's own config lists it in.
    expect(b.stderr).toContain(`unknown key ${netw.node('alpha').publicKey}`)
  })
})
