// What the benchmark parts share: timing, child processes that print a
// ready line, the source data (made once per run), daemon peak RSS, and the
// samples each part records for the summary table.
//
// This machine's traps shape how sources and destinations are used:
// memory the guest freed is handed back to the host within seconds, so a
// write into pages just freed is 2-3 s/GiB cheaper than a fresh one, and
// creating files is up to 10x slower for a while after deleting many. So
// every timed run writes to a new name, nothing is deleted until the whole
// bench is over (removeAtEnd; run.ts removes it all last), and the runs of
// a comparison are interleaved round by round.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { ROOT, py, sh, tempDir } from '../test/helpers/net.js'

export const GIB_MB = Number(process.env.BENCH_GIB_MB ?? 1024)
export const SMALL = Number(process.env.BENCH_SMALL ?? 5000)
export const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3))

/** Samples by metric name, one per round, for the summary table. */
export type Samples = Map<string, number[]>

export function record (s: Samples, name: string, v: number): void {
  const a = s.get(name) ?? []
  a.push(v)
  s.set(name, a)
}

export function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

export async function must (cmd: string, timeoutMs = 600_000): Promise<void> {
  const r = await sh(cmd, timeoutMs)
  if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}: ${r.stderr}`)
}

/**
 * Seconds a shell command takes; it must succeed. The dirty data of what ran
 * before is written out first (sync, not timed), so its writeback does not
 * land on this run.
 */
export async function timedSh (cmd: string, timeoutMs = 600_000): Promise<number> {
  await must('sync', timeoutMs)
  const t = process.hrtime.bigint()
  await must(cmd, timeoutMs)
  return Number(process.hrtime.bigint() - t) / 1e9
}

/** Starts a child and resolves once its stdout matches ready. */
export async function spawnReady (cmd: string, args: string[], ready: RegExp): Promise<{ proc: ChildProcess, line: string }> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], cwd: ROOT })
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      const m = ready.exec(out)
      if (m !== null) resolve(m[0])
    })
    proc.on('exit', (code) => reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}`)))
  })
  return { proc, line }
}

export async function stop (proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise(resolve => proc.once('exit', resolve))
  proc.kill('SIGTERM')
  await exited
}

/** CPU seconds (user + system, all threads) a process has used so far. */
export async function cpuSeconds (pid: number): Promise<number> {
  // Fields after the command (which may hold spaces) start at state; utime and stime are 12 and 13 on.
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / CLK_TCK
}

/** Linux's USER_HZ, which /proc reports times in (100 on every architecture peerfs runs on). */
const CLK_TCK = 100

/** Peak RSS (VmHWM) of a process in MB. */
export async function peakRss (pid: number): Promise<number> {
  return Number(/VmHWM:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024
}

/** Starts a new peak for peakRss (Linux: 5 > clear_refs). */
export async function resetPeakRss (pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, '5')
}

export interface Sources { dir: string, big: string, tree: string }

let sources: Promise<Sources> | undefined

/** A GIB_MB MiB file and SMALL files of 4 KiB in 50 folders, made once per run. */
export async function benchSources (): Promise<Sources> {
  sources ??= (async () => {
    const dir = await tempDir('peerfs-bench-src-')
    const big = path.join(dir, 'big.bin')
    const tree = path.join(dir, 'tree')
    await must(`head -c ${GIB_MB}M /dev/urandom > ${big}`)
    const r = await py(`
import os, sys
for i in range(int(sys.argv[2])):
    d = os.path.join(sys.argv[1], 'd%02d' % (i % 50))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'f%05d' % i), 'wb') as f: f.write(os.urandom(4096))
`, [tree, String(SMALL)], 600_000)
    if (r.code !== 0) throw new Error(`making the small files: ${r.stderr}`)
    return { dir, big, tree }
  })()
  return await sources
}

const atEnd: string[] = []

/** Folders to remove once every part has run (deleting many files slows creating them for minutes). */
export function removeAtEnd (...dirs: string[]): void {
  atEnd.push(...dirs)
}

/** Removes the sources and every folder given to removeAtEnd. */
export async function removeAll (): Promise<void> {
  if (sources !== undefined) atEnd.push((await sources).dir)
  sources = undefined
  const dirs = atEnd.splice(0)
  if (dirs.length > 0) await must(`rm -rf ${dirs.join(' ')}`)
}

/**
 * Reads an events file from now on and resolves with the unix-ms stamp of
 * the n-th line matching pattern (undefined after timeoutMs). Call it
 * before the action it waits for; it resolves `opened` once reading.
 */
export function nthEvent (file: string, pattern: string, n: number, timeoutMs: number): { opened: Promise<void>, stamp: Promise<number | undefined> } {
  let opened: () => void = () => {}
  const openedP = new Promise<void>(resolve => { opened = resolve })
  const proc = spawn('python3', ['-c', `
import os, re, select, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
print('open', flush=True)
pat, want, end, buf, seen = re.compile(sys.argv[2]), int(sys.argv[3]), time.monotonic() + float(sys.argv[4]), b'', 0
while time.monotonic() < end:
    if not select.select([fd], [], [], max(0, end - time.monotonic()))[0]: break
    buf += os.read(fd, 1 << 20)
    *lines, buf = buf.split(b'\\n')
    for l in lines:
        if pat.search(l.decode(errors='replace')):
            seen += 1
            if seen == want:
                print(l.decode().split(' ')[0], flush=True); sys.exit(0)
sys.exit(1)
`, file, pattern, String(n), String(timeoutMs / 1000)], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const stamp = new Promise<number | undefined>((resolve) => {
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.startsWith('open\n')) opened()
    })
    proc.on('exit', (code) => {
      opened()
      const line = out.split('\n')[1]
      resolve(code === 0 && line !== undefined ? Number(line) : undefined)
    })
  })
  return { opened: openedP, stamp }
}
