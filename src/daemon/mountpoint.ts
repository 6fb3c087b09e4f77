// Checks on a mountpoint before mounting, and the mount table. A missing
// mountpoint is refused (created only when asked); a live mount of any kind
// there is refused and left alone; only a dead FUSE mount, one whose daemon
// is gone (stat answers ENOTCONN), is detached. Every refusal names the path.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, readFile, realpath, stat, statfs } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import type { Logger } from '../lib/log.js'

const run = promisify(execFile)
/** A live mount that has not answered stat by then is treated as live, not waited for. */
const STAT_TIMEOUT_MS = 5000

export class MountpointError extends Error {
  constructor (readonly mountpoint: string, problem: string) {
    super(`${mountpoint}: ${problem}`)
    this.name = 'MountpointError'
  }
}

export interface MountEntry { source: string, where: string, type: string, options: string[] }

/** /proc/self/mounts escapes space, tab, newline and backslash as \ooo. */
export function unescapeMount (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}

export function parseMounts (text: string): MountEntry[] {
  return text.split('\n').flatMap((line) => {
    const [source, where, type, options] = line.split(' ')
    if (where === undefined || type === undefined) return []
    return [{ source: unescapeMount(source), where: unescapeMount(where), type, options: (options ?? '').split(',') }]
  })
}

export async function mounts (): Promise<MountEntry[]> {
  return parseMounts(await readFile('/proc/self/mounts', 'utf8'))
}

/** mnt as the mount table names it: the parent resolves even when mnt itself is a dead mount. */
export async function tablePath (mnt: string): Promise<string> {
  return await realpath(path.dirname(mnt)).then(d => path.join(d, path.basename(mnt)), () => mnt)
}

/** The innermost of the entries mounted at one of the paths (later entries are mounted over earlier ones). */
function innermost (entries: MountEntry[], ...paths: string[]): MountEntry | undefined {
  return entries.filter(m => paths.includes(m.where)).at(-1)
}

/** The innermost mount at exactly this path, if any. */
export async function mountAt (mnt: string): Promise<MountEntry | undefined> {
  return innermost(await mounts(), await tablePath(mnt), mnt)
}

/**
 * Whether a FUSE mount is at `where`, a path from tablePath. Read from
 * /proc synchronously, which never waits on a disk: with a hung state disk
 * every thread of the pool may be stuck, and a stop must still unmount.
 */
export function isFuseMounted (where: string): boolean {
  return innermost(parseMounts(readFileSync('/proc/self/mounts', 'utf8')), where)?.type.startsWith('fuse') === true
}

type Probe = 'missing' | 'dead' | 'alive' | 'not-dir' | 'hung'

async function probe (mnt: string): Promise<[Probe, string]> {
  let timer: NodeJS.Timeout | undefined
  const hung = new Promise<[Probe, string]>((resolve) => { timer = setTimeout(() => resolve(['hung', '']), STAT_TIMEOUT_MS) })
  // stat alone may be answered from the kernel's attribute cache after the
  // daemon died; statfs always asks the file system.
  const look = stat(mnt).then(async (st) => { await statfs(mnt); return st }).then<[Probe, string], [Probe, string]>(
    (st) => [st.isDirectory() ? 'alive' : 'not-dir', ''],
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return ['missing', '']
      if (err.code === 'ENOTCONN') return ['dead', '']
      // EACCES: another user's FUSE mount without allow_other, alive.
      return ['alive', err.code ?? err.message]
    })
  try {
    return await Promise.race([look, hung])
  } finally {
    clearTimeout(timer)
  }
}

export interface PrepareOptions {
  /** Create a missing mountpoint (and its parents) instead of refusing. */
  mkdir?: boolean
  log: Logger
}

/** Makes mnt ready to mount on, or throws a MountpointError that says what to do. */
export async function prepareMountpoint (mnt: string, opts: PrepareOptions): Promise<void> {
  const entry = await mountAt(mnt)
  const [state, detail] = await probe(mnt)
  if (entry !== undefined) {
    if (state !== 'dead') {
      const what = `${entry.type} from ${entry.source}`
      const why = state === 'hung' ? `, not answering within ${STAT_TIMEOUT_MS / 1000} s` : detail === '' ? '' : ` (${detail})`
      throw new MountpointError(mnt, `is already a live mount (${what})${why}; unmount it first (fusermount -u ${mnt}) or choose another mountpoint`)
    }
    opts.log.warn({ mountpoint: mnt, type: entry.type }, 'dead mount found (its daemon is gone); detaching it')
    await run('fusermount', ['-uz', mnt])
    return
  }
  if (state === 'missing') {
    if (opts.mkdir !== true) throw new MountpointError(mnt, 'mountpoint does not exist; create it (mkdir -p) or pass --mkdir')
    await mkdir(mnt, { recursive: true, mode: 0o755 })
    opts.log.info({ mountpoint: mnt }, 'created the mountpoint')
    return
  }
  if (state === 'not-dir') throw new MountpointError(mnt, 'mountpoint is not a directory')
  if (state === 'hung' || state === 'dead') throw new MountpointError(mnt, `mountpoint cannot be examined (${state})`)
}

/**
 * What a user must do before FUSE will let them mount, or undefined if
 * nothing. libfuse reports these failures only as "fuse failed", so they
 * are checked first. Root mounts itself. Anyone else needs to open
 * /dev/fuse (libfuse 2 opens it before anything else), a setuid-root
 * fusermount (which mounts on the user's behalf), and user_allow_other in
 * /etc/fuse.conf for allow_other.
 */
export async function fuseAccessProblem (opts: { allowOther: boolean, uid?: number, fuseConf?: string, devFuse?: string }): Promise<string | undefined> {
  const uid = opts.uid ?? process.getuid?.() ?? 0
  const dev = opts.devFuse ?? '/dev/fuse'
  const st = await stat(dev).catch(() => undefined)
  if (st === undefined) return `${dev} is missing: load the fuse module (modprobe fuse), or in a container pass --device /dev/fuse`
  if (uid === 0) return undefined
  if (!openableRw(st, uid)) {
    return `${dev} is not readable and writable by this user (mode ${(st.mode & 0o777).toString(8)}): as root, chmod 0666 ${dev} (the usual mode, which Debian's udev rule sets), or run peerfs as root`
  }
  const fm = await findFusermount()
  if (fm === undefined) return 'mounting as a non-root user needs fusermount (apt-get install fuse3), or run peerfs as root'
  if ((fm.mode & 0o4000) === 0 || fm.uid !== 0) {
    return `mounting as a non-root user needs ${fm.path} to be setuid root (chmod u+s ${fm.path}, as Debian's fuse3 package installs it), or run peerfs as root`
  }
  if (opts.allowOther) {
    const conf = await readFile(opts.fuseConf ?? '/etc/fuse.conf', 'utf8').catch(() => '')
    if (!conf.split('\n').some(l => l.trim() === 'user_allow_other')) {
      return 'allow_other as a non-root user needs a line user_allow_other in /etc/fuse.conf (ask root to add it), or mount as root'
    }
  }
  return undefined
}

function openableRw (st: { mode: number, uid: number, gid: number }, uid: number): boolean {
  if (st.uid === uid) return (st.mode & 0o600) === 0o600
  if (uid === process.getuid?.() && (process.getgroups?.() ?? []).includes(st.gid)) return (st.mode & 0o060) === 0o060
  return (st.mode & 0o006) === 0o006
}
async function findFusermount (): Promise<{ path: string, mode: number, uid: number } | undefined> {
  // libfuse 2 runs `fusermount` from its install dir, else from PATH.
  const dirs = ['/usr/bin', '/bin', ...(process.env.PATH ?? '').split(':').filter(d => d !== '')]
  for (const d of dirs) {
    const p = path.join(d, 'fusermount')
    const st = await stat(p).catch(() => undefined)
    if (st !== undefined) return { path: await realpath(p).catch(() => p), mode: st.mode, uid: st.uid }
  }
  return undefined
}
