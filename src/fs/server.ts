// svc/NN: the server side of local service NN. Reading returns one whole
// request, `<peer-id> <byte-length>\n<payload>` (over several reads if it
// does not fit); the next write(2) is the reply. The queue behind it, who
// may call and what a caller is told, are the ServiceHost's; the framing,
// the read cursor and blocking belong here.
//
// A handle holds at most one request, the one it read last. Reading the
// next request, or closing, without replying abandons it (its caller gets
// ECONNRESET from the host).
//
// When is a reply complete? The kernel cuts one write(2) into requests of
// at most MAX_WRITE bytes, the first one shorter when the caller's buffer
// does not start on a page. So a piece shorter than MAX_WRITE - PAGE ends
// the reply at once. A longer one may be continued; the reply then ends at
// what a server does once write(2) has returned: its next read, poll
// (select, poll, epoll) or close. (A timer here cut replies under load.)
import { E, FsError } from '../lib/errors.js'
import type { ServerSeat, ServiceHost, TakenRequest } from './backend.js'
import { MAX_WRITE, POLLIN, POLLOUT, S_IFREG, type Attr, type FileNode, type Handle, type OpenContext, type ReadContext } from './types.js'

const PAGE = 4096

export class ServerFile implements FileNode {
  readonly stream = true

  constructor (private readonly host: ServiceHost, private readonly svc: number, private readonly mtimeMs: number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o666, size: 0, mtimeMs: this.mtimeMs }
  }

  truncate (): void {}

  open (ctx: OpenContext): ServerHandle {
    return new ServerHandle(this.host.serve(this.svc, ctx.wake), this.host.maxReplyBytes, ctx.wake)
  }
}

/** idle: no request to answer; holding: the last one read awaits its reply; closed: released. */
type ServerState = 'idle' | 'holding' | 'closed'

export class ServerHandle implements Handle {
  readonly direct = true
  private state: ServerState = 'idle'
  /** The request a write answers; set exactly while holding. */
  private held: TakenRequest | undefined
  /** The framed request being read out, and how far. */
  private out = Buffer.alloc(0)
  private outOff = 0
  private reply: Buffer[] = []
  private replySize = 0

  constructor (private readonly seat: ServerSeat, private readonly maxReplyBytes: number, private readonly wake: () => void) {}

  async read (len: number, _pos: number, ctx: ReadContext): Promise<Buffer> {
    if (this.outOff >= this.out.length) await this.next(ctx)
    const chunk = this.out.subarray(this.outOff, this.outOff + len)
    this.outOff += chunk.length
    return chunk
  }

  write (data: Buffer): number {
    if (this.state !== 'holding') throw new FsError(E.EINVAL, 'no request to reply to: read one first')
    if (this.replySize + data.length > this.maxReplyBytes) throw new FsError(E.EMSGSIZE, `reply over ${this.maxReplyBytes} bytes`)
    this.reply.push(data)
    this.replySize += data.length
    if (data.length < MAX_WRITE - PAGE) this.flush()
    return data.length
  }

  /** The reply written so far is complete. */
  flush (): void {
    if (this.state !== 'holding' || this.replySize === 0) return
    const reply = Buffer.concat(this.reply, this.replySize)
    this.reply = []
    this.replySize = 0
    const req = this.held as TakenRequest
    this.held = undefined
    this.state = 'idle'
    req.reply(reply)
    this.wake()
  }

  poll (): number {
    // A server that polls after writing has finished its reply.
    this.flush()
    const readable = this.outOff < this.out.length || this.seat.waiting()
    return (readable ? POLLIN : 0) | (this.state === 'holding' ? POLLOUT : 0)
  }

  release (): void {
    if (this.state === 'closed') return
    this.flush()
    this.abandon('closed without replying')
    this.state = 'closed'
    this.seat.leave()
  }

  /** Takes the next request, waiting for one unless non-blocking. */
  private async next (ctx: ReadContext): Promise<void> {
    this.flush()
    this.abandon('read another request without replying')
    let req = this.seat.take()
    while (req === undefined) {
      if (ctx.nonblock) throw new FsError(E.EAGAIN, 'no request waiting')
      await this.seat.arrival(ctx.signal)
      req = this.seat.take()
    }
    await req.accept()
    this.held = req
    this.state = 'holding'
    this.out = Buffer.concat([Buffer.from(`${req.peer} ${req.payload.length}\n`), req.payload])
    this.outOff = 0
    this.wake()
  }

  private abandon (why: string): void {
    if (this.state !== 'holding') return
    const req = this.held as TakenRequest
    this.held = undefined
    this.state = 'idle'
    this.reply = []
    this.replySize = 0
    req.abandon(why)
  }
}
