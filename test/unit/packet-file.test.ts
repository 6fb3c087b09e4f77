// pkt/NN's handle without a mount: record framing on read (one record per
// read, split only for a short buffer), records parsed from writes (short
// write at the first that cannot go), blocking and non-blocking reads, poll.
import { describe, expect, it } from 'vitest'
import { E, FsError, type PeerfsError } from '../../src/lib/errors.js'
import type { PacketHost, PacketRecord, PacketSession } from '../../src/fs/backend.js'
import { PacketDir, parseRecord } from '../../src/fs/packet.js'
import { POLLIN, POLLOUT, type Handle } from '../../src/fs/types.js'

class FakeSession implements PacketSession {
  records: PacketRecord[] = []
  sent: Array<[string, string]> = []
  full = false
  wake: () => void = () => {}
  next (): PacketRecord | undefined { return this.records.shift() }
  send (to: string, payload: Buffer, nonblock: boolean): void {
    if (to === 'nobody') throw new FsError(E.ENOENT, 'no peer')
    if (this.full && nonblock) throw new FsError(E.EAGAIN, 'full')
    this.sent.push([to, payload.toString()])
  }

  readable (): boolean { return this.records.length > 0 }
  writable (): boolean { return !this.full }
  close (): void {}
}

function open (flags = 2): { h: Handle, s: FakeSession } {
  const s = new FakeSession()
  const host: PacketHost = {
    maxPacketBytes: 100,
    open: (_chan, _reads, wake) => {
      s.wake = wake
      return s
    }
  }
  const file = new PacketDir(host, 0).lookup('05')
  if (file === undefined) throw new Error('no pkt/05')
  return { h: file.open({ flags, wake: () => {} }) as Handle, s }
}

async function errnoOf (fn: () => unknown): Promise<number | undefined> {
  try {
    await fn()
  } catch (err) {
    return (err as PeerfsError).errno
  }
  return undefined
}

describe('pkt/NN handle', () => {
  it('reads one whole record per read, over several reads only when the buffer is short', async () => {
    const { h, s } = open()
    s.records.push({ peer: 'beta', payload: Buffer.from('hello') }, { peer: 'beta', event: 'down' })
    const ctx = { nonblock: true }
    expect((h.read?.(3, 0, ctx) as Buffer).toString()).toBe('bet')
    expect(h.poll?.()).toBe(POLLIN | POLLOUT)
    expect((h.read?.(100, 0, ctx) as Buffer).toString()).toBe('a 5\nhello')
    expect((h.read?.(100, 0, ctx) as Buffer).toString()).toBe('beta down\n')
    expect(await errnoOf(() => h.read?.(100, 0, ctx))).toBe(E.EAGAIN)
    s.full = true
    expect(h.poll?.()).toBe(0)
  })

  it('a blocking read waits for the session to wake it', async () => {
    const { h, s } = open()
    const r = h.read?.(100, 0, { nonblock: false }) as Promise<Buffer>
    s.records.push({ peer: 'gamma', event: 'up' })
    s.wake()
    expect((await r).toString()).toBe('gamma up\n')
  })

  it('takes every whole record of a write; stops short at the first that cannot go, or fails with its errno', async () => {
    const { h, s } = open()
    expect(h.write?.(Buffer.from('beta 2\nhi* 0\nET 3\nabc'), 0)).toBe(21)
    expect(s.sent).toEqual([['beta', 'hi'], ['*', ''], ['ET', 'abc']])
    expect(h.write?.(Buffer.from('beta 1\nxbeta 5\nab'), 0)).toBe(8)
    expect(h.write?.(Buffer.from('beta 1\nxnobody 1\ny'), 0)).toBe(8)
    expect(await errnoOf(() => h.write?.(Buffer.from('nobody 1\ny'), 0))).toBe(E.ENOENT)
    expect(await errnoOf(() => h.write?.(Buffer.from('beta 5\nab'), 0))).toBe(E.EINVAL)
    expect(await errnoOf(() => h.write?.(Buffer.from('beta'), 0))).toBe(E.EINVAL)
    expect(await errnoOf(() => h.write?.(Buffer.from('beta five\nab'), 0))).toBe(E.EINVAL)
    expect(await errnoOf(() => h.write?.(Buffer.from('beta 101\n' + 'x'.repeat(101)), 0))).toBe(E.EMSGSIZE)
    expect(await errnoOf(() => h.write?.(Buffer.alloc(200, 0x61), 0))).toBe(E.EINVAL)
  })

  it('writes are non-blocking when the file was opened O_NONBLOCK', async () => {
    const { h, s } = open(2 | 0o4000)
    s.full = true
    expect(await errnoOf(() => h.write?.(Buffer.from('beta 1\nx'), 0))).toBe(E.EAGAIN)
  })

  it('parses a record at any offset', () => {
    const b = Buffer.from('xxbeta 3\nabcrest')
    expect(parseRecord(b, 2, 10)).toMatchObject({ to: 'beta', end: 12 })
  })
})
