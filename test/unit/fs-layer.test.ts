// The tree's layer rules (DESIGN "Dependencies point down"), read from the
// sources: src/fs imports neither services, transport, the daemon nor
// sockets; only the adapter imports fuse-native; services never import
// the tree.
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT } from '../helpers/net.js'

async function imports (dir: string): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = []
  for (const f of await readdir(path.join(ROOT, dir), { recursive: true })) {
    if (!f.endsWith('.ts')) continue
    const text = await readFile(path.join(ROOT, dir, f), 'utf8')
    for (const m of text.matchAll(/^(?:import|export)[^'"]*?from\s+'([^']+)'/gm)) out.push([`${dir}/${f}`, m[1]])
  }
  return out
}

describe('layers', () => {
  it('src/fs imports only itself, src/lib, node built-ins other than sockets, and (the adapter only) fuse-native', async () => {
    const bad = (await imports('src/fs')).filter(([file, spec]) => {
      if (spec.startsWith('./') || spec.startsWith('../lib/')) return false
      if (spec === 'fuse-native') return file !== 'src/fs/adapter.ts'
      if (spec.startsWith('node:')) return ['node:net', 'node:dgram', 'node:tls', 'node:http', 'node:https'].includes(spec)
      return true
    })
    expect(bad).toEqual([])
  })

  it('src/services never imports the tree', async () => {
    expect((await imports('src/services')).filter(([, spec]) => /(^|\/)fs\//.test(spec))).toEqual([])
  })
})
