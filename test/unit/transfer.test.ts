// Sender and receiver in one process over a fake link that can go down and
// lose what was in flight: packets, the window, and resuming from the last
// acknowledged offset.
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { systemClock } from '../../src/lib/clock.js'
import { silentLogger } from '../../src/lib/log.js'
import { InboxReceiver, OutboxSender, badRelPath, type TransferSettings } from '../../src/transport/transfer.js'
import type { Message } from '../../src/transport/messages/index.js'
import { eventually, tempDir } from '../helpers/net.js'

const settings: TransferSettings = {
  batchFiles: 10, batchMs: 10, packetBytes: 64 << 10, windowBytes: 256 << 10,
  largeFileBytes: 1 << 20, bundleMaxBytes: 4 << 20, ackEveryBytes: 4 << 20, retryMs: 50
}

/** prepare fills the outbox before the sender starts (and scans it). */
async function rig (prepare: (outbox: string) => Promise<void> = async () => {}) {
  const dir = await tempDir()
  const outbox = path.join(dir, 'outbox')
  const inbox = path.join(dir, 'inbox')
  await mkdir(outbox, { recursive: true })
  await prepare(outbox)
  let up = true
  let maxUnacked = 0
  let sentTop = 0
  let ackedTop = 0
  const offers: { offset: number }[] = []
  const log: Message[] = []
  let dropData: ((m: Message) => boolean) | undefined
  const receiver = new InboxReceiver(path.join(dir, 'partial'), {
    log: silentLogger, settings, inboxOf: () => inbox, quotaOf: () => 0, onReceived: () => {}
  })
  const sender: OutboxSender = new OutboxSender('beta', outbox, path.join(dir, 'spool'), {
    isUp: () => up,
    send: (m) => {
      if (!up) throw new Error('down')
      log.push(m)
      if (m.type === 'xdata') {
        sentTop = Math.max(sentTop, m.offset + m.data.length)
        maxUnacked = Math.max(maxUnacked, sentTop - ackedTop)
        if (dropData?.(m) === true) return
      }
      receiver.onMessage('alpha', m, (r) => {
        if (!up) return
        if (r.type === 'xack') ackedTop = Math.max(ackedTop, r.offset)
        if (r.type === 'xaccept') offers.push({ offset: r.offset })
        if (r.type === 'xaccept') { ackedTop = r.offset; sentTop = r.offset }
        sender.onMessage(r)
      })
    }
  }, { clock: systemClock, log: silentLogger, settings })
  await sender.start()
  return {
    dir, outbox, inbox, sender, offers, log,
    get maxUnacked () { return maxUnacked },
    setUp (v: boolean) { up = v; if (v) sender.linkUp(); else sender.linkDown() },
    dropWhere (f: ((m: Message) => boolean) | undefined) { dropData = f }
  }
}

describe('transfer', () => {
  it('cuts a large file into packets, never more than the window unacknowledged', async () => {
    const r = await rig()
    const data = randomBytes(3 << 20)
    await writeFile(path.join(r.outbox, 'big'), data)
    r.sender.ready('big')
    await eventually(async () => (await readFile(path.join(r.inbox, 'big')).catch(() => Buffer.alloc(0))).equals(data), 'delivered')
    const packets = r.log.filter(m => m.type === 'xdata')
    expect(packets.length).toBe(48)
    expect(Math.max(...packets.map(m => m.type === 'xdata' ? m.data.length : 0))).toBe(64 << 10)
    expect(r.maxUnacked).toBeLessThanOrEqual(settings.windowBytes)
    expect(await readdir(r.outbox)).toEqual([])
  })

  it('resumes from the last acknowledged offset after the link goes down mid-way', async () => {
    const r = await rig()
    const data = randomBytes(4 << 20)
    await writeFile(path.join(r.outbox, 'big'), data)
    let cut = false
    r.dropWhere((m) => {
      if (!cut && m.type === 'xdata' && m.offset >= (2 << 20)) {
        cut = true
        r.setUp(false)
        setTimeout(() => r.setUp(true), 50)
        return true
      }
      return false
    })
    r.sender.ready('big')
    await eventually(async () => (await readFile(path.join(r.inbox, 'big')).catch(() => Buffer.alloc(0))).equals(data), 'delivered')
    expect(r.offers.length).toBe(2)
    expect(r.offers[1].offset).toBeGreaterThan(1 << 20)
    expect(r.offers[1].offset % (64 << 10)).toBe(0)
  })

  it('discards a transfer whose data was corrupted and sends it again', async () => {
    const r = await rig()
    const data = randomBytes(2 << 20)
    await writeFile(path.join(r.outbox, 'big'), data)
    let flipped = false
    r.dropWhere((m) => {
      if (!flipped && m.type === 'xdata' && m.offset === 1 << 20) {
        flipped = true
        m.data[10] ^= 1
      }
      return false
    })
    r.sender.ready('big')
    await eventually(async () => createHash('sha256').update(await readFile(path.join(r.inbox, 'big')).catch(() => Buffer.alloc(0))).digest('hex') === createHash('sha256').update(data).digest('hex'), 'delivered intact', 15_000)
    expect(flipped).toBe(true)
    expect(r.offers.length).toBeGreaterThanOrEqual(2)
  })

  it('batches small files into one tar transfer', async () => {
    const r = await rig(async (outbox) => {
      await mkdir(path.join(outbox, 'd'))
      for (let i = 0; i < 5; i++) await writeFile(path.join(outbox, 'd', `f${i}`), `file ${i}`)
    })
    await eventually(async () => (await readdir(path.join(r.inbox, 'd')).catch(() => [])).length === 5, 'delivered')
    expect(r.log.filter(m => m.type === 'xoffer')).toHaveLength(1)
    expect(r.log.find(m => m.type === 'xoffer')).toMatchObject({ kind: 'tar' })
    expect(await readFile(path.join(r.inbox, 'd', 'f3'), 'utf8')).toBe('file 3')
  })

  it('checks relative paths from peers', () => {
    expect(badRelPath('a/b.txt')).toBeUndefined()
    expect(badRelPath('../x')).toMatch(/\.\./)
    expect(badRelPath('a/../../x')).toMatch(/\.\./)
    expect(badRelPath('/etc/passwd')).toMatch(/absolute/)
    expect(badRelPath('a//b')).toMatch(/empty/)
    expect(badRelPath('x'.repeat(256))).toMatch(/too long/)
    expect(badRelPath('.peerfs-x')).toMatch(/reserved/)
    expect(badRelPath('a\0b')).toMatch(/NUL/)
  })
})
