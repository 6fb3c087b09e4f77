// Transfer end to end: from `cp` into alpha's outbox to the file(s)
// complete in beta's inbox (the receiver's `recv` events), for one big file
// and for many small ones, against rsync -a over ssh to a private sshd on a
// loopback port and plain cp to a local folder. The sshd is BENCH_SSHD, or
// the system's, or else Debian's, which bench/sshd.sh fetches into .cache/
// in the checkout without installing it; if that fails the rsync rows are
// skipped with a note. While the big file moves, echo transactions on the
// same link measure what bulk data does to them. Peak RSS of both daemons
// is read from VmHWM, reset before each transfer. A file written at a
// steady pace (a logger, a capture) is timed from its close to complete in
// the inbox, against rsync of the same bytes, which can only start then.
//
// Rounds are interleaved (rsync, peerfs, rsync, peerfs) and each writes new
// names; the inbox and the rsync destination keep everything until the end.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, open, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Daemon, ROOT, freePort, makeNetwork, py, sh, startNetwork, teardown, tempDir, waitState } from '../test/helpers/net.js'
import { ROUNDS, SMALL, benchSources, cpuSeconds, must, nthEvent, peakRss, record, removeAtEnd, resetPeakRss, timedSh, type Samples } from './util.js'

interface Sshd { rsync: (src: string, dest: string) => string, stop: () => void }

/**
 * The sshd to run: BENCH_SSHD, the system's, or else one bench/sshd.sh
 * fetches and unpacks into the checkout (never installed); a string says
 * why there is none.
 */
async function findSshd (): Promise<{ cmd: string, fetched: boolean } | string> {
  const sshd = [process.env.BENCH_SSHD ?? '', '/usr/sbin/sshd', '/usr/bin/sshd'].find(p => p !== '' && existsSync(p))
  if (sshd !== undefined) return { cmd: sshd, fetched: false }
  const r = await sh(`sh ${path.join(ROOT, 'bench/sshd.sh')}`, 300_000)
  if (r.code === 0) return { cmd: r.stdout.trim(), fetched: true }
  return `no sshd, and bench/sshd.sh could not fetch one (${r.stderr.trim().split('\n').pop() ?? ''})`
}

/** A private sshd on a free loopback port, or why there is none. */
async function privateSshd (dir: string): Promise<Sshd | string> {
  const found = await findSshd()
  if (typeof found === 'string') return found
  const sshd = found.cmd
  const port = await freePort()
  await must(`ssh-keygen -q -t ed25519 -N '' -f ${dir}/host && ssh-keygen -q -t ed25519 -N '' -f ${dir}/user && cp ${dir}/user.pub ${dir}/authorized_keys && chmod 600 ${dir}/authorized_keys`)
  await writeFile(`${dir}/sshd_config`, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${dir}/host`, `AuthorizedKeysFile ${dir}/authorized_keys`,
    'PermitRootLogin yes', 'UsePAM no', 'PasswordAuthentication no', `PidFile ${dir}/sshd.pid`, 'StrictModes no'
  ].join('\n') + '\n')
  // Its privilege separation chroot; the fetched one's wrapper makes its own.
  if (!found.fetched) await mkdir('/run/sshd', { recursive: true, mode: 0o755 })
  const log = await open(`${dir}/sshd.log`, 'w')
  const proc = spawn(sshd, ['-D', '-e', '-f', `${dir}/sshd_config`], { stdio: ['ignore', 'ignore', log.fd] })
  await log.close()
  const ssh = `ssh -p ${port} -i ${dir}/user -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR`
  // Ready once it answers a login (bounded: 10 s).
  for (let i = 0; i < 50; i++) {
    if ((await sh(`${ssh} root@127.0.0.1 true`, 5000)).code === 0) {
      return { rsync: (src, dest) => `rsync -a -e '${ssh}' ${src} root@127.0.0.1:${dest}`, stop: () => proc.kill() }
    }
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  proc.kill()
  throw new Error(`${sshd} did not take a login on port ${port}`)
}

const ECHO_DURING = `
import os, sys, time
f, inbox = sys.argv[1], sys.argv[2]
lat = []
while not os.path.exists(inbox) and len(lat) < 20000:
    t = time.perf_counter_ns()
    fd = os.open(f, os.O_RDWR); os.write(fd, b'ping'); os.read(fd, 100); os.close(fd)
    lat.append((time.perf_counter_ns() - t) / 1e6)
    time.sleep(0.005)
lat.sort()
print(len(lat), lat[len(lat) // 2], lat[int(len(lat) * 0.99)])
`

/** The paced file: its size (MiB) and the writer's rate (MiB/s). */
export const PACED_MB = 256
export const PACED_RATE = 64

// Copies the first argv[3] MiB of argv[1] to argv[2] at argv[4] MiB/s; prints when the close returned (ms since the epoch).
const PACED = `
import os, sys, time
src, dest, mib, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with open(src, 'rb') as s, open(dest, 'wb', buffering=0) as d:
    t0 = time.monotonic()
    for i in range(mib):
        d.write(s.read(1 << 20))
        wait = t0 + (i + 1) / rate - time.monotonic()
        if wait > 0: time.sleep(wait)
print(int(time.time() * 1000))
`

/** Resolves with a note when the rsync anchor was skipped. */
export async function transferBench (samples: Samples): Promise<{ skipped?: string }> {
  const src = await benchSources()
  const work = await tempDir('peerfs-bench-xfer-')
  const found = await privateSshd(work)
  const sshd = typeof found === 'string' ? undefined : found
  // Its files stay until the run ends (removeAtEnd), not removed by teardown.
  const netw = await makeNetwork(['alpha', 'beta'], { defaultTimings: true, keepDir: true })
  try {
    await must(`mkdir ${work}/ssh-dest ${work}/local && head -c ${PACED_MB}M ${src.big} > ${work}/paced.bin`)
    const ds = await startNetwork(netw)
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    const outbox = a.path('peers/beta/outbox')
    for (let r = 0; r < ROUNDS; r++) {
      record(samples, 'local.big', await timedSh(`cp ${src.big} ${work}/local/big-${r}.bin`))
      if (sshd !== undefined) record(samples, 'rsync.big', await timedSh(sshd.rsync(src.big, `${work}/ssh-dest/big-${r}.bin`)))

      // One big file, with echo transactions on the same link meanwhile.
      await resetPeakRss(a.pid)
      await resetPeakRss(b.pid)
      const name = `big-${r}.bin`
      const got = nthEvent(b.path('events'), ` alpha recv ${name.replace('.', '\\.')}$`, 1, 600_000)
      await got.opened
      await must('sync')
      const cpu0 = [await cpuSeconds(a.pid), await cpuSeconds(b.pid)]
      const t0 = Date.now()
      const cp = must(`cp ${src.big} ${outbox}/${name}`)
      const echo = py(ECHO_DURING, [a.path('peers/beta/svc/01'), b.path('peers/alpha/inbox', name)], 600_000)
      await cp
      // How much of it was the cp itself: the sending starts at its close.
      record(samples, 'peerfs.big.cp', (Date.now() - t0) / 1000)
      const done = await got.stamp
      if (done === undefined) throw new Error(`${name} never arrived`)
      record(samples, 'peerfs.big', (done - t0) / 1000)
      record(samples, 'cpu.big.sender', await cpuSeconds(a.pid) - cpu0[0])
      record(samples, 'cpu.big.receiver', await cpuSeconds(b.pid) - cpu0[1])
      const [n, p50, p99] = (await echo).stdout.trim().split(' ').map(Number)
      record(samples, 'echo.n', n)
      record(samples, 'echo.p50', p50)
      record(samples, 'echo.p99', p99)

      // A file written at a pace: from its close to complete in the inbox.
      if (sshd !== undefined) record(samples, 'rsync.paced', await timedSh(sshd.rsync(`${work}/paced.bin`, `${work}/ssh-dest/paced-${r}.bin`)))
      const paced = `paced-${r}.bin`
      const arrived = nthEvent(b.path('events'), ` alpha recv ${paced.replace('.', '\\.')}$`, 1, 600_000)
      await arrived.opened
      await must('sync')
      const w = await py(PACED, [src.big, `${outbox}/${paced}`, String(PACED_MB), String(PACED_RATE)], 600_000)
      if (w.code !== 0) throw new Error(`the paced writer: ${w.stderr}`)
      const placed = await arrived.stamp
      if (placed === undefined) throw new Error(`${paced} never arrived`)
      record(samples, 'peerfs.paced', (placed - Number(w.stdout.trim())) / 1000)

      // The same file by rsync -a at the same pace (a slow source, a remote
      // rsync): its temp file streams, and is placed at rsync's rename.
      const synced = `rsynced-${r}.bin`
      const rsynced = nthEvent(b.path('events'), ` alpha recv ${synced.replace('.', '\\.')}$`, 1, 600_000)
      await rsynced.opened
      await must('sync')
      await must(`rsync -a --bwlimit=${PACED_RATE * 1024} ${work}/paced.bin ${outbox}/${synced}`)
      const rsyncEnd = Date.now()
      const rsyncPlaced = await rsynced.stamp
      if (rsyncPlaced === undefined) throw new Error(`${synced} never arrived`)
      // rsync renames, then tidies up and exits: placed before it returns counts as 0.
      record(samples, 'peerfs.rsync', Math.max(0, rsyncPlaced - rsyncEnd) / 1000)

      record(samples, 'local.tree', await timedSh(`cp -r ${src.tree} ${work}/local/tree-${r}`))
      if (sshd !== undefined) record(samples, 'rsync.tree', await timedSh(sshd.rsync(src.tree + '/', `${work}/ssh-dest/tree-${r}`)))

      // Many small files, complete when the receiver has shown each one.
      const tree = `tree-${r}`
      const all = nthEvent(b.path('events'), ` alpha recv ${tree}/`, SMALL, 600_000)
      await all.opened
      await must('sync')
      const cpu1 = [await cpuSeconds(a.pid), await cpuSeconds(b.pid)]
      const t1 = Date.now()
      await must(`cp -r ${src.tree} ${outbox}/${tree}`)
      record(samples, 'peerfs.tree.cp', (Date.now() - t1) / 1000)
      const last = await all.stamp
      if (last === undefined) throw new Error(`${tree}: not every file arrived`)
      record(samples, 'peerfs.tree', (last - t1) / 1000)
      record(samples, 'cpu.tree.sender', await cpuSeconds(a.pid) - cpu1[0])
      record(samples, 'cpu.tree.receiver', await cpuSeconds(b.pid) - cpu1[1])
      record(samples, 'rss.sender', await peakRss(a.pid))
      record(samples, 'rss.receiver', await peakRss(b.pid))
      const f = (k: string): string => samples.get(k)?.[r]?.toFixed(2) ?? '-'
      console.log(`transfer round ${r + 1}: 1 file peerfs ${f('peerfs.big')} s, rsync ${f('rsync.big')} s; paced file after its close peerfs ${f('peerfs.paced')} s, rsync ${f('rsync.paced')} s; rsync -a into the outbox, after its end ${f('peerfs.rsync')} s; small files peerfs ${f('peerfs.tree')} s, rsync ${f('rsync.tree')} s; echo p99 ${f('echo.p99')} ms; CPU ${f('cpu.big.sender')}/${f('cpu.big.receiver')} s; RSS ${f('rss.sender')}/${f('rss.receiver')} MB`)
    }
    return { skipped: typeof found === 'string' ? `${found}; rsync anchor skipped (BENCH_SSHD=<sshd> names one)` : undefined }
  } catch (err) {
    if (sshd !== undefined) console.error(`sshd log:\n${(await readFile(`${work}/sshd.log`, 'utf8').catch(() => '')).slice(-2000)}`)
    throw err
  } finally {
    sshd?.stop()
    await teardown()
    removeAtEnd(work, netw.dir)
  }
}
