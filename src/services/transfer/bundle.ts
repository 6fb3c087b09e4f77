// Tar batching with tar-stream: the sender packs many small outbox files
// into one bundle in its spool, the receiver unpacks a verified bundle
// into a staging folder. Unpacking checks every entry before anything is
// placed: names by the one name rule (src/lib/names.ts), only files and
// folders, each name once. Staged files are fsynced (and their folder)
// before unpack returns, so a record that lists them may be written next.
// Files go in and out with synchronous calls on the daemon's own folders:
// for a 4 KiB file a thread hop costs more than the write itself.
import { closeSync, constants as fsc, fstatSync, fsync, openSync, readSync, writeSync } from 'node:fs'
import { mkdir, open, rm } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import tar from 'tar-stream'
import { fsyncDir } from '../../lib/durable.js'
import { yieldLoop } from '../../lib/wait.js'
import { Refusal, quoted } from './shared.js'

/**
 * A file of the outbox as it was when it was picked. ino and ctimeMs (absent in records
 * of earlier versions) tell a file renamed over it, or rewritten with its
 * size and mtime restored (cp -p, rsync -a -I, rsync --inplace from a
 * source with normalised times), from the one that was read.
 */
export interface Item { rel: string, size: number, mtimeMs: number, ino?: number, ctimeMs?: number }

/** What an Item is made from: a file's stat. */
export interface FileStamp { size: number, mtimeMs: number, ino?: number, ctimeMs?: number }

export function itemOf (rel: string, st: FileStamp): Item {
  return { rel, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ctimeMs: st.ctimeMs }
}

/** st is still the file the item was made from. */
export function sameFile (it: Item, st: FileStamp): boolean {
  return st.size === it.size && st.mtimeMs === it.mtimeMs && (it.ino === undefined || st.ino === it.ino) && (it.ctimeMs === undefined || st.ctimeMs === it.ctimeMs)
}

/** A file unpacked into staging/<index>, waiting to be placed. */
export interface Staged { rel: string, mode: number, mtimeMs: number }

/**
 * Packs the files into a tar at dest, fsynced; a file that changed since
 * its Item was made is left out (its caller holds it again). The files are
 * read with synchronous calls (each takes microseconds in the daemon's own
 * folder, a thread hop more) and the tar is written in large pieces.
 */
export async function packBundle (outbox: string, items: Item[], dest: string): Promise<{ items: Item[], size: number }> {
  const pack = tar.pack()
  const fh = await open(dest, 'w', 0o600)
  let size = 0
  const drain = (async () => {
    let buf: Buffer[] = []
    let n = 0
    for await (const chunk of pack as AsyncIterable<Buffer>) {
      buf.push(chunk)
      n += chunk.length
      if (n < WRITE_BYTES) continue
      await fh.write(Buffer.concat(buf, n))
      size += n
      buf = []
      n = 0
    }
    if (n > 0) await fh.write(Buffer.concat(buf, n))
    size += n
  })()
  // A failed write (a full disk) ends the packing with its own error, not tar's "destroyed".
  drain.catch((err: Error) => pack.destroy(err))
  const packed: Item[] = []
  try {
    for (const [i, it] of items.entries()) {
      if (i > 0 && i % PACK_SLICE === 0) await yieldLoop()
      const data = readWhole(path.join(outbox, it.rel), it)
      if (data === undefined) continue
      await new Promise<void>((resolve, reject) => pack.entry({
        name: it.rel, size: data.buf.length, mode: data.mode & 0o7777, mtime: new Date(it.mtimeMs), type: 'file', pax: { mtime: (it.mtimeMs / 1000).toFixed(6) }
      }, data.buf, (err) => err == null ? resolve() : reject(err)))
      packed.push(it)
    }
    pack.finalize()
    await drain
    await fh.sync()
    return { items: packed, size }
  } catch (err) {
    pack.destroy()
    throw await drain.then(() => err, (cause: unknown) => cause)
  } finally {
    await fh.close()
  }
}

const WRITE_BYTES = 1 << 20

/**
 * Files packed per turn of the event loop. The daemon's one thread also
 * answers the FUSE operations of a cp -r still writing: packing 500 files
 * of 4 KiB held it for 17-41 ms at a time in one go, 9-16 ms in slices.
 */
const PACK_SLICE = 32

/** The file's bytes and mode if it is still what it was reported as; undefined if it changed or went. */
function readWhole (file: string, it: Item): { buf: Buffer, mode: number } | undefined {
  let fd: number
  try {
    fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW)
  } catch {
    return undefined
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile() || !sameFile(it, st)) return undefined
    const buf = Buffer.allocUnsafe(it.size)
    let got = 0
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, got)
      if (n === 0) return undefined
      got += n
    }
    return { buf, mode: st.mode }
  } catch {
    return undefined
  } finally {
    closeSync(fd)
  }
}

const SYNC_AT_ONCE = 64
const fsyncP = promisify(fsync)

function writeAll (fd: number, b: Buffer): void {
  for (let off = 0; off < b.length;) off += writeSync(fd, b, off, b.length - off)
}

/** An entry's data as tar-stream hands it to the entry event. */
interface EntryStream {
  on: (event: 'data' | 'end' | 'error', fn: (chunk?: unknown) => void) => unknown
  resume: () => unknown
}

/** Resolves once ex takes writes again, or is gone. */
async function drained (ex: ReturnType<typeof tar.extract>): Promise<void> {
  await new Promise<void>(resolve => {
    const done = (): void => {
      ex.off('drain', done)
      ex.off('close', done)
      resolve()
    }
    ex.on('drain', done)
    ex.on('close', done)
  })
}

/**
 * Unpacks a verified bundle into staging (emptied first); throws Refusal
 * for an entry we never take: a name `refuses` gives a reason for, a
 * link or device, a name twice.
 */
export async function unpackBundle (bundle: string, staging: string, refuses: (rel: string) => string | undefined): Promise<Staged[]> {
  await rm(staging, { recursive: true, force: true })
  await mkdir(staging, { recursive: true, mode: 0o700 })
  const files: Staged[] = []
  const names = new Set<string>()
  const ex = tar.extract()
  const fh = await open(bundle, 'r')
  // Staged files are written synchronously (page cache, microseconds each)
  // and fsynced SYNC_AT_ONCE at a time, in parallel, before a record names them.
  const open_: number[] = []
  const syncAll = async (): Promise<void> => {
    const fds = open_.splice(0)
    try {
      await Promise.all(fds.map(async fd => { await fsyncP(fd) }))
    } finally {
      for (const fd of fds) closeSync(fd)
    }
  }
  const feed = (async () => {
    try {
      for await (const chunk of fh.createReadStream()) {
        // Destroyed by a refused entry: no drain comes.
        if (ex.destroyed) return
        if (!ex.write(chunk)) await drained(ex)
      }
      if (!ex.destroyed) ex.end(undefined)
    } catch (err) {
      ex.destroy(err as Error)
    }
  })()
  // The entry event rather than async iteration: two promises and a
  // listener less per entry, which is most of a 4 KiB file's cost here.
  const onEntry = (h: tar.Header, stream: EntryStream, next: () => void): void => {
    const bad = refuses(h.name.replace(/\/$/, ''))
    if (bad !== undefined) throw new Refusal(`tar entry ${bad}`)
    if (h.type === 'directory') {
      stream.on('end', next)
      stream.resume()
      return
    }
    if (h.type !== 'file') throw new Refusal(`tar entry ${quoted(h.name)} is a ${String(h.type)}; only files and folders are accepted`)
    if (names.has(h.name)) throw new Refusal(`tar entry ${quoted(h.name)} appears twice`)
    names.add(h.name)
    const fd = openSync(path.join(staging, String(files.length)), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o600)
    open_.push(fd)
    const pax = h.pax as Record<string, string> | null | undefined
    const mtimeMs = pax?.mtime !== undefined ? Math.floor(Number(pax.mtime) * 1000) : h.mtime.getTime()
    files.push({ rel: h.name, mode: h.mode, mtimeMs })
    stream.on('data', (chunk) => guard(() => writeAll(fd, chunk as Buffer)))
    stream.on('end', () => {
      if (open_.length < SYNC_AT_ONCE) return next()
      syncAll().then(next, (err: Error) => ex.destroy(err))
    })
  }
  const guard = (fn: () => void): void => {
    try {
      fn()
    } catch (err) {
      ex.destroy(err as Error)
    }
  }
  try {
    await new Promise<void>((resolve, reject) => {
      ex.on('entry', (h, stream, next) => {
        // Destroying the extract destroys the entry with the same error; it is handled once, as ex's.
        stream.on('error', () => {})
        guard(() => onEntry(h, stream, () => next()))
      })
      ex.on('error', reject)
      ex.on('finish', () => resolve())
      ex.on('close', () => reject(new Error('tar stream closed before its end')))
    })
    await feed
    await syncAll()
  } finally {
    for (const fd of open_.splice(0)) closeSync(fd)
    await fh.close()
  }
  await fsyncDir(staging)
  return files
}
