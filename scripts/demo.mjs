// `make run`: a local demo network of three nodes on loopback. First use
// creates keys and configs in demo/; every use mounts all three, prints a
// tour, and on Ctrl-C unmounts them all.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { DAEMON_NODE_FLAGS } from '../dist/src/cli/node-flags.js'

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const cli = path.join(root, 'dist', 'src', 'cli.js')
const dir = path.join(root, 'demo')
const nodes = [
  { id: 'alpha', port: 7701 },
  { id: 'beta', port: 7702 },
  { id: 'gamma', port: 7703 }
]
// Tile-style neighbours: beta is east of alpha, gamma west.
const aliases = { 'alpha>beta': 'ET', 'alpha>gamma': 'WT', 'beta>alpha': 'WT', 'gamma>alpha': 'ET' }

if (!existsSync(path.join(dir, 'gamma.toml'))) {
  mkdirSync(dir, { recursive: true })
  const pub = {}
  for (const n of nodes) {
    const out = execFileSync(process.execPath, [cli, 'keygen', path.join(dir, `${n.id}.key`)], { encoding: 'utf8' })
    pub[n.id] = out.trim().split('\n').pop()
  }
  for (const n of nodes) {
    let toml = `id = "${n.id}"\nkey = "${n.id}.key"\nlisten = "127.0.0.1:${n.port}"\nstate = "state/${n.id}"\nmountpoint = "mnt/${n.id}"\n`
    for (const p of nodes) {
      if (p.id === n.id) continue
      toml += `\n[[peer]]\nid = "${p.id}"\naddress = "127.0.0.1:${p.port}"\nkey = "${pub[p.id]}"\n`
      const alias = aliases[`${n.id}>${p.id}`]
      if (alias !== undefined) toml += `alias = "${alias}"\n`
    }
    writeFileSync(path.join(dir, `${n.id}.toml`), toml)
  }
  console.log(`demo: created keys and configs in ${path.relative(process.cwd(), dir) || '.'}/`)
}

const children = []
let stopping = false
function stopAll (code) {
  if (stopping) return
  stopping = true
  console.log('\ndemo: unmounting...')
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
  Promise.all(children.map(c => c.exitCode !== null ? null : new Promise(resolve => c.once('exit', resolve)))).then(() => process.exit(code))
}
process.on('SIGINT', () => stopAll(0))
process.on('SIGTERM', () => stopAll(0))

const mounted = nodes.map(n => new Promise((resolve, reject) => {
  const log = openSync(path.join(dir, `${n.id}.log`), 'a')
  const c = spawn(process.execPath, [...DAEMON_NODE_FLAGS, cli, 'mount', '--mkdir', '-c', path.join(dir, `${n.id}.toml`)], { stdio: ['ignore', 'pipe', log] })
  children.push(c)
  let out = ''
  c.stdout.on('data', d => {
    out += d
    if (out.includes('mounted ')) resolve(c)
  })
  c.on('exit', code => {
    if (!stopping) {
      console.error(`demo: ${n.id} exited with ${code}; see demo/${n.id}.log`)
      reject(new Error(`${n.id} failed`))
    }
  })
}))

Promise.all(mounted).then(() => {
  const m = (id, p = '') => path.relative(process.cwd(), path.join(dir, 'mnt', id, p))
  console.log(`
peerfs demo: alpha, beta and gamma on 127.0.0.1:7701-7703, mounted at ${m('alpha')}, ${m('beta')}, ${m('gamma')}

Try, in another terminal:
  cat ${m('alpha', 'status')}                          # this node and its peers
  cat ${m('alpha', 'peers/beta/status')}               # one peer in key: value lines
  echo hello > ${m('alpha', 'peers/beta/svc/01')}; cat ${m('alpha', 'peers/beta/svc/01')}   # echo via beta
  cat ${m('alpha', 'tile/ET/svc/02')}                  # info from beta, through its alias
  cat ${m('alpha', 'events')}                          # live events; then, elsewhere:
  echo disconnect > ${m('beta', 'peers/alpha/ctl')}    # ...and: echo reconnect > the same file
  cp README.md ${m('alpha', 'peers/beta/outbox/')}     # ships it to beta...
  ls ${m('beta', 'peers/alpha/inbox/')}                # ...where it arrives whole
  echo hello > ${m('alpha', 'files/greeting')}         # a signed file every node gets:
  cat ${m('gamma', 'files/greeting')} ${m('gamma', 'files/.peerfs-status')}
  examples/upper-server.py ${m('beta')} 12 &           # a service on beta; then:
  echo shout > ${m('alpha', 'peers/beta/svc/12')}; cat ${m('alpha', 'peers/beta/svc/12')}

Logs: demo/<node>.log. Ctrl-C here unmounts all three.`)
}, () => stopAll(1))
