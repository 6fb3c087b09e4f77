// Outbox to inbox on real mounts: cp, rsync, crashes, cut links, cancels,
// a full disk at the receiver.
import { createHash } from 'node:crypto'
import { readdir, readFile, readlink, rm } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { EventRecorder } from '../helpers/events.js'
import { Daemon, eventually, field, makeNetwork, readText, sh, startNetwork, startPair, teardown, tempDir, type Network, waitState } from '../helpers/net.js'
import { FaultProxy } from '../helpers/proxy.js'

afterEach(async () => {
  EventRecorder.stopAll()
  await teardown()
})

const sha = async (file: string): Promise<string> => createHash('sha256').update(await readFile(file)).digest('hex')
const exists = async (file: string): Promise<boolean> => (await sh(`test -e '${file}'`)).code === 0
const listing = async (dir: string): Promise<string> => (await sh(`cd '${dir}' && find . -mindepth 1 | sort`)).stdout
/** Bytes acknowledged of the sender's current transfer (0 if none), also of one streamed as it is written. */
const acked = async (d: Daemon, peer: string): Promise<number> => Number(/^(\d+)[/ ]/.exec(await field(d, peer, 'transfer_progress'))?.[1] ?? 0)

/** Open fds of a process, and those of them under dir. */
async function fds (pid: number, dir: string): Promise<{ all: number, under: number }> {
  const names = await readdir(`/proc/${pid}/fd`)
  const targets = await Promise.all(names.map(async n => await readlink(`/proc/${pid}/fd/${n}`).catch(() => '')))
  return { all: names.length, under: targets.filter(t => t.startsWith(dir)).length }
}

/**
 * Puts a file into an outbox whole, as rsync does (a hidden name, renamed):
 * it is sent from the rename. A cp would stream it as it is written, and
 * the moments these tests need (half-sent, mid-way) could pass with the cp.
 */
const putWhole = (src: string, outbox: string): string => `cp ${src} ${outbox}/.${path.basename(src)} && mv ${outbox}/.${path.basename(src)} ${outbox}/${path.basename(src)}`

/** A random file of n MiB in the network's folder. */
async function bigFile (netw: Network, mib: number): Promise<string> {
  const f = `${netw.dir}/big-${mib}.bin`
  await sh(`head -c ${mib}M /dev/urandom > ${f}`, 60_000)
  return f
}

/** A set-aside that ends soon, so a test waits seconds for a retry. */
const QUICK_RETRY = 'transfer_retry_ms = 200\ntransfer_retry_max_ms = 1000\n'

/**
 * Runs fn with a small disk (a tmpfs of this size) mounted at a folder of
 * its own, not under a network's folder: it is mounted before the network
 * is made. Unmounted and removed after, also on failure, once the daemons
 * that may write there are gone.
 */
async function onSmallDisk (size: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const parent = await tempDir()
  const dir = `${parent}/disk`
  await sh(`mkdir -p ${dir} && mount -t tmpfs -o size=${size} peerfs-test ${dir}`)
  try {
    await fn(dir)
  } finally {
    await teardown()
    await sh(`umount -l ${dir}`)
    await rm(parent, { recursive: true, force: true })
  }
}

/** Puts node id's whole state (its outbox, spool, partials and inbox) on disk, before it starts. */
async function stateOn (netw: Network, id: string, disk: string): Promise<void> {
  expect((await sh(`sed -i 's|^state = "state"$|state = "${disk}/state"|' ${netw.node(id).config}`)).code).toBe(0)
}

/** Bytes free on the filesystem of dir. */
const freeBytes = async (dir: string): Promise<number> => Number((await sh(`df -B1 --output=avail ${dir} | tail -1`)).stdout.trim())

describe('outbox to inbox', () => {
  it('delivers a 64 MiB cp with the same SHA-256, and the outbox empties', async () => {
    const { netw, a, b } = await startPair()
    const src = await bigFile(netw, 64)
    const [recv, sent] = await Promise.all([EventRecorder.open(b.path('events')), EventRecorder.open(a.path('events'))])
    expect((await sh(`cp ${src} ${a.path('peers/beta/outbox/')}`)).code).toBe(0)
    const dest = b.path('peers/alpha/inbox/big-64.bin')
    await eventually(async () => await exists(dest), 'delivered', 60_000)
    expect(await sha(dest)).toBe(await sha(src))
    await eventually(async () => await listing(a.path('peers/beta/outbox')) === '', 'outbox empty')
    const placed = await recv.waitFor(/ alpha recv big-64\.bin$/, 60_000)
    const reported = await sent.waitFor(/ beta sent big-64\.bin$/, 60_000)
    expect(placed).toMatch(/^\d{13} alpha recv big-64\.bin$/)
    // `sent` only once the receiver has placed it.
    expect(reported).toMatch(/^\d{13} beta sent big-64\.bin$/)
    expect(Number(reported.split(' ')[0])).toBeGreaterThanOrEqual(Number(placed.split(' ')[0]))
  })

  it('delivers rsync -a of 300 files in nested folders with their bytes, modes and mtimes', async () => {
    const netw = await makeNetwork(['alpha', 'beta'], { extra: { alpha: 'outbox_prune_ms = 3000\n' } })
    const ds = await startNetwork(netw)
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    const src = `${netw.dir}/tree`
    await sh(`python3 -c "
import os, random
random.seed(7)
for i in range(300):
    d = os.path.join('${src}', 'd%d' % (i % 7), 'e%d' % (i % 3))
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, 'f%03d' % i)
    open(p, 'wb').write(os.urandom(random.randint(0, 9000)))
    os.chmod(p, random.choice([0o644, 0o600, 0o755, 0o444, 0o640]))
    t = 1600000000 + i * 1000 + 0.123456
    os.utime(p, (t, t))
"`)
    const rsync = await sh(`rsync -a ${src}/ ${a.path('peers/beta/outbox/tree/')}`, 60_000)
    expect(rsync.code, rsync.stderr).toBe(0)
    const inbox = b.path('peers/alpha/inbox/tree')
    // mtimes to the millisecond: what FUSE's utimens carries through fuse-native.
    const manifest = `find . -type f -printf '%P %m %s %TY%Tm%Td%TH%TM%.6TS\\n' | sed 's/\\(\\.[0-9][0-9][0-9]\\)[0-9]*$/\\1/' | sort`
    const want = (await sh(`cd ${src} && ${manifest}`)).stdout
    await eventually(async () => (await sh(`cd ${inbox} 2>/dev/null && ${manifest}`)).stdout === want, 'tree delivered', 60_000)
    expect((await sh(`diff -r ${src} ${inbox}`)).code).toBe(0)
    await eventually(async () => await listing(a.path('peers/beta/outbox')) === '', 'outbox empty', 20_000)
  })

  for (const victim of ['alpha', 'beta']) {
    it(`finishes a 256 MiB transfer after kill -9 of the ${victim === 'alpha' ? 'sender' : 'receiver'} mid-way, resuming`, async () => {
      const netw = await makeNetwork(['alpha', 'beta'], { extra: { alpha: 'window_bytes = 4194304\n' } })
      const ds = await startNetwork(netw)
      const a = ds.get('alpha') as Daemon
      await waitState(a, 'beta')
      const src = await bigFile(netw, 256)
      expect((await sh(putWhole(src, a.path('peers/beta/outbox')), 60_000)).code).toBe(0)
      // Wait until part of it is acknowledged, then kill.
      await eventually(async () => await acked(a, 'beta') > 32 << 20, 'part acknowledged', 60_000, 20)
      const d = ds.get(victim) as Daemon
      await d.kill('SIGKILL')
      const again = new Daemon(netw.node(victim))
      await again.start()
      const b = victim === 'beta' ? again : ds.get('beta') as Daemon
      const sender = victim === 'alpha' ? again : a
      const dest = b.path('peers/alpha/inbox/big-256.bin')
      await eventually(async () => await exists(dest), 'delivered after restart', 120_000)
      expect(await sha(dest)).toBe(await sha(src))
      await eventually(async () => await listing(sender.path('peers/beta/outbox')) === '', 'outbox empty')
      // It resumed: the log of the restarted side shows an offer accepted past 0.
      expect(`${sender.stderr}`).toContain('transfer delivered')
    }, 240_000)
  }

  it('delivers exactly through a proxy that cuts the link every few MB', async () => {
    const netw = await makeNetwork(['alpha', 'beta'], { peer: { 'beta>alpha': { address: null } } })
    const proxy = new FaultProxy({ host: '127.0.0.1', port: netw.node('beta').port })
    await proxy.start()
    try {
      await sh(`sed -i 's/127.0.0.1:${netw.node('beta').port}/127.0.0.1:${proxy.port}/' ${netw.node('alpha').config}`)
      const ds = await startNetwork(netw)
      const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
      await waitState(a, 'beta')
      const src = await bigFile(netw, 48)
      expect((await sh(putWhole(src, a.path('peers/beta/outbox')))).code).toBe(0)
      const dest = b.path('peers/alpha/inbox/big-48.bin')
      // Cut each time another 4 MiB is acknowledged.
      let cuts = 0
      let from = 0
      while (!await exists(dest) && cuts < 40) {
        await eventually(async () => await exists(dest) || await acked(a, 'beta') >= from + (4 << 20), 'more acknowledged', 30_000, 20)
        if (await exists(dest)) break
        from = await acked(a, 'beta')
        proxy.cut()
        cuts++
      }
      await eventually(async () => await exists(dest), 'delivered', 60_000)
      expect(cuts).toBeGreaterThan(1)
      expect(await sha(dest)).toBe(await sha(src))
    } finally {
      await proxy.close()
    }
  }, 120_000)

  it('rm of a half-sent file cancels it and nothing partial appears at the receiver', async () => {
    const netw = await makeNetwork(['alpha', 'beta'], { extra: { alpha: 'window_bytes = 1048576\n' } })
    const ds = await startNetwork(netw)
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    const src = await bigFile(netw, 200)
    expect((await sh(putWhole(src, a.path('peers/beta/outbox')), 60_000)).code).toBe(0)
    await eventually(async () => await acked(a, 'beta') > 0, 'started', 30_000, 10)
    expect((await sh(`rm ${a.path('peers/beta/outbox/big-200.bin')}`)).code).toBe(0)
    await eventually(async () => /^transfer: -$/m.test(await readText(a.path('peers/beta/status'))), 'cancelled')
    await eventually(async () => (await sh(`ls ${netw.node('beta').dir}/state/partial/alpha 2>/dev/null`)).stdout.trim() === '', 'partial discarded')
    expect(await listing(b.path('peers/alpha/inbox'))).toBe('')
  }, 120_000)

  it('rm while the link is down cancels the transfer once the link is back: no partial and no fd left at the receiver', async () => {
    const netw = await makeNetwork(['alpha', 'beta'], { extra: { alpha: 'window_bytes = 1048576\ntransfer_retry_ms = 500\n', beta: 'checkpoint_bytes = 1048576\n' } })
    const ds = await startNetwork(netw)
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    await waitState(b, 'alpha')
    const partial = `${netw.node('beta').dir}/state/partial/alpha`
    const checkpointed = async (): Promise<boolean> => (await readdir(partial).catch(() => [] as string[])).some(n => n.endsWith('.json'))
    const before = await fds(b.pid, partial)
    const src = await bigFile(netw, 128)
    expect((await sh(putWhole(src, a.path('peers/beta/outbox')), 60_000)).code).toBe(0)
    await eventually(async () => (await fds(b.pid, partial)).under === 1 && await acked(a, 'beta') > 0 && await checkpointed(), 'receiving', 30_000, 10)
    expect((await sh(`echo disconnect > ${a.path('peers/beta/ctl')}`)).code).toBe(0)
    await waitState(b, 'alpha', 'down')
    await eventually(async () => (await fds(b.pid, partial)).under === 0, 'partial closed with the link')
    expect((await sh(`rm ${a.path('peers/beta/outbox/big-128.bin')}`)).code).toBe(0)
    // What was made durable stays until the cancel arrives.
    expect((await readdir(partial)).length).toBeGreaterThan(0)
    expect((await sh(`echo reconnect > ${a.path('peers/beta/ctl')}`)).code).toBe(0)
    await waitState(a, 'beta')
    await eventually(async () => (await readdir(partial)).length === 0, 'partial removed by the cancel')
    await eventually(async () => (await fds(b.pid, partial)).all <= before.all, `fd count back to ${before.all}`)
    expect(await listing(b.path('peers/alpha/inbox'))).toBe('')
    await eventually(async () => (await readdir(`${netw.node('alpha').dir}/state/spool/beta`)).length === 0, 'cancel answered and forgotten')
  }, 120_000)

  it('a full inbox disk holds back only the file that does not fit: the one behind it arrives, the big one once there is room, each reported sent', async () => {
    await onSmallDisk('8m', async (inbox) => {
      const netw = await makeNetwork(['alpha', 'beta'], {
        extra: { alpha: QUICK_RETRY },
        peer: { 'beta>alpha': { extra: `inbox = "${inbox}"` } }
      })
      const ds = await startNetwork(netw)
      const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
      await waitState(a, 'beta')
      // Another program fills the disk: 3 MiB are left for a 6 MiB file.
      expect((await sh(`head -c 5M /dev/urandom > ${inbox}/filler`)).code).toBe(0)
      const src = await bigFile(netw, 6)
      const events = await EventRecorder.open(a.path('events'))
      expect((await sh(`cp ${src} ${a.path('peers/beta/outbox/')}`)).code).toBe(0)
      await eventually(async () => /^big-6\.bin: no space: \d+ bytes needed, \d+ free on the inbox's disk; retry in \d+ s$/.test(await field(a, 'beta', 'transfer_waiting')), 'big file waiting for room', 30_000)
      expect((await sh(`echo hello > ${a.path('peers/beta/outbox/small.txt')}`)).code).toBe(0)
      expect(await events.waitFor(/ beta sent small\.txt$/, 60_000)).toMatch(/^\d{13} beta sent small\.txt$/)
      expect(await readText(b.path('peers/alpha/inbox/small.txt'))).toBe('hello\n')
      expect(await exists(b.path('peers/alpha/inbox/big-6.bin'))).toBe(false)
      expect(await field(a, 'beta', 'transfer_waiting')).toMatch(/^big-6\.bin: no space/)
      expect((await sh(`rm ${inbox}/filler`)).code).toBe(0)
      expect(await events.waitFor(/ beta sent big-6\.bin$/, 60_000)).toMatch(/^\d{13} beta sent big-6\.bin$/)
      expect(await sha(b.path('peers/alpha/inbox/big-6.bin'))).toBe(await sha(src))
      expect(await field(a, 'beta', 'transfer_waiting')).toBe('-')
      expect(await listing(a.path('peers/beta/outbox'))).toBe('')
    })
  }, 120_000)

  it('a batch whose tar and unpacked copy do not fit beside each other on beta\'s disk, though its files do, arrives in smaller batches: each file once', async () => {
    // beta's whole state, so its partials and its inbox, on a small disk of its own.
    await onSmallDisk('16m', async (disk) => {
      const netw = await makeNetwork(['alpha', 'beta'], { extra: { alpha: QUICK_RETRY } })
      await stateOn(netw, 'beta', disk)
      const a = new Daemon(netw.node('alpha'))
      await a.start()
      // 400 x 10 KiB while beta is down: one batch of ~4.1 MiB, which needs
      // twice that as a tar beside its unpacked copy.
      const outbox = a.path('peers/beta/outbox')
      expect((await sh(`mkdir -p ${netw.dir}/src/d && cd ${netw.dir}/src && for i in $(seq 400); do head -c 10240 /dev/urandom > d/f$i; done && sha256sum d/* > ${netw.dir}/sums && cp -r d ${outbox}/`, 60_000)).code).toBe(0)
      const sent = await EventRecorder.open(a.path('events'))
      // Another program leaves 7 MiB free on beta's disk (less what beta's start takes).
      expect((await sh(`head -c ${Math.max(0, await freeBytes(disk) - (7 << 20))} /dev/zero > ${disk}/filler`)).code).toBe(0)
      const b = new Daemon(netw.node('beta'))
      await b.start()
      await eventually(() => sent.matching(/ beta sent d\/f/).length === 400, 'all 400 files sent', 60_000)
      const inbox = b.path('peers/alpha/inbox')
      expect((await sh(`cd ${inbox} && sha256sum -c --quiet ${netw.dir}/sums`)).code).toBe(0)
      const names = sent.matching(/ beta sent /).map(l => l.split(' ').pop())
      expect(new Set(names).size).toBe(names.length)
      expect(b.stderr).toMatch(/its files fit in smaller batches/)
      await eventually(async () => (await sh(`find ${outbox} -type f | wc -l`)).stdout.trim() === '0', 'the outbox empties', 30_000)
    })
  }, 120_000)

  it('a folder in the inbox where a file goes holds that file in the outbox, with the reason in status, and it arrives once the folder is moved', async () => {
    const { a, b } = await startPair()
    const outbox = a.path('peers/beta/outbox')
    const inbox = b.path('peers/alpha/inbox')
    await sh(`mkdir -p ${outbox}/report && echo part1 > ${outbox}/report/part1`)
    await eventually(async () => (await readText(path.join(inbox, 'report/part1')).catch(() => '')) === 'part1\n', 'report/part1 delivered')
    await eventually(async () => (await sh(`rmdir ${outbox}/report`)).code === 0, 'the emptied folder removed', 30_000)
    expect((await sh(`echo final > ${outbox}/report`)).code).toBe(0)
    await eventually(async () => /^transfer_waiting: .*report exists in the inbox and is not a file/m.test(await readText(a.path('peers/beta/status'))), 'the reason in status', 30_000)
    expect((await readdir(outbox))).toEqual(['report'])
    await rm(path.join(inbox, 'report'), { recursive: true })
    await eventually(async () => (await readText(path.join(inbox, 'report')).catch(() => '')) === 'final\n', 'report delivered', 60_000)
    await eventually(async () => (await readdir(outbox)).length === 0, 'the outbox empties', 30_000)
  }, 120_000)

  it('an outbox that filled its own disk while beta was down is delivered whole once beta is back: one file at a time until there is room for batches again', async () => {
    // alpha's whole state, so its outbox and spool, on a small disk of its own.
    await onSmallDisk('16m', async (disk) => {
      const netw = await makeNetwork(['alpha', 'beta'], { extra: { alpha: QUICK_RETRY } })
      await stateOn(netw, 'alpha', disk)
      const a = new Daemon(netw.node('alpha'))
      await a.start()
      const outbox = a.path('peers/beta/outbox')
      // Files of 4 KiB until the disk is full; those written whole are listed.
      const fill = await sh(`mkdir -p ${outbox}/d && i=0; while [ $i -lt 6000 ]; do head -c 4096 /dev/urandom > ${netw.dir}/one && cp ${netw.dir}/one ${outbox}/d/f$i 2>/dev/null && sha256sum ${netw.dir}/one | sed "s|${netw.dir}/one|d/f$i|" >> ${netw.dir}/sums || { rm -f ${outbox}/d/f$i; break; }; i=$((i+1)); done; wc -l < ${netw.dir}/sums`, 120_000)
      const written = Number(fill.stdout.trim())
      expect(written).toBeGreaterThan(1000)
      expect(written).toBeLessThan(6000)
      const sent = await EventRecorder.open(a.path('events'))
      const b = new Daemon(netw.node('beta'))
      await b.start()
      const inbox = b.path('peers/alpha/inbox')
      await eventually(async () => (await sh(`find ${inbox}/d -type f | wc -l`)).stdout.trim() === String(written), `all ${written} files delivered`, 90_000)
      expect((await sh(`cd ${inbox} && sha256sum -c --quiet ${netw.dir}/sums`)).code).toBe(0)
      await eventually(async () => (await sh(`find ${outbox} -type f | wc -l`)).stdout.trim() === '0', 'the outbox empties', 30_000)
      expect(a.stderr).toMatch(/ENOSPC/)
      // Once each: a delivered file the full disk kept from leaving the outbox
      // (no room for the trash folder) was sent again.
      const names = sent.matching(/ beta sent /).map(l => l.split(' ').pop())
      expect(names.length - new Set(names).size).toBe(0)
      expect(new Set(names).size).toBe(written)
    })
  }, 240_000)

  it('a file whose cp failed for a full disk is not sent cut short: held, counted in status, and sent whole once copied again', async () => {
    await onSmallDisk('16m', async (disk) => {
      const netw = await makeNetwork(['alpha', 'beta'])
      await stateOn(netw, 'alpha', disk)
      const ds = await startNetwork(netw)
      const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
      await waitState(a, 'beta')
      const sent = await EventRecorder.open(a.path('events'))
      const outbox = a.path('peers/beta/outbox')
      const src = await bigFile(netw, 3)
      // Another program leaves 1 MiB free on alpha's disk.
      expect((await sh(`head -c ${await freeBytes(disk) - (1 << 20)} /dev/zero > ${disk}/filler`)).code).toBe(0)
      const cp = await sh(`cp ${src} ${outbox}/`)
      expect(cp.code).not.toBe(0)
      expect(cp.stderr).toMatch(/No space left on device/)
      expect((await sh(`rm ${disk}/filler && echo after > ${outbox}/after.txt`)).code).toBe(0)
      await sent.waitFor(/ beta sent after\.txt$/, 30_000)
      expect(await exists(b.path('peers/alpha/inbox/big-3.bin'))).toBe(false)
      expect(await field(a, 'beta', 'outbox_unclosed')).toBe('1')
      expect(a.stderr).toMatch(/a write to an outbox file failed; it is not sent until written again, touched or removed/)
      // The user copies it again: it goes, whole, once.
      expect((await sh(`cp ${src} ${outbox}/`)).code).toBe(0)
      await sent.waitFor(/ beta sent big-3\.bin$/, 30_000)
      expect(await sha(b.path('peers/alpha/inbox/big-3.bin'))).toBe(await sha(src))
      expect(sent.matching(/ beta sent big-3\.bin$/)).toHaveLength(1)
      expect(await field(a, 'beta', 'outbox_unclosed')).toBe('0')
    })
  }, 120_000)

  it('alpha killed -9 comes back on a full disk and delivers what its outbox holds, each file once', async () => {
    await onSmallDisk('16m', async (disk) => {
      const netw = await makeNetwork(['alpha', 'beta'])
      await stateOn(netw, 'alpha', disk)
      const ds = await startNetwork(netw)
      let a = ds.get('alpha') as Daemon
      const b = ds.get('beta') as Daemon
      await waitState(a, 'beta')
      const recv = await EventRecorder.open(b.path('events'))
      await a.kill('SIGKILL')
      // Files the last run had taken in, then another program fills the disk, every block.
      const real = `${disk}/state/outbox/beta`
      await sh(`for i in 0 1 2 3 4; do head -c 10000 /dev/urandom > ${real}/f$i.dat; done; cat /dev/zero > ${disk}/filler`)
      expect(await freeBytes(disk)).toBe(0)
      a = new Daemon(netw.node('alpha'))
      await a.start()
      await eventually(() => recv.matching(/ alpha recv f\d\.dat$/).length >= 5, 'the 5 files delivered on the full disk', 30_000)
      expect((await sh(`rm ${disk}/filler`)).code).toBe(0)
      await eventually(async () => (await readdir(real)).length === 0, 'the outbox empties', 30_000)
      expect(recv.matching(/ alpha recv /).map(l => l.split(' ').pop()).sort()).toEqual(['f0.dat', 'f1.dat', 'f2.dat', 'f3.dat', 'f4.dat'])
    })
  }, 120_000)

  it('a batch beta refuses whole (over its inbox quota, one name too deep) is split: the 300 files that fit arrive once, the refused one stays, counted in status', async () => {
    // The quota is below the one batch of all of it, and above all that fits.
    const netw = await makeNetwork(['alpha', 'beta'], { peer: { 'beta>alpha': { extra: 'inbox_quota_bytes = 1350000' } } })
    const ds = await startNetwork(netw)
    const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
    await waitState(a, 'beta')
    const outbox = a.path('peers/beta/outbox')
    const deep = Array.from({ length: 65 }, () => 'd').join('/')
    const src = `${netw.dir}/tree`
    expect((await sh(`mkdir -p ${src}/${deep} && echo refused > ${src}/${deep}/x && for i in $(seq 1 300); do head -c 4096 /dev/urandom > ${src}/f$i; done`)).code).toBe(0)
    // Copied under a hidden name and renamed into view: one batch of it all.
    expect((await sh(`cp -r ${src} ${outbox}/.tree && mv ${outbox}/.tree ${outbox}/tree`, 60_000)).code).toBe(0)
    await eventually(async () => /^outbox_refused: 1$/m.test(await readText(a.path('peers/beta/status'))), 'one file refused, in status', 60_000)
    expect(await field(a, 'beta', 'outbox_refused_last')).toMatch(/^tree\/d\/d\/.*\/x: .*path too deep$/)
    await eventually(async () => (await sh(`find ${b.path('peers/alpha/inbox/tree')} -type f | wc -l`)).stdout.trim() === '300', 'the 300 others placed', 60_000)
    expect((await sh(`cd ${src} && sha256sum f* > ${netw.dir}/sums && cd ${b.path('peers/alpha/inbox/tree')} && sha256sum -c --quiet ${netw.dir}/sums`)).code).toBe(0)
    await eventually(async () => (await sh(`find ${outbox} -type f`)).stdout === `${outbox}/tree/${deep}/x\n`, 'only the refused file left in the outbox', 30_000)
    expect(a.stderr).toMatch(/peer refused a batch; sending its files in smaller batches/)
    expect(b.stderr).toMatch(/over the inbox quota of 1350000 bytes/)
    expect(b.stderr).toMatch(/path too deep/)
  }, 120_000)

  it('sends files queued before SIGTERM after the restart', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    let a = new Daemon(netw.node('alpha'))
    await a.start()
    await sh(`mkdir -p ${a.path('peers/beta/outbox/q')} && for i in 1 2 3; do echo file-$i > ${a.path('peers/beta/outbox/q')}/f$i; done`)
    expect(await readText(a.path('peers/beta/status'))).toMatch(/^state: (down|connecting)$/m)
    await eventually(async () => /^outbox_files: 3$/m.test(await readText(a.path('peers/beta/status'))), 'queued files counted while beta is down')
    expect(await readText(a.path('peers/beta/status'))).toMatch(/^outbox_bytes: 21$/m)
    expect(await a.kill('SIGTERM')).toBe(0)
    a = new Daemon(netw.node('alpha'))
    const b = new Daemon(netw.node('beta'))
    await Promise.all([a.start(), b.start()])
    await eventually(async () => await listing(b.path('peers/alpha/inbox')) === './q\n./q/f1\n./q/f2\n./q/f3\n', 'delivered after restart', 30_000)
    expect(await readText(b.path('peers/alpha/inbox/q/f2'))).toBe('file-2\n')
  })
})
