// `peerfs status [<mnt>] [--json]`: reads a mounted tree's status files (a
// separate process from the daemon, so plain reads are safe) and prints the
// node and each peer. Text is <mnt>/status as the daemon writes it; JSON is
// { mountpoint, node: {...}, peers: [{ id, state, ... }] } with numbers as
// numbers and "-" as null, built from <mnt>/status's head and each
// peers/<id>/status.
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { loadConfig } from '../config.js'
import { mounts } from '../daemon/mountpoint.js'

export type Value = string | number | null

export interface StatusJson {
  mountpoint: string
  node: Record<string, Value>
  peers: Array<Record<string, Value> & { id: string }>
}

/** `key: value` lines up to the first blank line. */
export function parseKeyValues (text: string): Record<string, Value> {
  const out: Record<string, Value> = {}
  for (const line of text.split('\n')) {
    if (line === '') break
    const i = line.indexOf(': ')
    if (i <= 0) continue
    out[line.slice(0, i)] = typed(line.slice(i + 2))
  }
  return out
}

function typed (v: string): Value {
  if (v === '-') return null
  return /^-?\d+(\.\d+)?$/.test(v) && Number.isFinite(Number(v)) ? Number(v) : v
}

/** The mountpoint to report on: given, the config's, or the only peerfs mount. */
export async function findMountpoint (given: string | undefined, config: string | undefined): Promise<string> {
  if (given !== undefined) return path.resolve(given)
  if (config !== undefined) {
    const c = await loadConfig(config)
    if (c.mountpoint === undefined) throw new Error(`${config}: no mountpoint in the config; name one: peerfs status <mountpoint>`)
    return c.mountpoint
  }
  const ours = (await mounts()).filter(m => m.type === 'fuse.peerfs')
  if (ours.length === 1) return ours[0].where
  if (ours.length === 0) throw new Error('no peerfs mount found; name one: peerfs status <mountpoint>')
  throw new Error(`several peerfs mounts (${ours.map(m => m.where).join(', ')}); name one: peerfs status <mountpoint>`)
}

async function readStatus (file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const hint = e.code === 'ENOENT' ? ' (is a peerfs tree mounted there?)' : e.code === 'EACCES' ? ' (another user\'s mount: it needs -o allow_other)' : e.code === 'ENOTCONN' ? ' (its daemon is gone)' : ''
    throw new Error(`${file}: ${e.code ?? e.message}${hint}`)
  }
}

export async function statusJson (mnt: string): Promise<StatusJson> {
  const node = parseKeyValues(await readStatus(path.join(mnt, 'status')))
  const ids = (await readdir(path.join(mnt, 'peers'))).sort()
  const peers: StatusJson['peers'] = []
  for (const id of ids) {
    // A peer removed by a reload between readdir and read is skipped, not an error.
    const text = await readFile(path.join(mnt, 'peers', id, 'status'), 'utf8').catch(() => undefined)
    if (text !== undefined) peers.push({ id, ...parseKeyValues(text) })
  }
  return { mountpoint: mnt, node, peers }
}

export async function statusText (mnt: string): Promise<string> {
  return await readStatus(path.join(mnt, 'status'))
}
