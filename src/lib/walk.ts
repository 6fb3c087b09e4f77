// The one tree walker: every regular file under a folder, in path order,
// with its lstat. Links and special files are skipped (never followed);
// unreadable folders and entries that vanish during the walk are skipped
// too, because every caller treats the disk as the truth it reads next.
import type { Stats } from 'node:fs'
import { lstat, readdir } from 'node:fs/promises'
import path from 'node:path'
import { joinRel } from './names.js'

export interface WalkEntry { rel: string, st: Stats }

export interface WalkOptions {
  /** Skip names starting with "." (and everything under such a folder). */
  skipHidden?: boolean
}

export async function * walkFiles (root: string, opts: WalkOptions = {}, rel = ''): AsyncGenerator<WalkEntry> {
  const names = await readdir(path.join(root, rel)).catch(() => [] as string[])
  for (const name of names.sort()) {
    if (opts.skipHidden === true && name.startsWith('.')) continue
    const r = joinRel(rel, name)
    const st = await lstat(path.join(root, r)).catch(() => undefined)
    if (st === undefined) continue
    if (st.isDirectory()) yield * walkFiles(root, opts, r)
    else if (st.isFile()) yield { rel: r, st }
  }
}

/** Bytes in the regular files under root. */
export async function treeBytes (root: string): Promise<number> {
  let n = 0
  for await (const e of walkFiles(root)) n += e.st.size
  return n
}
