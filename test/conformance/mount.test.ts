// The conformance cases on real mounts: alpha and beta daemons in child
// processes (gamma configured but never started), every system call made
// by a Python process as a user's program would.
import { afterAll, beforeAll, describe, it } from 'vitest'
import { Daemon, makeNetwork, startNetwork, teardown, waitState } from '../helpers/net.js'
import { cases, type World } from './cases.js'
import { PythonSyscalls } from './python-driver.js'

const MAX_REQUEST = 64 << 10
let sys: PythonSyscalls | undefined
let world: World

beforeAll(async () => {
  const limit = `max_request_bytes = ${MAX_REQUEST}\n`
  const netw = await makeNetwork(['alpha', 'beta', 'gamma'], {
    peer: { 'alpha>beta': { alias: 'ET' } },
    extra: { alpha: limit, beta: limit }
  })
  const ds = await startNetwork(netw, ['alpha', 'beta'])
  const [a, b] = [ds.get('alpha') as Daemon, ds.get('beta') as Daemon]
  await waitState(a, 'beta')
  sys = PythonSyscalls.start()
  world = { fs: sys.at(a.spec.mnt), server: sys.at(b.spec.mnt), self: 'alpha', maxRequestBytes: MAX_REQUEST, now: () => Date.now() }
})

afterAll(async () => {
  sys?.stop()
  await teardown()
})

describe('the tree, on a real mount', () => {
  for (const c of cases) it(c.name, async () => await c.run(world))
})
