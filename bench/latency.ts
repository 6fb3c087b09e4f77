// Transaction latency and link-down detection, each against anchors
// measured in the same run, reported with ratios.
import { spawn } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { spawnReady } from './util.js'
import { Daemon, ROOT, makeNetwork, py, sh, startNetwork, teardown, tempDir, waitEvent, waitState } from '../test/helpers/net.js'

const N = Number(process.env.BENCH_N ?? 3000)
const CONC = 8

// Python client: N cycles of open, write 4 bytes, read the reply, close
// (or, with keep=1, write and read on one handle kept open). With a thread
// count, prints aggregate transactions per second too.
const CLIENT = `
import os, sys, time, threading
f, n, threads, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1'
lat = []
lock = threading.Lock()
def run(k):
    mine = []
    kept = os.open(f, os.O_RDWR) if keep else None
    for i in range(k):
        t = time.perf_counter_ns()
        fd = kept if keep else os.open(f, os.O_RDWR)
        os.write(fd, b'ping')
        r = os.read(fd, 100)
        if not keep: os.close(fd)
        mine.append(time.perf_counter_ns() - t)
        assert r == b'ping', r
    if keep: os.close(kept)
    with lock: lat.extend(mine)
for i in range(min(200, n)): run(1)
lat.clear()
t0 = time.perf_counter()
ts = [threading.Thread(target=run, args=(n // threads,)) for _ in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
el = time.perf_counter() - t0
lat.sort()
print(lat[len(lat) // 2] / 1000, lat[int(len(lat) * 0.99)] / 1000, len(lat) / el)
`

interface Lat { p50: number, p99: number, rate: number }

async function client (file: string, threads: number, keep = false): Promise<Lat> {
  const r = await py(CLIENT, [file, String(N), String(threads), keep ? '1' : '0'], 600_000)
  if (r.code !== 0) throw new Error(`client failed: ${r.stderr}`)
  const [p50, p99, rate] = r.stdout.trim().split(' ').map(Number)
  return { p50, p99, rate }
}

async function bareFuse (threads: number, keep = false): Promise<Lat> {
  const mnt = path.join(await tempDir('peerfs-bench-'), 'mnt')
  const { proc } = await spawnReady(process.execPath, [path.join(ROOT, 'bench/bare-echo.cjs'), mnt], /mounted/)
  try {
    return await client(path.join(mnt, 'echo'), threads, keep)
  } finally {
    proc.kill('SIGTERM')
    await new Promise(resolve => proc.once('exit', resolve))
    await sh(`fusermount -uz ${mnt}`)
  }
}

/** Serial request/reply from this process to an echo server process. */
async function rawTcp (): Promise<Lat> {
  const { proc, line } = await spawnReady(process.execPath, [path.join(ROOT, 'bench/tcp-echo.cjs')], /port (\d+)/)
  try {
    const port = Number(/\d+/.exec(line)?.[0])
    const sock = net.connect(port, '127.0.0.1')
    sock.setNoDelay(true)
    await new Promise(resolve => sock.once('connect', resolve))
    const lat: number[] = []
    for (let i = 0; i < N + 200; i++) {
      const t = process.hrtime.bigint()
      await new Promise<void>((resolve) => {
        sock.once('data', () => resolve())
        sock.write('ping')
      })
      if (i >= 200) lat.push(Number(process.hrtime.bigint() - t) / 1000)
    }
    sock.destroy()
    lat.sort((a, b) => a - b)
    return { p50: lat[lat.length >> 1], p99: lat[Math.floor(lat.length * 0.99)], rate: NaN }
  } finally {
    proc.kill('SIGTERM')
  }
}

// Wake-up latency: a server sits in select() on svc/NN; the client stamps
// the time just before it writes a request on the other node; the server
// stamps the time select returns and sends it back as the reply. Same
// machine, same clock, back to back (an idle VM CPU takes long to wake).
// The anchor is the same pair of Python programs over a loopback TCP socket.
const WAKE_SERVER = `
import os, select, socket, sys, time
if sys.argv[1] == 'tcp':
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()
    print(srv.getsockname()[1], flush=True)
    conn = srv.accept()[0]; conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = conn.fileno(); recv = lambda: conn.recv(1000); send = conn.send
else:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)
    print('ready', flush=True)
    recv = lambda: os.read(fd, 1000); send = lambda b: os.write(fd, b)
while True:
    select.select([fd], [], [])
    t = time.time_ns()
    recv()
    send(b'%d' % t)
`
const WAKE_CLIENT = `
import os, socket, sys, time
n = int(sys.argv[2])
if sys.argv[1].isdigit():
    s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def once():
        t = time.time_ns(); s.send(b'x'); return int(s.recv(100)) - t
else:
    def once():
        fd = os.open(sys.argv[1], os.O_RDWR)
        t = time.time_ns(); os.write(fd, b'x'); woke = int(os.read(fd, 100)); os.close(fd)
        return woke - t
for i in range(100): once()
lat = sorted(once() / 1000 for i in range(n))
print(lat[len(lat) // 2], lat[int(len(lat) * 0.99)])
`

interface Wake { p50: number, p99: number }

async function wakeLatency (serverArg: string, clientArg: (line: string) => string): Promise<Wake> {
  const server = spawn('python3', ['-c', WAKE_SERVER, serverArg], { stdio: ['ignore', 'pipe', 'ignore'] })
  try {
    const line = await new Promise<string>(resolve => server.stdout?.once('data', (d: Buffer) => resolve(d.toString().trim())))
    const r = await py(WAKE_CLIENT, [clientArg(line), String(N)], 300_000)
    const [p50, p99] = r.stdout.trim().split(' ').map(Number)
    return { p50, p99 }
  } finally {
    server.kill()
  }
}

async function peerfs (): Promise<{ serial: Lat, kept: Lat, conc: Lat, wake: Wake, killDownMs: number, stopDownMs: number }> {
  const netw = await makeNetwork(['alpha', 'beta'], { defaultTimings: true })
  try {
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    const b = ds.get('beta') as Daemon
    await waitState(a, 'beta')
    const file = a.path('peers/beta/svc/01')
    const serial = await client(file, 1)
    const kept = await client(file, 1, true)
    const conc = await client(file, CONC)
    const wake = await wakeLatency(b.path('svc/30'), () => a.path('peers/beta/svc/30'))

    const downAfter = async (signal: NodeJS.Signals): Promise<number> => {
      const events = waitEvent(a.path('events'), ' beta down', 20_000)
      await new Promise(resolve => setTimeout(resolve, 300))
      const t0 = Date.now()
      process.kill(b.pid, signal)
      const line = await events
      return Number(line.split(' ')[0]) - t0
    }
    const killDownMs = await downAfter('SIGKILL')
    await b.start()
    await waitState(a, 'beta', 'up', 20_000)
    const stopDownMs = await downAfter('SIGSTOP')
    process.kill(b.pid, 'SIGCONT')
    return { serial, kept, conc, wake, killDownMs, stopDownMs }
  } finally {
    await teardown()
  }
}

function row (name: string, l: Lat, anchor: Lat): string {
  const f = (n: number): string => n.toFixed(0).padStart(8)
  return `${name.padEnd(34)}${f(l.p50)}${f(l.p99)}   ${(l.p50 / anchor.p50).toFixed(2).padStart(5)}x`
}

export async function latencyBench (): Promise<void> {
  const bare = await bareFuse(1)
  const bareKept = await bareFuse(1, true)
  const bareConc = await bareFuse(CONC)
  const tcp = await rawTcp()
  const tcpWake = await wakeLatency('tcp', (port) => port)
  const p = await peerfs()
  console.log(`\nTransaction: open, write 4 B, read reply, close (Python client), ${N} cycles after 200 warm-up`)
  console.log(`${''.padEnd(34)}  p50 µs  p99 µs   p50 vs bare FUSE`)
  console.log(row('bare fuse-native echo file', bare, bare))
  console.log(row('peerfs svc/01 via beta (serial)', p.serial, bare))
  console.log(row('raw TCP echo, Node to Node', tcp, bare))
  console.log(`\nOne handle kept open, write + read per transaction:`)
  console.log(row('bare fuse-native echo file', bareKept, bareKept))
  console.log(row('peerfs svc/01 via beta', p.kept, bareKept))
  console.log(`\n${CONC} concurrent clients: peerfs ${p.conc.rate.toFixed(0)} tx/s (p50 ${p.conc.p50.toFixed(0)} µs, p99 ${p.conc.p99.toFixed(0)} µs); ` +
    `bare FUSE ${bareConc.rate.toFixed(0)} tx/s; ratio ${(p.conc.rate / bareConc.rate).toFixed(2)}`)
  console.log(`serial: peerfs ${p.serial.rate.toFixed(0)} tx/s, bare FUSE ${bare.rate.toFixed(0)} tx/s`)
  console.log(`\nselect() wake-up, request written on alpha to select() returning on beta's svc/30:`)
  console.log(`  peerfs                p50 ${p.wake.p50.toFixed(0)} µs, p99 ${p.wake.p99.toFixed(0)} µs`)
  console.log(`  Python over raw TCP   p50 ${tcpWake.p50.toFixed(0)} µs, p99 ${tcpWake.p99.toFixed(0)} µs   (peerfs ${(p.wake.p50 / tcpWake.p50).toFixed(2)}x)`)
  console.log('\nPeer shows down in events (default timings: keepalive 1000 ms, down_after 3000 ms):')
  console.log(`  killed (SIGKILL, socket closed):   ${p.killDownMs} ms`)
  console.log(`  frozen (SIGSTOP, silent link):     ${p.stopDownMs} ms   (bound: down_after_ms + keepalive_ms = 4000)`)
}
