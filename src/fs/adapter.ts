// The FUSE adapter: the only module that imports fuse-native. It resolves
// paths to nodes, dispatches on their capabilities, keeps the table of open
// handles, and converts errors in one place: a PeerfsError's errno goes to
// the caller, anything else is logged and becomes EIO. Every operation
// answers exactly once (answer() guards it). A read-only mount is enforced
// here too, in one place: every write-type operation answers EROFS.
// It is longer than most modules because it is fuse-native's whole
// operation table, one short entry per operation; split, the rules above
// would be written twice.
import { constants as fsc } from 'node:fs'
import { statfs } from 'node:fs/promises'
import Fuse, { type PollHandle, type Stat, type Statfs } from 'fuse-native'
import { E, FsError, PeerfsError } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import { encodingError } from '../lib/names.js'
import { isDir, isFile, isMutableDir, isSymlink, MAX_WRITE, POLLIN, POLLOUT, type DirNode, type FileNode, type FsNode, type Handle, type MaybePromise, type MutableDirNode, type OpenContext } from './types.js'

type Ops = ConstructorParameters<typeof Fuse>[1]

/** f(v) at once for a value, after it for a promise: sync paths stay sync. */
function then<T, U> (v: MaybePromise<T>, f: (t: T) => MaybePromise<U>): MaybePromise<U> {
  return v instanceof Promise ? v.then(f) : f(v)
}

// Thrown for every missing name (each create is preceded by a lookup that
// misses): one instance, so no stack is captured each time.
const NO_ENTRY = new FsError(E.ENOENT, 'no such file or folder')

/** An operation's result that answers ENOENT (the common miss, without an exception). */
const MISSING = Symbol('missing')

function found (n: FsNode | undefined): FsNode {
  if (n === undefined) throw NO_ENTRY
  return n
}

/**
 * A handle without flush lets the binding answer close(2)'s flush itself
 * (cp -r: one round trip to this thread less per file). 0 with a binding
 * that predates the flag: flush then comes here and is a no-op.
 */
const OPEN_NOFLUSH = Fuse.OPEN_NOFLUSH ?? 0

/** libfuse's interrupt signal: SIGRTMIN+6, a signal Node leaves alone (SIGUSR1 is ours). */
const INTR_SIGNAL = 40
const O_ACCMODE = 3

interface Open {
  handle: Handle
  ph: PollHandle | undefined
}

export interface AdapterOptions {
  mountpoint: string
  /** Kernel entry/attribute cache lifetime in seconds (static nodes). */
  cacheTimeoutS: number
  log: Logger
  /** -o ro: refuse every write-type operation with EROFS. */
  readOnly?: boolean
  /** -o allow_other: other users may enter the tree (mode bits still apply). */
  allowOther?: boolean
  /** FUSE options passed through from the command line (checked by daemon/mount-options). */
  fuseOptions?: readonly string[]
  /** df on the mount reports the disk holding this folder (the state folder). */
  statfsPath?: string
}

/** Operations that change the tree; a read-only mount answers them EROFS. */
const WRITE_OPS = ['create', 'write', 'truncate', 'ftruncate', 'mkdir', 'unlink', 'rmdir', 'rename', 'chmod', 'chown', 'utimens', 'symlink', 'link', 'mknod'] as const
/** statfs's block counts are 32-bit in fuse-native; larger disks are reported in larger units. */
const STATFS_MAX_BLOCKS = 0xffffffff

export class FuseAdapter {
  private readonly fuse: Fuse
  private readonly open = new Map<number, Open>()
  private nextFd = 1
  private pollHandles = 0
  private readonly uid = process.getuid?.() ?? 0
  private readonly gid = process.getgid?.() ?? 0

  constructor (private readonly root: DirNode, private readonly opts: AdapterOptions) {
    if (!Fuse.HAS_POLL) throw new Error('fuse-native is not the patched build (run `make setup`)')
    const t = String(opts.cacheTimeoutS)
    const user = opts.fuseOptions ?? []
    const given = (name: string): boolean => user.some(o => o.startsWith(`${name}=`))
    this.fuse = new Fuse(opts.mountpoint, this.ops(), {
      timeout: false,
      // The daemon checks the mountpoint first (daemon/mountpoint.ts); never create one here.
      mkdir: false,
      options: [
        ...given('fsname') ? [] : ['fsname=peerfs'], ...given('subtype') ? [] : ['subtype=peerfs'], 'default_permissions',
        ...opts.allowOther === true ? ['allow_other'] : [],
        // The kernel refuses writes on an ro mount before they reach us; the
        // adapter refuses them as well, so the tree is read-only by itself.
        ...opts.readOnly === true ? ['ro'] : [],
        'big_writes', `max_write=${MAX_WRITE}`, 'intr', `intr_signal=${INTR_SIGNAL}`,
        `entry_timeout=${t}`, `attr_timeout=${t}`, 'negative_timeout=0',
        // Last, so a user's timeouts win over the defaults above.
        ...user
      ]
    })
  }

  /** Open handles and pollhandles held, for the status report (a leak shows here). */
  stats (): { openHandles: number, pollHandles: number } {
    return { openHandles: this.open.size, pollHandles: this.pollHandles }
  }

  mount (): Promise<void> {
    return new Promise((resolve, reject) => this.fuse.mount((err) => err === null ? resolve() : reject(err)))
  }

  unmount (): Promise<void> {
    return new Promise((resolve, reject) => this.fuse.unmount((err) => err === null ? resolve() : reject(err)))
  }

  /** Names fuse-native could not carry byte for byte are EILSEQ wherever they appear (lib/names.ts). */
  private checkNames (...paths: string[]): void {
    for (const p of paths) {
      const err = encodingError(p)
      if (err !== undefined) throw err
    }
  }

  // Resolution stays synchronous while every lookup on the way is (the
  // static tree, the passthrough folders): an await per path component
  // cost a microtask each, on every getattr, create and open of cp -r.
  private resolve (path: string): MaybePromise<FsNode> {
    return then(this.find(path), found)
  }

  /** The node at path, or undefined if a name on the way is missing. */
  private find (path: string): MaybePromise<FsNode | undefined> {
    this.checkNames(path)
    return path === '/' ? this.root : this.walk(this.root, path.split('/').slice(1), 0, path)
  }

  private walk (node: FsNode, names: string[], from: number, path: string): MaybePromise<FsNode | undefined> {
    for (let i = from; i < names.length; i++) {
      if (!isDir(node)) throw new FsError(E.ENOTDIR, `${path}: not a directory`)
      // A folder that resolves the rest at once (one stat of a real path) ends the walk.
      const rest = node.lookupPath !== undefined && i < names.length - 1
      const next: MaybePromise<FsNode | undefined> = rest ? (node.lookupPath as (n: string[]) => MaybePromise<FsNode | undefined>)(names.slice(i)) : node.lookup(names[i])
      if (next instanceof Promise) return next.then((n) => rest || n === undefined ? n : this.walk(n, names, i + 1, path))
      if (rest || next === undefined) return next
      node = next
    }
    return node
  }

  /** The directory that holds path, which must take changes, and the last name. */
  private parent (path: string): MaybePromise<[MutableDirNode, string]> {
    this.checkNames(path)
    const i = path.lastIndexOf('/')
    const name = path.slice(i + 1)
    return then(this.resolve(path.slice(0, i) === '' ? '/' : path.slice(0, i)), (dir) => {
      if (!isDir(dir)) throw new FsError(E.ENOTDIR, `${path}: not a directory`)
      if (isMutableDir(dir)) return [dir, name]
      return then(dir.lookup(name), (n) => { throw new FsError(n === undefined ? E.EACCES : E.EPERM, `${path}: this folder cannot be changed`) })
    })
  }

  private handle (fd: number): Open {
    const o = this.open.get(fd)
    if (o === undefined) throw new FsError(E.EBADF, `no open handle ${fd}`)
    return o
  }

  /** Runs fn and answers cb exactly once with its result or its errno (MISSING: ENOENT). */
  private answer<T> (op: string, path: string, cb: (err: number, res?: T) => void, fn: () => T | typeof MISSING | Promise<T | typeof MISSING>): void {
    let done = false
    const reply = (err: number, res?: T): void => {
      if (done) {
        this.opts.log.error({ op, path }, 'second answer to one FUSE operation suppressed')
        return
      }
      done = true
      cb(err, res)
    }
    const fail = (err: unknown): void => {
      if (err instanceof PeerfsError) {
        if (this.opts.log.isLevelEnabled('debug')) this.opts.log.debug({ op, path, errno: err.errno, reason: err.message }, 'fs error')
        reply(-err.errno)
      } else {
        this.opts.log.error({ op, path, err }, 'unexpected error in FUSE operation')
        reply(-E.EIO)
      }
    }
    try {
      const r = fn()
      if (r instanceof Promise) r.then((v) => v === MISSING ? reply(-E.ENOENT) : reply(0, v), fail)
      else if (r === MISSING) reply(-E.ENOENT)
      else reply(0, r)
    } catch (err) {
      fail(err)
    }
  }

  private stat (node: FsNode): MaybePromise<Stat> {
    return then(node.attr(), (a) => {
      const t = a.mtimeMs ?? 0
      return {
        mode: a.mode, size: a.size ?? 0, blocks: a.blocks ?? 0, mtime: t, atime: a.atimeMs ?? t, ctime: a.ctimeMs ?? t,
        uid: this.uid, gid: this.gid, nlink: isDir(node) ? 2 : 1
      }
    })
  }

  /** df: the state disk's numbers, so a full disk shows before writes fail. */
  private async statfs (): Promise<Statfs> {
    if (this.opts.statfsPath === undefined) return { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, fsid: 0, flag: 0, namemax: 255 }
    const s = await statfs(this.opts.statfsPath)
    let unit = s.bsize
    while (s.blocks * s.bsize / unit > STATFS_MAX_BLOCKS) unit *= 2
    const scale = (n: number): number => Math.floor(n * s.bsize / unit)
    const files = Math.min(s.files, STATFS_MAX_BLOCKS)
    return {
      bsize: unit, frsize: unit, blocks: scale(s.blocks), bfree: scale(s.bfree), bavail: scale(s.bavail),
      files, ffree: Math.min(s.ffree, files), favail: Math.min(s.ffree, files), fsid: 0, flag: this.opts.readOnly === true ? 1 : 0, namemax: 255
    }
  }

  private file (path: string): MaybePromise<FileNode> {
    return then(this.resolve(path), (node) => {
      if (isDir(node)) throw new FsError(E.EISDIR, `${path}: is a directory`)
      if (!isFile(node)) throw new FsError(E.EINVAL, `${path}: not a regular file`)
      return node
    })
  }

  /** Keeps the handle open(ctx) gives under a new fd; [fd, open flags for FUSE]. */
  private openHandle (path: string, flags: number, stream: boolean, open: (ctx: OpenContext) => MaybePromise<Handle>): MaybePromise<[number, number]> {
    const entry: Open = { handle: { direct: false }, ph: undefined }
    return then(open({ flags, wake: () => this.wake(entry) }), (handle) => {
      const acc = flags & O_ACCMODE
      if ((acc !== fsc.O_RDONLY && handle.write === undefined) || (acc !== fsc.O_WRONLY && handle.read === undefined)) {
        return then(handle.release?.(), () => { throw new FsError(E.EACCES, `${path}: not ${acc === fsc.O_RDONLY ? 'readable' : 'writable'}`) })
      }
      const fd = this.nextFd++
      entry.handle = handle
      this.open.set(fd, entry)
      return [fd, (handle.direct ? Fuse.OPEN_DIRECT_IO : 0) | (stream ? Fuse.OPEN_NONSEEKABLE : 0) | (handle.flush === undefined ? OPEN_NOFLUSH : 0)]
    })
  }

  /**
   * Opens the file at path. A writer's file removed since the kernel's
   * lookup found it (a delivery clearing the last version) is created: the
   * kernel drops O_CREAT once a lookup found the file, so a program
   * creating it (shell >, cp, a logger) would get ENOENT.
   */
  private openFile (path: string, flags: number): MaybePromise<[number, number]> {
    const open = (): MaybePromise<[number, number]> => then(this.file(path), (node) => this.openHandle(path, flags, node.stream === true, (ctx) => node.open(ctx)))
    if ((flags & O_ACCMODE) === fsc.O_RDONLY) return open()
    const created = (err: unknown): MaybePromise<[number, number]> => {
      if (!(err instanceof FsError) || err.errno !== E.ENOENT) throw err
      return this.createFile(path, 0o644)
    }
    try {
      const r = open()
      return r instanceof Promise ? r.catch(created) : r
    } catch (err) {
      return created(err)
    }
  }

  /** One step: the folder creates the file and opens it (a passthrough: one open(2)). */
  private createFile (path: string, mode: number): MaybePromise<[number, number]> {
    return then(this.parent(path), ([dir, name]) => this.openHandle(path, fsc.O_RDWR, false, (ctx) => dir.create(name, mode, ctx)))
  }

  private async truncate (path: string, size: number): Promise<void> {
    let node: FileNode
    try {
      node = await this.file(path)
    } catch (err) {
      // open(O_TRUNC) truncates by path before the open (see openFile): a
      // file gone since the lookup has nothing to empty, and the open creates it.
      if (size === 0 && err instanceof FsError && err.errno === E.ENOENT) return
      throw err
    }
    if (node.truncate === undefined) throw new FsError(E.EACCES, `${path}: read-only`)
    await node.truncate(size)
  }

  private ops (): Ops {
    const ops = this.allOps()
    if (this.opts.readOnly !== true) return ops
    const open = ops.open as NonNullable<Ops['open']>
    const ro: Ops = {
      ...ops,
      open: (path, flags, cb) => {
        if ((flags & O_ACCMODE) === fsc.O_RDONLY && (flags & fsc.O_TRUNC) === 0) return open(path, flags, cb)
        this.answer<number>('open', path, (err) => cb(err, 0, 0), () => { throw new FsError(E.EROFS, `${path}: mounted read-only`) })
      }
    }
    for (const op of WRITE_OPS) Object.assign(ro, { [op]: this.refuse(E.EROFS, op, 'mounted read-only') })
    return ro
  }

  private refuse (errno: number, what: string, why: string) {
    return (path: string, ...rest: unknown[]): void => {
      const cb = rest[rest.length - 1] as (err: number) => void
      this.answer(what, path, cb, () => {
        this.checkNames(path, ...rest.filter((a): a is string => typeof a === 'string'))
        throw new FsError(errno, `${path}: ${what}: ${why}`)
      })
    }
  }

  private allOps (): Ops {
    const refuse = (errno: number, what: string): ReturnType<FuseAdapter['refuse']> => this.refuse(errno, what, 'not supported here')
    return {
      // A missing name is answered without a throw: every create looks its name up twice first.
      getattr: (path, cb) => this.answer('getattr', path, cb, () => then(this.find(path), (node) => node === undefined ? MISSING : this.stat(node))),

      statfs: (path, cb) => this.answer('statfs', path, cb, async () => await this.statfs()),

      readdir: (path, cb) => this.answer('readdir', path, cb, async () => {
        const node = await this.resolve(path)
        if (!isDir(node)) throw new FsError(E.ENOTDIR, `${path}: not a directory`)
        return ['.', '..', ...await node.list()]
      }),

      readlink: (path, cb) => this.answer('readlink', path, cb, async () => {
        const node = await this.resolve(path)
        if (!isSymlink(node)) throw new FsError(E.EINVAL, `${path}: not a symlink`)
        return node.readlink()
      }),

      open: (path, flags, cb) => {
        let fd = 0
        this.answer<number>('open', path, (err, res) => cb(err, fd, res), () =>
          then(this.openFile(path, flags), ([n, openFlags]) => {
            fd = n
            return openFlags
          }))
      },

      create: (path, mode, cb) => {
        let fd = 0
        this.answer<number>('create', path, (err, res) => cb(err, fd, res), () =>
          then(this.createFile(path, mode), ([n, openFlags]) => {
            fd = n
            return openFlags
          }))
      },

      read: (path, fd, buf, len, pos, cb, signal, flags) => this.answer<Buffer>('read', path, (err, data) => {
        if (err !== 0 || data === undefined) return cb(err)
        data.copy(buf, 0, 0, Math.min(len, data.length))
        cb(Math.min(len, data.length))
      }, () => {
        const h = this.handle(fd).handle
        if (h.read === undefined) throw new FsError(E.EBADF, `${path}: not open for reading`)
        return h.read(len, pos, { nonblock: (flags & fsc.O_NONBLOCK) !== 0, signal })
      }),

      write: (path, fd, buf, len, pos, cb) => this.answer<number>('write', path, (err, n) => cb(err !== 0 ? err : n ?? 0), () => {
        const h = this.handle(fd).handle
        if (h.write === undefined) throw new FsError(E.EBADF, `${path}: not open for writing`)
        // The buffer is FUSE's memory, valid only until we answer: a handle
        // done with it when write returns gets it as is, any other a copy.
        const data = buf.subarray(0, len)
        return h.write(h.syncWrite === true ? data : Buffer.from(data), pos)
      }),

      flush: (path, fd, cb) => this.answer('flush', path, cb, () => this.handle(fd).handle.flush?.()),

      fsync: (path, _datasync, fd, cb) => this.answer('fsync', path, cb, () => this.handle(fd).handle.fsync?.()),

      release: (path, fd, cb) => this.answer('release', path, cb, () => {
        const o = this.open.get(fd)
        if (o === undefined) return
        this.open.delete(fd)
        this.dropPollHandle(o)
        return o.handle.release?.()
      }),

      truncate: (path, size, cb) => this.answer('truncate', path, cb, async () => await this.truncate(path, size)),

      ftruncate: (path, fd, size, cb) => this.answer('ftruncate', path, cb, async () => {
        const h = this.open.get(fd)?.handle
        if (h?.truncate !== undefined) await h.truncate(size)
        else await this.truncate(path, size)
      }),

      mkdir: (path, mode, cb) => this.answer('mkdir', path, cb, async () => {
        const [dir, name] = await this.parent(path)
        await dir.mkdir(name, mode)
      }),

      unlink: (path, cb) => this.answer('unlink', path, cb, async () => {
        const [dir, name] = await this.parent(path)
        await dir.unlink(name)
      }),

      rmdir: (path, cb) => this.answer('rmdir', path, cb, async () => {
        const [dir, name] = await this.parent(path)
        await dir.rmdir(name)
      }),

      rename: (src, dest, cb) => this.answer('rename', src, cb, async () => {
        this.checkNames(dest)
        const [from, name] = await this.parent(src)
        const i = dest.lastIndexOf('/')
        const to = await this.resolve(dest.slice(0, i) === '' ? '/' : dest.slice(0, i))
        if (!isDir(to)) throw new FsError(E.ENOTDIR, `${dest}: not a directory`)
        await from.rename(name, to, dest.slice(i + 1))
      }),

      chmod: (path, mode, cb) => this.answer('chmod', path, cb, async () => {
        const node = await this.resolve(path)
        if (node.chmod === undefined) throw new FsError(E.EPERM, `${path}: mode cannot be changed`)
        await node.chmod(mode)
      }),

      chown: (path, uid, gid, cb) => this.answer('chown', path, cb, async () => {
        const node = await this.resolve(path)
        if (node.chown === undefined) throw new FsError(E.EPERM, `${path}: owner cannot be changed`)
        await node.chown(uid, gid)
      }),

      utimens: (path, atime, mtime, cb) => this.answer('utimens', path, cb, async () => {
        const node = await this.resolve(path)
        if (node.utimens === undefined) throw new FsError(E.EPERM, `${path}: times cannot be changed`)
        await node.utimens(atime, mtime)
      }),

      symlink: refuse(E.EPERM, 'symlink'),
      link: refuse(E.EPERM, 'link'),
      mknod: refuse(E.EPERM, 'mknod'),

      poll: (path, fd, ph, cb) => this.answer<number>('poll', path, cb, () => {
        const o = this.open.get(fd)
        if (o === undefined) {
          if (ph !== null) this.fuse.destroyPollHandle(ph)
          throw new FsError(E.EBADF, `no open handle ${fd}`)
        }
        if (o.handle.poll === undefined) {
          if (ph !== null) this.fuse.destroyPollHandle(ph)
          return POLLIN | POLLOUT
        }
        if (ph !== null) {
          this.dropPollHandle(o)
          o.ph = ph
          this.pollHandles++
        }
        return o.handle.poll()
      })
    }
  }

  /** Wakes the poller waiting on this handle, if any; each pollhandle is used once. */
  private wake (o: Open): void {
    const ph = o.ph
    if (ph === undefined) return
    o.ph = undefined
    this.pollHandles--
    this.fuse.notifyPoll(ph)
  }

  private dropPollHandle (o: Open): void {
    if (o.ph === undefined) return
    this.fuse.destroyPollHandle(o.ph)
    o.ph = undefined
    this.pollHandles--
  }
}
