// The part of (patched) fuse-native that src/fs/adapter.ts uses.
declare module 'fuse-native' {
  type Cb<T extends unknown[] = []> = (err: number, ...res: T) => void
  export interface Stat { mode: number, size: number, blocks?: number, mtime: number, atime: number, ctime: number, uid: number, gid: number, nlink: number }
  /** struct statvfs; every field is 32-bit in the binding. */
  export interface Statfs { bsize: number, frsize: number, blocks: number, bfree: number, bavail: number, files: number, ffree: number, favail: number, fsid: number, flag: number, namemax: number }
  export type PollHandle = object
  export interface Ops {
    init?: (cb: Cb) => void
    getattr?: (path: string, cb: (err: number, stat?: Stat) => void) => void
    statfs?: (path: string, cb: (err: number, statfs?: Statfs) => void) => void
    readdir?: (path: string, cb: (err: number, names?: string[]) => void) => void
    open?: (path: string, flags: number, cb: (err: number, fd?: number, openFlags?: number) => void) => void
    create?: (path: string, mode: number, cb: (err: number, fd?: number, openFlags?: number) => void) => void
    read?: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void, signal: AbortSignal, flags: number) => void
    write?: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => void
    flush?: (path: string, fd: number, cb: Cb) => void
    release?: (path: string, fd: number, cb: Cb) => void
    truncate?: (path: string, size: number, cb: Cb) => void
    ftruncate?: (path: string, fd: number, size: number, cb: Cb) => void
    readlink?: (path: string, cb: (err: number, target?: string) => void) => void
    poll?: (path: string, fd: number, ph: PollHandle | null, cb: (err: number, revents?: number) => void) => void
    mkdir?: (path: string, mode: number, cb: Cb) => void
    unlink?: (path: string, cb: Cb) => void
    rmdir?: (path: string, cb: Cb) => void
    rename?: (src: string, dest: string, cb: Cb) => void
    chmod?: (path: string, mode: number, cb: Cb) => void
    chown?: (path: string, uid: number, gid: number, cb: Cb) => void
    utimens?: (path: string, atimeMs: number, mtimeMs: number, cb: Cb) => void
    fsync?: (path: string, datasync: number, fd: number, cb: Cb) => void
    symlink?: (target: string, path: string, cb: Cb) => void
    link?: (src: string, dest: string, cb: Cb) => void
    mknod?: (path: string, mode: number, dev: number, cb: Cb) => void
  }
  export interface FuseOptions {
    timeout?: number | false
    mkdir?: boolean
    force?: boolean
    fsname?: string
    subtype?: string
    defaultPermissions?: boolean
    options?: string[]
  }
  class Fuse {
    constructor (mnt: string, ops: Ops, opts?: FuseOptions)
    mount (cb: (err: Error | null) => void): void
    unmount (cb: (err: Error | null) => void): void
    notifyPoll (ph: PollHandle): void
    destroyPollHandle (ph: PollHandle): void
    static unmount (mnt: string, cb: (err: Error | null) => void): void
    static OPEN_DIRECT_IO: number
    static OPEN_NONSEEKABLE: number
    static OPEN_KEEP_CACHE: number
    /** Set by a binding whose flush of such a handle is answered natively. */
    static OPEN_NOFLUSH?: number
    static HAS_POLL: boolean
  }
  export default Fuse
}
