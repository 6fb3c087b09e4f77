// The examples in examples/ run as the README documents them.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Daemon, ROOT, eventually, makeNetwork, readText, sh, startNetwork, startPair, teardown } from '../helpers/net.js'

const procs = new Set<ChildProcess>()
afterEach(async () => {
  for (const p of procs) p.kill('SIGKILL')
  procs.clear()
  await teardown()
})

function run (cmd: string, args: string[]): ChildProcess {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  procs.add(p)
  return p
}

async function waitStderr (p: ChildProcess, text: string): Promise<void> {
  await new Promise<void>((resolve) => {
    let err = ''
    p.stderr?.on('data', (d: Buffer) => {
      err += d.toString()
      if (err.includes(text)) resolve()
    })
  })
}

describe('examples', () => {
  it('shell-server.sh and upper-server.py answer requests from another node', async () => {
    const { a, b } = await startPair()
    const shell = run('sh', [path.join(ROOT, 'examples/shell-server.sh'), b.spec.mnt, '11'])
    const upper = run('python3', [path.join(ROOT, 'examples/upper-server.py'), b.spec.mnt, '12'])
    await Promise.all([waitStderr(shell, 'serving'), waitStderr(upper, 'serving')])
    const svc = a.path('peers/beta/svc')
    expect((await sh(`printf 'hello world' > ${svc}/11; cat ${svc}/11`)).stdout).toBe('dlrow olleh')
    expect((await sh(`printf 'hello world' > ${svc}/12; cat ${svc}/12`)).stdout).toBe('HELLO WORLD')
  })

  it('counter.py keeps a table of the neighbours\' counters', async () => {
    const netw = await makeNetwork(['alpha', 'beta', 'gamma'])
    const ds = await startNetwork(netw)
    for (const id of ['alpha', 'beta', 'gamma']) {
      const d = ds.get(id) as Daemon
      await writeFile(path.join(d.spec.dir, 'counter'), `${id.length * 100}\n`)
    }
    const a = ds.get('alpha') as Daemon
    await eventually(async () => /peers: 2 \(2 up\)/.test(await readText(a.path('status'))), 'all up')
    for (const id of ['alpha', 'beta', 'gamma']) {
      const d = ds.get(id) as Daemon
      run('python3', [path.join(ROOT, 'examples/counter.py'), d.spec.mnt, path.join(d.spec.dir, 'counter'), path.join(d.spec.dir, 'table'), '--every', '0.3'])
    }
    const table = path.join(a.spec.dir, 'table')
    await eventually(async () => (await readFile(table, 'utf8').catch(() => '')) === 'beta 400\ngamma 500\n', 'alpha table', 15_000)
    await writeFile(path.join((ds.get('beta') as Daemon).spec.dir, 'counter'), '41\n')
    await eventually(async () => (await readFile(table, 'utf8').catch(() => '')) === 'beta 41\ngamma 500\n', 'update seen', 15_000)
  })
})
