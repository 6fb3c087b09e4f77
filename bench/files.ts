// Managed files at scale, on a line alpha - beta - gamma with the default
// timings (gossip every 2 s): a burst of N files written on alpha (a Python
// loop: open, write, close), then
//   - time until gamma, two hops away, has all of them (its `file` events),
//     counted from the end of the burst and from its start;
//   - echo transactions alpha -> beta (svc/01) during the burst and the
//     convergence: p50, p99, failures;
//   - at rest, before the burst (no files: the anchor) and after it: CPU
//     per node and bytes per gossip interval on each link.
// Runs three times per size and reports medians against the goals of
// issue 10. A smaller section keeps the 1 MB-over-five-hops figure.
import { readFile } from 'node:fs/promises'
import { spawn, type ChildProcess } from 'node:child_process'
import { Daemon, eventually, makeNetwork, py, readText, sh, startNetwork, teardown, waitState, type Network } from '../test/helpers/net.js'

const GOSSIP_MS = 2000
const REST_MS = 10_000
const RUNS = Number(process.env.BENCH_RUNS ?? 3)

async function trustAll (netw: Network): Promise<void> {
  const keys = [...netw.nodes.values()].map(n => `"${n.publicKey}"`).join(', ')
  for (const n of netw.nodes.values()) await sh(`sed -i '0,/^\\[\\[peer\\]\\]/s//files_trust = [${keys}]\\n[[peer]]/' ${n.config}`)
}

const WRITER = `
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
t0 = time.time()
for i in range(n):
    d = os.path.join(root, 'd%03d' % (i % 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'f%05d' % i), 'w') as f: f.write('file %d of the burst\\n' % i)
print(int(t0 * 1000), int(time.time() * 1000))
`

// Counts distinct names in `file` events; prints the time of the last new one.
const COUNTER = `
import os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
print('open', flush=True)
want, end, buf, seen, last = int(sys.argv[2]), time.monotonic() + float(sys.argv[3]), b'', set(), 0
while len(seen) < want and time.monotonic() < end:
    if not select.select([fd], [], [], 1)[0]: continue
    buf += os.read(fd, 1 << 20)
    *lines, buf = buf.split(b'\\n')
    for l in lines:
        p = l.decode().split(' ', 3)
        if len(p) == 4 and p[2] == 'file' and p[3] not in seen:
            seen.add(p[3]); last = int(p[0])
print(len(seen), last, flush=True)
`

// Echo transactions every 5 ms until the stop file exists (or 15 minutes
// pass); prints "<start unix ms> <latency ms or -1 for a failure>" each.
const ECHO = `
import os, sys, time
f, stop, end = sys.argv[1], sys.argv[2], time.monotonic() + 900
out = []
while not os.path.exists(stop) and time.monotonic() < end:
    t, w = time.perf_counter(), time.time()
    try:
        fd = os.open(f, os.O_RDWR); os.write(fd, b'ping'); r = os.read(fd, 100); os.close(fd)
        out.append('%d %.3f' % (w * 1000, (time.perf_counter() - t) * 1000))
    except OSError:
        out.append('%d -1' % (w * 1000))
    time.sleep(0.005)
print('\\n'.join(out))
`

interface Echo { n: number, fails: number, p50: number, p99: number }

function echoStats (lines: string[]): Echo {
  const lat = lines.map(l => Number(l.split(' ')[1]))
  const ok = lat.filter(x => x >= 0).sort((x, y) => x - y)
  return { n: lat.length, fails: lat.length - ok.length, p50: ok[ok.length >> 1] ?? NaN, p99: ok[Math.floor(ok.length * 0.99)] ?? NaN }
}

/** Python children of this run, ended by their pid if the run fails half-way. */
const children = new Set<ChildProcess>()

function spawnPy (code: string, args: string[]): { ready: Promise<void>, out: Promise<string> } {
  const proc = spawn('python3', ['-c', code, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.add(proc)
  proc.on('exit', () => children.delete(proc))
  let text = ''
  let ready: () => void = () => {}
  const readyP = new Promise<void>(resolve => { ready = resolve })
  const out = new Promise<string>(resolve => proc.on('exit', () => { ready(); resolve(text.replace(/^open\n/, '').trim()) }))
  proc.stdout.on('data', (d: Buffer) => {
    text += d.toString()
    if (text.startsWith('open\n')) ready()
  })
  return { ready: readyP, out }
}

async function cpuTicks (pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ')
  return Number(f[11]) + Number(f[12])
}

async function linkBytes (d: Daemon, peer: string): Promise<number> {
  const s = await readText(d.path('peers', peer, 'status'))
  const v = (k: string): number => Number(new RegExp(`^${k}: (\\d+)$`, 'm').exec(s)?.[1] ?? NaN)
  return v('tx_bytes') + v('rx_bytes')
}

interface Rest { cpu: Record<string, number>, perInterval: Record<string, number> }

/** CPU (% of one core) per node and bytes per gossip interval per link, over REST_MS. */
async function atRest (ds: Daemon[], b: Daemon): Promise<Rest> {
  const ticks0 = await Promise.all(ds.map(async d => await cpuTicks(d.pid)))
  const bytes0 = [await linkBytes(b, 'alpha'), await linkBytes(b, 'gamma')]
  const t0 = Date.now()
  await new Promise(resolve => setTimeout(resolve, REST_MS))
  const el = Date.now() - t0
  const ticks1 = await Promise.all(ds.map(async d => await cpuTicks(d.pid)))
  const bytes1 = [await linkBytes(b, 'alpha'), await linkBytes(b, 'gamma')]
  const cpu: Record<string, number> = {}
  ds.forEach((d, i) => { cpu[d.spec.id] = (ticks1[i] - ticks0[i]) * 10 / el * 100 })
  const intervals = el / GOSSIP_MS
  return { cpu, perInterval: { 'alpha-beta': (bytes1[0] - bytes0[0]) / intervals, 'beta-gamma': (bytes1[1] - bytes0[1]) / intervals } }
}

interface Run { n: number, burstS: number, afterBurstS: number, totalS: number, got: number, echoRest: Echo, echoBurst: Echo, echoAfter: Echo, rest0: Rest, rest: Rest }

/** Echo from d to beta for ms, the anchor for the figures during convergence. */
async function echoFor (d: Daemon, dir: string, ms: number): Promise<Echo> {
  const stop = `${dir}/stop-anchor`
  const echo = spawnPy(ECHO, [d.path('peers/beta/svc/01'), stop])
  await new Promise(resolve => setTimeout(resolve, ms))
  await sh(`touch ${stop}`)
  return echoStats((await echo.out).split('\n').filter(l => l !== ''))
}

async function scaleRun (n: number): Promise<Run> {
  const ids = ['alpha', 'beta', 'gamma']
  const netw = await makeNetwork(ids, { links: [['alpha', 'beta'], ['beta', 'gamma']], defaultTimings: true, extra: Object.fromEntries(ids.map(id => [id, `gossip_ms = ${GOSSIP_MS}\n`])) })
  await trustAll(netw)
  try {
    const ds = await startNetwork(netw)
    const [a, b, g] = ids.map(id => ds.get(id) as Daemon)
    await waitState(b, 'alpha', 'up', 30_000)
    await waitState(b, 'gamma', 'up', 30_000)
    await waitState(a, 'beta', 'up', 30_000)
    const rest0 = await atRest([a, b, g], b)
    const echoRest = await echoFor(g, netw.dir, 5000)
    const counter = spawnPy(COUNTER, [g.path('events'), String(n), '600'])
    await counter.ready
    const stop = `${netw.dir}/stop-echo`
    // From gamma, which the burst does not touch but every file reaches through beta.
    const echo = spawnPy(ECHO, [g.path('peers/beta/svc/01'), stop])
    const w = await py(WRITER, [a.path('files'), String(n)], 600_000)
    if (w.code !== 0) throw new Error(`writer failed: ${w.stderr}`)
    const [t0, t1] = w.stdout.trim().split(' ').map(Number)
    const [got, last] = (await counter.out).split(' ').map(Number)
    await sh(`touch ${stop}`)
    const echoes = (await echo.out).split('\n').filter(l => l !== '')
    const echoBurst = echoStats(echoes.filter(l => Number(l.split(' ')[0]) < t1))
    const echoAfter = echoStats(echoes.filter(l => Number(l.split(' ')[0]) >= t1))
    // Let the last adverts and summaries settle before measuring rest.
    await new Promise(resolve => setTimeout(resolve, 2 * GOSSIP_MS))
    const rest = await atRest([a, b, g], b)
    return { n, burstS: (t1 - t0) / 1000, afterBurstS: (last - t1) / 1000, totalS: (last - t0) / 1000, got, echoRest, echoBurst, echoAfter, rest0, rest }
  } finally {
    for (const c of children) c.kill()
    // Also removes the network's folder: 10,000 files on three nodes.
    await teardown()
  }
}

const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]
const f1 = (x: number): string => x.toFixed(1)

function report (runs: Run[], goalS: number): void {
  const n = runs[0].n
  const m = (pick: (r: Run) => number): number => median(runs.map(pick))
  console.log(`\n${n} managed files written on alpha, line alpha - beta - gamma (gossip every ${GOSSIP_MS} ms), median of ${runs.length}:`)
  console.log(`  runs (converged after burst, s):      ${runs.map(r => f1(r.afterBurstS)).join(', ')}${runs.some(r => r.got < n) ? `   (files arrived: ${runs.map(r => r.got).join(', ')})` : ''}`)
  console.log(`  burst (writing them through FUSE):    ${f1(m(r => r.burstS))} s`)
  console.log(`  gamma has all, after the burst:       ${f1(m(r => r.afterBurstS))} s   (from its start: ${f1(m(r => r.totalS))} s; goal <= ${goalS} s)`)
  for (const [label, pick] of [['at rest, before (anchor)', (r: Run) => r.echoRest], ['during the burst', (r: Run) => r.echoBurst], ['after it, until converged', (r: Run) => r.echoAfter]] as const) {
    console.log(`  echo gamma -> beta, ${label.padEnd(26)}p50 ${f1(m(r => pick(r).p50))} ms, p99 ${f1(m(r => pick(r).p99))} ms (goal p99 <= 20 ms), ${m(r => pick(r).fails)} failed of ${m(r => pick(r).n)}`)
  }
  for (const [label, pick] of [['at rest, no files (anchor)', (r: Run) => r.rest0], [`at rest, ${n} files`, (r: Run) => r.rest]] as const) {
    const cpu = ['alpha', 'beta', 'gamma'].map(id => `${id} ${(m(r => pick(r).cpu[id])).toFixed(2)}%`).join(', ')
    const bytes = ['alpha-beta', 'beta-gamma'].map(l => `${l} ${m(r => pick(r).perInterval[l]).toFixed(0)} B`).join(', ')
    console.log(`  ${label.padEnd(36)}CPU ${cpu}; per interval ${bytes} (goal < 1%, < 2 KB)`)
  }
}

/** Seconds from writing a 1 MB file on the first node to the last node's event. */
async function converge (ids: string[]): Promise<number> {
  const links = ids.slice(1).map((id, i) => [ids[i], id] as [string, string])
  const netw = await makeNetwork(ids, { links, defaultTimings: true, extra: Object.fromEntries(ids.map(id => [id, `gossip_ms = ${GOSSIP_MS}\n`])) })
  await trustAll(netw)
  try {
    const ds = await startNetwork(netw)
    const first = ds.get(ids[0]) as Daemon
    const last = ds.get(ids[ids.length - 1]) as Daemon
    for (const id of ids) {
      const d = ds.get(id) as Daemon
      const want = id === ids[0] || id === ids[ids.length - 1] ? 1 : 2
      await eventually(async () => (await readText(d.path('status'))).includes(`(${want} up)`), `${id} up`, 30_000)
    }
    await sh(`head -c 1000000 /dev/urandom > ${netw.dir}/one-mb`)
    const seen = spawnPy(COUNTER, [last.path('events'), '1', '120'])
    await seen.ready
    const t0 = Date.now()
    await sh(`cp ${netw.dir}/one-mb ${first.path('files/one-mb')}`)
    const at = Number((await seen.out).split(' ')[1])
    return (at - t0) / 1000
  } finally {
    for (const c of children) c.kill()
    // Also removes the network's folder: 10,000 files on three nodes.
    await teardown()
  }
}

export async function filesBench (): Promise<void> {
  const sizes = (process.env.BENCH_FILES ?? '2000,10000').split(',').map(Number)
  for (const n of sizes) {
    const runs: Run[] = []
    for (let i = 0; i < RUNS; i++) runs.push(await scaleRun(n))
    report(runs, n <= 2000 ? 10 : 60)
  }
  if (process.env.BENCH_HOPS === '0') return
  const hop = await converge(['n1', 'n2'])
  const line = await converge(['n1', 'n2', 'n3', 'n4', 'n5', 'n6'])
  const floor = 5 * hop + GOSSIP_MS / 1000
  console.log('\nManaged files, 1 MB published at one end of a line of 6 nodes (gossip every 2 s):')
  console.log(`  one hop (2 nodes):         ${(hop * 1000).toFixed(0)} ms`)
  console.log(`  5 hops (6 nodes):          ${(line * 1000).toFixed(0)} ms`)
  console.log(`  floor, 5 x one hop + gossip interval: ${(floor * 1000).toFixed(0)} ms; measured / floor = ${(line / floor).toFixed(2)}`)
}
