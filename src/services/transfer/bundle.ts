// Tar batching with tar-stream: the sender packs many small outbox files
// into one bundle in its spool, the receiver unpacks a verified bundle
// into a staging folder. Unpacking checks every entry before anything is
// placed: names by the one name rule (src/lib/names.ts), only files and
// folders, each name once. Staged files are fsynced (and their folder)
// before unpack returns, so a record that lists them may be written next.
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises'
import path from 'node:path'
import tar from 'tar-stream'
import { fsyncDir } from '../../lib/durable.js'
import { badRelPath } from '../../lib/names.js'
import { Refusal } from './shared.js'

/** A file of the outbox as it was when it was picked. */
export interface Item { rel: string, size: number, mtimeMs: number }

/** A file unpacked into staging/<index>, waiting to be placed. */
export interface Staged { rel: string, mode: number, mtimeMs: number }

/** Packs the files into a tar at dest; undefined if one changed meanwhile (pick again). */
export async function packBundle (outbox: string, items: Item[], dest: string): Promise<number | undefined> {
  const pack = tar.pack()
  const fh = await open(dest, 'w', 0o600)
  let size = 0
  const drain = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) {
      await fh.write(chunk)
      size += chunk.length
    }
  })()
  try {
    for (const it of items) {
      const file = path.join(outbox, it.rel)
      const [data, st] = await Promise.all([readFile(file), stat(file)])
      if (st.size !== it.size || st.mtimeMs !== it.mtimeMs || data.length !== it.size) {
        pack.destroy()
        await drain.catch(() => {})
        return undefined
      }
      await new Promise<void>((resolve, reject) => pack.entry({
        name: it.rel, size: data.length, mode: st.mode & 0o7777, mtime: st.mtime, type: 'file', pax: { mtime: (st.mtimeMs / 1000).toFixed(6) }
      }, data, (err) => err == null ? resolve() : reject(err)))
    }
    pack.finalize()
    await drain
    await fh.sync()
    return size
  } finally {
    await fh.close()
  }
}

const quoted = (name: string): string => JSON.stringify(name.slice(0, 200))

/** Unpacks a verified bundle into staging (emptied first); throws Refusal for an entry we never take. */
export async function unpackBundle (bundle: string, staging: string): Promise<Staged[]> {
  await rm(staging, { recursive: true, force: true })
  await mkdir(staging, { recursive: true, mode: 0o700 })
  const files: Staged[] = []
  const names = new Set<string>()
  const ex = tar.extract()
  const fh = await open(bundle, 'r')
  const feed = (async () => {
    try {
      for await (const chunk of fh.createReadStream()) if (!ex.write(chunk)) await new Promise<void>(resolve => ex.once('drain', () => resolve()))
      ex.end(undefined)
    } catch (err) {
      ex.destroy(err as Error)
    }
  })()
  try {
    for await (const entry of ex) {
      const h = entry.header
      const bad = badRelPath(h.name.replace(/\/$/, ''))
      if (bad !== undefined) throw new Refusal(`tar entry ${quoted(h.name)}: ${bad}`)
      if (h.type === 'directory') {
        entry.resume()
        continue
      }
      if (h.type !== 'file') throw new Refusal(`tar entry ${quoted(h.name)} is a ${h.type}; only files and folders are accepted`)
      if (names.has(h.name)) throw new Refusal(`tar entry ${quoted(h.name)} appears twice`)
      names.add(h.name)
      const out = await open(path.join(staging, String(files.length)), 'w', 0o600)
      try {
        for await (const chunk of entry) await out.write(chunk as Buffer)
      } finally {
        await out.close()
      }
      const pax = h.pax as Record<string, string> | null | undefined
      const mtimeMs = pax?.mtime !== undefined ? Math.floor(Number(pax.mtime) * 1000) : h.mtime.getTime()
      files.push({ rel: h.name, mode: h.mode, mtimeMs })
    }
    await feed
  } finally {
    await fh.close()
  }
  // Durable before a record names them: a few fsyncs at a time, then the folder.
  for (let i = 0; i < files.length; i += 16) {
    await Promise.all(files.slice(i, i + 16).map(async (_, j) => {
      const h = await open(path.join(staging, String(i + j)), 'r')
      try { await h.sync() } finally { await h.close() }
    }))
  }
  await fsyncDir(staging)
  return files
}
