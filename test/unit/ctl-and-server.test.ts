// Bounds of the tree's stateful handles and the service queues behind
// svc/NN, driven in-process: a ctl line, a service's queue, a reply.
import { describe, expect, it } from 'vitest'
import { CtlHandle, MAX_LINE } from '../../src/fs/ctl.js'
import { ServerFile } from '../../src/fs/server.js'
import { E, TxError } from '../../src/lib/errors.js'
import { LocalServices } from '../../src/services/local.js'

const services = (maxQueued = 4): LocalServices => new LocalServices({
  id: 'beta', maxQueued, maxRequestBytes: 1 << 20, builtin: () => Buffer.alloc(0), allowed: () => true
})
const errnoOf = async (p: Promise<unknown>): Promise<number> => await p.then(() => 0, (e: TxError) => e.errno)

describe('ctl handle', () => {
  it('holds at most MAX_LINE bytes of a line without newline, however much is written', () => {
    const ran: string[] = []
    const h = new CtlHandle(['reset'], (c) => ran.push(c))
    const chunk = Buffer.alloc(128 << 10, 'x')
    let refused = 0
    for (let i = 0; i < 256; i++) {
      try { h.write(chunk) } catch { refused++ }
      expect(h.held).toBeLessThanOrEqual(MAX_LINE)
    }
    expect(refused).toBe(256)
    expect(h.write(Buffer.from('xx\nreset\n'))).toBe(9)
    expect(ran).toEqual(['reset'])
  })

  it('a line just at MAX_LINE is kept; one byte more is refused, and the newline in the same write ends it', () => {
    const h = new CtlHandle(['reset'], () => {})
    expect(h.write(Buffer.alloc(MAX_LINE, ' '))).toBe(MAX_LINE)
    expect(() => h.write(Buffer.from(' \nreset\n'))).toThrow(/over 4096 bytes/)
    expect(h.held).toBe(0)
    expect(h.write(Buffer.from('reset\n'))).toBe(6)
  })

  it('runs a command without newline at close, and nothing of a discarded line', () => {
    const ran: string[] = []
    const h = new CtlHandle(['reset'], (c) => ran.push(c))
    h.write(Buffer.from('reset'))
    h.flush()
    expect(() => h.write(Buffer.alloc(MAX_LINE + 1, 'r'))).toThrow()
    h.flush()
    expect(ran).toEqual(['reset'])
  })
})

describe('local services behind svc/NN', () => {
  it('a full queue answers EBUSY; the requests queued when the last server leaves get ECONNRESET', async () => {
    const s = services(2)
    const handle = new ServerFile(s, 9, 0).open({ flags: 2, wake: () => {} })
    const queued = [s.call('alpha', 9, Buffer.from('1')), s.call('alpha', 9, Buffer.from('2'))]
    expect(await errnoOf(s.call('alpha', 9, Buffer.from('3')))).toBe(E.EBUSY)
    expect(s.queued(9)).toBe(2)
    handle.release()
    expect(await Promise.all(queued.map(errnoOf))).toEqual([E.ECONNRESET, E.ECONNRESET])
    expect(s.queued(9)).toBe(0)
    expect(await errnoOf(s.call('alpha', 9, Buffer.from('4')))).toBe(E.ECONNREFUSED)
  })

  it('a reply over maxReplyBytes is EMSGSIZE; a server that reads the next request abandons the first (ECONNRESET)', async () => {
    const s = services()
    const h = new ServerFile(s, 10, 0).open({ flags: 2, wake: () => {} })
    const first = s.call('alpha', 10, Buffer.from('one'))
    const second = s.call('alpha', 10, Buffer.from('two'))
    expect((await h.read(100, 0, { nonblock: true })).toString()).toBe('alpha 3\none')
    expect(() => h.write(Buffer.alloc(s.maxReplyBytes + 1))).toThrow(/reply over/)
    expect((await h.read(100, 0, { nonblock: true })).toString()).toBe('alpha 3\ntwo')
    expect(await errnoOf(first)).toBe(E.ECONNRESET)
    h.write(Buffer.from('TWO'))
    expect((await second).toString()).toBe('TWO')
    h.release()
  })

  it('svc/NN is for user services only: 01..08 and 64 are not served', () => {
    const s = services()
    for (const n of [1, 8, 64]) expect(() => s.serve(n, () => {})).toThrow(/not a user service/)
  })
})
