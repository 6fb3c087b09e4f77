// Small facts about the files on disk that the store and the facade share:
// a file's stamp (what it looked like when we last wrote or hashed it, so
// an unchanged file is never hashed again), its hash, and path helpers.
import { createHash } from 'node:crypto'
import { createReadStream, lstatSync, readdirSync, type Stats } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import type { DiskStamp } from './journal.js'

export function stampOf (st: Stats, sha256: string): DiskStamp {
  return { sha256, size: st.size, ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs }
}

/** The file is as stamped: same inode, size, mtime and ctime (any write or rename changes ctime). */
export function sameStamp (a: DiskStamp | null, st: Stats): boolean {
  return a !== null && a.size === st.size && a.ino === st.ino && a.mtimeMs === st.mtimeMs && a.ctimeMs === st.ctimeMs
}

export async function sha256Of (file: string, size: number): Promise<string> {
  const h = createHash('sha256')
  // A stream costs more to set up than a small file costs to read.
  if (size <= 1 << 20) return h.update(await readFile(file)).digest('hex')
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer)
  return h.digest('hex')
}

/** The folders on a relative path, top first: 'a/b/c' -> ['a', 'a/b']. */
export function ancestors (name: string): string[] {
  const parts = name.split('/')
  return parts.slice(1).map((_, i) => parts.slice(0, i + 1).join('/'))
}

export function lstatOrUndefined (p: string): Stats | undefined {
  return lstatSync(p, { throwIfNoEntry: false })
}

/** True if a folder holds only folders (no file of any kind, hidden ones included). */
export function onlyFolders (dir: string): boolean {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || !onlyFolders(path.join(dir, e.name))) return false
  }
  return true
}
