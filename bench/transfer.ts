// Transfer benchmark: from `cp` into alpha's outbox to the file(s) complete
// in beta's inbox, for one 1 GiB file and for 5,000 files of 4 KiB, against
// plain cp to a local folder and rsync -a over ssh to a private sshd on a
// loopback port (skipped, with a note, if sshd is not installed). While the
// 1 GiB transfer runs, echo transactions on the same link measure what bulk
// data does to them. Peak RSS of both daemons is read from VmHWM.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { Daemon, eventually, freePort, makeNetwork, py, sh, startNetwork, teardown, tempDir, waitEvent, waitState } from '../test/helpers/net.js'

const GIB = Number(process.env.BENCH_GIB_MB ?? 1024)
const SMALL = Number(process.env.BENCH_SMALL ?? 5000)

async function timed (fn: () => Promise<unknown>): Promise<number> {
  const t = Date.now()
  await fn()
  return (Date.now() - t) / 1000
}

async function must (cmd: string, timeoutMs = 600_000): Promise<void> {
  const r = await sh(cmd, timeoutMs)
  if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`)
}

const peakRss = async (pid: number): Promise<number> => Number(/VmHWM:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024

/** A private sshd on a free loopback port; undefined if sshd is absent. */
async function privateSshd (dir: string): Promise<{ rsync: (src: string, dest: string) => string, stop: () => void } | undefined> {
  const sshd = ['/usr/sbin/sshd', '/usr/bin/sshd'].find(p => existsSync(p))
  if (sshd === undefined) return undefined
  const port = await freePort()
  await must(`ssh-keygen -q -t ed25519 -N '' -f ${dir}/host && ssh-keygen -q -t ed25519 -N '' -f ${dir}/user && cp ${dir}/user.pub ${dir}/authorized_keys && chmod 600 ${dir}/authorized_keys`)
  await writeFile(`${dir}/sshd_config`, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${dir}/host`, `AuthorizedKeysFile ${dir}/authorized_keys`,
    'PermitRootLogin yes', 'UsePAM no', 'PasswordAuthentication no', `PidFile ${dir}/sshd.pid`, 'StrictModes no'
  ].join('\n') + '\n')
  await mkdir('/run/sshd', { recursive: true })
  const proc = spawn(sshd, ['-D', '-e', '-f', `${dir}/sshd_config`], { stdio: 'ignore' })
  await new Promise(resolve => setTimeout(resolve, 500))
  const ssh = `ssh -p ${port} -i ${dir}/user -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR`
  return { rsync: (src, dest) => `rsync -a -e '${ssh}' ${src} root@127.0.0.1:${dest}`, stop: () => proc.kill() }
}

export async function transferBench (): Promise<void> {
  const work = await tempDir('peerfs-bench-xfer-')
  await must(`head -c ${GIB}M /dev/urandom > ${work}/big.bin`)
  await must(`python3 -c "
import os
for i in range(${SMALL}):
    d = os.path.join('${work}/tree', 'd%02d' % (i % 50))
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, 'f%05d' % i), 'wb').write(os.urandom(4096))
"`)
  const cpBig = await timed(async () => await must(`cp ${work}/big.bin ${work}/cp-big.bin && sync`))
  const cpTree = await timed(async () => await must(`cp -r ${work}/tree ${work}/cp-tree && sync`))
  await must(`rm -rf ${work}/cp-big.bin ${work}/cp-tree`)

  let rsyncBig: number | undefined
  let rsyncTree: number | undefined
  const sshd = await privateSshd(work)
  if (sshd !== undefined) {
    try {
      await must(`mkdir -p ${work}/ssh-dest`)
      rsyncBig = await timed(async () => await must(sshd.rsync(`${work}/big.bin`, `${work}/ssh-dest/`)))
      rsyncTree = await timed(async () => await must(sshd.rsync(`${work}/tree`, `${work}/ssh-dest/`)))
    } finally {
      sshd.stop()
      await must(`rm -rf ${work}/ssh-dest`)
    }
  }

  const netw = await makeNetwork(['alpha', 'beta'], { defaultTimings: true })
  try {
    const ds = await startNetwork(netw)
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    // 1 GiB, with echo transactions on the same link meanwhile.
    const recv = waitEvent(b.path('events'), ' alpha recv big\\.bin', 600_000)
    await new Promise(resolve => setTimeout(resolve, 300))
    const t0 = Date.now()
    const cp = sh(`cp ${work}/big.bin ${a.path('peers/beta/outbox/')}`, 600_000)
    const tx = py(`
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
`, [a.path('peers/beta/svc/01'), b.path('peers/alpha/inbox/big.bin')], 600_000)
    await cp
    const line = await recv
    const bigS = (Number(line.split(' ')[0]) - t0) / 1000
    const [n, p50, p99] = (await tx).stdout.trim().split(' ').map(Number)
    const rssA = await peakRss(a.pid)
    const rssB = await peakRss(b.pid)
    // 5,000 small files.
    const t1 = Date.now()
    await must(`cp -r ${work}/tree ${a.path('peers/beta/outbox/')}`)
    const inboxTree = b.path('peers/alpha/inbox/tree')
    await eventually(async () => Number((await sh(`find ${inboxTree} -type f 2>/dev/null | wc -l`)).stdout.trim()) >= SMALL, 'small files delivered', 600_000, 200)
    const treeS = (Date.now() - t1) / 1000

    const ratio = (x: number, anchor: number | undefined): string => anchor === undefined ? 'n/a' : `${(x / anchor).toFixed(2)}x`
    console.log(`\nTransfer, cp into alpha's outbox to complete in beta's inbox (${GIB} MiB file; ${SMALL} files of 4 KiB):`)
    console.log(`${''.padEnd(30)}${'1 file'.padStart(10)}${'small files'.padStart(14)}`)
    console.log(`${'peerfs'.padEnd(30)}${`${bigS.toFixed(2)} s`.padStart(10)}${`${treeS.toFixed(2)} s`.padStart(14)}`)
    console.log(`${'rsync -a over ssh (loopback)'.padEnd(30)}${(rsyncBig === undefined ? 'skipped' : `${rsyncBig.toFixed(2)} s`).padStart(10)}${(rsyncTree === undefined ? 'skipped' : `${rsyncTree.toFixed(2)} s`).padStart(14)}`)
    console.log(`${'cp to a local folder + sync'.padEnd(30)}${`${cpBig.toFixed(2)} s`.padStart(10)}${`${cpTree.toFixed(2)} s`.padStart(14)}`)
    console.log(`peerfs vs rsync over ssh: 1 file ${ratio(bigS, rsyncBig)}, small files ${ratio(treeS, rsyncTree)}${sshd === undefined ? ' (sshd not installed: apt-get install openssh-server)' : ''}`)
    console.log(`peerfs 1 file throughput: ${(GIB / bigS).toFixed(0)} MiB/s; vs cp: ${ratio(bigS, cpBig)}`)
    console.log(`echo transactions during the 1 GiB transfer: ${n} done, p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`)
    console.log(`peak RSS: sender ${rssA.toFixed(0)} MB, receiver ${rssB.toFixed(0)} MB`)
  } finally {
    await teardown()
    await must(`rm -rf ${work} ${netw.dir}`)
  }
}
