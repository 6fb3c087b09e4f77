// Placement into the inbox, and the room a transfer needs there. A file
// appears at inbox/<rel> by a rename, whole, with its mode and mtime;
// nothing outside the inbox is touched and no link is followed.
//
// Placing is idempotent per file: rename moves the staged file away, so a
// staged file that is gone was placed before. A transfer placed again
// after a crash between two of its files places only the rest, and a
// file the user removed since stays removed. An inbox on another
// filesystem keeps that property by renaming the staged file to
// <src>.copied (same filesystem, atomic) once its copy sits beside the
// destination, before the copy is renamed in.
import { chmodSync, lstatSync, mkdirSync, renameSync, unlinkSync } from 'node:fs'
import { statfs, stat, chmod, copyFile, open, rename, rm, unlink } from 'node:fs/promises'
import path from 'node:path'
import { fsyncDir, setTimes, setTimesSync } from '../../lib/durable.js'
import { PATH_MAX, RESERVED_PREFIX, badRelPath } from '../../lib/names.js'
import { yieldLoop } from '../../lib/wait.js'
import { Refusal, quoted } from './shared.js'

export interface Placement {
  /** The staged file (a verified partial, or one unpacked from a bundle). */
  src: string
  rel: string
  mode: number
  mtimeMs: number
  /** Unique per file of the transfer: names the copy beside the destination on another filesystem. */
  tag: string
}

export interface Placed {
  /** Placed now. */
  placed: string[]
  /** Not placeable now (a folder where the file goes, a file where a folder does): its staged copy stays for the retry. */
  blocked: Array<{ rel: string, why: string }>
  /** Never placeable (a name the inbox refuses): its staged copy is dropped. */
  refused: Array<{ rel: string, why: string }>
}

/** Something of the user's is where the file goes: it waits, staged, until that is moved. */
export class Blocked extends Error {}

/** The longest name a placement uses beside its destination (RESERVED_PREFIX, an xid, the file's index). */
const NEAR_NAME_MAX = RESERVED_PREFIX.length + 64 + 1 + 10

/**
 * Why rel can never be placed in this inbox, or undefined: a name the
 * rules refuse, or a path the kernel would refuse there (ENAMETOOLONG:
 * the inbox's own path counts, so a name that fits the sender's outbox
 * may not fit). Checked before a transfer is taken, so such a file is
 * refused by itself instead of retried for ever or dropped after its
 * batch was reported placed.
 */
export function placeError (inbox: string, rel: string): string | undefined {
  const bad = badRelPath(rel)
  if (bad !== undefined) return `${quoted(rel)}: ${bad}`
  const dest = path.join(inbox, rel)
  const longest = Buffer.byteLength(path.dirname(dest)) + 1 + Math.max(Buffer.byteLength(path.basename(dest)), NEAR_NAME_MAX)
  // PATH_MAX counts the terminating NUL.
  if (longest >= PATH_MAX) return `${quoted(rel)}: path of ${longest} bytes in the inbox, over ${PATH_MAX - 1}`
  return undefined
}

const exists = (p: string): boolean => lstatSync(p, { throwIfNoEntry: false }) !== undefined

/**
 * Places every file not placed yet, then syncs each folder once (in
 * parallel). The per-file steps are synchronous calls on local folders
 * (microseconds each; a thread hop apiece cost more than the work), with a
 * turn of the event loop every PLACE_AT_ONCE files.
 */
export async function placeAll (files: Placement[], inbox: string): Promise<Placed> {
  const out: Placed = { placed: [], blocked: [], refused: [] }
  const dirs = new Set<string>()
  /** Folders checked or made during this call: not looked at again per file. */
  const known = new Set<string>()
  for (let i = 0; i < files.length; i++) {
    const f = files[i]
    try {
      const dir = await placeOne(f, inbox, known)
      if (dir === undefined) continue
      dirs.add(dir)
      out.placed.push(f.rel)
    } catch (err) {
      if (err instanceof Blocked) {
        out.blocked.push({ rel: f.rel, why: err.message })
      } else if (err instanceof Refusal) {
        await rm(f.src, { force: true })
        out.refused.push({ rel: f.rel, why: err.message })
      } else {
        throw err
      }
    }
    if (i % PLACE_AT_ONCE === PLACE_AT_ONCE - 1) await yieldLoop()
  }
  await Promise.all([...dirs].map(async d => { await fsyncDir(d) }))
  return out
}

const PLACE_AT_ONCE = 256

/** Moves one staged file into place; undefined if it was placed before. Returns the folder it went into. */
async function placeOne (f: Placement, inbox: string, known: Set<string>): Promise<string | undefined> {
  const bad = placeError(inbox, f.rel)
  if (bad !== undefined) throw new Refusal(bad)
  const dest = path.join(inbox, f.rel)
  const dir = path.dirname(dest)
  const near = path.join(dir, `${RESERVED_PREFIX}${f.tag}`)
  const copied = `${f.src}.copied`
  if (!exists(f.src)) {
    // Gone: placed before, or, on another filesystem's path, renamed to
    // .copied once its copy was complete beside the destination.
    if (!exists(copied)) return undefined
    if (exists(near)) renameSync(near, dest)
    unlinkSync(copied)
    return dir
  }
  folders(inbox, f.rel, known)
  const existing = lstatSync(dest, { throwIfNoEntry: false })
  if (existing !== undefined && !existing.isFile()) throw new Blocked(`${f.rel} exists in the inbox and is not a file`)
  chmodSync(f.src, f.mode & 0o777)
  setTimesSync(f.src, f.mtimeMs, f.mtimeMs)
  try {
    renameSync(f.src, dest)
    return dir
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err
  }
  try {
    await copyFile(f.src, near)
    await chmod(near, f.mode & 0o777)
    await setTimes(near, f.mtimeMs, f.mtimeMs)
    const fh = await open(near, 'r')
    try { await fh.sync() } finally { await fh.close() }
  } catch (err) {
    await rm(near, { force: true })
    throw err
  }
  await rename(f.src, copied)
  await rename(near, dest)
  await unlink(copied)
  return dir
}

/** Creates the folders above rel; a non-folder on the way is refused, never followed. */
function folders (inbox: string, rel: string, known: Set<string>): void {
  let dir = inbox
  for (const p of rel.split('/').slice(0, -1)) {
    dir = path.join(dir, p)
    if (known.has(dir)) continue
    const st = lstatSync(dir, { throwIfNoEntry: false })
    if (st === undefined) mkdirSync(dir, { mode: 0o755 })
    else if (!st.isDirectory()) throw new Blocked(`${rel}: ${p} exists in the inbox and is not a folder`)
    known.add(dir)
  }
}

/**
 * Why a transfer that does not fit now cannot be taken, and whether it is
 * to wait for room (retry) or to come apart: a bundle whose files would
 * fit sent one by one, but not as one tar beside its unpacked copy.
 */
export interface NoRoom { split: boolean, reason: string }

/**
 * Why a transfer of `size` bytes, `offset` of them held already, does not
 * fit now, or undefined. The partial and, for a bundle, its unpacked copy
 * live under partials; the placed files need room in the inbox too when it
 * is another filesystem (a rename there is a copy). A file sent alone
 * needs its own size there at a time, as a partial then renamed.
 */
export async function noRoom (partials: string, inbox: string, size: number, offset: number, bundle: boolean): Promise<NoRoom | undefined> {
  const [p, i] = await Promise.all([room(partials), room(inbox)])
  if (p === undefined || i === undefined) return undefined
  const here = size - offset + (bundle ? size : 0)
  if (here > p.free) {
    const split = bundle && size <= p.free
    const disk = p.dev === i.dev ? "the inbox's disk" : "the partials' disk"
    return { split, reason: `no space: ${here} bytes needed, ${p.free} free on ${disk}${split ? '; its files fit in smaller batches' : ''}` }
  }
  if (p.dev !== i.dev && size > i.free) return { split: false, reason: `no space: ${size} bytes needed, ${i.free} free on the inbox's disk` }
  return undefined
}

/** Bytes a stream may still bring (its size is not known at its offer): what both disks have free. */
export async function streamRoom (partials: string, inbox: string): Promise<number> {
  const [p, i] = await Promise.all([room(partials), room(inbox)])
  if (p === undefined || i === undefined) return Infinity
  return p.dev === i.dev ? p.free : Math.min(p.free, i.free)
}

/** The device of dir and the bytes we may still write there (root may use the reserved blocks too). */
async function room (dir: string): Promise<{ dev: number, free: number } | undefined> {
  try {
    const [st, fs] = await Promise.all([stat(dir), statfs(dir)])
    return { dev: st.dev, free: (process.getuid?.() === 0 ? fs.bfree : fs.bavail) * fs.bsize }
  } catch {
    return undefined
  }
}
