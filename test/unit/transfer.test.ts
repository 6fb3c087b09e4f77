// Sender and receiver in one process over a fake link that can go down and
import { existsSync, renameSync, utimesSync, writeFileSync } from 'node:fs'
// lose what was in flight: packets, the window, resuming from the last
// acknowledged offset, and the exactly-once rules: a delivered transfer
// offered again is answered "delivered", placing is idempotent per file,
// cancels wait for the link, nothing is left open, and a transfer the
// receiver cannot take now does not hold up the others.
import { createHash, randomBytes } from 'node:crypto'
import { appendFile, mkdir, mkdtemp, open, readFile, readdir, readlink, rename, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { parseConfig } from '../../src/config.js'
import { systemClock, type Clock } from '../../src/lib/clock.js'
import { silentLogger, type Logger } from '../../src/lib/log.js'
import { badRelPath, rsyncTarget } from '../../src/lib/names.js'
import { InboxReceiver, OutboxSender, xferHandler, type TransferSettings } from '../../src/services/transfer/index.js'
import { TransferBook } from '../../src/services/transfer/book.js'
import { ReceiverStore } from '../../src/services/transfer/receiver-store.js'
import type { SentRecord } from '../../src/services/transfer/sender-store.js'
import { decodeMessage, encodeMessage, type Message, type XferMessage } from '../../src/transport/messages/index.js'
import { eventually, sh, tempDir } from '../helpers/net.js'

const settings: TransferSettings = {
  batchFiles: 10, batchMs: 10, packetBytes: 64 << 10, windowBytes: 256 << 10,
  largeFileBytes: 1 << 20, bundleMaxBytes: 4 << 20, ackEveryBytes: 4 << 20, checkpointBytes: 256 << 10, checkpointMs: 3600_000,
  retryMs: 50, retryMaxMs: 200, timeoutMs: 5000, maxTransfers: 8, maxQueued: 1000, pruneMs: 1000, maxPartials: 4, maxAgeMs: 3600_000
}

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c()
})

const dispatch = (h: ReturnType<typeof xferHandler>, peer: string, m: Message): void => {
  (h[m.type as XferMessage['type']] as (peer: string, m: Message) => void)(peer, m)
}

interface RigOptions {
  /** Fills the outbox before the sender starts (and scans it). */
  prepare?: (outbox: string) => Promise<void>
  settings?: Partial<TransferSettings>
  quota?: () => number
  inbox?: string
  clock?: Clock
  /** The receiver announced xstream (a peer of this version). */
  streams?: boolean
  /** Asked instead of streams, at each use: a peer that changes version. */
  supports?: () => boolean
  /** The sender's logger (silent by default). */
  log?: Logger
  spool?: string
}

async function rig (o: RigOptions = {}) {
  const s = { ...settings, ...o.settings }
  const dir = await tempDir()
  const outbox = path.join(dir, 'outbox')
  const inbox = o.inbox ?? path.join(dir, 'inbox')
  const spool = o.spool ?? path.join(dir, 'spool')
  const writerLog = path.join(dir, 'writing', 'beta')
  const partial = path.join(dir, 'partial')
  await mkdir(outbox, { recursive: true })
  await o.prepare?.(outbox)
  const clock = o.clock ?? systemClock
  let up = true
  let maxUnacked = 0
  let sentTop = 0
  let ackedTop = 0
  const offers: Array<{ offset: number }> = []
  const toReceiver: Message[] = []
  const toSender: Message[] = []
  const sent: string[] = []
  const received: string[] = []
  let dropData: ((m: Message) => boolean) | undefined
  let dropAnswer: ((m: Message) => boolean) | undefined
  const makeReceiver = (): InboxReceiver => new InboxReceiver(partial, {
    clock,
    log: silentLogger,
    settings: s,
    link: () => ({
      isUp: () => up,
      send: (r) => {
        if (!up) throw new Error('down')
        toSender.push(r)
        if (r.type === 'xack') ackedTop = Math.max(ackedTop, r.offset)
        if (r.type === 'xaccept') {
          offers.push({ offset: r.offset })
          ackedTop = sentTop = r.offset
        }
        if (dropAnswer?.(r) === true) return
        dispatch(route, 'alpha', r)
      }
    }),
    inboxOf: () => inbox,
    quotaOf: o.quota ?? (() => 0),
    onReceived: (_peer, rel) => received.push(rel)
  })
  const makeSender = (): OutboxSender => new OutboxSender('beta', outbox, spool, {
    isUp: () => up,
    supports: (f) => f === 'xstream' && (o.supports?.() ?? o.streams === true),
    send: (m) => {
      if (!up) throw new Error('down')
      toReceiver.push(m)
      if (m.type === 'xdata') {
        sentTop = Math.max(sentTop, m.offset + m.data.length)
        maxUnacked = Math.max(maxUnacked, sentTop - ackedTop)
        if (dropData?.(m) === true) return
      }
      dispatch(route, 'alpha', m)
    }
  }, { clock, log: o.log ?? silentLogger, settings: s, writerLog, onSent: (rel) => sent.push(rel) })
  let receiver = makeReceiver()
  let sender = makeSender()
  let route = xferHandler(() => sender, receiver)
  await receiver.start()
  await sender.start()
  cleanups.push(async () => {
    sender.stop()
    receiver.stop()
    // A delivery's clearing may still be writing there (its trash, the reserve): ENOTEMPTY is retried.
    await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 })
  })
  const r = {
    dir, outbox, inbox, spool, partial, offers, toReceiver, toSender, sent, received,
    get sender () { return sender },
    get receiver () { return receiver },
    get maxUnacked () { return maxUnacked },
    setUp (v: boolean) {
      up = v
      if (v) sender.linkUp()
      else {
        sender.linkDown()
        receiver.linkDown('alpha')
      }
    },
    dropWhere (f: ((m: Message) => boolean) | undefined) { dropData = f },
    /** Loses the first packet at or past offset with the link, which is back 50 ms later; then calls onCut. */
    cutOnceAt (offset: number, onCut?: () => void) {
      let cut = false
      dropData = (m) => {
        if (cut || m.type !== 'xdata' || m.offset < offset) return false
        cut = true
        onCut?.()
        r.setUp(false)
        setTimeout(() => r.setUp(true), 50)
        return true
      }
    },
    dropAnswers (f: ((m: Message) => boolean) | undefined) { dropAnswer = f },
    /** A kill -9 of the sender: a new one over the same outbox and spool. */
    async restartSender () {
      sender.stop()
      sender = makeSender()
      route = xferHandler(() => sender, receiver)
      await sender.start()
    },
    /** A kill -9 of the receiver: a new one over the same partials. */
    async restartReceiver () {
      receiver.stop()
      receiver = makeReceiver()
      route = xferHandler(() => sender, receiver)
      await receiver.start()
    },
    /** Puts a file in the outbox the way rsync does (a hidden temp file renamed), and reports it. */
    async put (rel: string, data: Buffer | string) {
      await writeFile(path.join(outbox, `.${rel}`), data)
      await r.reveal(rel)
    },
    /** Renames .<rel> to rel and reports it ready. */
    async reveal (rel: string) {
      await rename(path.join(outbox, `.${rel}`), path.join(outbox, rel))
      sender.ready(rel)
    },
    /**
     * A file the outbox creates and writes as the tree reports it: a
     * writer registered, each write's new size (grew), the close.
     */
    async create (rel: string) {
      const file = path.join(outbox, rel)
      const fh = await open(file, 'w')
      sender.writing(rel, 1)
      let end = 0
      return {
        async write (data: Buffer) {
          await fh.write(data, 0, data.length, end)
          end += data.length
          sender.grew(rel, end)
        },
        /** A write elsewhere than at the end: the tree stops reporting sizes. */
        async writeAt (data: Buffer, pos: number) {
          await fh.write(data, 0, data.length, pos)
          end = Math.max(end, pos + data.length)
          sender.grew(rel, undefined)
        },
        async close () {
          await fh.close()
          sender.writing(rel, -1)
          sender.ready(rel, await stat(file))
        },
        /** A write failed (a full disk): the tree tells so, and its close reports no ready(). */
        async failedClose (why: string) {
          sender.writeFailed(rel, why)
          await fh.close()
          sender.writing(rel, -1)
        },
        /** Its daemon died: the descriptor goes, and nobody is told. */
        async abandon () { await fh.close() },
        /** rsync's close of its temp file (a hidden name is never reported ready), then its times set. */
        async rsyncClose (mtime: Date) {
          await fh.close()
          sender.writing(rel, -1)
          await utimes(file, mtime, mtime)
        },
        /** rsync's rename into place, reported as the tree does (renamed, gone, ready). */
        async rsyncRename (to: string) {
          await rename(file, path.join(outbox, to))
          sender.renamed(rel, to)
          sender.gone(rel)
          sender.ready(to, await stat(path.join(outbox, to)))
        }
      }
    },
    /** Bytes of xdata sent, and the kinds offered, in order. */
    get dataBytes () { return r.toReceiver.reduce((n, m) => n + (m.type === 'xdata' ? m.data.length : 0), 0) },
    get kinds () { return r.toReceiver.flatMap(m => m.type === 'xoffer' ? [m.kind] : []) },
    /** Files the last run left unclosed, as status counts them. */
    get unclosed () { return Object.fromEntries(sender.status()).outbox_unclosed },
    async inboxFile (rel: string): Promise<Buffer> { return await readFile(path.join(inbox, rel)).catch(() => Buffer.alloc(0)) },
    async leftovers (): Promise<string[]> {
      const list = async (d: string): Promise<string[]> => (await readdir(d, { recursive: true }).catch(() => [] as string[])).map(n => path.join(path.basename(d), n))
      return [...await list(spool), ...await list(path.join(partial, 'alpha')), ...(await list(outbox)).filter(n => n !== 'outbox')]
    }
  }
  return r
}

/** Sets or clears the immutable attribute of a file or folder (e2fsprogs' chattr; root). */
async function chattr (flag: '+i' | '-i', file: string): Promise<void> {
  const r = await sh(`chattr ${flag} '${file}'`)
  if (r.code !== 0) throw new Error(`chattr ${flag} ${file}: ${r.stderr.trim()}`)
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** Files of this process open under dir. */
async function fdsUnder (dir: string): Promise<number> {
  let n = 0
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '')
    if (target.startsWith(dir)) n++
  }
  return n
}

describe('transfer', () => {
  it('cuts a large file into packets, never more than the window unacknowledged', async () => {
    const r = await rig()
    const data = randomBytes(3 << 20)
    await r.put('big', data)
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered')
    const packets = r.toReceiver.filter(m => m.type === 'xdata')
    expect(packets.length).toBe(48)
    expect(Math.max(...packets.map(m => m.type === 'xdata' ? m.data.length : 0))).toBe(64 << 10)
    expect(r.maxUnacked).toBeLessThanOrEqual(settings.windowBytes)
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
    expect(r.sent).toEqual(['big'])
  })

  it('sends at most 256 KiB per turn of the event loop, so FUSE operations and transactions get in between', async () => {
    // The default window: the slices, not the window, keep the turns short.
    const r = await rig({ settings: { windowBytes: 8 << 20, ackEveryBytes: 2 << 20 } })
    // One tick per turn: every packet is counted against the turn it went in.
    let turn = 0
    let ticking = true
    const tick = (): void => {
      turn++
      if (ticking) setImmediate(tick)
    }
    setImmediate(tick)
    const perTurn = new Map<number, number>()
    const push = r.toReceiver.push.bind(r.toReceiver)
    r.toReceiver.push = (...ms: Message[]) => {
      for (const m of ms) if (m.type === 'xdata') perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1)
      return push(...ms)
    }
    const data = randomBytes(3 << 20)
    await r.put('big', data)
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered')
    ticking = false
    // The source is read 1 MiB at a time: without slices, 16 packets in one turn.
    expect(Math.max(...perTurn.values())).toBe(4)
  })

  it('resumes from the last checkpoint after the link goes down mid-way', async () => {
    const r = await rig()
    const data = randomBytes(4 << 20)
    await writeFile(path.join(r.outbox, '.big'), data)
    r.cutOnceAt(2 << 20)
    await r.reveal('big')
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered')
    expect(r.offers.length).toBe(2)
    // The first checkpoint (due at 256 KiB) is done before the link's loss closes the transfer.
    expect(r.offers[1].offset).toBeGreaterThanOrEqual(256 << 10)
    expect(r.offers[1].offset).toBeLessThanOrEqual(2 << 20)
    expect(r.offers[1].offset % (64 << 10)).toBe(0)
  })

  it('acknowledges data once written, not once durable: only a checkpoint is resumed from', async () => {
    // No checkpoint before the end: a cut mid-way resumes from 0, though 2.5 MiB were acknowledged.
    const r = await rig({ settings: { ackEveryBytes: 64 << 10, checkpointBytes: 64 << 20 } })
    const data = randomBytes(4 << 20)
    await writeFile(path.join(r.outbox, '.big'), data)
    let ackedBeforeCut = 0
    r.cutOnceAt(5 << 19, () => { ackedBeforeCut = Math.max(...r.toSender.map(a => a.type === 'xack' ? a.offset : 0)) })
    await r.reveal('big')
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered')
    expect(ackedBeforeCut).toBeGreaterThanOrEqual((5 << 19) - (256 << 10))
    expect(r.offers.map(o => o.offset)).toEqual([0, 0])
  })

  it('discards a transfer whose data was corrupted and sends it again', async () => {
    const r = await rig()
    const data = randomBytes(2 << 20)
    await writeFile(path.join(r.outbox, '.big'), data)
    let flipped = false
    r.dropWhere((m) => {
      if (!flipped && m.type === 'xdata' && m.offset === 1 << 20) {
        flipped = true
        m.data[10] ^= 1
      }
      return false
    })
    await r.reveal('big')
    await eventually(async () => sha(await r.inboxFile('big')) === sha(data), 'delivered intact', 15_000)
    expect(flipped).toBe(true)
    expect(r.offers.length).toBeGreaterThanOrEqual(2)
  })

  it('batches small files into one tar transfer', async () => {
    const r = await rig({
      prepare: async (outbox) => {
        await mkdir(path.join(outbox, 'd'))
        for (let i = 0; i < 5; i++) await writeFile(path.join(outbox, 'd', `f${i}`), `file ${i}`)
      }
    })
    await eventually(async () => (await readdir(path.join(r.inbox, 'd')).catch(() => [])).length === 5, 'delivered')
    expect(r.toReceiver.filter(m => m.type === 'xoffer')).toHaveLength(1)
    expect(r.toReceiver.find(m => m.type === 'xoffer')).toMatchObject({ kind: 'tar' })
    expect(await readFile(path.join(r.inbox, 'd', 'f3'), 'utf8')).toBe('file 3')
  })

  it('forgets what its sender asks it to though it is not delivered here: what was verified is placed first, what was not dropped, so no forget is asked for ever', async () => {
    const r = await rig()
    const store = new ReceiverStore(r.partial)
    const forget = async (xid: string): Promise<void> => {
      const before = r.toSender.filter(m => m.type === 'xforgot').length
      r.receiver.handler.xforget('alpha', { type: 'xforget', xid: Buffer.from(xid, 'hex') })
      await eventually(() => r.toSender.filter(m => m.type === 'xforgot').length > before, 'forgot')
    }
    const receiving = randomBytes(16).toString('hex')
    await store.save('alpha', { xid: receiving, phase: 'receiving', kind: 'stream', name: 'cut', size: 0, offset: 3 })
    await writeFile(store.part('alpha', receiving), 'abc')
    await forget(receiving)
    expect(await readdir(store.dir('alpha'))).toEqual([])
    const placing = randomBytes(16).toString('hex')
    // A batch verified and unpacked, not all placed yet.
    await store.save('alpha', { xid: placing, phase: 'placing', kind: 'tar', name: '', size: 5, offset: 5, files: [{ rel: 'whole', mode: 0o644, mtimeMs: Date.now() }] })
    await mkdir(store.staging('alpha', placing))
    await writeFile(path.join(store.staging('alpha', placing), '0'), 'whole')
    r.receiver.handler.xforget('alpha', { type: 'xforget', xid: Buffer.from(placing, 'hex') })
    await eventually(() => r.received.includes('whole'), 'placed')
    expect(await readFile(path.join(r.inbox, 'whole'), 'utf8')).toBe('whole')
    await forget(placing)
    expect(await readdir(store.dir('alpha'))).toEqual([])
  })

  it('answers a second offer of a delivered transfer with xdelivered: the sender only clears its outbox, a removed file stays removed', async () => {
    // The sender dies after the receiver placed the batch, before it heard so.
    let crashed = false
    const r = await rig({
      prepare: async (outbox) => { for (let i = 0; i < 5; i++) await writeFile(path.join(outbox, `f${i}`), `file ${i}`) }
    })
    r.dropAnswers((m) => m.type === 'xdone' && !crashed)
    await eventually(() => r.received.length === 5, 'placed')
    crashed = true
    // The receiver's user takes the files away meanwhile.
    for (let i = 0; i < 5; i++) await rm(path.join(r.inbox, `f${i}`))
    await r.restartSender()
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and record cleared')
    expect(r.toSender.filter(m => m.type === 'xdelivered')).toHaveLength(1)
    expect(r.toReceiver.filter(m => m.type === 'xoffer')).toHaveLength(2)
    expect(r.toReceiver.filter(m => m.type === 'xdata')).toHaveLength(1)
    expect(r.toSender.filter(m => m.type === 'xforgot')).toHaveLength(1)
    expect(await readdir(r.inbox)).toEqual([])
    expect(r.received).toHaveLength(5)
    expect(r.sent.sort()).toEqual(['f0', 'f1', 'f2', 'f3', 'f4'])
  })

  it('keeps a delivered file it cannot remove from the outbox claimed: never sent again, tried again, and the transfer forgotten only once it is gone', async () => {
    const lines: string[] = []
    const folder = (r: { outbox: string }): string => path.join(r.outbox, 'd')
    const r = await rig({
      log: pino({ level: 'error' }, { write: (l: string) => { lines.push(l) } }),
      prepare: async (outbox) => {
        for (const rel of ['f0', 'd/f1', 'f2']) {
          await mkdir(path.dirname(path.join(outbox, rel)), { recursive: true })
          await writeFile(path.join(outbox, rel), `file ${rel}`)
        }
        // An immutable folder: d/f1 can be neither renamed to the trash nor
        // unlinked (EPERM, as root too), and the file itself stays as sent.
        await chattr('+i', folder({ outbox }))
      }
    })
    // Before the rig's own cleanup, which could not remove it.
    cleanups.unshift(async () => { if (existsSync(folder(r))) await chattr('-i', folder(r)) })
    const retries = (): number => lines.filter(l => l.includes('delivered files stay in the outbox')).length
    await eventually(() => retries() >= 2, 'the clear tried again')
    expect(r.received.sort()).toEqual(['d/f1', 'f0', 'f2'])
    expect(await readdir(r.outbox, { recursive: true })).toEqual(['d', 'd/f1'])
    expect(String(Object.fromEntries(r.sender.status()).transfer_waiting)).toMatch(/cannot remove 1 delivered file\(s\) from the outbox: d\/f1: .*EPERM.*; retry in/)
    // Not sent again, not reported sent, not forgotten while it is there; the files behind it go.
    await r.put('g', 'behind it')
    await eventually(() => r.received.includes('g'), 'a later file delivered')
    expect(r.kinds).toEqual(['tar', 'tar'])
    expect(r.sent).toEqual(['g'])
    expect(r.toReceiver.filter(m => m.type === 'xforget')).toHaveLength(1)
    await chattr('-i', folder(r))
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and record cleared')
    expect(r.kinds).toEqual(['tar', 'tar'])
    expect(r.sent.sort()).toEqual(['d/f1', 'f0', 'f2', 'g'])
    expect(r.toReceiver.filter(m => m.type === 'xforget')).toHaveLength(2)
    expect(r.received.sort()).toEqual(['d/f1', 'f0', 'f2', 'g'])
  })

  it('removes delivered files in place when it cannot make its trash folder (no room on a full disk): none left to be sent again', async () => {
    const r = await rig()
    // Where the first delivery's trash folder would go: taken by a file, so mkdir fails.
    await writeFile(path.join(r.spool, 'trash-1'), '')
    for (let i = 0; i < 3; i++) await writeFile(path.join(r.outbox, `f${i}`), `file ${i}`)
    for (let i = 0; i < 3; i++) r.sender.ready(`f${i}`)
    await eventually(() => r.sent.length >= 3, 'delivered and cleared')
    expect(await readdir(r.outbox)).toEqual([])
    await eventually(() => r.toSender.some(m => m.type === 'xforgot'), 'forgotten')
    expect(r.sent.sort()).toEqual(['f0', 'f1', 'f2'])
    expect(r.kinds).toEqual(['tar'])
    expect(r.received.sort()).toEqual(['f0', 'f1', 'f2'])
  })

  it('places only the files not placed yet when a crash fell between two files of a batch', async () => {
    const r = await rig({ prepare: async (outbox) => { for (const n of ['a', 'b', 'c']) await writeFile(path.join(outbox, n), `file ${n}`) } })
    // Placed once, but the sender never heard.
    r.dropAnswers((m) => m.type === 'xdone')
    await eventually(() => r.received.length === 3, 'placed once')
    const store = new ReceiverStore(r.partial)
    const [held] = await store.held('alpha')
    const rec = await store.load('alpha', held.xid)
    expect(rec?.phase).toBe('delivered')
    // Rewind to a crash while placing: b was placed (and its user has removed it since), a and c were not.
    await rm(path.join(r.inbox, 'b'))
    await mkdir(store.staging('alpha', held.xid), { recursive: true })
    const files = [{ rel: 'a', mode: 0o644, mtimeMs: 1_600_000_000_000 }, { rel: 'b', mode: 0o644, mtimeMs: 1_600_000_000_000 }, { rel: 'c', mode: 0o600, mtimeMs: 1_600_000_000_000 }]
    await writeFile(path.join(store.staging('alpha', held.xid), '0'), 'file a')
    await writeFile(path.join(store.staging('alpha', held.xid), '2'), 'file c')
    await rm(path.join(r.inbox, 'a'))
    await rm(path.join(r.inbox, 'c'))
    await store.save('alpha', { ...rec, phase: 'placing', files } as NonNullable<typeof rec>)
    r.received.length = 0
    r.dropAnswers(undefined)
    await r.restartReceiver()
    await r.restartSender()
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and record cleared')
    expect((await readdir(r.inbox)).sort()).toEqual(['a', 'c'])
    expect(r.received.sort()).toEqual(['a', 'c'])
    expect(await readFile(path.join(r.inbox, 'c'), 'utf8')).toBe('file c')
  })

  it('places idempotently into an inbox on another filesystem, through the copy beside it', async () => {
    const shm = await mkdtemp('/dev/shm/peerfs-test-')
    cleanups.push(async () => await rm(shm, { recursive: true, force: true }))
    const r = await rig({ inbox: shm, prepare: async (outbox) => { for (const n of ['a', 'b']) await writeFile(path.join(outbox, n), `file ${n}`) } })
    await eventually(() => r.received.length === 2, 'placed')
    expect(await readFile(path.join(shm, 'b'), 'utf8')).toBe('file b')
    await eventually(async () => (await r.leftovers()).length === 0, 'cleared')
    expect((await readdir(shm)).sort()).toEqual(['a', 'b'])
  })

  it('clears delivered files from an outbox on another filesystem than its spool, leaving no trash folder behind', async () => {
    const shm = await mkdtemp('/dev/shm/peerfs-test-')
    cleanups.push(async () => await rm(shm, { recursive: true, force: true }))
    const r = await rig({ spool: shm })
    for (let i = 0; i < 3; i++) {
      await r.put(`f${i}`, `file ${i}`)
      await eventually(() => r.sent.length === i + 1, `f${i} delivered and cleared`)
    }
    await eventually(async () => (await readdir(shm)).length === 0, 'spool empty')
    expect(await readdir(r.outbox)).toEqual([])
    expect(r.received).toEqual(['f0', 'f1', 'f2'])
  })

  it('delivers an empty file once, also when its sender offers it again', async () => {
    let crashed = false
    const r = await rig({ settings: { largeFileBytes: 0 }, prepare: async (outbox) => { await writeFile(path.join(outbox, 'empty'), '') } })
    r.dropAnswers((m) => m.type === 'xdone' && !crashed)
    await eventually(() => r.received.length === 1, 'placed')
    crashed = true
    await rm(path.join(r.inbox, 'empty'))
    await r.restartSender()
    await eventually(async () => (await r.leftovers()).length === 0, 'cleared')
    expect(r.toSender.filter(m => m.type === 'xdelivered')).toHaveLength(1)
    expect(await readdir(r.inbox)).toEqual([])
    expect(r.received).toEqual(['empty'])
  })

  it('finishes a single file left half-way to an inbox on another filesystem by a crash', async () => {
    const shm = await mkdtemp('/dev/shm/peerfs-test-')
    cleanups.push(async () => await rm(shm, { recursive: true, force: true }))
    let crashed = false
    const r = await rig({ inbox: shm })
    r.dropAnswers((m) => m.type === 'xdone' && !crashed)
    const data = randomBytes(2 << 20)
    await r.put('big', data)
    await eventually(() => r.received.length === 1, 'placed')
    crashed = true
    // Rewind to the crash: the copy is complete beside its place, the partial renamed to .copied.
    const [held] = await new ReceiverStore(r.partial).held('alpha')
    const near = path.join(shm, `.peerfs-${held.xid}-0`)
    await rename(path.join(shm, 'big'), near)
    await writeFile(`${new ReceiverStore(r.partial).part('alpha', held.xid)}.copied`, data)
    r.received.length = 0
    await r.restartReceiver()
    await r.restartSender()
    await eventually(async () => (await r.leftovers()).length === 0, 'cleared')
    expect(await readdir(shm)).toEqual(['big'])
    expect((await readFile(path.join(shm, 'big'))).equals(data)).toBe(true)
    expect(r.received).toEqual(['big'])
  })

  it('keeps a cancel made while the link is down and sends it when it is back: no partial, no fd', async () => {
    // An unanswered cancel goes again after retryMs: long enough here that a slow disk at the receiver does not make it two.
    const r = await rig({ settings: { retryMs: 2000, retryMaxMs: 4000 } })
    await writeFile(path.join(r.outbox, '.big'), randomBytes(3 << 20))
    r.dropWhere((m) => {
      if (m.type === 'xdata' && m.offset >= (1 << 20)) {
        r.setUp(false)
        return true
      }
      return false
    })
    await r.reveal('big')
    await eventually(async () => (await readdir(path.join(r.partial, 'alpha')).catch(() => [])).some(n => n.endsWith('.json')), 'part acknowledged')
    await eventually(async () => await fdsUnder(r.partial) === 0, 'fd closed once the link is down')
    await rm(path.join(r.outbox, 'big'))
    r.sender.gone('big')
    const phases = async (): Promise<string[]> => await Promise.all((await readdir(r.spool)).filter(n => n.endsWith('.json')).map(async n => (JSON.parse(await readFile(path.join(r.spool, n), 'utf8')) as { phase: string }).phase))
    await eventually(async () => (await phases()).join() === 'cancel', 'cancel saved')
    await r.restartSender()
    r.dropWhere(undefined)
    r.setUp(true)
    await eventually(async () => (await r.leftovers()).length === 0, 'partial and cancel gone')
    expect(r.toReceiver.filter(m => m.type === 'xcancel')).toHaveLength(1)
    expect(await fdsUnder(r.partial)).toBe(0)
    expect(await readdir(r.inbox)).toEqual([])
  })

  it('caps the transfers one peer has in progress and closes every fd when its link goes', async () => {
    const r = await rig()
    const receiver = r.receiver
    const answers = r.toSender
    for (let i = 0; i < 3 * settings.maxPartials; i++) {
      const xid = randomBytes(16)
      receiver.handler.xoffer('alpha', { type: 'xoffer', xid, kind: 'file', size: 1 << 20, window: 1 << 20, name: `f${i}` })
      receiver.handler.xdata('alpha', { type: 'xdata', xid, offset: 0, data: Buffer.from('x') })
    }
    await eventually(() => answers.filter(m => m.type === 'xaccept').length === 3 * settings.maxPartials, 'all accepted')
    await eventually(async () => await fdsUnder(r.partial) <= settings.maxPartials, 'fds within the cap')
    expect((await new ReceiverStore(r.partial).held('alpha')).length).toBeLessThanOrEqual(settings.maxPartials)
    r.setUp(false)
    await eventually(async () => await fdsUnder(r.partial) === 0, 'no fd once the link is gone')
    // Partials that held no acknowledged data are gone too.
    await eventually(async () => (await readdir(path.join(r.partial, 'alpha')).catch(() => [])).length === 0, 'nothing left')
  })

  it('sets aside a transfer the receiver cannot take now, sends the ones behind it, and says why in status', async () => {
    let quota = 100_000
    const r = await rig({ quota: () => quota })
    await r.put('big', randomBytes(2 << 20))
    await eventually(() => r.toSender.some(m => m.type === 'xdone' && m.result === 'retry'), 'refused for now')
    await r.put('small', 'hello')
    await eventually(async () => (await r.inboxFile('small')).toString() === 'hello', 'small one delivered past the big one')
    // Between two retries of the big one, status names it and why (during a retry it shows the attempt).
    const waiting = (): string => String(Object.fromEntries(r.sender.status()).transfer_waiting)
    await eventually(() => /^big: over the inbox quota: .*; retry in \d+ s$/.test(waiting()), 'status names the waiting file and why')
    quota = 0
    await eventually(async () => (await r.inboxFile('big')).length === 2 << 20, 'big one delivered once there is room', 15_000)
    // Placed before its xdone reaches the sender: the status follows that.
    await eventually(() => Object.fromEntries(r.sender.status()).transfer_waiting === '-', 'nothing waiting')
  })

  // One name in a batch that the receiver can never place: by the rules every peer applies, or only in its inbox, whose own path is longer.
  const deep = Array.from({ length: 65 }, () => 'd').join('/')
  const long = Array.from({ length: 16 }, (_, i) => `${i}`.padEnd(240, 'L')).join('/')
  for (const [what, bad] of [['a folder 65 deep', deep], ['a path that fits the outbox but not the inbox', long]] as const) {
    it(`splits a batch the receiver refuses for one name (${what}): the others are placed once, the refused one stays, counted in status`, async () => {
      const inbox = path.join(await tempDir(), 'i'.repeat(250))
      const r = await rig({
        inbox,
        prepare: async (outbox) => {
          for (let i = 0; i < 9; i++) await writeFile(path.join(outbox, `f${i}`), `file ${i}`)
          await mkdir(path.dirname(path.join(outbox, bad)), { recursive: true })
          await writeFile(path.join(outbox, bad), 'refused')
        }
      })
      await eventually(() => r.received.length === 9, 'the nine others placed')
      const status = (): Record<string, unknown> => Object.fromEntries(r.sender.status())
      await eventually(() => status().outbox_refused === 1, 'one refused, in status')
      expect(String(status().outbox_refused_last)).toMatch(new RegExp(`^${bad.slice(0, 20)}.*: .*(path too deep|over 4095)`))
      expect(r.received.sort()).toEqual(Array.from({ length: 9 }, (_, i) => `f${i}`))
      for (let i = 0; i < 9; i++) expect((await r.inboxFile(`f${i}`)).toString()).toBe(`file ${i}`)
      expect(existsSync(path.join(r.outbox, bad))).toBe(true)
      // Refused until it changes: not offered again meanwhile.
      const offers = r.kinds.length
      await new Promise(resolve => setTimeout(resolve, 300))
      expect(r.kinds.length).toBe(offers)
      // Halved each time: 10, 5, 3, 2, 1.
      expect(r.toSender.filter(m => m.type === 'xdone' && m.result === 'refused')).toHaveLength(5)
      expect(r.sent.sort()).toEqual(r.received.sort())
    })
  }

  it('splits a batch over the whole inbox quota until its parts fit, and each file is placed once', async () => {
    const r = await rig({
      quota: () => 8000,
      prepare: async (outbox) => {
        for (let i = 0; i < 10; i++) await writeFile(path.join(outbox, `f${i}`), Buffer.alloc(1000, 48 + i))
      }
    })
    // Its user takes what arrives, as a consumer of a capped inbox does.
    const taken: string[] = []
    await eventually(async () => {
      for (const rel of r.received.slice(taken.length)) {
        expect((await r.inboxFile(rel)).equals(Buffer.alloc(1000, 48 + Number(rel.slice(1))))).toBe(true)
        await rm(path.join(r.inbox, rel))
        taken.push(rel)
      }
      return taken.length === 10
    }, 'all ten placed', 15_000)
    expect(taken.sort()).toEqual(Array.from({ length: 10 }, (_, i) => `f${i}`))
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
    expect(Object.fromEntries(r.sender.status()).outbox_refused).toBe(0)
    expect(r.toSender.some(m => m.type === 'xdone' && m.result === 'refused' && /a batch of \d+ bytes is over the inbox quota of 8000 bytes/.test(m.reason))).toBe(true)
  })

  it('sends a lone file whose tar is over the whole inbox quota, though the file fits, as itself', async () => {
    const r = await rig({ quota: () => 1500 })
    await r.put('lone', Buffer.alloc(1200, 7))
    await eventually(async () => (await r.inboxFile('lone')).equals(Buffer.alloc(1200, 7)), 'placed')
    expect(r.kinds).toEqual(['tar', 'file'])
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
    expect(Object.fromEntries(r.sender.status()).outbox_refused).toBe(0)
  })

  it('counts partials against the quota', async () => {
    const r = await rig({ quota: () => 3 << 20 })
    const xid = randomBytes(16)
    r.receiver.handler.xoffer('alpha', { type: 'xoffer', xid, kind: 'file', size: 2 << 20, window: 1 << 20, name: 'held' })
    r.receiver.handler.xdata('alpha', { type: 'xdata', xid, offset: 0, data: randomBytes(2 << 20) })
    await eventually(() => r.toSender.some(m => m.type === 'xack'), 'acknowledged')
    r.receiver.handler.xoffer('alpha', { type: 'xoffer', xid: randomBytes(16), kind: 'file', size: 2 << 20, window: 1 << 20, name: 'next' })
    await eventually(() => r.toSender.some(m => m.type === 'xdone'), 'answered')
    expect(r.toSender.find(m => m.type === 'xdone')).toMatchObject({ result: 'retry', reason: /over the inbox quota: 2097152 \+ 2097152/ })
  })

  it('keeps at most maxTransfers saved transfers while the receiver takes none', async () => {
    const r = await rig({
      quota: () => 1,
      settings: { maxTransfers: 3, largeFileBytes: 1 },
      prepare: async (outbox) => { for (let i = 0; i < 10; i++) await writeFile(path.join(outbox, `f${i}`), `file ${i}`) }
    })
    await eventually(() => r.toSender.filter(m => m.type === 'xdone').length >= 10, 'offers answered')
    const saved = (await readdir(r.spool)).filter(n => n.endsWith('.json'))
    expect(saved).toHaveLength(3)
    expect(new Set(r.toReceiver.filter(m => m.type === 'xoffer').map(m => m.type === 'xoffer' ? m.name : '')).size).toBe(3)
  })

  it('holds at most maxQueued outbox files in memory: the rest wait on disk, are counted, and go after a later scan, each once', async () => {
    const r = await rig({ settings: { maxQueued: 4, batchFiles: 3 } })
    r.setUp(false)
    const names = Array.from({ length: 10 }, (_, i) => `f${i}`)
    for (const n of names) {
      await writeFile(path.join(r.outbox, n), `file ${n}`)
      r.sender.ready(n, await stat(path.join(r.outbox, n)))
    }
    const s = Object.fromEntries(r.sender.status())
    expect([s.outbox_files, s.outbox_bytes]).toEqual([10, 70])
    r.setUp(true)
    await eventually(async () => (await r.leftovers()).length === 0, 'all sent, outbox and spool empty')
    expect(r.received.sort()).toEqual(names)
    const offers = r.toReceiver.filter(m => m.type === 'xoffer')
    expect(offers.every(m => m.type === 'xoffer' && m.kind === 'tar' && Number(m.name.split(' ')[0]) <= 3)).toBe(true)
  })

  it('sends a batch once its writer pauses, without waiting batchMs', async () => {
    const r = await rig({ settings: { batchMs: 600_000 } })
    const names = ['a', 'b', 'c']
    for (const n of names) await writeFile(path.join(r.outbox, n), `file ${n}`)
    // Reported together, as one writer's burst: one batch.
    const sts = await Promise.all(names.map(async n => await stat(path.join(r.outbox, n))))
    names.forEach((n, i) => r.sender.ready(n, sts[i]))
    await eventually(() => r.received.length === 3, 'delivered well before batchMs')
    expect(r.toReceiver.filter(m => m.type === 'xoffer')).toHaveLength(1)
  })

  it('sends a file again that was rewritten while its transfer was in flight, once that transfer is delivered', async () => {
    const r = await rig()
    let hold = true
    const held: Message[] = []
    r.dropAnswers((m) => {
      if (hold && m.type === 'xdone') held.push(m)
      return hold && m.type === 'xdone'
    })
    await writeFile(path.join(r.outbox, 'a'), 'first')
    r.sender.ready('a', await stat(path.join(r.outbox, 'a')))
    await eventually(() => held.length === 1, 'placed, the sender not told yet')
    // Rewritten and reported while its transfer still claims it.
    await writeFile(path.join(r.outbox, 'a'), 'second version')
    r.sender.ready('a', await stat(path.join(r.outbox, 'a')))
    hold = false
    r.sender.answers.xdone('alpha', held[0] as Extract<Message, { type: 'xdone' }>)
    await eventually(async () => (await r.inboxFile('a')).toString() === 'second version', 'the new version delivered')
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox and spool empty')
    expect(r.received).toEqual(['a', 'a'])
  })

  it('removes partials nobody came back for after maxAgeMs', async () => {
    let ahead = 0
    const clock: Clock = { ...systemClock, now: () => Date.now() + ahead }
    const r = await rig({ clock })
    const xid = randomBytes(16)
    r.receiver.handler.xoffer('alpha', { type: 'xoffer', xid, kind: 'file', size: 2 << 20, window: 1 << 20, name: 'abandoned' })
    r.receiver.handler.xdata('alpha', { type: 'xdata', xid, offset: 0, data: randomBytes(2 << 20) })
    await eventually(() => r.toSender.some(m => m.type === 'xack'), 'acknowledged')
    r.setUp(false)
    await r.restartReceiver()
    expect((await readdir(path.join(r.partial, 'alpha'))).sort()).toEqual([`${xid.toString('hex')}.json`, `${xid.toString('hex')}.part`])
    ahead = settings.maxAgeMs + 1000
    await r.restartReceiver()
    expect(await readdir(path.join(r.partial, 'alpha'))).toEqual([])
  })

  it('shows the transfer, its progress and rate at both ends', async () => {
    const r = await rig({ settings: { windowBytes: 1 << 20 } })
    await writeFile(path.join(r.outbox, '.big'), randomBytes(4 << 20))
    let hold = true
    r.dropAnswers((m) => hold && m.type === 'xack' && m.offset >= (2 << 20))
    await r.reveal('big')
    await eventually(() => Object.fromEntries(r.sender.status()).transfer_progress !== '-' && r.toSender.some(m => m.type === 'xack' && m.offset >= (2 << 20)), 'half way')
    const s = Object.fromEntries(r.sender.status())
    const i = Object.fromEntries(r.receiver.status('alpha'))
    expect(s.transfer).toBe('big')
    expect(s.transfer_progress).toMatch(/^\d+\/4194304 bytes \(\d+%\)$/)
    expect(typeof s.transfer_bytes_per_s).toBe('number')
    expect(i.incoming).toBe('big')
    expect(i.incoming_progress).toMatch(/^\d+\/4194304 bytes \(\d+%\)$/)
    expect(i.incoming_bytes_per_s).toBeGreaterThan(0)
    hold = false
    r.setUp(false)
    r.setUp(true)
    await eventually(async () => (await r.inboxFile('big')).length === 4 << 20, 'delivered')
    expect(Object.fromEntries(r.receiver.status('alpha')).incoming).toBe('-')
  })

  it('backs off a transfer set aside, doubling up to the ceiling, and sends an unanswered cancel again only after retryMs', () => {
    const book = new TransferBook(100, 350)
    const rec: SentRecord = { xid: 'a'.repeat(32), kind: 'file', name: 'big', size: 1, items: [{ rel: 'big', size: 1, mtimeMs: 1 }], phase: 'send', created: 0 }
    book.add(rec)
    expect([1, 2, 3, 4].map(() => book.setAside(rec, 'no space', 1000))).toEqual([100, 200, 350, 350])
    expect(book.due(1000)).toEqual([])
    expect(book.due(1350)).toEqual([rec])
    expect(book.waiting(1000)).toBe('big: no space; retry in 1 s')
    expect(book.nextWake(1000)).toBe(1350)
    // Ended while a pick ran, and still to be sent: look again now, not at the next rescan.
    expect(book.nextWake(1400)).toBe(1400)
    book.cancelled(rec)
    expect(book.waiting(1000)).toBe('-')
    expect(book.toTell(1000).map(t => t.type)).toEqual(['xcancel'])
    book.told(rec.xid, 1000)
    expect(book.toTell(1050)).toEqual([])
    expect(book.toTell(1100).map(t => t.type)).toEqual(['xcancel'])
    book.newLink()
    expect(book.toTell(1000).map(t => t.type)).toEqual(['xcancel'])
    // A cancel's ended wait is no reason to wake up again (it would spin: toTell paces cancels).
    expect(book.setAside(rec, 'busy', 2000)).toBe(100)
    expect(book.nextWake(2000)).toBe(2100)
    expect(book.nextWake(2100)).toBeUndefined()
  })

  it('reads the transfer policy from the config, with defaults', () => {
    const base = 'id = "alpha"\nkey = "k"\nstate = "s"\n'
    expect(parseConfig('/x/a.toml', base).transfer).toMatchObject({
      bundleMaxBytes: 32 << 20, ackEveryBytes: 2 << 20, checkpointBytes: 64 << 20, checkpointMs: 2000, retryMs: 5000, retryMaxMs: 300_000, timeoutMs: 30_000, maxTransfers: 8, pruneMs: 30_000, maxPartials: 16, maxAgeMs: 7 * 24 * 3600_000
    })
    expect(parseConfig('/x/a.toml', base + 'transfer_retry_ms = 100\ntransfer_retry_max_ms = 1000\ninbox_max_partials = 2\npartial_max_age_ms = 60000\n').transfer)
      .toMatchObject({ retryMs: 100, retryMaxMs: 1000, maxPartials: 2, maxAgeMs: 60_000 })
    expect(() => parseConfig('/x/a.toml', base + 'transfer_retry_ms = 1000\ntransfer_retry_max_ms = 100\n')).toThrow(/transfer_retry_max_ms: must be between 1000/)
  })

  it('round-trips the new messages', () => {
    const xid = randomBytes(16)
    for (const type of ['xdelivered', 'xforget', 'xforgot'] as const) {
      expect(decodeMessage(encodeMessage({ type, xid }))).toEqual({ type, xid })
    }
  })

  it('checks relative paths from peers', () => {
    expect(badRelPath('a/b.txt')).toBeUndefined()
    expect(badRelPath('../x')).toMatch(/\.\./)
    expect(badRelPath('a/../../x')).toMatch(/\.\./)
    expect(badRelPath('/etc/passwd')).toMatch(/absolute/)
    expect(badRelPath('a//b')).toMatch(/empty/)
    expect(badRelPath('x'.repeat(256))).toMatch(/256 bytes over 255/)
    expect(badRelPath('.peerfs-x')).toMatch(/reserved/)
    expect(badRelPath('a\0b')).toMatch(/NUL/)
  })

  it('tells rsync\'s temp files, and the names they will be renamed to', () => {
    expect(rsyncTarget('.big.bin.Zx81Qa')).toBe('big.bin')
    expect(rsyncTarget('d/e/.x.AAAAAA')).toBe('d/e/x')
    for (const not of ['big.bin', '.big.bin', '.big.tmp', '.big.bin.Zx81Q', '.big.bin.Zx8-Qa', '.d/.x.AAAAAA', '..x.AAAAAA']) expect(rsyncTarget(not), not).toBeUndefined()
  })
})

type Rig = Awaited<ReturnType<typeof rig>>
type Writer = Awaited<ReturnType<Rig['create']>>

describe('streams: a file sent while it is written', () => {
  const MiB = 1 << 20
  /** What the receiver holds of its transfers from alpha (records and partials). */
  const partials = async (r: Rig): Promise<string[]> => await readdir(path.join(r.partial, 'alpha')).catch(() => [])

  it('sends what is written while it is written, places nothing before the close, and delivers it once', async () => {
    const r = await rig({ streams: true })
    const data = randomBytes(4 * MiB)
    const w = await r.create('big')
    for (let i = 0; i < 12; i++) await w.write(data.subarray(i * MiB / 4, (i + 1) * MiB / 4))
    await eventually(() => r.dataBytes === 3 * MiB, 'all 3 MiB written so far sent before the close')
    expect(r.kinds).toEqual(['stream'])
    expect(await readdir(r.inbox).catch(() => [])).toEqual([])
    expect(Object.fromEntries(r.sender.status()).transfer).toBe('big (as it is written)')
    await eventually(() => /^3145728 bytes, the file still being written$/.test(String(Object.fromEntries(r.receiver.status('alpha')).incoming_progress)), 'receiver shows it growing')
    for (let i = 12; i < 16; i++) await w.write(data.subarray(i * MiB / 4, (i + 1) * MiB / 4))
    await w.close()
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered')
    // Not a byte sent twice, one offer, and nothing left anywhere.
    expect(r.dataBytes).toBe(4 * MiB)
    expect(r.kinds).toEqual(['stream'])
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
    expect(r.received).toEqual(['big'])
    expect(r.sent).toEqual(['big'])
  })

  it('streams rsync\'s temp file under the name it is renamed to, and commits it at that rename: once, whole, with rsync\'s times', async () => {
    const r = await rig({ streams: true })
    const data = randomBytes(4 * MiB)
    await mkdir(path.join(r.outbox, 'd'))
    const w = await r.create('d/.big.x7Qz2K')
    for (let i = 0; i < 12; i++) await w.write(data.subarray(i * MiB / 4, (i + 1) * MiB / 4))
    await eventually(() => r.dataBytes === 3 * MiB, 'all 3 MiB written so far sent before the close')
    expect(r.kinds).toEqual(['stream'])
    expect(Object.fromEntries(r.sender.status()).transfer).toBe('d/big (as it is written)')
    for (let i = 12; i < 16; i++) await w.write(data.subarray(i * MiB / 4, (i + 1) * MiB / 4))
    const mtime = new Date('2024-05-06T07:08:09Z')
    await w.rsyncClose(mtime)
    // Closed, not renamed yet: all of it is sent, nothing is placed.
    await eventually(() => r.dataBytes === 4 * MiB, 'all of it sent')
    await new Promise(resolve => setTimeout(resolve, 50))
    expect(await readdir(r.inbox).catch(() => [])).toEqual([])
    await w.rsyncRename('d/big')
    await eventually(async () => (await r.inboxFile('d/big')).equals(data), 'delivered')
    expect((await stat(path.join(r.inbox, 'd/big'))).mtimeMs).toBe(mtime.getTime())
    expect(r.dataBytes).toBe(4 * MiB)
    expect(r.kinds).toEqual(['stream'])
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
    expect(r.received).toEqual(['d/big'])
    expect(r.sent).toEqual(['d/big'])
  })

  it('resumes a closed stream of rsync\'s temp file after the link went down and came back before its rename', async () => {
    const r = await rig({ streams: true })
    const data = randomBytes(3 * MiB)
    const w = await r.create('.big.Q1w2E3')
    await w.write(data.subarray(0, 2 * MiB))
    await eventually(() => r.dataBytes === 2 * MiB, 'streamed')
    await w.write(data.subarray(2 * MiB))
    r.setUp(false)
    await w.rsyncClose(new Date('2023-03-04T05:06:07Z'))
    r.setUp(true)
    await new Promise(resolve => setTimeout(resolve, 100))
    await w.rsyncRename('big')
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered')
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
    expect(r.kinds[0]).toBe('stream')
    expect(r.kinds.slice(1).every(k => k === 'stream' || k === 'file')).toBe(true)
    // Resumed, not sent again from the start.
    expect(r.dataBytes).toBeLessThan(5 * MiB)
    expect(r.received).toEqual(['big'])
  })

  for (const end of ['removed', 'renamed elsewhere'] as const) {
    it(`cancels the stream of rsync's temp file ${end} after its close; the file goes by its name as usual`, async () => {
      const r = await rig({ streams: true })
      const data = randomBytes(2 * MiB)
      const w = await r.create('.big.AbC123')
      await w.write(data)
      await eventually(() => r.dataBytes === 2 * MiB, 'streamed')
      await w.rsyncClose(new Date())
      if (end === 'removed') {
        await rm(path.join(r.outbox, '.big.AbC123'))
        r.sender.gone('.big.AbC123')
      } else {
        await w.rsyncRename('other')
      }
      await eventually(async () => (await partials(r)).length === 0, 'the partial dropped')
      await r.put('later', 'x')
      await eventually(async () => (await r.inboxFile('later')).toString() === 'x', 'a later file delivered')
      if (end === 'renamed elsewhere') await eventually(async () => (await r.inboxFile('other')).equals(data), 'other delivered as a file')
      await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
      expect(await readdir(r.inbox)).toEqual(end === 'removed' ? ['later'] : ['later', 'other'].sort())
      expect(r.received.sort()).toEqual(end === 'removed' ? ['later'] : ['later', 'other'])
    })
  }

  const spoilers: Array<[string, (w: Writer, r: Rig) => Promise<void>]> = [
    ['a write out of order', async (w) => await w.writeAt(Buffer.from('HEAD'), 0)],
    ['a second writer', async (_w, r) => r.sender.writing('big', 1)],
    ['a truncate', async (_w, r) => {
      await truncate(path.join(r.outbox, 'big'), MiB)
      r.sender.grew('big', undefined)
    }]
  ]
  for (const [what, spoil] of spoilers) {
    it(`cancels the stream at ${what}, and sends the file as it is once closed`, async () => {
      const r = await rig({ streams: true })
      const w = await r.create('big')
      await w.write(randomBytes(2 * MiB))
      await eventually(() => r.dataBytes === 2 * MiB, 'streamed')
      await spoil(w, r)
      await eventually(() => r.toSender.some(m => m.type === 'xforgot'), 'the stream cancelled')
      expect(await partials(r)).toEqual([])
      await w.write(randomBytes(MiB))
      if (what === 'a second writer') r.sender.writing('big', -1)
      await w.close()
      const want = await readFile(path.join(r.outbox, 'big'))
      await eventually(async () => (await r.inboxFile('big')).equals(want), 'the file as closed delivered')
      expect(r.kinds).toEqual(['stream', 'file'])
      await eventually(async () => (await r.leftovers()).length === 0, 'nothing left')
      expect(r.received).toEqual(['big'])
    })
  }

  it('resumes a stream whose writer closed it while the link was down, as a file, from what the receiver holds', async () => {
    const r = await rig({ streams: true })
    const data = randomBytes(3 * MiB)
    const w = await r.create('big')
    await w.write(data.subarray(0, 2 * MiB))
    // A checkpoint every 256 KiB, one at a time beside the data: at least the first is durable
    // when the link goes (its close waits for the one in progress); how many more depends on the disk.
    await eventually(() => r.dataBytes === 2 * MiB && r.toSender.some(m => m.type === 'xack' && m.offset === 2 * MiB), 'streamed')
    r.setUp(false)
    await w.write(data.subarray(2 * MiB))
    await w.close()
    r.setUp(true)
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered')
    expect(r.kinds).toEqual(['stream', 'file'])
    expect(r.offers[1].offset).toBeGreaterThanOrEqual(settings.checkpointBytes)
    await eventually(async () => (await r.leftovers()).length === 0, 'nothing left')
    expect(r.received).toEqual(['big'])
  })

  it('cancels a stream its sender was killed during, and holds the file it left unclosed, across restarts, until it is touched', async () => {
    const r = await rig({ streams: true })
    const w = await r.create('big')
    await w.write(randomBytes(2 * MiB))
    await eventually(() => r.dataBytes === 2 * MiB, 'streamed')
    // The writer's handle died with the daemon that served it; its file stays as it was.
    await w.abandon()
    await r.restartSender()
    await r.restartSender()
    // What comes after it goes; the file its writer never closed does not.
    await r.put('small', 'hello')
    await eventually(async () => (await r.inboxFile('small')).toString() === 'hello', 'a later file delivered')
    expect(r.unclosed).toBe(1)
    expect(existsSync(path.join(r.inbox, 'big'))).toBe(false)
    expect(r.kinds).toEqual(['stream', 'tar'])
    // A touch: the tree reports it ready as it is.
    r.sender.ready('big')
    const want = await readFile(path.join(r.outbox, 'big'))
    await eventually(async () => (await r.inboxFile('big')).equals(want), 'delivered')
    expect(r.kinds).toEqual(['stream', 'tar', 'file'])
    expect(r.toReceiver.filter(m => m.type === 'xcancel').length).toBeGreaterThanOrEqual(1)
    expect(r.unclosed).toBe(0)
    await eventually(async () => (await r.leftovers()).length === 0, 'nothing left')
    expect(r.received).toEqual(['small', 'big'])
  })

  it('sends a file left unclosed that touch released through a handle that wrote nothing, at that handle\'s close', async () => {
    const r = await rig()
    const w = await r.create('note')
    await w.write(Buffer.from('half'))
    await w.abandon()
    await r.restartSender()
    // The scan at the start is done, and found nothing to send.
    await r.put('other', 'x')
    await eventually(async () => (await r.inboxFile('other')).toString() === 'x', 'a later file delivered')
    expect(r.unclosed).toBe(1)
    // touch: opens for writing, sets the times (the tree reports the file ready), closes having written nothing.
    r.sender.writing('note', 1)
    r.sender.ready('note', await stat(path.join(r.outbox, 'note')))
    r.sender.writing('note', -1)
    await eventually(async () => (await r.inboxFile('note')).toString() === 'half', 'delivered')
    // Reported a moment after it is placed.
    await eventually(() => r.received.length === 2, 'reported received')
    expect(r.received).toEqual(['other', 'note'])
  })

  it('keeps a file that something in the inbox is in the way of, and places it once that is moved: never dropped, never reported sent before', async () => {
    const r = await rig()
    // A folder where the file goes, and a file where its folder goes.
    await mkdir(path.join(r.inbox, 'report'), { recursive: true })
    await writeFile(path.join(r.inbox, 'notes'), 'day1')
    await mkdir(path.join(r.outbox, 'notes'))
    await r.put('report', 'final report')
    await writeFile(path.join(r.outbox, 'notes/day2'), 'day2')
    r.sender.ready('notes/day2', await stat(path.join(r.outbox, 'notes/day2')))
    await eventually(() => /cannot be placed yet: (report exists in the inbox and is not a file|notes\/day2: notes exists in the inbox and is not a folder)/.test(String(Object.fromEntries(r.sender.status()).transfer_waiting)), 'the reason shown')
    expect(r.sent).toEqual([])
    expect(existsSync(path.join(r.outbox, 'report'))).toBe(true)
    expect(existsSync(path.join(r.outbox, 'notes/day2'))).toBe(true)
    await rm(path.join(r.inbox, 'report'), { recursive: true })
    await rm(path.join(r.inbox, 'notes'))
    await eventually(async () => (await r.inboxFile('report')).toString() === 'final report' && (await r.inboxFile('notes/day2')).toString() === 'day2', 'both placed')
    await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
    expect(r.sent.sort()).toEqual(['notes/day2', 'report'])
    expect(r.received.sort()).toEqual(['notes/day2', 'report'])
  })

  for (const how of ['renamed over (rsync -a -I)', 'rewritten in place, its mtime restored (rsync --inplace)'] as const) {
    it(`sends again a file ${how} with its size and mtime unchanged just as the peer had the old one`, async () => {
      const r = await rig()
      const file = path.join(r.outbox, 'x')
      const mtime = new Date('2022-02-02T02:02:02Z')
      let replace = true
      r.dropAnswers((m) => {
        if (m.type !== 'xdone' || !replace) return false
        replace = false
        // Synchronous: the sender takes the answer right after this returns.
        if (how.startsWith('renamed')) {
          writeFileSync(`${file}.new`, 'B'.repeat(1000))
          utimesSync(`${file}.new`, mtime, mtime)
          renameSync(`${file}.new`, file)
        } else {
          writeFileSync(file, 'B'.repeat(1000))
          utimesSync(file, mtime, mtime)
        }
        return false
      })
      await writeFile(path.join(r.outbox, '.x'), 'A'.repeat(1000))
      await utimes(path.join(r.outbox, '.x'), mtime, mtime)
      await r.reveal('x')
      await eventually(async () => (await r.inboxFile('x')).toString() === 'B'.repeat(1000), 'the new version delivered')
      await eventually(async () => (await r.leftovers()).length === 0, 'outbox, spool and partials empty')
      expect(r.received).toEqual(['x', 'x'])
    })
  }

  it('keeps a delivered file that a writer opened again before it was removed: removed at that close if unchanged, sent again if written', async () => {
    const r = await rig()
    const file = path.join(r.outbox, 'log')
    // A logger opens the file again (to append) after the peer has it, before its xdone is taken.
    let reopen: string | undefined = 'log'
    r.dropAnswers((m) => {
      if (m.type === 'xdone' && reopen !== undefined) {
        r.sender.writing(reopen, 1)
        reopen = undefined
      }
      return false
    })
    await r.put('log', 'line 1\n')
    await eventually(async () => (await r.inboxFile('log')).toString() === 'line 1\n', 'delivered')
    await eventually(() => r.sent.length === 1, 'reported sent')
    expect(existsSync(file)).toBe(true)
    await appendFile(file, 'line 2\n')
    r.sender.writing('log', -1)
    r.sender.ready('log', await stat(file))
    await eventually(async () => (await r.inboxFile('log')).toString() === 'line 1\nline 2\n', 'sent again with what was appended')
    await eventually(async () => (await r.leftovers()).length === 0, 'nothing left')

    // Opened again and closed without a write: it goes from the outbox at that close, not sent twice.
    reopen = 'quiet'
    await r.put('quiet', 'once\n')
    await eventually(() => r.sent.length === 3, 'reported sent')
    expect(existsSync(path.join(r.outbox, 'quiet'))).toBe(true)
    r.sender.writing('quiet', -1)
    await eventually(() => !existsSync(path.join(r.outbox, 'quiet')), 'removed at the close')
    await r.put('after', 'x')
    await eventually(() => r.sent.includes('after'), 'a later file reported sent')
    expect(r.sent).toEqual(['log', 'log', 'quiet', 'after'])
    expect(r.received).toEqual(['log', 'log', 'quiet', 'after'])
  })

  it('holds a file whose write failed (a full disk): not sent at its close nor after a restart, counted as unclosed, until it is written again', async () => {
    const r = await rig({ streams: true })
    const w = await r.create('cut')
    await w.write(Buffer.from('the first part'))
    await w.failedClose('ENOSPC: no space left on device, write')
    await r.put('after', 'behind it')
    await eventually(() => r.received.includes('after'), 'a later file delivered')
    expect(r.unclosed).toBe(1)
    await r.restartSender()
    expect(r.unclosed).toBe(1)
    await r.put('later', 'after the restart')
    await eventually(() => r.received.includes('later'), 'a file after the restart delivered')
    expect(r.received).not.toContain('cut')
    const again = await r.create('cut')
    await again.write(Buffer.from('all of it'))
    await again.close()
    await eventually(async () => (await r.inboxFile('cut')).toString() === 'all of it', 'the file written again delivered')
    expect(r.received.filter(n => n === 'cut')).toHaveLength(1)
    expect(r.unclosed).toBe(0)
  })

  it('sends a file left unclosed once a writer writes and closes it again, and forgets it once removed', async () => {
    const r = await rig()
    r.setUp(false)
    for (const name of ['a', 'b']) {
      const w = await r.create(name)
      await w.write(Buffer.from(`half of ${name}`))
      await w.abandon()
    }
    await r.restartSender()
    expect(r.unclosed).toBe(2)
    // Rewritten whole and closed: sent. Removed: gone from the count, and a restart does not bring it back.
    const w = await r.create('a')
    await w.write(Buffer.from('all of a'))
    await w.close()
    await rm(path.join(r.outbox, 'b'))
    r.sender.gone('b')
    await r.restartSender()
    expect(r.unclosed).toBe(0)
    r.setUp(true)
    await eventually(async () => (await r.inboxFile('a')).toString() === 'all of a', 'delivered')
    await eventually(async () => (await r.leftovers()).length === 0, 'nothing left')
    expect(r.received).toEqual(['a'])
  })

  it('gives way to files that wait once its writer paused: cancelled, it goes after its close', async () => {
    const r = await rig({ streams: true })
    const w = await r.create('log')
    await w.write(randomBytes(2 * MiB))
    await eventually(() => r.dataBytes === 2 * MiB, 'streamed')
    await r.put('small', 'hello')
    await eventually(async () => (await r.inboxFile('small')).toString() === 'hello', 'the small file goes past the paused stream', 5000)
    expect(r.toReceiver.some(m => m.type === 'xcancel')).toBe(true)
    await w.write(randomBytes(MiB))
    await w.close()
    await eventually(async () => (await r.inboxFile('log')).length === 3 * MiB, 'the closed file delivered')
    expect(r.kinds).toEqual(['stream', 'tar', 'file'])
  })

  it('keeps a stream whose writer pauses past the answer timeout as one offer, though the receiver holds some of it unacknowledged', async () => {
    // The receiver writes and acknowledges 768 KiB at a time (a quarter of the window): of the first MiB, a quarter waits.
    const r = await rig({ streams: true, settings: { timeoutMs: 300, windowBytes: 3 * MiB } })
    const data = randomBytes(MiB + 3000)
    const w = await r.create('log')
    await w.write(data.subarray(0, MiB))
    await eventually(() => r.dataBytes === MiB, 'a whole read sent as written')
    await new Promise(resolve => setTimeout(resolve, 500))
    // Less than a read goes at the close.
    await w.write(data.subarray(MiB))
    expect(r.dataBytes).toBe(MiB)
    await w.close()
    await eventually(async () => (await r.inboxFile('log')).equals(data), 'delivered')
    expect(r.kinds).toEqual(['stream'])
    expect(r.dataBytes).toBe(data.length)
  })

  it('drops a stream that passes what the quota left at its offer, and sends the file once closed, when it fits', async () => {
    let quota = 3 * MiB / 2
    const r = await rig({ streams: true, quota: () => quota })
    const data = randomBytes(2 * MiB)
    const w = await r.create('big')
    await w.write(data)
    await eventually(() => r.toSender.some(m => m.type === 'xforgot'), 'the stream cancelled')
    expect(r.toSender.find(m => m.type === 'xdone')).toMatchObject({ result: 'retry', reason: expect.stringMatching(/^no room: the stream passed the 1572864 bytes/) })
    expect(await partials(r)).toEqual([])
    quota = 0
    await w.close()
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered once closed')
    // Not offered again as a stream while it was written.
    expect(r.kinds).toEqual(['stream', 'file'])
  })

  it('cancels a stream cut off with its link when the peer comes back as a version without streams, and sends the file once closed', async () => {
    let streams = true
    const r = await rig({ streams: true, supports: () => streams })
    const data = randomBytes(2 * MiB)
    const w = await r.create('big')
    await w.write(data)
    await eventually(() => r.dataBytes === 2 * MiB, 'streamed')
    r.setUp(false)
    streams = false
    r.setUp(true)
    await eventually(() => r.toSender.some(m => m.type === 'xforgot'), 'the stream cancelled')
    // Not offered again as a stream to a peer that could not decode it.
    expect(r.kinds).toEqual(['stream'])
    await w.close()
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered once closed')
    expect(r.kinds).toEqual(['stream', 'file'])
  })

  it('sends nothing of a file being written to a peer that does not take streams', async () => {
    const r = await rig()
    const data = randomBytes(2 * MiB)
    const w = await r.create('big')
    await w.write(data)
    await new Promise(resolve => setTimeout(resolve, 200))
    expect(r.toReceiver).toEqual([])
    await w.close()
    await eventually(async () => (await r.inboxFile('big')).equals(data), 'delivered after the close')
    expect(r.kinds).toEqual(['file'])
  })
})
