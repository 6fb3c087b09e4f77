// scripts/setup.sh must never remove a user's fuse3 (and sshfs with it):
// Debian's `fuse` conflicts with fuse3. Checked on this machine's dpkg state
// with setup's own choice (--print-packages) and apt's simulation (-s),
// which installs and removes nothing.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, symlinkSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT } from '../helpers/net.js'

const installed = (pkg: string): boolean => spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' }).stdout.includes('install ok installed')
const hasApt = spawnSync('sh', ['-c', 'command -v apt-get && apt-cache policy fuse3 | grep -q Candidate'], { encoding: 'utf8' }).status === 0
const hasFuse3 = hasApt && installed('fuse3')

function choice (env: NodeJS.ProcessEnv = process.env): string[] {
  return execFileSync('/bin/bash', [path.join(ROOT, 'scripts/setup.sh'), '--print-packages'], { encoding: 'utf8', env }).trim().split(/\s+/).filter(w => w !== '')
}

/** Packages apt would remove to install these (a simulation). */
function removals (pkgs: string[]): string[] {
  if (pkgs.length === 0) return []
  const out = execFileSync('apt-get', ['-s', '-y', 'install', ...pkgs], { encoding: 'utf8', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  return out.split('\n').filter(l => l.startsWith('Remv ')).map(l => l.split(' ')[1])
}

describe.skipIf(!hasFuse3)('setup on a machine with fuse3', () => {
  it('leaves fuse3 installed: it picks nothing that removes it', () => {
    const pkgs = choice()
    expect(pkgs).not.toContain('fuse')
    expect(removals(pkgs)).toEqual([])
  })

  it('picks fuse3, not fuse, when fusermount is missing', () => {
    // A PATH without fusermount (and without the build tools, which setup then lists too).
    const bin = mkdtempSync(path.join(os.tmpdir(), 'peerfs-setup-path-'))
    for (const tool of ['dirname', 'dpkg', 'grep', 'id']) symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), path.join(bin, tool))
    const pkgs = choice({ ...process.env, PATH: bin })
    expect(pkgs).toContain('fuse3')
    expect(pkgs).not.toContain('fuse')
    expect(removals(pkgs.filter(p => p.startsWith('fuse') || p.startsWith('libfuse')))).toEqual([])
    // What the old choice did: Debian's fuse takes fuse3 away.
    expect(removals(['fuse'])).toContain('fuse3')
  })
})
