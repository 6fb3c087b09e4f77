// Prints, one a line, the node_modules folders `peerfs` needs at run time:
// the package.json dependencies and theirs, resolved the way Node resolves
// them (nearest node_modules up the tree). `make install` copies these,
// and not the build and test tools.
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const seen = new Set()

function resolveFrom (dir, name) {
  for (let d = dir; ; d = path.dirname(d)) {
    const p = path.join(d, 'node_modules', name)
    if (existsSync(path.join(p, 'package.json'))) return p
    if (d === root || d === path.dirname(d)) throw new Error(`${name}: not installed (needed from ${dir}); run make setup`)
  }
}

function walk (dir) {
  const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'))
  const names = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {})]
  for (const name of names) {
    let p
    try {
      p = resolveFrom(dir, name)
    } catch (err) {
      if (name in (pkg.optionalDependencies ?? {})) continue
      throw err
    }
    if (seen.has(p)) continue
    seen.add(p)
    walk(p)
  }
}

walk(root)
for (const p of [...seen].sort()) console.log(path.relative(root, p))
