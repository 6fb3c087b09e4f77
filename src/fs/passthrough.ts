// Folders backed by a real folder on disk: a peer's outbox/ (everything
// cp, mv, rsync and editors do) and inbox/ (read, and remove what you are
// done with). Files are ordinary page-cached files; operations go to the
// real folder, so what the tree shows is what is on disk.
//
// The calls are synchronous on purpose: they touch the daemon's own state
// folder (never the mount, so they cannot deadlock), each takes
// microseconds, and an async call's two thread hops measured 0.5-1 ms per
// FUSE operation here (cp -r of 5,000 files: 18 s). fsync stays async.
//
// The owner is told, through hooks, when a visible file becomes ready to
// send (closed after writing, renamed to a visible name, or a folder renamed
// into view) and when one goes away. A name with a component starting with
// "." is in progress (rsync's temp files) and never reported ready.
import {
  chmodSync, closeSync, constants as fsc, fstatSync, fsync, ftruncateSync, lstatSync, mkdirSync, openSync, readdirSync, readSync,
  renameSync, rmdirSync, truncateSync, unlinkSync, writeSync, type Stats
} from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { E, FsError } from '../lib/errors.js'
import { fsErrorOf, setTimesSync } from '../lib/durable.js'
import { checkComponent, isHidden, isUnder, joinRel, rsyncTarget } from '../lib/names.js'
import type { Attr, DirNode, FileNode, FsNode, Handle, MutableDirNode, OpenContext } from './types.js'

export interface PassHooks {
  /** A visible file (or a folder of them) at rel is ready; st: its lstat as of now, when it is a file. */
  ready?: (rel: string, st?: Stats) => void
  /** The file or folder at rel is gone (removed or renamed away). */
  gone?: (rel: string) => void
  /** A handle writing rel opened (+1) or closed (-1): not ready meanwhile. */
  writing?: (rel: string, delta: number) => void
  /**
   * A visible file this folder created (or rsync's temp file of one),
   * written in order from its start, now holds end bytes, which may be
   * read while it is written; undefined: it is not written so any more (a
   * write elsewhere, a truncate, a write that failed), until its writers
   * close it.
   */
  grew?: (rel: string, end: number | undefined) => void
  /** The file or folder at from is at to now: told before gone(from) and ready(to). */
  renamed?: (from: string, to: string) => void
  /**
   * A write through a handle of rel failed (refused for its size, a full
   * disk, an I/O error): the file is not what its writer meant. Told once per handle (and again under a name a rename gives
   * it), before its close, which then does not report it ready.
   */
  failed?: (rel: string, why: string) => void
  /** Refuses a new name (create, mkdir, rename target) by throwing a PeerfsError. */
  admit?: (rel: string) => void
  /** Largest size a write or truncate may make a file; past it, EFBIG. */
  maxFileBytes?: number
}

const visible = (rel: string): boolean => !isHidden(rel)
/** Reported to grew as it is written: a visible file, or rsync's temp file of one. */
const growable = (rel: string): boolean => visible(rel) || rsyncTarget(rel) !== undefined

function attrOf (st: Stats): Attr {
  return { mode: st.mode, size: st.size, blocks: st.blocks, mtimeMs: st.mtimeMs, atimeMs: st.atimeMs, ctimeMs: st.ctimeMs }
}

function fitsLimit (root: PassRoot, rel: string, size: number): void {
  const max = root.hooks.maxFileBytes
  if (max !== undefined && size > max) throw new FsError(E.EFBIG, `${rel}: over the ${max}-byte limit`)
}

function wrap<T> (what: string, fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw fsErrorOf(err, what)
  }
}

export class PassRoot {
  /** Handles open for writing: a rename carries them to the new name. */
  readonly writers = new Set<PassHandle>()
  /** hidden: names of the owner's own files in progress there (an inbox's copy beside its destination), never shown. */
  constructor (readonly dir: string, readonly hooks: PassHooks, readonly readOnly: boolean, readonly hidden: (name: string) => boolean = () => false) {}
  real (rel: string): string { return path.join(this.dir, rel) }
  top (): PassDir { return new PassDir(this, '') }

  /**
   * from (a file or a folder) was renamed to: its writers now write there.
   * The owner is told as a close at the old name and an open at the new
   * one, so the file is not ready before its writer closes it under the
   * name it then has (a file renamed while a logger writes it would be
   * sent cut short, and the rest lost with the outbox's copy).
   */
  moved (from: string, to: string): void {
    for (const h of this.writers) {
      if (!isUnder(h.rel, from)) continue
      const next = to + h.rel.slice(from.length)
      this.hooks.writing?.(h.rel, -1)
      h.renamed(next)
      this.hooks.writing?.(next, 1)
    }
  }

  /**
   * Handles now under to (renamed there) whose write failed: told again
   * under the name they have now, after the rename's ready(to), which
   * would release the file.
   */
  failedUnder (to: string): void {
    for (const h of this.writers) if (h.failure !== undefined && isUnder(h.rel, to)) this.hooks.failed?.(h.rel, h.failure)
  }
}

abstract class PassNode implements FsNode {
  /**
   * found: the lstat a lookup just made to find this node. The adapter
   * resolves a path afresh for each operation and drops the node after it,
   * so a getattr answers from it instead of a second lstat.
   */
  constructor (readonly root: PassRoot, readonly rel: string, private readonly found?: Stats) {}
  get real (): string { return this.root.real(this.rel) }
  attr (): Attr { return attrOf(this.found ?? wrap(this.rel, () => lstatSync(this.real))) }
  async chmod (mode: number): Promise<void> {
    wrap(this.rel, () => chmodSync(this.real, mode & 0o7777))
    this.changed()
  }

  // Ownership is not carried to peers; accepting chown keeps cp -p and rsync -a quiet.
  async chown (): Promise<void> {}

  async utimens (atimeMs: number, mtimeMs: number): Promise<void> {
    wrap(this.rel, () => setTimesSync(this.real, atimeMs, mtimeMs))
    this.changed()
  }

  /** Metadata or content of a visible file changed after it was written. */
  protected changed (): void {
    if (this instanceof PassFile && visible(this.rel)) this.root.hooks.ready?.(this.rel, lstatSync(this.real, { throwIfNoEntry: false }))
  }
}

export class PassDir extends PassNode implements MutableDirNode {
  private child (name: string): string {
    checkComponent(name)
    return joinRel(this.rel, name)
  }

  private newChild (name: string): string {
    const rel = this.child(name)
    this.root.hooks.admit?.(rel)
    return rel
  }

  private writable (): void {
    if (this.root.readOnly) throw new FsError(E.EROFS, 'this folder only takes removals')
  }

  lookup (name: string): FsNode | undefined {
    return this.lookupPath([name])
  }

  // The kernel looked up every folder on the way; one lstat of the end suffices.
  lookupPath (names: string[]): FsNode | undefined {
    for (const n of names) checkComponent(n)
    if (names.some(n => this.root.hidden(n))) return undefined
    const rel = [this.rel, ...names].filter(p => p !== '').join('/')
    // A missing name is the common case (every create looks up first);
    // without throwIfNoEntry it costs an exception, ~100 us here.
    const st = wrap(rel, () => lstatSync(this.root.real(rel), { throwIfNoEntry: false }))
    if (st?.isDirectory() === true) return new PassDir(this.root, rel, st)
    if (st?.isFile() === true) return new PassFile(this.root, rel, st)
    return undefined
  }

  list (): string[] {
    return wrap(this.rel, () => readdirSync(this.real)).filter(n => !this.root.hidden(n))
  }

  // One open(2), which creates: a second open of a new 0444 file for
  // writing would fail for a daemon that is not root.
  create (name: string, mode: number): PassHandle {
    this.writable()
    const rel = this.newChild(name)
    return PassHandle.open(this.root, rel, true, true, () => openSync(this.root.real(rel), fsc.O_CREAT | fsc.O_RDWR, mode & 0o7777))
  }

  async mkdir (name: string, mode: number): Promise<void> {
    this.writable()
    const rel = this.newChild(name)
    wrap(rel, () => mkdirSync(this.root.real(rel), { mode: mode & 0o7777 }))
  }

  async unlink (name: string): Promise<void> {
    const rel = this.child(name)
    wrap(rel, () => unlinkSync(this.root.real(rel)))
    this.root.hooks.gone?.(rel)
  }

  async rmdir (name: string): Promise<void> {
    const rel = this.child(name)
    wrap(rel, () => rmdirSync(this.root.real(rel)))
    this.root.hooks.gone?.(rel)
  }

  async rename (name: string, target: DirNode, newName: string): Promise<void> {
    if (!(target instanceof PassDir) || target.root !== this.root) throw new FsError(E.EXDEV, 'rename out of this folder')
    this.writable()
    const from = this.child(name)
    const to = target.newChild(newName)
    wrap(from, () => renameSync(this.root.real(from), this.root.real(to)))
    this.root.hooks.renamed?.(from, to)
    this.root.hooks.gone?.(from)
    this.root.moved(from, to)
    if (visible(to)) {
      const st = lstatSync(this.root.real(to), { throwIfNoEntry: false })
      this.root.hooks.ready?.(to, st?.isFile() === true ? st : undefined)
    }
    this.root.failedUnder(to)
  }
}

export class PassFile extends PassNode implements FileNode {
  // truncate(2) by path. open(O_TRUNC) and ftruncate(2) arrive as the
  // handle's truncate instead, while its writer is registered, so the
  // emptied state is never announced before the rewrite.
  async truncate (size: number): Promise<void> {
    if (this.root.readOnly) throw new FsError(E.EROFS, 'read-only')
    fitsLimit(this.root, this.rel, size)
    wrap(this.rel, () => truncateSync(this.real, size))
    if (growable(this.rel)) this.root.hooks.grew?.(this.rel, undefined)
    this.changed()
  }

  open (ctx: OpenContext): PassHandle {
    const acc = ctx.flags & 3
    if (this.root.readOnly && acc !== fsc.O_RDONLY) throw new FsError(E.EROFS, 'read-only')
    return PassHandle.open(this.root, this.rel, acc !== fsc.O_RDONLY, false, () => openSync(this.real, acc | (ctx.flags & fsc.O_APPEND)))
  }
}

/**
 * An open file of a real folder. A writer is registered with the owner
 * while open; closing one that wrote reports the file ready.
 *
 * A file this folder creates (cp, cp -r, rsync's temp file, an editor's
 * new copy) is written with direct_io: the data goes to the real file's
 * page cache only, not to FUSE's as well (cp of 1 GiB: one GiB of fresh
 * pages and one copy less, ~0.5 s here). The price is that this one
 * descriptor cannot be mapped MAP_SHARED for writing (ENODEV); files
 * opened again, for in-place edits, keep the page cache and mmap.
 */
export class PassHandle implements Handle {
  readonly syncWrite = true
  private wrote = false
  /** Why a write failed, if one did: the file is not what its writer meant, so it is not announced. */
  failure: string | undefined
  /** A created file (visible, or rsync's temp file) written in order so far: its size (hooks.grew); undefined once it is not. */
  private inOrder: number | undefined

  private constructor (private readonly root: PassRoot, private name: string, private readonly fd: number, private readonly writer: boolean, readonly direct: boolean) {
    if (writer) root.writers.add(this)
    if (direct && growable(name)) this.inOrder = 0
  }

  /**
   * Opens rel with open(), which returns the fd. A writer is registered
   * with the owner before the open(2), not after: a create takes tens of
   * microseconds in the kernel, and a kill -9 landing in it or just after
   * ended the process with the file made and no writer on record, so the
   * next run sent it as it was left, empty (found by a tester in 1 of 12
   * kills of a busy writer). A writer recorded for a file the open then
   * did not make is dropped at the next start, as the file is not there.
   */
  static open (root: PassRoot, rel: string, writer: boolean, direct: boolean, open: () => number): PassHandle {
    if (writer) root.hooks.writing?.(rel, 1)
    let fd: number
    try {
      fd = wrap(rel, open)
    } catch (err) {
      if (writer) root.hooks.writing?.(rel, -1)
      throw err
    }
    return new PassHandle(root, rel, fd, writer, direct)
  }

  /** The name the file has now (a rename carries an open handle along). */
  get rel (): string { return this.name }

  /** The file was renamed to rel while open: it goes as a file once closed, not as a stream. */
  renamed (rel: string): void {
    this.name = rel
    this.inOrder = undefined
  }

  private grew (end: number | undefined): void {
    if (this.inOrder === undefined) return
    this.inOrder = end
    this.root.hooks.grew?.(this.rel, end)
  }

  read (len: number, pos: number): Buffer {
    const buf = Buffer.allocUnsafe(len)
    return buf.subarray(0, wrap(this.rel, () => readSync(this.fd, buf, 0, len, pos)))
  }

  /**
   * A write that fails (over the size limit, a full disk, an I/O error)
   * leaves the file short of what its writer meant, and the writer knows
   * it (cp reports ENOSPC and leaves the start): the owner is told, and the
   * close does not report it ready.
   */
  write (data: Buffer, pos: number): number {
    let n: number
    try {
      fitsLimit(this.root, this.rel, pos + data.length)
      this.wrote = true
      n = wrap(this.rel, () => writeSync(this.fd, data, 0, data.length, pos))
    } catch (err) {
      this.grew(undefined)
      if (this.failure === undefined) {
        this.failure = (err as Error).message
        this.root.hooks.failed?.(this.rel, this.failure)
      }
      throw err
    }
    this.grew(pos === this.inOrder ? pos + n : undefined)
    return n
  }

  async fsync (): Promise<void> {
    await wrap(this.rel, async () => { await promisify(fsync)(this.fd) })
  }

  /** One that fails changes nothing, and the writer knows it. */
  truncate (size: number): void {
    fitsLimit(this.root, this.rel, size)
    wrap(this.rel, () => ftruncateSync(this.fd, size))
    this.wrote = true
    // To the size written so far, nothing changed.
    if (size !== this.inOrder) this.grew(undefined)
  }

  release (): void {
    // The owner gets the size and mtime with the news: no stat of its own (one fstat, about a microsecond).
    const announce = this.wrote && this.failure === undefined && visible(this.rel)
    let st: Stats | undefined
    try {
      if (announce) st = fstatSync(this.fd)
    } catch {}
    closeSync(this.fd)
    this.root.writers.delete(this)
    if (this.writer) this.root.hooks.writing?.(this.rel, -1)
    if (announce) this.root.hooks.ready?.(this.rel, st)
  }
}
