// The tree's conformance suite (STYLE rule 14): one list of cases, run by
// inprocess.test.ts over buildTree with a fake backend and by
// mount.test.ts on a real mount. A case sees node alpha's tree, with peer
// beta (up, alias ET) and peer gamma (configured, never up), and beta's
// tree, where the server side svc/NN is (in-process the two are one tree
// whose transactions loop back). Each case closes what it opens and leaves
// beta up.
import { expect } from 'vitest'
import { FsFail, type Driver } from './driver.js'

export interface World {
  /** alpha's tree. */
  fs: Driver
  /** beta's tree (the server side of alpha's peers/beta/svc/NN). */
  server: Driver
  self: string
  maxRequestBytes: number
  now: () => number
}

export interface Case {
  name: string
  run: (w: World) => Promise<void>
}

const b = (s: string): Buffer => Buffer.from(s)

/** 'ok', or the errno name the call failed with. */
export async function errno (p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'ok'
  } catch (err) {
    if (err instanceof FsFail) return err.code
    throw err
  }
}

async function readAll (d: Driver, fd: number): Promise<Buffer> {
  const parts: Buffer[] = []
  for (let i = 0; i < 10_000; i++) {
    const chunk = await d.read(fd, 65536)
    if (chunk.length === 0) return Buffer.concat(parts)
    parts.push(chunk)
  }
  throw new Error('no EOF after 10,000 reads')
}

async function cat (d: Driver, path: string): Promise<string> {
  const fd = await d.open(path, { acc: 'r' })
  try {
    return (await readAll(d, fd)).toString()
  } finally {
    await d.close(fd)
  }
}

/** Writes all of data as a program's write loop does: 'ok' or the first errno. */
async function writeAll (d: Driver, fd: number, data: Buffer): Promise<string> {
  let off = 0
  try {
    for (let i = 0; off < data.length && i < 10_000; i++) off += await d.write(fd, data.subarray(off))
    return off === data.length ? 'ok' : 'stuck'
  } catch (err) {
    if (err instanceof FsFail) return err.code
    throw err
  }
}

/** Reads an events descriptor until a line matches; bounded in time. */
async function waitLine (d: Driver, fd: number, re: RegExp, timeoutMs = 15_000): Promise<string> {
  const end = Date.now() + timeoutMs
  let buf = ''
  while (Date.now() < end) {
    if (!await d.readable(fd, end - Date.now())) break
    buf += (await d.read(fd, 65536)).toString()
    const lines = buf.split('\n')
    buf = lines.pop() ?? ''
    const hit = lines.find(l => re.test(l))
    if (hit !== undefined) return hit
  }
  throw new Error(`no event line matching ${String(re)} within ${timeoutMs} ms`)
}

const SVC_NAMES = Array.from({ length: 63 }, (_, i) => String(i + 1).padStart(2, '0'))

export const cases: Case[] = [
  {
    name: 'the root holds status, metrics, events, svc/, pkt/, files/, peers/ and tile/',
    run: async ({ fs }) => {
      expect(await fs.list('')).toEqual(['events', 'files', 'metrics', 'peers', 'pkt', 'status', 'svc', 'tile'])
      const kinds = await Promise.all(['status', 'metrics', 'events', 'svc', 'pkt', 'files', 'peers', 'tile'].map(async n => (await fs.stat(n)).kind))
      expect(kinds).toEqual(['file', 'file', 'file', 'dir', 'dir', 'dir', 'dir', 'dir'])
      expect(await cat(fs, 'status')).toMatch(/beta[\s\S]*gamma/)
    }
  },
  {
    name: 'peers/ lists the configured peers; an unknown one is ENOENT',
    run: async ({ fs }) => {
      expect(await fs.list('peers')).toEqual(['beta', 'gamma'])
      expect(await errno(fs.stat('peers/nobody'))).toBe('ENOENT')
      expect(await errno(fs.open('peers/nobody/state', { acc: 'r' }))).toBe('ENOENT')
    }
  },
  {
    name: 'a peer folder holds state, status, ctl, svc/, defer/, outbox/ and inbox/',
    run: async ({ fs }) => {
      expect(await fs.list('peers/beta')).toEqual(['ctl', 'defer', 'inbox', 'outbox', 'state', 'status', 'svc'])
      const kinds = await Promise.all(['state', 'status', 'ctl', 'svc', 'defer', 'outbox', 'inbox'].map(async n => (await fs.stat(`peers/beta/${n}`)).kind))
      expect(kinds).toEqual(['file', 'file', 'file', 'dir', 'dir', 'dir', 'dir'])
    }
  },
  {
    name: 'state is one word and status is key: value lines, state first',
    run: async ({ fs }) => {
      expect(await cat(fs, 'peers/beta/state')).toBe('up\n')
      const status = await cat(fs, 'peers/beta/status')
      const lines = status.trimEnd().split('\n')
      expect(lines[0]).toBe('state: up')
      for (const l of lines) expect(l).toMatch(/^[a-z_]+: \S/)
      expect(status).toMatch(/^deferred: \d+$/m)
    }
  },
  {
    name: 'svc/ and defer/ hold 01..63 (defer/ also log); 00, 64 and 1 are ENOENT',
    run: async ({ fs }) => {
      expect(await fs.list('peers/beta/svc')).toEqual(SVC_NAMES)
      expect(await fs.list('peers/beta/defer')).toEqual([...SVC_NAMES, 'log'])
      for (const n of ['00', '64', '1', 'x']) expect(await errno(fs.stat(`peers/beta/svc/${n}`))).toBe('ENOENT')
      expect((await fs.stat('peers/beta/defer/09')).kind).toBe('file')
      expect(await cat(fs, 'peers/beta/defer/log')).toBe('')
    }
  },
  {
    name: 'the server side svc/ holds the user services 09..63 only',
    run: async ({ server }) => {
      expect(await server.list('svc')).toEqual(SVC_NAMES.slice(8))
      for (const n of ['01', '08', '64']) expect(await errno(server.stat(`svc/${n}`))).toBe('ENOENT')
    }
  },
  {
    name: 'tile/ET is a symlink to ../peers/beta',
    run: async ({ fs }) => {
      expect(await fs.list('tile')).toEqual(['ET'])
      expect((await fs.stat('tile/ET')).kind).toBe('symlink')
      expect(await fs.readlink('tile/ET')).toBe('../peers/beta')
      expect(await errno(fs.stat('tile/WT'))).toBe('ENOENT')
    }
  },
  {
    name: 'outbox/ and inbox/ are folders',
    run: async ({ fs }) => {
      expect((await fs.stat('peers/beta/outbox')).kind).toBe('dir')
      expect((await fs.stat('peers/beta/inbox')).kind).toBe('dir')
      expect(await fs.list('peers/beta/inbox')).toEqual([])
    }
  },
  {
    name: 'svc/01: a request written then read on one handle gets the echo, then EOF',
    run: async ({ fs }) => {
      const fd = await fs.open('peers/beta/svc/01', { acc: 'rw' })
      await fs.write(fd, b('ping'))
      expect((await fs.read(fd, 100)).toString()).toBe('ping')
      expect((await fs.read(fd, 100)).length).toBe(0)
      // Writing again starts a new request.
      await fs.write(fd, b('pong'))
      expect((await fs.read(fd, 100)).toString()).toBe('pong')
      await fs.close(fd)
    }
  },
  {
    name: 'svc/01: a request written and closed leaves its reply for the next open that reads',
    run: async ({ fs }) => {
      const w = await fs.open('peers/beta/svc/01', { acc: 'w' })
      await fs.write(w, b('hello\n'))
      await fs.close(w)
      expect(await cat(fs, 'peers/beta/svc/01')).toBe('hello\n')
      // A read without writing and without a last reply asks with an empty request.
      expect(await cat(fs, 'peers/beta/svc/02')).toMatch(/^services: 01 02/m)
    }
  },
  {
    name: 'opening a folder for writing is EISDIR',
    run: async ({ fs }) => {
      expect(await errno(fs.open('peers/beta', { acc: 'w' }))).toBe('EISDIR')
      expect(await errno(fs.open('peers/beta/svc', { acc: 'rw' }))).toBe('EISDIR')
    }
  },
  {
    name: 'ctl: reading lists the commands; an unknown command fails its write with EINVAL',
    run: async ({ fs }) => {
      expect(await cat(fs, 'peers/beta/ctl')).toBe('commands: reconnect reset disconnect\n')
      const fd = await fs.open('peers/beta/ctl', { acc: 'w' })
      expect(await errno(fs.write(fd, b('bogus\n')))).toBe('EINVAL')
      expect(await fs.write(fd, b('reset\n'))).toBe(6)
      await fs.close(fd)
      expect(await cat(fs, 'peers/beta/state')).toBe('up\n')
    }
  },
  {
    name: 'ctl: an over-long line is refused and discarded up to its newline; the next line runs',
    run: async ({ fs }) => {
      const fd = await fs.open('peers/beta/ctl', { acc: 'w' })
      expect(await errno(fs.write(fd, Buffer.alloc(5000, 'x')))).toBe('EINVAL')
      expect(await errno(fs.write(fd, Buffer.alloc(100, 'y')))).toBe('EINVAL')
      expect(await fs.write(fd, b('yyy\nreset\n'))).toBe(10)
      expect(await errno(fs.write(fd, b('bogus\n')))).toBe('EINVAL')
      await fs.close(fd)
    }
  },
  {
    name: 'a request over max_request_bytes fails with EMSGSIZE and nothing is sent',
    run: async ({ fs, maxRequestBytes }) => {
      const fd = await fs.open('peers/beta/svc/01', { acc: 'rw' })
      expect(await writeAll(fs, fd, Buffer.alloc(maxRequestBytes + 1, 'x'))).toBe('EMSGSIZE')
      expect(await errno(fs.read(fd, 100))).toBe('EMSGSIZE')
      await fs.close(fd)
      const w = await fs.open('peers/beta/defer/09', { acc: 'w' })
      expect(await writeAll(fs, w, Buffer.alloc(maxRequestBytes + 1, 'x'))).toBe('EMSGSIZE')
      expect(await errno(fs.close(w))).toBe('EMSGSIZE')
    }
  },
  {
    name: 'a service with no server answers ECONNREFUSED',
    run: async ({ fs }) => {
      const fd = await fs.open('peers/beta/svc/40', { acc: 'rw' })
      await fs.write(fd, b('anyone?'))
      expect(await errno(fs.read(fd, 100))).toBe('ECONNREFUSED')
      await fs.close(fd)
    }
  },
  {
    name: 'a peer disconnected by ctl answers EHOSTUNREACH at once',
    run: async ({ fs }) => {
      const ctl = await fs.open('peers/gamma/ctl', { acc: 'w' })
      await fs.write(ctl, b('disconnect\n'))
      const fd = await fs.open('peers/gamma/svc/01', { acc: 'rw' })
      await fs.write(fd, b('x'))
      expect(await errno(fs.read(fd, 100))).toBe('EHOSTUNREACH')
      await fs.close(fd)
      await fs.write(ctl, b('reset\n'))
      await fs.close(ctl)
    }
  },
  {
    name: 'a server reads `<peer> <length>\\n<payload>`, in pieces if need be, and its write is the reply',
    run: async ({ fs, server, self }) => {
      const srv = await server.open('svc/21', { acc: 'rw' })
      const fd = await fs.open('peers/beta/svc/21', { acc: 'rw' })
      await fs.write(fd, b('hello'))
      const reply = fs.read(fd, 100)
      const head = await server.read(srv, 4)
      const rest = await server.read(srv, 100)
      expect(Buffer.concat([head, rest]).toString()).toBe(`${self} 5\nhello`)
      expect(await server.write(srv, b('HELLO'))).toBe(5)
      expect((await reply).toString()).toBe('HELLO')
      // A write with nothing to answer is EINVAL.
      expect(await errno(server.write(srv, b('again')))).toBe('EINVAL')
      await fs.close(fd)
      await server.close(srv)
    }
  },
  {
    name: 'a server that closes without replying: the caller gets ECONNRESET',
    run: async ({ fs, server }) => {
      const srv = await server.open('svc/27', { acc: 'rw' })
      const fd = await fs.open('peers/beta/svc/27', { acc: 'rw' })
      await fs.write(fd, b('x'))
      const reply = errno(fs.read(fd, 100))
      expect((await server.read(srv, 100)).toString()).toMatch(/ 1\nx$/)
      await server.close(srv)
      expect(await reply).toBe('ECONNRESET')
      await fs.close(fd)
    }
  },
  {
    name: 'O_NONBLOCK: EAGAIN until there is something to read; readable once there is',
    run: async ({ fs, server, self }) => {
      const srv = await server.open('svc/22', { acc: 'rw', nonblock: true })
      expect(await errno(server.read(srv, 100))).toBe('EAGAIN')
      expect(await server.readable(srv, 0)).toBe(false)
      const ev = await fs.open('events', { acc: 'r', nonblock: true })
      expect(await errno(fs.read(ev, 100))).toBe('EAGAIN')
      await fs.close(ev)
      const fd = await fs.open('peers/beta/svc/22', { acc: 'rw', nonblock: true })
      await fs.write(fd, b('are you there'))
      expect(await errno(fs.read(fd, 100))).toBe('EAGAIN')
      expect(await fs.readable(fd, 0)).toBe(false)
      expect(await server.readable(srv, 10_000)).toBe(true)
      expect((await server.read(srv, 100)).toString()).toBe(`${self} 13\nare you there`)
      await server.write(srv, b('late'))
      expect(await fs.readable(fd, 10_000)).toBe(true)
      expect((await fs.read(fd, 100)).toString()).toBe('late')
      await fs.close(fd)
      await server.close(srv)
    }
  },
  {
    name: 'streams answer ESPIPE to lseek: svc/NN both sides, ctl, defer/NN; status and events seek',
    run: async ({ fs, server }) => {
      const streams: Array<[Driver, string, 'r' | 'w' | 'rw']> = [
        [fs, 'peers/beta/svc/01', 'rw'], [server, 'svc/26', 'rw'], [fs, 'peers/beta/ctl', 'w'],
        [fs, 'peers/beta/defer/09', 'w']
      ]
      for (const [d, path, acc] of streams) {
        const fd = await d.open(path, { acc })
        expect(`${path} ${await errno(d.lseek(fd, 0))}`).toBe(`${path} ESPIPE`)
        await d.close(fd)
      }
      // tail -f follows events by seeking to its size (events-file.ts).
      for (const path of ['peers/beta/status', 'events']) {
        const fd = await fs.open(path, { acc: 'r' })
        expect(await fs.lseek(fd, 3)).toBe(3)
        await fs.close(fd)
      }
    }
  },
  {
    name: 'events: whole lines `<unix-ms> <peer> <event> [detail]` from the open onward',
    run: async ({ fs, now }) => {
      const ev = await fs.open('events', { acc: 'r', nonblock: true })
      const t0 = now()
      const ctl = await fs.open('peers/beta/ctl', { acc: 'w' })
      await fs.write(ctl, b('disconnect\n'))
      const down = await waitLine(fs, ev, / beta down/)
      const [ts, peer, event, ...detail] = down.split(' ')
      expect([peer, event, detail.join(' ')]).toEqual(['beta', 'down', 'disconnected by ctl'])
      expect(Number(ts)).toBeGreaterThanOrEqual(t0)
      expect(Number(ts)).toBeLessThanOrEqual(now())
      await fs.write(ctl, b('reconnect\n'))
      await fs.close(ctl)
      expect(await waitLine(fs, ev, / beta up/)).toMatch(/^\d+ beta up/)
      await fs.close(ev)
      expect(await cat(fs, 'peers/beta/state')).toBe('up\n')
    }
  }
]
