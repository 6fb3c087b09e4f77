// Durable file writes the NNCP way: write a temp file, fsync it, rename it
// into place, fsync the folder. A reader never sees a half-written file
// under its final name, and after the promise resolves the file survives a
// crash. Node's errors become PeerfsErrors with their errno (ENOSPC stays
// ENOSPC), so the tree can hand them to the caller.
import { constants } from 'node:os'
import { utimesSync } from 'node:fs'
import { open, rename, rm, utimes } from 'node:fs/promises'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { E, PeerfsError } from './errors.js'

export function fsErrorOf (err: unknown, what: string): PeerfsError {
  if (err instanceof PeerfsError) return err
  const code = (err as NodeJS.ErrnoException).code
  const errno = code !== undefined ? (constants.errno as Record<string, number>)[code] : undefined
  return new PeerfsError(errno ?? E.EIO, `${what}: ${(err as Error).message}`)
}

/** The disk (or the user's quota on it) is full: Node's error or ours. */
export function isNoRoom (err: unknown): boolean {
  const errno = err instanceof PeerfsError ? err.errno : (constants.errno as Record<string, number>)[(err as NodeJS.ErrnoException).code ?? '']
  return errno === constants.errno.ENOSPC || errno === constants.errno.EDQUOT
}

/**
 * Sets both times from milliseconds. utimes takes float seconds, which land
 * just below the intended millisecond often enough that a later floor to
 * whole milliseconds (FUSE attributes) reads one less; half a microsecond
 * more lands them on or just above.
 */
export async function setTimes (file: string, atimeMs: number, mtimeMs: number): Promise<void> {
  await utimes(file, atimeMs / 1000 + 5e-7, mtimeMs / 1000 + 5e-7)
}

export function setTimesSync (file: string, atimeMs: number, mtimeMs: number): void {
  utimesSync(file, atimeMs / 1000 + 5e-7, mtimeMs / 1000 + 5e-7)
}

export async function fsyncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** tmpDir: where the temp file is written (same filesystem), when it must not show beside the file. */
export async function writeDurable (file: string, data: Uint8Array | string, mode = 0o600, tmpDir = path.dirname(file)): Promise<void> {
  const dir = path.dirname(file)
  const tmp = path.join(tmpDir, `.tmp-${randomBytes(6).toString('hex')}`)
  try {
    const fh = await open(tmp, 'wx', mode)
    try {
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, file)
    await fsyncDir(dir)
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {})
    throw fsErrorOf(err, `writing ${file}`)
  }
}

/** Appends one record and fsyncs it. */
export async function appendDurable (file: string, data: string): Promise<void> {
  try {
    const fh = await open(file, 'a', 0o600)
    try {
      await fh.appendFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
  } catch (err) {
    throw fsErrorOf(err, `appending to ${file}`)
  }
}
