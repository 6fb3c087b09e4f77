// Dependencies point down (DESIGN "Layout"): fs knows FUSE and nodes, never
// services or sockets; services know messages and disks, never FUSE or
// links; transport knows sockets and frames, never disks; lib imports
// nothing of ours above it. Checked from the import statements themselves.
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'

const SRC = path.resolve(__dirname, '../../src').replace(`${path.sep}dist${path.sep}`, path.sep)

function filesUnder (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap(e => {
    const p = path.join(dir, e.name)
    return e.isDirectory() ? filesUnder(p) : e.name.endsWith('.ts') ? [p] : []
  })
}

/** What a file imports: our modules as paths relative to src/, packages (and node:) as named. */
function importsOf (file: string): { ours: string[], packages: string[] } {
  const text = readFileSync(file, 'utf8')
  const ours: string[] = []
  const packages: string[] = []
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)) {
    if (m[1].startsWith('.')) ours.push(path.relative(SRC, path.resolve(path.dirname(file), m[1])))
    else packages.push(m[1])
  }
  return { ours, packages }
}

const SOCKETS = ['node:net', 'node:dgram', 'node:tls', 'node:http', 'node:https']

/** What each layer may import of ours (prefixes of paths under src/). */
const ALLOWED: Record<string, string[]> = {
  lib: ['lib/'],
  'transport/messages': ['lib/', 'transport/messages/', 'transport/records'],
  transport: ['lib/', 'transport/', 'config'],
  services: ['lib/', 'services/', 'transport/messages/'],
  fs: ['lib/', 'fs/']
}

function layerOf (rel: string): string | undefined {
  return Object.keys(ALLOWED).sort((a, b) => b.length - a.length).find(l => rel.startsWith(l + '/'))
}

describe('layers', () => {
  it('import only from the layers below them', () => {
    const bad: string[] = []
    for (const file of filesUnder(SRC)) {
      const rel = path.relative(SRC, file)
      const layer = layerOf(rel)
      if (layer === undefined) continue
      for (const imp of importsOf(file).ours) {
        if (!ALLOWED[layer].some(prefix => imp.startsWith(prefix))) bad.push(`${rel} imports ${imp}`)
      }
    }
    expect(bad).toEqual([])
  })

  it('leave sockets to the transport and fuse-native to the adapter', () => {
    const bad: string[] = []
    for (const file of filesUnder(SRC)) {
      const rel = path.relative(SRC, file)
      for (const imp of importsOf(file).packages) {
        if (imp === 'fuse-native' && rel !== 'fs/adapter.ts') bad.push(`${rel} imports fuse-native`)
        if (SOCKETS.includes(imp) && (rel.startsWith('fs/') || rel.startsWith('services/') || rel.startsWith('lib/'))) bad.push(`${rel} imports ${imp}`)
      }
    }
    expect(bad).toEqual([])
  })
})
