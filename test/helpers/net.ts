// Test networks: keys, configs and daemons in child processes, each on a
// free loopback port, each with its own mountpoint. Every daemon started
// here is tracked; teardown() kills it (only it) and detaches its mount,
// then removes the folder of every network made here (keys, configs, state,
// inboxes: hundreds of MB in transfer tests), so a failing test leaves
// nothing behind. Call teardown from afterEach.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { DAEMON_NODE_FLAGS } from '../../src/cli/node-flags.js'
import { encodePublicKey, writeNewKeyFile } from '../../src/lib/keys.js'

const run = promisify(execFile)
/** The repository root, found from here whether run from test/ or dist/test/. */
export const ROOT = ((): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  while (!existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir)
  return dir
})()
export const CLI = path.join(ROOT, 'dist/src/cli.js')
/** More node flags for every daemon (bench/run.ts: PEERFS_NODE_ARGS, for profiling). */
const EXTRA_NODE_ARGS = (process.env.PEERFS_NODE_ARGS ?? '').split(' ').filter(a => a !== '')

/** Test workers that run at once get slices of the port range; more than vitest's maxWorkers. */
const PORT_SLICES = 4
/** Ports this process handed out: a port picked is free only until its daemon binds it. */
const handed = new Set<number>()

/**
 * A port free now, picked below the kernel's ephemeral range: a port from
 * that range (what listen(0) gives) can be taken, before the daemon binds
 * it, by any outgoing connection, and some tests make thousands. Each
 * worker picks from its own slice, and never the same port twice: a port
 * is free from its pick until the daemon binds it, and another node, of
 * this test or of a test in another worker, must not pick it meanwhile.
 */
export async function freePort (): Promise<number> {
  const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
  const slice = Math.floor(Math.max(0, Math.min(low, 65536) - 10_000) / PORT_SLICES)
  const start = 10_000 + (Number(process.env.VITEST_POOL_ID ?? 0) % PORT_SLICES) * slice
  for (let i = 0; i < 50 && slice > 0; i++) {
    const port = start + Math.floor(Math.random() * slice)
    if (handed.has(port)) continue
    if (await bindable(port) !== 0) {
      handed.add(port)
      return port
    }
  }
  return await bindable(0)
}

/** Binds and releases the port (0: any); the port bound, or 0 if it is taken. */
async function bindable (port: number): Promise<number> {
  const srv = net.createServer()
  const got = await new Promise<number>((resolve) => {
    srv.once('error', () => resolve(-1))
    srv.listen(port, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port))
  })
  if (got < 0) return 0
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return got
}

export async function tempDir (prefix = 'peerfs-test-'): Promise<string> {
  return await mkdtemp(path.join(os.tmpdir(), prefix))
}

export interface NodeSpec {
  id: string
  dir: string
  keyFile: string
  publicKey: string
  port: number
  mnt: string
  config: string
}

export interface PeerLink {
  /** Dial this address instead of the peer's own (a proxy); null: accept calls only. */
  address?: string | null
  alias?: string
  extra?: string
}

export interface NetworkOptions {
  /** Pairs that know each other; default every pair. */
  links?: [string, string][]
  /** Per-link overrides, keyed "from>to". */
  peer?: Record<string, PeerLink>
  /** Extra top-level TOML per node. */
  extra?: Record<string, string>
  /** Keep the daemon's default timings instead of the fast test ones. */
  defaultTimings?: boolean
  /** teardown() leaves the network's folder: the caller removes it (the bench, once its run is over). */
  keepDir?: boolean
}

export class Network {
  constructor (readonly dir: string, readonly nodes: Map<string, NodeSpec>) {}
  node (id: string): NodeSpec {
    const n = this.nodes.get(id)
    if (n === undefined) throw new Error(`no node ${id}`)
    return n
  }
}

const FAST = 'keepalive_ms = 200\ndown_after_ms = 1000\nbackoff_min_ms = 100\nbackoff_max_ms = 500\nrequest_timeout_ms = 3000\n'

/** Folders of the networks made since the last teardown, which removes them. */
const made = new Set<string>()

export async function makeNetwork (ids: string[], opts: NetworkOptions = {}): Promise<Network> {
  const dir = await tempDir()
  if (opts.keepDir !== true) made.add(dir)
  const nodes = new Map<string, NodeSpec>()
  for (const id of ids) {
    const ndir = path.join(dir, id)
    // peerfs refuses a missing mountpoint; a node's is made with it.
    await mkdir(path.join(ndir, 'mnt'), { recursive: true })
    const keyFile = path.join(ndir, `${id}.key`)
    const identity = await writeNewKeyFile(keyFile)
    nodes.set(id, {
      id, dir: ndir, keyFile, publicKey: encodePublicKey(identity.publicKey), port: await freePort(),
      mnt: path.join(ndir, 'mnt'), config: path.join(ndir, `${id}.toml`)
    })
  }
  const links = opts.links ?? ids.flatMap((a, i) => ids.slice(i + 1).map(b => [a, b] as [string, string]))
  for (const n of nodes.values()) {
    const peers = links.flatMap(([a, b]) => a === n.id ? [b] : b === n.id ? [a] : [])
    let toml = `id = "${n.id}"\nkey = "${n.id}.key"\nlisten = "127.0.0.1:${n.port}"\nstate = "state"\nmountpoint = "mnt"\n${opts.defaultTimings === true ? '' : FAST}${opts.extra?.[n.id] ?? ''}\n`
    for (const pid of peers) {
      const p = nodes.get(pid) as NodeSpec
      const o = opts.peer?.[`${n.id}>${pid}`] ?? {}
      toml += `[[peer]]\nid = "${pid}"\nkey = "${p.publicKey}"\n`
      if (o.address !== null) toml += `address = "${o.address ?? `127.0.0.1:${p.port}`}"\n`
      if (o.alias !== undefined) toml += `alias = "${o.alias}"\n`
      toml += (o.extra ?? '') + '\n'
    }
    await writeFile(n.config, toml)
  }
  return new Network(dir, nodes)
}

const running = new Set<Daemon>()

export class Daemon {
  proc: ChildProcess | undefined
  stdout = ''
  stderr = ''
  exit: Promise<number | null> = Promise.resolve(null)

  /** @param wrapper a command the daemon runs under, which execs it (e.g. setpriv ...): its pid stays the daemon's. */
  constructor (readonly spec: NodeSpec, private readonly wrapper: string[] = []) {}

  get pid (): number { return this.proc?.pid ?? 0 }

  /** Starts `peerfs mount` (with extra args, e.g. -o ro) and resolves once it prints `mounted`. */
  async start (timeoutMs = 20_000, args: string[] = []): Promise<void> {
    this.stdout = ''
    this.stderr = ''
    const [cmd, ...pre] = [...this.wrapper, process.execPath]
    const proc = spawn(cmd, [...pre, ...DAEMON_NODE_FLAGS, ...EXTRA_NODE_ARGS, CLI, 'mount', '-c', this.spec.config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.proc = proc
    running.add(this)
    proc.stderr?.on('data', (d: Buffer) => { this.stderr += d.toString() })
    this.exit = new Promise((resolve) => proc.on('exit', (code) => resolve(code)))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.spec.id} did not mount within ${timeoutMs} ms:\n${this.stderr}`)), timeoutMs)
      proc.stdout?.on('data', (d: Buffer) => {
        this.stdout += d.toString()
        if (this.stdout.includes('mounted ')) {
          clearTimeout(timer)
          resolve()
        }
      })
      proc.on('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`${this.spec.id} exited with ${code} before mounting:\n${this.stderr}`))
      })
    })
  }

  async kill (signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    if (this.proc === undefined || this.proc.exitCode !== null || this.proc.signalCode !== null) return await this.exit
    this.proc.kill(signal)
    return await this.exit
  }

  path (...parts: string[]): string {
    return path.join(this.spec.mnt, ...parts)
  }
}

export async function startNetwork (netw: Network, ids = [...netw.nodes.keys()]): Promise<Map<string, Daemon>> {
  const ds = new Map(ids.map(id => [id, new Daemon(netw.node(id))]))
  await Promise.all([...ds.values()].map(async d => await d.start()))
  return ds
}

/** The most common start: alpha and beta mounted, and alpha's link to beta up; extra: config lines for both. */
export async function startPair (extra = ''): Promise<{ netw: Network, a: Daemon, b: Daemon }> {
  const netw = await makeNetwork(['alpha', 'beta'], { extra: { alpha: extra, beta: extra } })
  const ds = await startNetwork(netw)
  const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
  await waitState(a, 'beta')
  return { netw, a, b }
}

export async function teardown (): Promise<void> {
  for (const d of running) {
    // A profiled daemon writes its profile only on a clean exit.
    await d.kill(EXTRA_NODE_ARGS.length > 0 ? 'SIGTERM' : 'SIGKILL')
    await run('fusermount', ['-uz', d.spec.mnt]).catch(() => {})
  }
  running.clear()
  // Only after the daemons: nothing writes there any more. A mount of the
  // test's own still under the folder is not emptied through it.
  for (const dir of made) await run('rm', ['-rf', '--one-file-system', dir]).catch(() => {})
  made.clear()
}

export interface Result { code: number, stdout: string, stderr: string }

/** Runs a shell command the way a user would; never throws on failure. */
export async function sh (cmd: string, timeoutMs = 20_000): Promise<Result> {
  return await new Promise((resolve) => {
    execFile('sh', ['-c', cmd], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

/** Runs a Python program; argv after the code are sys.argv[1:]. */
export async function py (code: string, args: string[] = [], timeoutMs = 20_000): Promise<Result> {
  return await new Promise((resolve) => {
    execFile('python3', ['-c', code, ...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

/** Polls until check() returns true; bounded in time. what may be worked out at the timeout (what is left, say). */
export async function eventually (check: () => Promise<boolean> | boolean, what: string | (() => Promise<string>), timeoutMs = 10_000, everyMs = 50): Promise<void> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (await check()) return
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : await what()}`)
}

/**
 * Starts reading an events file now and resolves with the first line that
 * matches (or '' after timeoutMs). The reader exits at once on a match,
 * where `cat | grep -m1` would leave cat blocked on the next event.
 */
export function waitEvent (file: string, pattern: string, timeoutMs = 20_000): Promise<string> {
  return py(`
import os, re, select, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
print('open', flush=True)
pat, end, buf = re.compile(sys.argv[2]), time.monotonic() + float(sys.argv[3]), b''
while time.monotonic() < end:
    if not select.select([fd], [], [], max(0, end - time.monotonic()))[0]: break
    buf += os.read(fd, 65536)
    *lines, buf = buf.split(b'\\n')
    for l in lines:
        if pat.search(l.decode()):
            print(l.decode()); sys.exit(0)
`, [file, pattern, String(timeoutMs / 1000)], timeoutMs + 5000).then(r => r.stdout.split('\n').slice(1).join('\n').trim())
}

export async function readText (file: string): Promise<string> {
  const r = await sh(`cat '${file}'`)
  return r.code === 0 ? r.stdout : ''
}

/** One field of peers/<peer>/status as node d shows it ('' if absent or unreadable). */
export async function field (d: Daemon, peer: string, key: string): Promise<string> {
  return new RegExp(`^${key}: (.*)$`, 'm').exec(await readText(d.path('peers', peer, 'status')))?.[1] ?? ''
}

/** A peer's state as node d sees it ('' if unreadable). */
export async function peerState (d: Daemon, peer: string): Promise<string> {
  return (await readText(d.path('peers', peer, 'state'))).trim()
}

/** Waits until node d sees peer in the given state (default: up). */
export async function waitState (d: Daemon, peer: string, state = 'up', timeoutMs = 15_000): Promise<void> {
  await eventually(async () => await peerState(d, peer) === state, `${d.spec.id} sees ${peer} ${state}`, timeoutMs)
}

export async function isMounted (mnt: string): Promise<boolean> {
  const r = await sh('cat /proc/self/mounts')
  return r.stdout.split('\n').some(l => l.split(' ')[1] === mnt)
}
