// Rebuilds fuse-native from its (patched) source and checks that the binary
// that loads is ours: upstream ships a prebuilt binary without poll support,
// and node-gyp-build would load it silently if our build were missing.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const pkg = path.join(root, 'node_modules', 'fuse-native')
const gyp = path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')

const args = [gyp, 'rebuild', '--loglevel=warn']
// Use the running node's own headers when it has them; node-gyp would
// otherwise try to download them.
const prefix = path.dirname(path.dirname(process.execPath))
if (existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`)

execFileSync(process.execPath, args, { cwd: pkg, stdio: ['ignore', 'ignore', 'inherit'] })

const Fuse = createRequire(import.meta.url)(pkg)
if (!Fuse.HAS_POLL) {
  console.error('rebuild-fuse: the fuse-native that loads lacks the peerfs patch (no poll support)')
  process.exit(1)
}
console.log('rebuild-fuse: patched fuse-native built')
