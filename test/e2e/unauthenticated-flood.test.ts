// Callers that never authenticate: held idle by the thousand against a
// daemon whose fd limit is 1,024, or a connect/close flood (half of them
// sending a first handshake message). Local users keep working, the real
// link stays up, and refusals are logged as a few summaries. Echo latency
// through the mount is measured meanwhile and printed, not asserted.
import { randomBytes } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import type net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { encodeRecord, MAGIC } from '../../src/transport/records.js'
import { EventRecorder } from '../helpers/events.js'
import { closeAll, connect, echoLatency } from '../helpers/hostile.js'
import { Daemon, eventually, makeNetwork, readText, sh, startNetwork, teardown, waitState } from '../helpers/net.js'

afterEach(async () => {
  EventRecorder.stopAll()
  closeAll()
  await teardown()
})

async function fds (pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`).catch(() => [])).length
}

/** utime + stime of a process, in ms. */
async function cpuMs (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) * 10
}

async function started (): Promise<{ a: Daemon, b: Daemon }> {
  const netw = await makeNetwork(['alpha', 'beta'])
  const ds = await startNetwork(netw)
  const a = ds.get('alpha') as Daemon
  await waitState(a, 'beta')
  return { a, b: ds.get('beta') as Daemon }
}

describe('unauthenticated callers', () => {
  it('1,200 held idle against fd limit 1,024: outbox cp and defer/ writes succeed, the real link stays up', async () => {
    const { a, b } = await started()
    expect((await sh(`prlimit --pid ${a.pid} --nofile=1024:1024`)).code).toBe(0)
    expect(await readFile(`/proc/${a.pid}/limits`, 'utf8')).toMatch(/Max open files\s+1024\s+1024/)
    const events = await EventRecorder.open(a.path('events'))
    const quiet = await echoLatency(a.path('peers/beta/svc/01'), 3)

    const held: net.Socket[] = []
    for (let i = 0; i < 1200; i++) held.push(connect(Number(a.spec.port)))
    await eventually(() => held.every(s => !s.connecting), 'all 1,200 connected', 20_000)
    // The daemon keeps max_unauthenticated_per_address (8) and closes the rest at once.
    await eventually(() => held.filter(s => !s.destroyed).length <= 8, 'all but 8 closed by the daemon', 10_000)
    const open = held.filter(s => !s.destroyed).length
    const daemonFds = await fds(a.pid)
    const during = echoLatency(a.path('peers/beta/svc/01'), 4)

    const r = await sh(`head -c 200000 /dev/urandom > ${a.spec.dir}/blob && cp ${a.spec.dir}/blob ${a.path('peers/beta/outbox/blob')} && echo queued > ${a.path('peers/beta/defer/01')} && echo ok`)
    expect(r.stderr).toBe('')
    expect(r.stdout).toBe('ok\n')
    await eventually(async () => (await sh(`cmp ${a.spec.dir}/blob ${b.path('peers/alpha/inbox/blob')}`)).code === 0, 'blob delivered')
    await eventually(async () => (await readText(a.path('peers/beta/status'))).includes('deferred: 0'), 'deferred request delivered')
    const lat = await during
    expect(await fds(a.pid)).toBeLessThan(200)
    expect(events.matching(/ beta (down|up)/)).toEqual([])
    console.log(`held: ${open} of 1200 kept by the daemon; its fds ${daemonFds}; echo quiet p50 ${quiet.p50} p99 ${quiet.p99} ms (n ${quiet.n}); during 1,200 held p50 ${lat.p50} p99 ${lat.p99} max ${lat.max} ms (n ${lat.n}, errors ${lat.errors})`)
    expect(lat.errors).toBe(0)
  })

  it('a 10 s connect/close flood: the real link stays up and refusals take a few log lines', async () => {
    const { a } = await started()
    const events = await EventRecorder.open(a.path('events'))
    const linesBefore = a.stderr.split('\n').length
    const cpuBefore = await cpuMs(a.pid)
    const hello = Buffer.concat([MAGIC, encodeRecord(randomBytes(32))])
    const end = Date.now() + 10_000
    let made = 0
    const worker = async (n: number): Promise<void> => {
      while (Date.now() < end && made < 500_000) {
        made++
        await new Promise<void>((resolve) => {
          const s = connect(Number(a.spec.port))
          s.once('close', () => resolve())
          s.once('connect', () => {
            // Half send a first handshake message (the responder's costly step), half nothing.
            if (n % 2 === 0) s.write(hello, () => s.destroy())
            else s.destroy()
          })
        })
      }
    }
    const lat = echoLatency(a.path('peers/beta/svc/01'), 10)
    await Promise.all(Array.from({ length: 32 }, async (_, n) => await worker(n)))
    const cpu = await cpuMs(a.pid) - cpuBefore
    const latency = await lat
    expect(await readText(a.path('peers/beta/state'))).toBe('up\n')
    expect((await sh(`cd ${a.path('peers/beta/svc')} && echo still > 01; cat 01`)).stdout).toBe('still\n')
    expect(events.matching(/ beta (down|up)/)).toEqual([])
    // The summary of the last interval is written when it ends.
    await eventually(() => a.stderr.includes('refused incoming connections:'), 'a summary', 15_000)
    const added = a.stderr.split('\n').slice(linesBefore - 1).filter(l => l !== '')
    const refusals = added.filter(l => l.includes('refused incoming connection'))
    console.log(`flood: ${made} connections in 10 s; daemon CPU ${cpu} ms (${(cpu / 100).toFixed(0)}% of a core); ${added.length} log lines (${refusals.length} refusal lines); echo p50 ${latency.p50} p99 ${latency.p99} max ${latency.max} ms (n ${latency.n}, errors ${latency.errors})`)
    console.log(refusals.at(-1))
    expect(made).toBeGreaterThan(1000)
    expect(refusals.length).toBeLessThanOrEqual(4)
    expect(added.length).toBeLessThanOrEqual(10)
  })
})
