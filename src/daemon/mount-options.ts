// `-o` mount options, as sshfs and mount(8) pass them. Three kinds:
// peerfs's own (allow_other, ro, default_permissions), options that belong
// to mount(8) and fstab and mean nothing to FUSE (_netdev, nofail, noauto,
// x-systemd.*, ...: understood and dropped), and FUSE's own, passed through.
// FUSE's are checked against a list here: libfuse 2 mounts first and parses
// the rest after, so an option it rejects there would leave a mount no one
// serves. An unknown option is refused with the list of known ones.

export interface MountOptions {
  /** Let other users in (FUSE allow_other; non-root needs user_allow_other in /etc/fuse.conf). */
  allowOther: boolean
  /** Mount read-only: every write-type operation answers EROFS. */
  readOnly: boolean
  /** FUSE options to pass on as given. */
  fuse: string[]
  /** mount(8)/fstab options understood and not passed on. */
  ignored: string[]
}

export class MountOptionError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'MountOptionError'
  }
}

/** mount(8), fstab and systemd options that are not for the filesystem. */
const MOUNT_ONLY = new Set(['_netdev', 'nofail', 'auto', 'noauto', 'user', 'nouser', 'users', 'owner', 'group', 'defaults', 'rw'])
const MOUNT_ONLY_PREFIX = ['x-', 'comment=']

/** FUSE (libfuse 2, kernel) flags passed through. */
const FUSE_FLAGS = new Set([
  'allow_root', 'auto_unmount', 'nonempty', 'kernel_cache', 'auto_cache', 'noauto_cache', 'direct_io',
  'async_read', 'sync_read', 'atomic_o_trunc', 'debug',
  'suid', 'nosuid', 'dev', 'nodev', 'exec', 'noexec', 'atime', 'noatime', 'sync', 'async', 'dirsync'
])
/** FUSE options with a value, passed through; the value must match. */
const FUSE_VALUES: Record<string, RegExp> = {
  fsname: /^[^,]+$/,
  subtype: /^[A-Za-z0-9_.-]+$/,
  max_read: /^\d+$/,
  max_readahead: /^\d+$/,
  max_background: /^\d+$/,
  congestion_threshold: /^\d+$/,
  uid: /^\d+$/,
  gid: /^\d+$/,
  umask: /^[0-7]{1,4}$/,
  entry_timeout: /^\d+(\.\d+)?$/,
  attr_timeout: /^\d+(\.\d+)?$/,
  ac_attr_timeout: /^\d+(\.\d+)?$/,
  negative_timeout: /^\d+(\.\d+)?$/
}

export function knownOptions (): string {
  return ['allow_other', 'ro', 'rw', 'default_permissions', ...FUSE_FLAGS, ...Object.keys(FUSE_VALUES).map(k => `${k}=`)].join(' ')
}

/** Parses every -o argument given (each a comma-separated list). */
export function parseMountOptions (args: readonly string[]): MountOptions {
  const out: MountOptions = { allowOther: false, readOnly: false, fuse: [], ignored: [] }
  for (const opt of args.flatMap(a => a.split(',')).map(o => o.trim()).filter(o => o !== '')) {
    const eq = opt.indexOf('=')
    const name = eq < 0 ? opt : opt.slice(0, eq)
    if (opt === 'allow_other') out.allowOther = true
    else if (opt === 'ro') out.readOnly = true
    else if (opt === 'default_permissions') continue // always on: the kernel checks the tree's modes
    else if (MOUNT_ONLY.has(opt) || MOUNT_ONLY_PREFIX.some(p => opt.startsWith(p))) out.ignored.push(opt)
    else if (FUSE_FLAGS.has(opt)) out.fuse.push(opt)
    else if (eq > 0 && name in FUSE_VALUES) {
      if (!FUSE_VALUES[name].test(opt.slice(eq + 1))) throw new MountOptionError(`mount option ${opt}: bad value for ${name}`)
      out.fuse.push(opt)
    } else {
      throw new MountOptionError(`unknown mount option ${JSON.stringify(opt)}; known: ${knownOptions()}`)
    }
  }
  if (out.allowOther && out.fuse.includes('allow_root')) throw new MountOptionError('mount options allow_other and allow_root exclude each other')
  return out
}
