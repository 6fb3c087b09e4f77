// Managed files between nodes in one process: each node a ManagedFiles over
// its own temp folder, the links an in-memory queue through the real codec,
// the files/ hooks called in the order the passthrough calls them, and a
// fake clock per node (so which version is newer is chosen by the test).
import { mkdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { identityFromSeed } from '../../src/lib/keys.js'
import { silentLogger } from '../../src/lib/log.js'
import { ManagedFiles } from '../../src/services/files/index.js'
import { decodeMessage, encodeMessage, type FilesMessage, type Message } from '../../src/transport/messages/index.js'
import { FakeClock } from '../helpers/clock.js'
import { eventually, tempDir } from '../helpers/net.js'

class TestNet {
  readonly nodes = new Map<string, TestNode>()
  /** Links that are up, each with its generation: what was in flight on a link that went down is lost with it. */
  private readonly up = new Map<string, number>()
  private gen = 0

  private key (a: string, b: string): string { return [a, b].sort().join('|') }
  isUp (a: string, b: string): boolean { return this.up.has(this.key(a, b)) }

  async add (id: string, at: number, maxFileBytes = 1 << 30): Promise<TestNode> {
    const n = new TestNode(this, id, await tempDir(), at, maxFileBytes)
    this.nodes.set(id, n)
    await n.files.start()
    return n
  }

  /** A kill -9 and a start over the same folder; the node's writers went with it. */
  async restart (id: string): Promise<TestNode> {
    const old = this.node(id)
    await old.files.stop()
    const n = new TestNode(this, id, old.dir, old.clock.t, old.maxFileBytes)
    this.nodes.set(id, n)
    await n.files.start()
    return n
  }

  link (a: string, b: string): void {
    this.up.set(this.key(a, b), ++this.gen)
    this.node(a).files.linkUp(b)
    this.node(b).files.linkUp(a)
  }

  cut (a: string, b: string): void {
    this.up.delete(this.key(a, b))
    this.node(a).files.linkDown(b)
    this.node(b).files.linkDown(a)
  }

  node (id: string): TestNode { return this.nodes.get(id) as TestNode }

  /** Content bytes delivered per receiving node, and a hook that may alter or watch messages. */
  readonly dataBytes = new Map<string, number>()
  onDeliver: (from: string, to: string, m: FilesMessage) => void = () => {}

  send (from: string, to: string, m: Message): void {
    const gen = this.up.get(this.key(from, to))
    if (gen === undefined) throw new Error('link down')
    const bytes = encodeMessage(m)
    setImmediate(() => {
      if (this.up.get(this.key(from, to)) !== gen) return
      const msg = decodeMessage(bytes) as FilesMessage
      if (msg.type === 'fdata') this.dataBytes.set(to, (this.dataBytes.get(to) ?? 0) + msg.data.length)
      this.onDeliver(from, to, msg)
      const h = this.node(to).files.handler as Record<string, (peer: string, m: FilesMessage) => void>
      h[msg.type](from, msg)
    })
  }

  async stop (): Promise<void> {
    for (const n of this.nodes.values()) {
      await n.files.stop()
      await rm(n.dir, { recursive: true, force: true })
    }
  }
}

const keys = new Map<string, ReturnType<typeof identityFromSeed>>()
function identity (id: string): ReturnType<typeof identityFromSeed> {
  let k = keys.get(id)
  if (k === undefined) keys.set(id, k = identityFromSeed(new Uint8Array(32).fill(id.charCodeAt(0))))
  return k
}

class TestNode {
  readonly clock = new FakeClock()
  readonly files: ManagedFiles
  readonly events: string[] = []

  constructor (readonly net: TestNet, readonly id: string, readonly dir: string, at: number, readonly maxFileBytes: number) {
    this.clock.t = at
    this.files = new ManagedFiles({
      dir,
      signSecret: identity(id).signSecret,
      trusted: () => true,
      signerName: (s) => [...net.nodes.keys()].find(n => Buffer.from(identity(n).signPublic).toString('base64url') === s) ?? s,
      gossipMs: 1000,
      maxFileBytes,
      ignore: ['*~', '#*#', '*.swp'],
      clock: this.clock,
      log: silentLogger,
      link: {
        upPeers: () => [...net.nodes.keys()].filter(p => p !== id && net.isUp(id, p)),
        send: (peer, m) => net.send(id, peer, m)
      },
      onUpdate: (name) => this.events.push(name)
    })
  }

  real (rel: string): string { return path.join(this.files.dataDir, rel) }

  /** As `echo content > rel` through the passthrough: open for writing, write, release. */
  async write (rel: string, content: string | Buffer): Promise<void> {
    await mkdir(path.dirname(this.real(rel)), { recursive: true })
    this.files.writing(rel, 1)
    await writeFile(this.real(rel), content)
    this.files.writing(rel, -1)
    this.files.ready(rel)
  }

  async remove (rel: string): Promise<void> {
    await unlink(this.real(rel))
    this.files.gone(rel)
  }

  async read (rel: string): Promise<string | undefined> {
    return await readFile(this.real(rel), 'utf8').catch(() => undefined)
  }

  /** Advances this node's clock past the status delay and reads .peerfs-status. */
  async status (): Promise<string> {
    this.clock.advance(1000)
    await new Promise(resolve => setTimeout(resolve, 20))
    return await readFile(this.real('.peerfs-status'), 'utf8')
  }
}

let net: TestNet | undefined
afterEach(async () => {
  await net?.stop()
  net = undefined
})

async function pair (): Promise<[TestNode, TestNode]> {
  net = new TestNet()
  return [await net.add('a', 1_000_000), await net.add('b', 2_000_000)]
}

describe('managed files between nodes (in process)', () => {
  it('replicate many files, and a newer write wins both ways', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    for (let i = 0; i < 300; i++) await a.write(`d${i % 5}/f${i}`, `v1 ${i}\n`)
    await eventually(async () => await b.read('d4/f299') === 'v1 299\n' && b.files.list().length === 300, 'all on b')
    for (let i = 0; i < 300; i++) expect(await b.read(`d${i % 5}/f${i}`)).toBe(`v1 ${i}\n`)
    await b.write('d0/f0', 'v2\n')
    await eventually(async () => await a.read('d0/f0') === 'v2\n', 'v2 back on a')
    expect(b.files.state('d0/f0')).toBe('ok')
  })

  it('an update for a file open for writing waits; the close publishes the local content as newer', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    await a.write('w.txt', 'first\n')
    await eventually(async () => await b.read('w.txt') === 'first\n', 'first on b')
    a.files.writing('w.txt', 1)
    await writeFile(a.real('w.txt'), 'local part 1\n')
    await b.write('w.txt', 'remote\n')
    await eventually(() => a.files.state('w.txt') === 'pending', 'remote version waits on a')
    expect(await a.read('w.txt')).toBe('local part 1\n')
    await writeFile(a.real('w.txt'), 'local part 1\nlocal part 2\n')
    a.files.writing('w.txt', -1)
    a.files.ready('w.txt')
    await eventually(async () => await b.read('w.txt') === 'local part 1\nlocal part 2\n', 'local content wins on b')
    expect(await a.read('w.txt')).toBe('local part 1\nlocal part 2\n')
    expect(a.files.list().find(m => m.name === 'w.txt')?.version).toBeGreaterThan(2_000_000)
  })

  it('a file opened for writing but not written lets the waiting version in at close', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    await a.write('w.txt', 'first\n')
    await eventually(async () => await b.read('w.txt') === 'first\n', 'first on b')
    a.files.writing('w.txt', 1)
    await b.write('w.txt', 'remote\n')
    await eventually(() => a.files.state('w.txt') === 'pending', 'waits')
    a.files.writing('w.txt', -1)
    await eventually(async () => await a.read('w.txt') === 'remote\n', 'remote in on a')
  })

  it('a file a crash left open for writing is not published at the restart; editor debris left open is not counted', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    await a.write('w.txt', 'first\n')
    await eventually(async () => await b.read('w.txt') === 'first\n', 'first on b')
    for (const rel of ['w.txt', '.w.txt.swp', 'w.txt~']) {
      a.files.writing(rel, 1)
      await writeFile(a.real(rel), 'half')
    }
    const again = await (net as TestNet).restart('a')
    net?.link('a', 'b')
    expect(again.files.stats.unclosed).toBe(1)
    await again.write('later.txt', 'later\n')
    await eventually(async () => await b.read('later.txt') === 'later\n', 'a later file on b')
    expect(await b.read('w.txt')).toBe('first\n')
    await again.write('w.txt', 'whole\n')
    await eventually(async () => await b.read('w.txt') === 'whole\n', 'the rewritten file on b')
    expect(again.files.stats.unclosed).toBe(0)
  })

  it('a tombstone for a name that is a folder here removes nothing and stops nothing', async () => {
    const [a, b] = await pair()
    await a.write('d', 'a file\n')
    await eventually(() => a.files.state('d') === 'ok', 'd published')
    await a.remove('d')
    await b.write('d/x', 'in the folder\n')
    net?.link('a', 'b')
    await a.write('later', 'after it\n')
    await eventually(async () => await b.read('later') === 'after it\n' && await a.read('d/x') === 'in the folder\n' && b.files.state('d') === 'deleted', 'both sides done')
    expect(await b.read('d/x')).toBe('in the folder\n')
    expect(b.files.state('d')).toBe('deleted')
    await eventually(async () => /^d\t\d+\tdeleted\ta\t-\tdeleted$/m.test(await b.status()), 'listed as deleted')
  })

  for (const [fileOn, folderOn] of [['a', 'b'], ['b', 'a']]) {
    it(`file on ${fileOn} against folder on ${folderOn}: the folder wins everywhere, the file is kept aside and comes back when the folder goes`, async () => {
      await pair()
      const f = net?.node(fileOn) as TestNode
      const g = net?.node(folderOn) as TestNode
      await f.write('d', 'the file\n')
      await g.write('d/x', 'the folder\n')
      net?.link('a', 'b')
      await f.write('after', 'later name\n')
      for (const n of [f, g]) {
        await eventually(async () => await n.read('d/x') === 'the folder\n' && n.files.state('d') === 'shadowed' && await g.read('after') === 'later name\n', `${n.id} settled`)
      }
      await eventually(async () => /^d\t\d+\t9\t[ab]\t[0-9a-f]{64}\tshadowed$/m.test(await f.status()), 'listed as shadowed')
      // At rest: nothing more to fetch, on either side.
      expect(f.files.stats.fetching + g.files.stats.fetching).toBe(0)
      await g.remove('d/x')
      for (const n of [f, g]) await eventually(async () => await n.read('d') === 'the file\n', `file back on ${n.id}`)
    })
  }

  it('rapid create and remove leaves no phantom entry', async () => {
    const [a] = await pair()
    for (let i = 0; i < 50; i++) {
      a.files.writing(`q${i}`, 1)
      await writeFile(a.real(`q${i}`), 'tmp\n')
      a.files.writing(`q${i}`, -1)
      a.files.ready(`q${i}`)
      await unlink(a.real(`q${i}`))
      a.files.gone(`q${i}`)
    }
    await a.write('marker', 'm\n')
    await eventually(() => a.files.list().filter(m => !m.deleted).map(m => m.name).join() === 'marker', 'only the marker published')
    // The listing follows: only the marker present, every q that was published shown deleted.
    await eventually(async () => (await a.status()).split('\n').filter(l => /\tok$/.test(l)).map(l => l.split('\t')[0]).join() === 'marker', 'status matches the disk')
  })

  it('names with editor debris stay local; a folder renamed in publishes its files', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    await a.write('notes.txt~', 'backup\n')
    await a.write('#notes.txt#', 'autosave\n')
    await mkdir(a.real('.incoming/sub'), { recursive: true })
    await writeFile(a.real('.incoming/sub/one'), '1\n')
    await rename(a.real('.incoming'), a.real('moved'))
    a.files.gone('.incoming')
    a.files.ready('moved')
    await eventually(async () => await b.read('moved/sub/one') === '1\n', 'folder contents on b')
    expect(await b.read('notes.txt~')).toBeUndefined()
    expect(await b.read('#notes.txt#')).toBeUndefined()
    expect(a.files.list().map(m => m.name)).toEqual(['moved/sub/one'])
  })

  it('a node cut off during many updates catches up when the link is back', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    for (let i = 0; i < 100; i++) await a.write(`f${i}`, 'v1\n')
    await eventually(() => b.files.list().length === 100 && b.files.stats.fetching === 0, 'first round on b')
    net?.cut('a', 'b')
    for (let i = 0; i < 100; i++) {
      a.clock.t += 10
      await a.write(`f${i}`, `v2 ${i}\n`)
    }
    await a.remove('f7')
    net?.link('a', 'b')
    const caughtUp = async (): Promise<boolean> => {
      for (let i = 0; i < 100; i++) if (await b.read(`f${i}`) !== (i === 7 ? undefined : `v2 ${i}\n`)) return false
      return true
    }
    await eventually(caughtUp, 'b caught up')
    expect(b.files.state('f7')).toBe('deleted')
  })

  it('a large transfer cut off half-way resumes from the bytes it has', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    const big = Buffer.alloc(12 << 20)
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i)
    // Set once the link is down, not when the cut is asked for: the link
    // below must come after the cut, never before it.
    let cutting = false
    let cut = false
    const n = net as TestNet
    n.onDeliver = (_from, to) => {
      if (!cutting && to === 'b' && (n.dataBytes.get('b') ?? 0) >= 5 << 20) {
        cutting = true
        setImmediate(() => {
          n.cut('a', 'b')
          cut = true
        })
      }
    }
    await a.write('big.bin', big)
    await eventually(() => cut, 'cut mid-transfer')
    expect(b.files.state('big.bin')).toBe('fetching')
    n.link('a', 'b')
    await eventually(async () => (await readFile(b.real('big.bin')).catch(() => Buffer.alloc(0))).equals(big), 'big on b', 30_000)
    // Resumed: what crossed is the file once plus what was in flight at the cut, not twice.
    expect(n.dataBytes.get('b')).toBeLessThan(big.length + (8 << 20))
  })

  it('content that does not match its signed hash is discarded and fetched again', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    const n = net as TestNet
    let flip = true
    n.onDeliver = (_from, to, m) => { if (flip && to === 'b' && m.type === 'fdata' && m.data.length > 0) m.data[0] ^= 1 }
    await a.write('x.txt', 'the real content\n')
    await eventually(() => (n.dataBytes.get('b') ?? 0) > 0 && b.files.state('x.txt') === 'fetching', 'a tampered fetch')
    expect(await b.read('x.txt')).toBeUndefined()
    flip = false
    // The only source gave bad bytes: it is asked again after the back-off.
    b.clock.advance(10_000)
    await eventually(async () => await b.read('x.txt') === 'the real content\n', 'real content on b')
  })

  it('serves at most a bounded number of queued ranges to one peer', async () => {
    const [a] = await pair()
    await a.write('f', 'xyz')
    await eventually(() => a.files.state('f') === 'ok', 'published')
    net?.link('a', 'b')
    const m = a.files.list()[0]
    let answers = 0
    let last = false
    const n = net as TestNet
    // Ours ask for one byte, the last one for two; b's own fetch of f asks for all three.
    n.onDeliver = (from, _to, msg) => {
      if (from === 'a' && msg.type === 'fdata' && msg.data.length === 1) answers++
      if (from === 'a' && msg.type === 'fdata' && msg.data.length === 2) last = true
    }
    const range = { name: 'f', sha256: Buffer.from(m.sha256, 'hex'), offset: 0, len: 1 }
    const h = a.files.handler
    for (let i = 0; i < 10; i++) h.fget('b', { type: 'fget', ranges: Array.from({ length: 128 }, () => range) })
    await eventually(() => answers >= 1024, 'answers')
    // Served in order: once this one is answered, every range before it has been.
    h.fget('b', { type: 'fget', ranges: [{ ...range, len: 2 }] })
    await eventually(() => last, 'the last range answered')
    expect(answers).toBe(1024)
  })

  it('a large file travels in chunks and is checked against its hash', async () => {
    const [a, b] = await pair()
    net?.link('a', 'b')
    const big = Buffer.alloc(5 << 20)
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i)
    await a.write('big.bin', big)
    await eventually(async () => (await readFile(b.real('big.bin')).catch(() => Buffer.alloc(0))).equals(big), 'big on b', 20_000)
  })
})
