// Packet channels: throughput of 64-byte packets one way (alpha's pkt/NN
// to one reader on beta's) and the wake-up latency of one packet (written
// on alpha, select() returning on beta), each against anchors measured in
// the same run: a bare fuse-native file taking writes in a loop (the FUSE
// floor; bench/bare-sink.cjs) and raw TCP over loopback. Every program is
// Python in its own process, the way a user would write it. Nothing is
// asserted; the numbers and ratios are for the reader.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { Daemon, ROOT, eventually, makeNetwork, py, readText, sh, startNetwork, teardown, tempDir, waitState } from '../test/helpers/net.js'

const N_ONE = Number(process.env.BENCH_PKT_N ?? 50_000)
const N_BATCH = N_ONE * 4
const BATCH = 100
const N_LAT = Number(process.env.BENCH_PKT_LAT ?? 2000)

export interface PacketsResult {
  floorWrite: number
  floorRead: number
  /** CPU µs per write / read of the bare filesystem's process. */
  floorWriteCpu: number
  floorReadCpu: number
  tcpOne: number
  tcpBatch: number
  oneRate: number
  batchRate: number
  /** CPU µs per packet of alpha's and beta's daemons. */
  oneCpu: number[]
  batchCpu: number[]
  floorWriteP50: number
  floorWriteP99: number
  tcpWakeP50: number
  tcpWakeP99: number
  wakeP50: number
  wakeP99: number
  /** The same wake-up through a transaction (svc/NN): the tree and link path packets share. */
  svcWakeP50: number
  svcWakeP99: number
}

// The FUSE floor: N writes of one 72-byte record each, then N reads, on a
// file whose write takes everything; p50/p99 of a single write.
const FLOOR = `
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
n, pid = int(sys.argv[2]), int(sys.argv[3])
def cpu():
    f = open('/proc/%d/stat' % pid).read().split(') ')[1].split(' ')
    return (int(f[11]) + int(f[12])) * 1e6 / os.sysconf('SC_CLK_TCK')
rec = b'beta 64\\n' + b'x' * 64
for i in range(1000): os.write(fd, rec)
t, c = time.perf_counter(), cpu()
for i in range(n): os.write(fd, rec)
w, wc = n / (time.perf_counter() - t), (cpu() - c) / n
t, c = time.perf_counter(), cpu()
for i in range(n): os.read(fd, 1 << 17)
r, rc = n / (time.perf_counter() - t), (cpu() - c) / n
lat = []
for i in range(5000):
    t = time.perf_counter_ns(); os.write(fd, rec); lat.append((time.perf_counter_ns() - t) / 1000)
lat.sort()
print(w, r, lat[len(lat) // 2], lat[int(len(lat) * 0.99)], wc, rc)
`

// One way: the sender prints when it starts, the receiver when it has all.
// Sender modes: pkt (records on pkt/NN, k per write) or tcp (k per send).
const SEND = `
import os, socket, sys, time
mode, where, n, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rec = b'beta 64\\n' + b'x' * 64 if mode == 'pkt' else b'x' * 64
if mode == 'pkt':
    fd = os.open(where, os.O_WRONLY)
    def put(b):
        while b: b = b[os.write(fd, b):]
else:
    s = socket.create_connection(('127.0.0.1', int(where))); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    put = s.sendall
chunk = rec * k
print(time.time(), flush=True)
for i in range(n // k): put(chunk)
time.sleep(1)
`
const RECV = `
import os, socket, sys, time
mode, where, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == 'pkt':
    fd = os.open(where, os.O_RDONLY)
    print('ready', flush=True)
    got = 0
    while got < n:
        head = os.read(fd, 1 << 17).split(b'\\n', 1)[0]
        if not head.endswith((b' up', b' down')): got += 1
else:
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()
    print(srv.getsockname()[1], flush=True)
    c = srv.accept()[0]
    want = n * 64
    while want > 0: want -= len(c.recv(1 << 16))
print(time.time(), flush=True)
`

// Wake-up: the server sits in select(); it stamps the time select returns
// and sends the stamp back; the client stamps just before its write.
const WAKE_SERVER = `
import os, select, socket, sys, time
if sys.argv[1] == 'tcp':
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()
    print(srv.getsockname()[1], flush=True)
    conn = srv.accept()[0]; conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = conn.fileno(); recv = lambda: conn.recv(1000); reply = lambda t: conn.send(b'%d' % t)
else:
    mode, fd = sys.argv[1], os.open(sys.argv[2], os.O_RDWR | os.O_NONBLOCK)
    print('ready', flush=True)
    recv = lambda: os.read(fd, 1 << 17)
    if mode == 'pkt': reply = lambda t: os.write(fd, b'alpha %d\\n%d' % (len(b'%d' % t), t))
    else: reply = lambda t: os.write(fd, b'%d' % t)
try:
    while True:
        select.select([fd], [], [])
        t = time.time_ns()
        if recv().endswith((b' up\\n', b' down\\n')): continue
        reply(t)
except (BrokenPipeError, ConnectionResetError):
    pass
`
const WAKE_CLIENT = `
import os, socket, sys, time
where, n = sys.argv[1], int(sys.argv[2])
if where.isdigit():
    s = socket.create_connection(('127.0.0.1', int(where))); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def once():
        t = time.time_ns(); s.send(b'x'); return int(s.recv(100)) - t
elif '/svc/' in where:
    def once():
        fd = os.open(where, os.O_RDWR)
        t = time.time_ns(); os.write(fd, b'x'); woke = int(os.read(fd, 100)); os.close(fd)
        return woke - t
else:
    fd = os.open(where, os.O_RDWR)
    def read_packet():
        while True:
            head, _, body = os.read(fd, 1 << 17).partition(b'\\n')
            if not head.endswith((b' up', b' down')): return body
    def once():
        t = time.time_ns()
        os.write(fd, b'beta 1\\nx')
        return int(read_packet()) - t
    end = time.monotonic() + 10
    while True:
        try:
            once(); break
        except ConnectionRefusedError:
            if time.monotonic() > end: raise
            time.sleep(0.02)
for i in range(200): once()
lat = sorted(once() / 1000 for i in range(n))
print(lat[len(lat) // 2], lat[int(len(lat) * 0.99)])
`

function spawnPy (code: string, args: string[]): { proc: ChildProcess, lines: Promise<string>[] } {
  const proc = spawn('python3', ['-c', code, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  const waiting: Array<(l: string) => void> = []
  const lines = Array.from({ length: 4 }, () => new Promise<string>(resolve => waiting.push(resolve)))
  let buf = ''
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      waiting.shift()?.(buf.slice(0, i))
      buf = buf.slice(i + 1)
    }
  })
  return { proc, lines }
}

/** CPU time (user + system) a process has used, in µs. */
function cpuUs (pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(f[11]) + Number(f[12])) * 1e6 / 100 // USER_HZ is 100 on Linux
}

interface Rate { rate: number, cpu: number[] }

/** Packets per second, sender start to receiver done; and the CPU µs per packet of each of pids. */
async function oneWay (mode: 'pkt' | 'tcp', recvAt: string, sendTo: (ready: string) => string, n: number, k: number, known = async () => {}, pids: number[] = []): Promise<Rate> {
  const r = spawnPy(RECV, [mode, recvAt, String(n)])
  try {
    const ready = await r.lines[0]
    await known()
    const c0 = pids.map(cpuUs)
    const s = spawnPy(SEND, [mode, sendTo(ready), String(n), String(k)])
    const t0 = Number(await s.lines[0])
    const t1 = Number(await r.lines[1])
    const cpu = pids.map((p, i) => (cpuUs(p) - c0[i]) / n)
    s.proc.kill()
    return { rate: n / (t1 - t0), cpu }
  } finally {
    r.proc.kill()
  }
}

async function wake (serverArgs: string[], clientArg: (line: string) => string): Promise<[number, number]> {
  const server = spawnPy(WAKE_SERVER, serverArgs)
  try {
    const line = await server.lines[0]
    const r = await py(WAKE_CLIENT, [clientArg(line), String(N_LAT)], 300_000)
    if (r.code !== 0) throw new Error(`wake client: ${r.stderr}`)
    const [p50, p99] = r.stdout.trim().split(' ').map(Number)
    return [p50, p99]
  } finally {
    server.proc.kill()
  }
}

async function floor (): Promise<number[]> {
  const mnt = path.join(await tempDir('peerfs-bench-'), 'mnt')
  const sink = spawn(process.execPath, [path.join(ROOT, 'bench/bare-sink.cjs'), mnt], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    await new Promise<void>((resolve) => sink.stdout?.on('data', (d: Buffer) => { if (d.toString().includes('mounted')) resolve() }))
    const r = await py(FLOOR, [path.join(mnt, 'sink'), String(N_ONE), String(sink.pid)], 300_000)
    if (r.code !== 0) throw new Error(`floor: ${r.stderr}`)
    return r.stdout.trim().split(' ').map(Number)
  } finally {
    sink.kill('SIGTERM')
    await new Promise(resolve => sink.once('exit', resolve))
    await sh(`fusermount -uz ${mnt}`)
  }
}

export async function packetsBench (): Promise<PacketsResult> {
  const [floorWrite, floorRead, floorWriteP50, floorWriteP99, floorWriteCpu, floorReadCpu] = await floor()
  const tcpOne = (await oneWay('tcp', '-', (port) => port, N_ONE, 1)).rate
  const tcpBatch = (await oneWay('tcp', '-', (port) => port, N_BATCH, BATCH)).rate
  const [tcpWakeP50, tcpWakeP99] = await wake(['tcp'], (port) => port)
  const netw = await makeNetwork(['alpha', 'beta'], { defaultTimings: true })
  let res: PacketsResult
  try {
    const ds = await startNetwork(netw)
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    const reader = b.path('pkt/20')
    const writer = a.path('pkt/20')
    // The reader's open is announced to alpha; the sender starts once alpha knows.
    const known = async (): Promise<void> => await eventually(async () => /^pkt_channels: 20$/m.test(await readText(a.path('peers/beta/status'))), 'alpha knows the reader', 10_000, 20)
    const one = await oneWay('pkt', reader, () => writer, N_ONE, 1, known, [a.pid, b.pid])
    const batch = await oneWay('pkt', reader, () => writer, N_BATCH, BATCH, known, [a.pid, b.pid])
    const [oneRate, batchRate, oneCpu, batchCpu] = [one.rate, batch.rate, one.cpu, batch.cpu]
    const [wakeP50, wakeP99] = await wake(['pkt', b.path('pkt/21')], () => a.path('pkt/21'))
    const [svcWakeP50, svcWakeP99] = await wake(['svc', b.path('svc/30')], () => a.path('peers/beta/svc/30'))
    res = { floorWrite, floorRead, floorWriteCpu, floorReadCpu, tcpOne, tcpBatch, oneRate, batchRate, oneCpu, batchCpu, floorWriteP50, floorWriteP99, tcpWakeP50, tcpWakeP99, wakeP50, wakeP99, svcWakeP50, svcWakeP99 }
  } finally {
    await teardown()
  }
  const f = (n: number): string => n.toFixed(0).padStart(10)
  const x = (n: number, d: number): string => `${(n / d).toFixed(n / d >= 100 ? 0 : 2)}x`.padStart(9)
  console.log(`\nPacket channels: 64-byte packets one way, alpha pkt/20 -> one reader on beta (Python; ${N_ONE} one per write, ${N_BATCH} ${BATCH} per write)`)
  console.log(`${''.padEnd(44)}    pkts/s  vs FUSE write floor`)
  console.log(`${'bare fuse-native file, one write per record'.padEnd(44)}${f(res.floorWrite)}${x(res.floorWrite, res.floorWrite)}`)
  console.log(`${'bare fuse-native file, one read per record'.padEnd(44)}${f(res.floorRead)}${x(res.floorRead, res.floorWrite)}`)
  console.log(`${'peerfs, one record per write'.padEnd(44)}${f(res.oneRate)}${x(res.oneRate, res.floorWrite)}   (goal >= 0.70x)`)
  console.log(`${`peerfs, ${BATCH} records per write`.padEnd(44)}${f(res.batchRate)}${x(res.batchRate, res.floorWrite)}   (goal >= 50000/s)`)
  console.log(`CPU µs per packet: bare FUSE write ${res.floorWriteCpu.toFixed(1)}, read ${res.floorReadCpu.toFixed(1)}; ` +
    `peerfs one per write alpha ${res.oneCpu[0].toFixed(1)} + beta ${res.oneCpu[1].toFixed(1)}, ${BATCH} per write alpha ${res.batchCpu[0].toFixed(1)} + beta ${res.batchCpu[1].toFixed(1)}`)
  console.log(`${'raw TCP, one send() per packet'.padEnd(44)}${f(res.tcpOne)}${x(res.tcpOne, res.floorWrite)}`)
  console.log(`${`raw TCP, ${BATCH} packets per send()`.padEnd(44)}${f(res.tcpBatch)}${x(res.tcpBatch, res.floorWrite)}`)
  const budget = (res.floorWriteP50 + res.tcpWakeP50) * 1.3
  console.log(`\nOne packet, write on alpha to select() returning on beta (${N_LAT} samples):`)
  console.log(`  peerfs pkt/21              p50 ${res.wakeP50.toFixed(0)} µs, p99 ${res.wakeP99.toFixed(0)} µs`)
  console.log(`  raw TCP select wake-up     p50 ${res.tcpWakeP50.toFixed(0)} µs, p99 ${res.tcpWakeP99.toFixed(0)} µs`)
  console.log(`  bare FUSE write            p50 ${res.floorWriteP50.toFixed(0)} µs, p99 ${res.floorWriteP99.toFixed(0)} µs`)
  console.log(`  peerfs svc/30 (a request)  p50 ${res.svcWakeP50.toFixed(0)} µs, p99 ${res.svcWakeP99.toFixed(0)} µs   (pkt ${(res.wakeP50 / res.svcWakeP50).toFixed(2)}x)`)
  console.log(`  goal: p50 <= (FUSE write + TCP one way) x 1.3 = ${budget.toFixed(0)} µs: ${res.wakeP50 <= budget ? 'met' : 'not met'} (${(res.wakeP50 / (res.floorWriteP50 + res.tcpWakeP50)).toFixed(2)}x the sum)`)
  console.log(`PKT_RESULT ${JSON.stringify(res)}`)
  return res
}
