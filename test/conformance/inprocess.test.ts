// The conformance cases over buildTree with a fake backend and the fake
// clock: the node classes driven directly, no FUSE, no daemon.
import { rm } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTree } from '../../src/fs/tree.js'
import { FakeBackend } from '../helpers/fake-backend.js'
import { FakeClock } from '../helpers/clock.js'
import { tempDir } from '../helpers/net.js'
import { cases, type World } from './cases.js'
import { InProcessDriver } from './inprocess-driver.js'

let dir = ''
let driver: InProcessDriver
let world: World

beforeAll(async () => {
  dir = await tempDir('peerfs-conf-')
  const clock = new FakeClock()
  const backend = await FakeBackend.create(clock, {
    self: 'alpha',
    peers: [{ id: 'beta', alias: 'ET', reachable: true }, { id: 'gamma', reachable: false }],
    maxRequestBytes: 64 << 10,
    dir
  })
  driver = new InProcessDriver(buildTree(backend, () => clock.now()))
  world = { fs: driver, server: driver, self: 'alpha', maxRequestBytes: 64 << 10, now: () => clock.now() }
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('the tree, in-process', () => {
  for (const c of cases) {
    it(c.name, async () => {
      await c.run(world)
      expect(driver.openCount).toBe(0)
    })
  }
})
