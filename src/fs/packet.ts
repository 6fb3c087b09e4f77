// pkt/NN: packet channel NN with every peer, one fd for all of them.
//
// A read returns one whole record, `<peer> <length>\n<payload>` for a
// packet or `<peer> up\n` / `<peer> down\n` (over several reads only if
// the caller's buffer is smaller than the record). A write carries one or
// more whole records `<peer|alias|*> <length>\n<payload>`; they are taken
// in order, and a write that stops at a record that cannot be taken
// returns the bytes of those before it (a short write, as a socket does),
// or that record's errno if it is the first. So a write(2) the kernel cuts
// at max_write ends short at the last whole record, and the caller writes
// the rest again. fuse-native gives write() neither the file's current
// flags nor an interrupt, so a write is non-blocking if the file was
// opened O_NONBLOCK.
import { constants as fsc } from 'node:fs'
import { E, FsError } from '../lib/errors.js'
import { ALL_SERVICES, svcName } from '../lib/svc.js'
import { Waiters } from '../lib/wait.js'
import type { PacketHost, PacketRecord, PacketSession } from './backend.js'
import { POLLIN, POLLOUT, S_IFDIR, S_IFREG, type Attr, type DirNode, type FileNode, type Handle, type OpenContext, type ReadContext } from './types.js'

/** Longest header line of a written record: `<peer|alias|*> <length>`. */
const MAX_HEADER = 80
const HEADER_RE = /^(\S+) (\d{1,10})$/

interface Written { to: string, payload: Buffer, end: number }

/** The record at data[off...]; throws EINVAL (malformed or partial) or EMSGSIZE. */
export function parseRecord (data: Buffer, off: number, maxPacket: number): Written {
  const nl = data.subarray(off, off + MAX_HEADER + 1).indexOf(0x0a)
  if (nl < 0) {
    const why = data.length - off <= MAX_HEADER ? 'a partial record (no header line)' : `no header line in the first ${MAX_HEADER} bytes`
    throw new FsError(E.EINVAL, `pkt write: ${why}`)
  }
  const line = data.toString('latin1', off, off + nl)
  const m = HEADER_RE.exec(line)
  if (m === null) throw new FsError(E.EINVAL, `pkt write: header ${JSON.stringify(line)} is not "<peer> <length>"`)
  const size = Number(m[2])
  if (size > maxPacket) throw new FsError(E.EMSGSIZE, `pkt write: packet of ${size} bytes over max_packet_bytes ${maxPacket}`)
  const start = off + nl + 1
  if (start + size > data.length) throw new FsError(E.EINVAL, `pkt write: a partial record (${data.length - start} of ${size} bytes)`)
  return { to: m[1], payload: data.subarray(start, start + size), end: start + size }
}

function frame (r: PacketRecord): Buffer {
  if (r.event !== undefined) return Buffer.from(`${r.peer} ${r.event}\n`)
  const head = `${r.peer} ${r.payload.length}\n`
  const out = Buffer.allocUnsafe(Buffer.byteLength(head) + r.payload.length)
  const n = out.write(head)
  r.payload.copy(out, n)
  return out
}

export class PacketHandle implements Handle {
  readonly direct = true
  private readonly session: PacketSession
  private readonly waiters = new Waiters()
  /** The rest of a record a short read left. */
  private rest: Buffer | undefined

  constructor (private readonly host: PacketHost, chan: number, reads: boolean, private readonly nonblock: boolean, wake: () => void) {
    this.session = host.open(chan, reads, () => {
      this.waiters.notify()
      wake()
    })
  }

  read (len: number, _pos: number, ctx: ReadContext): Buffer | Promise<Buffer> {
    if (this.rest !== undefined) return this.deliver(this.rest, len)
    const r = this.session.next()
    if (r !== undefined) return this.deliver(frame(r), len)
    if (ctx.nonblock) throw new FsError(E.EAGAIN, 'no packet waiting')
    return this.waitRecord(len, ctx.signal)
  }

  private async waitRecord (len: number, signal: AbortSignal | undefined): Promise<Buffer> {
    for (;;) {
      await this.waiters.wait(signal)
      const r = this.session.next()
      if (r !== undefined) return this.deliver(frame(r), len)
    }
  }

  private deliver (rec: Buffer, len: number): Buffer {
    this.rest = rec.length > len ? rec.subarray(len) : undefined
    return rec.length > len ? rec.subarray(0, len) : rec
  }

  write (data: Buffer): number | Promise<number> {
    return this.writeFrom(data, 0)
  }

  /** Takes records from off on; synchronous until one has to wait for a window. */
  private writeFrom (data: Buffer, off: number): number | Promise<number> {
    while (off < data.length) {
      const from = off
      let waiting: void | Promise<void>
      try {
        const rec = parseRecord(data, off, this.host.maxPacketBytes)
        waiting = this.session.send(rec.to, rec.payload, this.nonblock)
        off = rec.end
      } catch (err) {
        if (from > 0) return from
        throw err
      }
      if (waiting !== undefined) {
        const next = off
        return waiting.then(() => this.writeFrom(data, next), (err: unknown) => {
          if (from > 0) return from
          throw err
        })
      }
    }
    return off
  }

  poll (): number {
    return (this.rest !== undefined || this.session.readable() ? POLLIN : 0) | (this.session.writable() ? POLLOUT : 0)
  }

  release (): void {
    this.session.close()
  }
}

export class PacketFile implements FileNode {
  constructor (private readonly host: PacketHost, private readonly chan: number, private readonly mtimeMs: number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o666, size: 0, mtimeMs: this.mtimeMs }
  }

  /** `echo ... > pkt/NN` opens with O_TRUNC: nothing to truncate. */
  truncate (): void {}

  open (ctx: OpenContext): Handle {
    const reads = (ctx.flags & 3) !== fsc.O_WRONLY
    return new PacketHandle(this.host, this.chan, reads, (ctx.flags & fsc.O_NONBLOCK) !== 0, ctx.wake)
  }
}

/** pkt/: one channel file per number 01..63. */
export class PacketDir implements DirNode {
  private readonly files: Map<string, PacketFile>
  constructor (host: PacketHost, private readonly mtimeMs: number) {
    this.files = new Map(ALL_SERVICES.map(n => [svcName(n), new PacketFile(host, n, mtimeMs)]))
  }

  attr (): Attr { return { mode: S_IFDIR | 0o755, mtimeMs: this.mtimeMs } }
  list (): string[] { return [...this.files.keys()] }
  lookup (name: string): PacketFile | undefined { return this.files.get(name) }
}
