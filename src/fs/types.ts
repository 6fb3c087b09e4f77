// The capability interfaces of tree nodes. The FUSE adapter resolves a path
// to a node, checks which of these it implements, and dispatches; nodes know
// nothing of FUSE and throw FsError (or any PeerfsError) with the errno the
// caller must see. The whole tree can be driven without a mount.

export type MaybePromise<T> = T | Promise<T>

export interface Attr {
  /** Full st_mode, type bits included. */
  mode: number
  size?: number
  /** 512-byte blocks allocated (du); real files only. */
  blocks?: number
  mtimeMs?: number
  atimeMs?: number
  ctimeMs?: number
}

export interface FsNode {
  attr(): MaybePromise<Attr>
  chmod?(mode: number): Promise<void>
  /** chown(2); a node may accept it without keeping the owner. */
  chown?(uid: number, gid: number): Promise<void>
  utimens?(atimeMs: number, mtimeMs: number): Promise<void>
}

export interface DirNode extends FsNode {
  lookup(name: string): MaybePromise<FsNode | undefined>
  list(): MaybePromise<string[]>
  /** Optional: resolves several components at once (one stat for a real folder). */
  lookupPath?(names: string[]): MaybePromise<FsNode | undefined>
}

/** A directory that takes changes (outbox, inbox). */
export interface MutableDirNode extends DirNode {
  /** Creates name and opens it for reading and writing, in one step. */
  create(name: string, mode: number, ctx: OpenContext): MaybePromise<Handle>
  mkdir(name: string, mode: number): Promise<void>
  unlink(name: string): Promise<void>
  rmdir(name: string): Promise<void>
  /** Moves name to target/newName; EXDEV unless target is of the same tree. */
  rename(name: string, target: DirNode, newName: string): Promise<void>
}

export interface OpenContext {
  flags: number
  /** Call when the handle's readiness may have changed; wakes pollers. */
  wake: () => void
}

export interface ReadContext {
  /** O_NONBLOCK: answer EAGAIN rather than wait. */
  nonblock: boolean
  /** Aborted when the caller is interrupted by a signal. */
  signal?: AbortSignal
}

export interface Handle {
  /**
   * direct_io: reads and writes go to the handle, past the page cache. For
   * live content (the kernel must call read and not trust st_size), or a
   * writer whose data would otherwise be cached twice.
   */
  readonly direct: boolean
  /**
   * write() is done with its data when it returns (it never returns a
   * promise), so the adapter may pass FUSE's own buffer instead of a copy.
   */
  readonly syncWrite?: boolean
  read?(len: number, pos: number, ctx: ReadContext): Buffer | Promise<Buffer>
  write?(data: Buffer, pos: number): number | Promise<number>
  /** On every close(2) of a descriptor; its error is close's error. */
  flush?(): void | Promise<void>
  /** Ready mask (POLLIN, POLLOUT, ...) now. */
  poll?(): number
  fsync?(): Promise<void>
  /** ftruncate(2) on this handle. */
  truncate?(size: number): void | Promise<void>
  release?(): void | Promise<void>
}

export interface FileNode extends FsNode {
  /**
   * A stream, not a file with content at offsets (requests, replies,
   * commands): lseek and pread answer ESPIPE rather than being
   * accepted and ignored.
   */
  readonly stream?: boolean
  open(ctx: OpenContext): Handle | Promise<Handle>
  /** O_TRUNC and truncate(2); files that take writes accept size 0. */
  truncate?(size: number): void | Promise<void>
}

export interface SymlinkNode extends FsNode {
  readlink(): string
}

export const isDir = (n: FsNode): n is DirNode => typeof (n as DirNode).lookup === 'function'
export const isFile = (n: FsNode): n is FileNode => typeof (n as FileNode).open === 'function'
export const isSymlink = (n: FsNode): n is SymlinkNode => typeof (n as SymlinkNode).readlink === 'function'
export const isMutableDir = (n: FsNode): n is MutableDirNode => typeof (n as MutableDirNode).mkdir === 'function'

export const S_IFDIR = 0o040000
export const S_IFREG = 0o100000
export const S_IFLNK = 0o120000

/** FUSE's largest write request (max_write, which the adapter sets). */
export const MAX_WRITE = 128 * 1024

export const POLLIN = 0x001
export const POLLOUT = 0x004
