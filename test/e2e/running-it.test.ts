// Running peerfs the way sshfs, rclone mount and Syncthing are run: make
// install, the systemd unit, mount -t fuse.peerfs with fstab options, a
// read-only tree, another user through allow_other, tail -f on events,
// df/du, status --json, metrics (file and HTTP), logs, and mountpoints that
// are missing or already live, and a stop that cannot finish (a hung state
// disk) still ends the daemon.
import { execFile, spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { CLI, Daemon, eventually, freePort, isMounted, makeNetwork, py, readText, ROOT, sh, startNetwork, teardown, tempDir, waitState } from '../helpers/net.js'
import { parsePrometheusText } from '../helpers/prom.js'
import { DAEMON_NODE_FLAGS } from '../../src/cli/node-flags.js'

const run = promisify(execFile)
const isRoot = process.getuid?.() === 0
const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0

afterEach(teardown)

/** errno name of opening (and writing) a path the way a program would. */
async function writeErrno (file: string, flags = 'os.O_WRONLY | os.O_CREAT'): Promise<string> {
  return (await py(`
import errno, os, sys
try:
    fd = os.open(sys.argv[1], ${flags}, 0o644); os.write(fd, b'x'); os.close(fd); print('ok')
except OSError as e:
    print(errno.errorcode[e.errno])
`, [file])).stdout.trim()
}

describe('running it', () => {
  it('make install DESTDIR lays out peerfs, the unit, the mount helper and the man page; the unit verifies', async () => {
    const dest = await tempDir('peerfs-install-')
    // dist/ is built before the tests; -o skips setup and the rebuild.
    await run('make', ['-C', ROOT, '-s', '-o', 'node_modules/.peerfs-setup', '-o', 'build', 'install', `DESTDIR=${dest}`, 'PREFIX=/usr'], { timeout: 120_000 })
    for (const f of ['usr/bin/peerfs', 'sbin/mount.fuse.peerfs', 'usr/lib/systemd/system/peerfs@.service', 'usr/share/man/man1/peerfs.1',
      'usr/lib/peerfs/dist/src/cli.js', 'usr/lib/peerfs/node_modules/fuse-native/package.json', 'usr/lib/peerfs/node_modules/pino/package.json']) {
      expect(existsSync(path.join(dest, f)), f).toBe(true)
    }
    // Build and test tools stay out.
    expect(existsSync(path.join(dest, 'usr/lib/peerfs/node_modules/vitest'))).toBe(false)
    const peerfs = path.join(dest, 'usr/bin/peerfs')
    expect((await run(peerfs, ['--version'])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
    const unit = await readFile(path.join(dest, 'usr/lib/systemd/system/peerfs@.service'), 'utf8')
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/peerfs mount -c \/etc\/peerfs\/%i\.toml/m)
    expect(unit).toMatch(/^Restart=on-failure$/m)
    expect(unit).toMatch(/^LimitNOFILE=\d+$/m)
    expect(await readFile(path.join(dest, 'sbin/mount.fuse.peerfs'), 'utf8')).toContain('/usr/bin/peerfs')
    expect((await sh(`groff -man -ww -z ${path.join(dest, 'usr/share/man/man1/peerfs.1')}`)).stderr).toBe('')

    if (!has('systemd-analyze')) {
      console.warn('skipped: systemd-analyze verify (systemd is not installed here)')
      return
    }
    // verify checks that ExecStart exists: point it into DESTDIR.
    const dir = await tempDir('peerfs-unit-')
    await writeFile(path.join(dir, 'peerfs@.service'), unit.replace(/\/usr\/bin\/peerfs/g, peerfs))
    const v = await sh(`MANPATH=${path.join(dest, 'usr/share/man')} systemd-analyze verify ${path.join(dir, 'peerfs@.service')}`, 60_000)
    expect(v.stderr).toBe('')
    expect(v.code).toBe(0)
  }, 150_000)

  it('refuses a missing mountpoint, naming it, and creates it with --mkdir', async () => {
    const netw = await makeNetwork(['alpha'])
    const a = netw.node('alpha')
    await rm(a.mnt, { recursive: true })
    const r = await sh(`${process.execPath} ${CLI} mount -c ${a.config}`)
    expect(r.code).toBe(32)
    expect(r.stderr).toContain(`${a.mnt}: mountpoint does not exist; create it (mkdir -p) or pass --mkdir`)
    expect(existsSync(a.mnt)).toBe(false)
    const d = new Daemon(a)
    await d.start(20_000, ['--mkdir'])
    expect(await readText(d.path('status'))).toMatch(/^node: alpha/)
  })

  it('a second mount on a live mountpoint is refused and the first tree is intact', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const ds = await startNetwork(netw, ['alpha'])
    const a = ds.get('alpha') as Daemon
    const b = netw.node('beta')
    const r = await sh(`${process.execPath} ${CLI} mount ${a.spec.mnt} -c ${b.config}`)
    expect(r.code).toBe(32)
    expect(r.stderr).toContain(`${a.spec.mnt}: is already a live mount (fuse.peerfs from peerfs)`)
    expect(await readText(a.path('status'))).toMatch(/^node: alpha/)
    expect(await isMounted(a.spec.mnt)).toBe(true)
    // A dead one (its daemon killed) is cleaned up and mounted over.
    await a.kill('SIGKILL')
    const again = new Daemon(b)
    const cfg = await readFile(b.config, 'utf8')
    await writeFile(b.config, cfg.replace('mountpoint = "mnt"', `mountpoint = "${a.spec.mnt}"`))
    await again.start()
    expect(again.stderr).toMatch(/dead mount found/)
    expect(await readText(a.path('status'))).toMatch(/^node: beta/)
    await again.kill('SIGTERM')
  })

  it('-o ro refuses every write with EROFS and still reads', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const b = new Daemon(netw.node('beta'))
    await b.start()
    const a = new Daemon(netw.node('alpha'))
    await a.start(20_000, ['-o', 'ro,noatime'])
    await waitState(a, 'beta')
    expect(await writeErrno(a.path('peers/beta/outbox/f'))).toBe('EROFS')
    expect(await writeErrno(a.path('files/f'))).toBe('EROFS')
    expect(await writeErrno(a.path('peers/beta/ctl'), 'os.O_WRONLY')).toBe('EROFS')
    expect(await writeErrno(a.path('peers/beta/svc/01'), 'os.O_RDWR')).toBe('EROFS')
    expect(await writeErrno(a.path('peers/beta/defer/09'), 'os.O_WRONLY')).toBe('EROFS')
    expect((await sh(`mkdir ${a.path('peers/beta/outbox/d')}`)).stderr).toMatch(/Read-only file system/)
    expect(await readText(a.path('peers/beta/state'))).toBe('up\n')
    expect((await sh(`grep ' ${a.spec.mnt} ' /proc/self/mounts`)).stdout).toMatch(/fuse\.peerfs ro,/)
  })

  it('tail -f events prints an event that happens after it starts; df and du show real numbers', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const ds = await startNetwork(netw)
    const a = ds.get('alpha') as Daemon
    await waitState(a, 'beta')
    const tail = spawn('tail', ['-f', a.path('events')], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    tail.stdout.on('data', (d: Buffer) => { out += d.toString() })
    try {
      // tail has the file open (so it sees events from now on) once its fd shows.
      await eventually(async () => (await sh(`ls -l /proc/${tail.pid}/fd`)).stdout.includes(a.path('events')), 'tail opened events')
      expect((await sh(`echo disconnect > ${a.path('peers/beta/ctl')}`)).code).toBe(0)
      await eventually(() => / beta down disconnected by ctl/.test(out), 'tail -f printed the event', 10_000)
    } finally {
      tail.kill()
    }
    expect((await sh(`echo reconnect > ${a.path('peers/beta/ctl')}`)).code).toBe(0)

    const df = (await sh(`df -P -k ${a.spec.mnt} | tail -1`)).stdout.trim().split(/\s+/)
    expect(Number(df[1])).toBeGreaterThan(0)
    expect(Number(df[3])).toBeGreaterThan(0)
    // A 1 MiB file in the inbox (its real folder is under state/).
    await writeFile(path.join(netw.node('alpha').dir, 'state/inbox/beta/big'), Buffer.alloc(1 << 20, 1))
    expect(Number((await sh(`du -k ${a.path('peers/beta/inbox/big')}`)).stdout.split('\t')[0])).toBeGreaterThanOrEqual(1024)
  })

  it('peerfs status --json names every peer; metrics parse as Prometheus text, in the tree and over HTTP', async () => {
    const port = await freePort()
    const netw = await makeNetwork(['alpha', 'beta', 'gamma'], { extra: { alpha: `metrics_listen = "127.0.0.1:${port}"\n` } })
    const ds = await startNetwork(netw, ['alpha', 'beta'])
    const a = ds.get('alpha') as Daemon
    await waitState(a, 'beta')
    const st = JSON.parse((await sh(`${process.execPath} ${CLI} status --json ${a.spec.mnt}`)).stdout) as { node: Record<string, unknown>, peers: Array<Record<string, unknown>> }
    expect(st.node.node).toBe('alpha')
    expect(st.peers.map(p => p.id)).toEqual(['beta', 'gamma'])
    expect(st.peers[0]).toMatchObject({ id: 'beta', state: 'up' })
    expect(typeof st.peers[0].tx_bytes).toBe('number')
    // -c finds the mountpoint in the config; text is <mnt>/status.
    expect((await sh(`${process.execPath} ${CLI} status -c ${a.spec.config}`)).stdout).toMatch(/^node: alpha/)

    for (const text of [await readText(a.path('metrics')), await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()]) {
      const fams = parsePrometheusText(text)
      const up = fams.get('peerfs_peer_up')?.samples ?? []
      expect(up.map(s => [s.labels.peer, s.value]).sort()).toEqual([['beta', 1], ['gamma', 0]])
      expect(fams.get('peerfs_peer_sent_bytes_total')?.type).toBe('counter')
    }
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404)
    // status and state mtimes follow their content, not the mount time.
    const mtime = async (f: string): Promise<number> => Number((await sh(`stat -c %Y ${a.path(f)}`)).stdout)
    expect(await mtime('status')).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) - 5)
  })

  it('logs: text with --log-format text; SIGHUP applies log_level; the SIGUSR1 report names the node once and each peer', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const b = new Daemon(netw.node('beta'))
    await b.start()
    const a = new Daemon(netw.node('alpha'))
    await a.start(20_000, ['--log-format', 'text'])
    expect(a.stderr).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO  alpha mounted mountpoint=\S+ /m)
    await waitState(a, 'beta')
    // Started as the launcher starts it: no warning about node's flags.
    expect(a.stderr).not.toContain('started without the daemon')
    // b logs JSON (not a terminal): a reload to debug shows in its record.
    await writeFile(netw.node('beta').config, (await readFile(netw.node('beta').config, 'utf8')).replace('state = "state"', 'state = "state"\nlog_level = "debug"'))
    process.kill(b.pid, 'SIGHUP')
    await eventually(() => b.stderr.includes('config reloaded'), 'reloaded')
    expect(JSON.parse(b.stderr.split('\n').find(l => l.includes('config reloaded')) as string)).toMatchObject({ level: 'info', log_level: 'debug', node: 'beta' })
    process.kill(b.pid, 'SIGUSR1')
    await eventually(() => b.stderr.includes('status report'), 'status report')
    const line = b.stderr.split('\n').find(l => l.includes('status report')) as string
    expect(line.match(/"node":/g)).toHaveLength(1)
    expect(JSON.parse(line).peers).toMatchObject([{ id: 'alpha', state: 'up' }])
  })

  const HELPER = '/sbin/mount.fuse.peerfs'
  it.skipIf(!isRoot || !has('useradd'))('mount -t fuse.peerfs -o allow_other mounts and returns, the daemon stays, another user reads status; a non-root user is told what to do', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const b = new Daemon(netw.node('beta'))
    await b.start()
    const a = netw.node('alpha')
    // mount(8) clears PATH: the helper runs $PEERFS, here this build.
    const wrapper = path.join(netw.dir, 'peerfs')
    await writeFile(wrapper, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`, { mode: 0o755 })
    const placed = !existsSync(HELPER)
    if (placed) {
      await writeFile(HELPER, (await readFile(path.join(ROOT, 'packaging/mount.fuse.peerfs.in'), 'utf8')).replace('@BINDIR@', '/nonexistent'), { mode: 0o755 })
    }
    const user = `peerfs-t${process.pid}`
    let daemonPid = 0
    try {
      const r = await sh(`PEERFS=${wrapper} mount -t fuse.peerfs ${a.config} ${a.mnt} -o allow_other,_netdev,nofail`, 60_000)
      expect(r.stderr).toBe('')
      expect(r.code).toBe(0)
      const line = (await sh(`grep ' ${a.mnt} ' /proc/self/mounts`)).stdout
      expect(line).toMatch(/^peerfs \S+ fuse\.peerfs rw,.*allow_other/)
      daemonPid = Number(/"pid":(\d+)/.exec(await readFile(path.join(a.dir, 'state/peerfs.log'), 'utf8'))?.[1])
      expect(existsSync(`/proc/${daemonPid}`)).toBe(true)
      // The background daemon runs with the daemon's node flags, as the launcher's would.
      expect((await readFile(`/proc/${daemonPid}/cmdline`, 'utf8')).split('\0')).toEqual(expect.arrayContaining([...DAEMON_NODE_FLAGS]))
      await eventually(async () => (await readText(path.join(a.mnt, 'peers/beta/state'))) === 'up\n', 'alpha sees beta up')

      await run('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', user])
      await chmod(netw.dir, 0o755)
      await chmod(a.dir, 0o755)
      const cat = await sh(`runuser -u ${user} -- cat ${a.mnt}/status`)
      expect(cat.stderr).toBe('')
      expect(cat.stdout).toMatch(/^node: alpha/)
      // Without allow_other the same user is kept out (beta's tree).
      expect((await sh(`runuser -u ${user} -- cat ${b.path('status')}`)).stderr).toMatch(/Permission denied/)

      // As that user, a mount is refused with what to do about it.
      const udir = path.join(netw.dir, 'user')
      await mkdir(path.join(udir, 'mnt'), { recursive: true })
      await run('chown', ['-R', user, udir])
      if ((await sh(`runuser -u ${user} -- test -r ${CLI}`)).code === 0) {
        await sh(`runuser -u ${user} -- ${process.execPath} ${CLI} keygen ${udir}/u.key`)
        await writeFile(path.join(udir, 'u.toml'), 'id = "u"\nkey = "u.key"\nstate = "state"\nmountpoint = "mnt"\n')
        const u = await sh(`runuser -u ${user} -- ${process.execPath} ${CLI} mount -c ${udir}/u.toml -o allow_other`)
        if (u.code === 0) throw new Error('a non-root mount was expected to be refused here')
        expect(u.stderr).toMatch(/\/dev\/fuse is not readable and writable by this user|user_allow_other in \/etc\/fuse\.conf|setuid root/)
      } else {
        console.warn('skipped: non-root mount message (the build is not readable by other users here)')
      }
    } finally {
      await sh(`fusermount -uz ${a.mnt}`)
      if (daemonPid > 0) {
        // Unmounted from outside, the daemon exits by itself; bounded wait, then kill it.
        await eventually(() => !existsSync(`/proc/${daemonPid}`), 'daemon exit', 10_000).catch(() => process.kill(daemonPid, 'SIGKILL'))
      }
      await sh(`userdel ${user}`)
      if (placed) await rm(HELPER, { force: true })
    }
  }, 120_000)

  it('SIGTERM with its state disk hung: the daemon unmounts, names the step it waited on, and exits within its deadline; the state is whole after', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const an = netw.node('alpha')
    // alpha's state folder is a FUSE mount of its own process (the bench's
    // minimal passthrough), which SIGSTOP hangs, as a dead NFS server or a
    // failing disk would: every write and fsync there waits in the kernel.
    const real = await tempDir('peerfs-realstate-')
    await mkdir(path.join(an.dir, 'state'))
    const pass = spawn(process.execPath, [path.join(ROOT, 'bench/pass.cjs'), path.join(an.dir, 'state'), real], { stdio: ['ignore', 'pipe', 'inherit'] })
    const passExit = new Promise(resolve => pass.on('exit', resolve))
    let ds = new Map<string, Daemon>()
    try {
      await new Promise<void>((resolve, reject) => {
        pass.stdout.on('data', (d: Buffer) => { if (d.toString().includes('mounted')) resolve() })
        pass.on('exit', (code) => reject(new Error(`the passthrough exited with ${code}`)))
      })
      ds = await startNetwork(netw)
      const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
      await waitState(a, 'beta')
      await sh(`echo kept > ${a.path('files/kept.txt')}`)
      await eventually(async () => (await readText(b.path('files/kept.txt')).catch(() => '')) === 'kept\n', 'kept.txt reaches beta')
      await sh(`echo late > ${a.path('files/late.txt')}`)
      await eventually(async () => (await readText(b.path('files/late.txt')).catch(() => '')) === 'late\n', 'late.txt reaches beta')
      // Now quiet: the folder hangs under the stop's own status and journal
      // writes, which wait in libuv's pool. (An operation of the tree itself
      // would wait on the daemon's main thread, where only systemd's
      // TimeoutStopSec reaches it.)
      process.kill(pass.pid as number, 'SIGSTOP')
      const t0 = Date.now()
      const exited = a.kill('SIGTERM')
      const early = await Promise.race([exited.then(() => 'exited'), new Promise(resolve => setTimeout(() => resolve('running'), 5_000))])
      expect(early).toBe('running')
      expect(await isMounted(an.mnt)).toBe(false)
      // Before the deadline it hung for good: process.exit waited on the stuck thread.
      const code = await Promise.race([exited, new Promise(resolve => setTimeout(() => resolve('still running'), 40_000))])
      expect(code).not.toBe('still running')
      expect(Date.now() - t0).toBeGreaterThanOrEqual(14_000)
      const line = a.stderr.split('\n').find(l => l.includes('stop did not finish in time'))
      expect(line, a.stderr).toBeDefined()
      expect(JSON.parse(line as string)).toMatchObject({ level: 'error', step: 'files', deadline_ms: 15_000 })
      process.kill(pass.pid as number, 'SIGCONT')
      await a.start()
      expect(await readText(a.path('files/kept.txt'))).toBe('kept\n')
      expect(await readText(a.path('files/late.txt'))).toBe('late\n')
      expect(a.stderr).not.toMatch(/"level":"(error|fatal)"/)
      await waitState(a, 'beta')
    } finally {
      process.kill(pass.pid as number, 'SIGCONT')
      // The daemons first, then the folder under them, then the rest (teardown).
      for (const d of ds.values()) await d.kill()
      pass.kill('SIGTERM')
      await passExit
      await sh(`fusermount -uz ${path.join(an.dir, 'state')}`)
      await rm(real, { recursive: true, force: true })
    }
  }, 120_000)
})
