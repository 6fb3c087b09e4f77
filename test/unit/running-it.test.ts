// The parts of "running it" that need no mount: mount options, the mount
// table and mountpoint checks, log formats and reload levels, the events
// file's follower semantics and byte-exact splitting, live mtimes.
import { chmod, mkdtemp, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { MountOptionError, parseMountOptions } from '../../src/daemon/mount-options.js'
import { fuseAccessProblem, MountpointError, parseMounts, prepareMountpoint } from '../../src/daemon/mountpoint.js'
import { EventBus } from '../../src/lib/events.js'
import { applyConfigLevel, configureLogs, formatText, silentLogger } from '../../src/lib/log.js'
import { EventsFile, FOLLOW_BASE } from '../../src/fs/events-file.js'
import { TextFile } from '../../src/fs/text.js'
import type { Handle } from '../../src/fs/types.js'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { DAEMON_NODE_FLAGS, missingNodeFlags } from '../../src/cli/node-flags.js'

describe('mount options', () => {
  it('takes peerfs\'s own, drops mount(8)\'s, passes FUSE\'s', () => {
    const o = parseMountOptions(['rw,allow_other,_netdev', 'nofail,x-systemd.automount,ro', 'nonempty,uid=1000,umask=022,noatime,default_permissions'])
    expect(o.allowOther).toBe(true)
    expect(o.readOnly).toBe(true)
    expect(o.fuse).toEqual(['nonempty', 'uid=1000', 'umask=022', 'noatime'])
    expect(o.ignored).toEqual(['rw', '_netdev', 'nofail', 'x-systemd.automount'])
  })

  it('refuses an unknown option, a bad value and a contradiction, naming them', () => {
    expect(() => parseMountOptions(['allow_other,bogus'])).toThrow(/unknown mount option "bogus"; known: allow_other ro/)
    expect(() => parseMountOptions(['uid=me'])).toThrow(MountOptionError)
    expect(() => parseMountOptions(['allow_other,allow_root'])).toThrow(/exclude each other/)
    expect(() => parseMountOptions(['use_ino'])).toThrow(/unknown mount option/)
  })
})

describe('mountpoint', () => {
  it('reads the mount table with its escapes', () => {
    const m = parseMounts('peerfs /tmp/a\\040b fuse.peerfs rw,allow_other 0 0\n/dev/sda1 / ext4 rw 0 0\n')
    expect(m[0]).toEqual({ source: 'peerfs', where: '/tmp/a b', type: 'fuse.peerfs', options: ['rw', 'allow_other'] })
    expect(m).toHaveLength(2)
  })

  it('refuses a missing mountpoint, naming it, and creates it only with mkdir', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'peerfs-mnt-'))
    const mnt = path.join(dir, 'not', 'there')
    await expect(prepareMountpoint(mnt, { log: silentLogger })).rejects.toThrow(new MountpointError(mnt, 'mountpoint does not exist; create it (mkdir -p) or pass --mkdir'))
    expect(existsSync(mnt)).toBe(false)
    await prepareMountpoint(mnt, { mkdir: true, log: silentLogger })
    expect(existsSync(mnt)).toBe(true)
    await writeFile(path.join(dir, 'file'), '')
    await expect(prepareMountpoint(path.join(dir, 'file'), { log: silentLogger })).rejects.toThrow(/not a directory/)
  })

  it('refuses a live mount of any kind, naming it', async () => {
    // / is always a live mount.
    await expect(prepareMountpoint('/', { log: silentLogger })).rejects.toThrow(/^\/: is already a live mount \(\S+ from .*\); unmount it first/)
  })

  it('tells a non-root user what to do: /dev/fuse, then allow_other', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'peerfs-conf-'))
    const conf = path.join(dir, 'fuse.conf')
    const dev = path.join(dir, 'fuse')
    await writeFile(conf, '#user_allow_other\n')
    await writeFile(dev, '', { mode: 0o600 })
    await chmod(dev, 0o600)
    const uid = 54321
    expect(await fuseAccessProblem({ allowOther: false, uid, devFuse: dev })).toMatch(/is not readable and writable by this user \(mode 600\): as root, chmod 0666/)
    expect(await fuseAccessProblem({ allowOther: false, uid, devFuse: path.join(dir, 'none') })).toMatch(/is missing: load the fuse module/)
    await chmod(dev, 0o666)
    const problem = await fuseAccessProblem({ allowOther: true, uid, fuseConf: conf, devFuse: dev })
    // Where fusermount is not setuid, that is the first thing to fix.
    expect(problem).toMatch(/user_allow_other in \/etc\/fuse.conf|setuid root|needs fusermount/)
    await writeFile(conf, 'user_allow_other\n')
    expect(await fuseAccessProblem({ allowOther: true, uid, fuseConf: conf, devFuse: dev }) ?? '').not.toMatch(/user_allow_other/)
    expect(await fuseAccessProblem({ allowOther: true, uid: 0, fuseConf: conf, devFuse: dev })).toBeUndefined()
  })
})

describe('logs', () => {
  it('text lines carry time, level, node, message and fields', () => {
    const line = formatText(JSON.stringify({ level: 'warn', time: '2025-06-01T10:00:00.123Z', pid: 7, node: 'alpha', peer: 'beta', n: 3, err: { message: 'boom', code: 'ECONNREFUSED' }, detail: 'two words', msg: 'link failed' }))
    expect(line).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.123 WARN  alpha link failed peer=beta n=3 err="ECONNREFUSED: boom" detail="two words"\n$/)
  })

  it('a reload applies log_level unless the command line fixed it, and says so', () => {
    const log = silentLogger.child({ node: 'x' })
    expect(applyConfigLevel(log, 'debug')).toBeUndefined()
    expect(log.level).toBe('debug')
    const grandchild = log.child({ peer: 'y' })
    expect(applyConfigLevel(log, 'warn')).toBeUndefined()
    expect(grandchild.isLevelEnabled('info')).toBe(false)
    configureLogs({ verbose: true })
    expect(applyConfigLevel(log, 'info')).toMatch(/log_level info not applied: level debug is set by -v on the command line/)
    expect(log.level).toBe('warn')
  })
})

const read = async (h: Handle, pos: number, nonblock = false, len = 65536): Promise<Buffer> => await (h.read as NonNullable<Handle['read']>)(len, pos, { nonblock })

describe('events file', () => {
  it('splits a long line by bytes without breaking a character', async () => {
    const bus = new EventBus(() => 1)
    const h = new EventsFile(bus, 0, () => 1).open({ flags: 0, wake: () => {} })
    bus.emit('alpha', 'file', 'é'.repeat(10))
    const want = Buffer.from(`1 alpha file ${'é'.repeat(10)}\n`)
    const parts: Buffer[] = []
    for (let pos = 0; pos < want.length; pos += 3) parts.push(await read(h, pos, false, 3))
    expect(Buffer.concat(parts)).toEqual(want)
  })

  it('grows its size and mtime with every event, so tail -f sees new lines', async () => {
    let now = 100
    const bus = new EventBus(() => now)
    const f = new EventsFile(bus, 50, () => now)
    expect(f.attr()).toMatchObject({ size: FOLLOW_BASE, mtimeMs: 50 })
    now = 200
    bus.emit('beta', 'up')
    expect(f.attr()).toMatchObject({ size: FOLLOW_BASE + '200 beta up\n'.length, mtimeMs: 200 })
  })

  it('a follower (a read away from its own position) gets EOF, a stream reader waits', async () => {
    const bus = new EventBus(() => 1)
    const h = new EventsFile(bus, 0, () => 1).open({ flags: 0, wake: () => {} })
    // tail reads back from st_size: nothing yet, and no wait.
    expect((await read(h, FOLLOW_BASE - 8192)).length).toBe(0)
    await expect(read(h, 0, true)).rejects.toMatchObject({ errno: os.constants.errno.EAGAIN })
    let got: Buffer | undefined
    const stream = read(h, 0).then(b => { got = b })
    await new Promise(resolve => setImmediate(resolve))
    expect(got).toBeUndefined()
    bus.emit('beta', 'down')
    await stream
    expect(got?.toString()).toBe('1 beta down\n')
    // The follower reads at its own offset and gets what is queued, in order.
    bus.emit('beta', 'up')
    expect((await read(h, FOLLOW_BASE + 40)).toString()).toBe('1 beta up\n')
  })
})

describe('text files', () => {
  it('size and mtime follow the content', async () => {
    let now = 10
    let content = 'connecting\n'
    const f = new TextFile(() => content, 5, () => now)
    expect(await f.attr()).toMatchObject({ size: 11, mtimeMs: 5 })
    now = 20
    expect(await f.attr()).toMatchObject({ mtimeMs: 5 })
    content = 'up\n'
    now = 30
    expect(await f.attr()).toMatchObject({ size: 3, mtimeMs: 30 })
  })
})

describe('node flags', () => {
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')
  it('the launcher and cli.js\'s #! line start node with the daemon\'s flags, and the #! line runs', async () => {
    const flags = DAEMON_NODE_FLAGS.join(' ')
    expect(readFileSync(path.join(root, 'packaging/peerfs.in'), 'utf8')).toContain(`exec @NODE@ ${flags} "$here/`)
    const cli = path.join(root, 'dist/src/cli.js')
    expect(readFileSync(cli, 'utf8').split('\n')[0]).toBe(`#!/usr/bin/env -S node ${flags}`)
    // As the kernel runs a #! line (cli.js is not executable in dist/):
    // env gets the rest of the line as one argument and -S splits it.
    const r = spawnSync('/usr/bin/env', [`-S node ${flags}`, cli, '--version'], { encoding: 'utf8', env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` } })
    expect(r.stderr).toBe('')
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
  })

  it('names the flags a node was started without, for the daemon\'s warning', () => {
    expect(missingNodeFlags(['--inspect'])).toEqual([...DAEMON_NODE_FLAGS])
    expect(missingNodeFlags(['--inspect', ...DAEMON_NODE_FLAGS])).toEqual([])
  })
})
