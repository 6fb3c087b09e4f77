// peers/<id>/svc/NN: the client side of a transaction with service NN.
//
// Bytes written on a handle form one request. It is sent at the handle's
// first read after writing, or at close (flush), which then waits for the
// outcome so a write-only caller learns the errno from close(2), or when
// the handle is polled (a poller that wrote is waiting for the reply). A request
// sent at close becomes the file's last outcome: the next open that reads
// without writing gets it (waiting if still in flight); with no last outcome
// such a read sends an empty request, so `cat svc/02` asks for info.
// Reading returns the reply, then EOF. Writing again after a request was
// sent starts a new one.
import { E, FsError, PeerfsError } from '../lib/errors.js'
import type { PeerView } from './backend.js'
import { Body } from './body.js'
import { POLLIN, POLLOUT, S_IFREG, type Attr, type FileNode, type Handle, type OpenContext, type ReadContext } from './types.js'
import { Waiters } from '../lib/wait.js'

/** One sent request and, once settled, its reply or error. */
class Outcome {
  reply: Buffer | undefined
  error: PeerfsError | undefined
  private readonly settled = new Waiters()
  private done = false

  constructor (promise: Promise<Buffer>, onSettle: () => void) {
    promise.then(
      (r) => { this.reply = r },
      (e: unknown) => { this.error = e instanceof PeerfsError ? e : new FsError(E.EIO, String((e as Error)?.message ?? e)) }
    ).finally(() => {
      this.done = true
      this.settled.notify()
      onSettle()
    })
  }

  get isDone (): boolean { return this.done }

  async wait (signal?: AbortSignal): Promise<void> {
    while (!this.done) await this.settled.wait(signal)
  }
}

export class RequestFile implements FileNode {
  private last: Outcome | undefined
  /** Handles waiting on `last` for poll, told when it settles. */
  private readonly lastWatchers = new Set<() => void>()

  constructor (private readonly peer: PeerView, private readonly svc: number, private readonly mtimeMs: number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o666, size: 0, mtimeMs: this.mtimeMs }
  }

  truncate (): void {}

  open (ctx: OpenContext): Handle {
    const body = new Body(() => this.peer.maxRequestBytes)
    let sent: Outcome | undefined
    let readPos = 0

    const send = (): Outcome => {
      const payload = body.take()
      readPos = 0
      sent = new Outcome(this.peer.request(this.svc, payload), ctx.wake)
      ctx.wake()
      return sent
    }

    const watchLast = (): void => ctx.wake()
    this.lastWatchers.add(watchLast)

    return {
      direct: true,
      write: (data: Buffer) => {
        sent = undefined
        return body.append(data)
      },
      read: async (len: number, _pos: number, rc: ReadContext) => {
        if (sent === undefined) {
          if (body.length === 0 && !body.failed && this.last !== undefined) sent = this.last
          else send()
        }
        const o = sent as Outcome
        if (!o.isDone) {
          if (rc.nonblock) throw new FsError(E.EAGAIN, 'reply not here yet')
          await o.wait(rc.signal)
        }
        if (o.error !== undefined) throw o.error
        const reply = o.reply as Buffer
        const out = reply.subarray(readPos, readPos + len)
        readPos += out.length
        return out
      },
      flush: async () => {
        if (body.length === 0 && !body.failed) return
        const o = send()
        this.last = o
        o.wait().then(() => { for (const w of this.lastWatchers) w() }, () => {})
        await o.wait()
        if (o.error !== undefined) throw o.error
      },
      poll: () => {
        // A caller polling after writing waits for the reply: send now.
        if (body.length > 0) send()
        if (sent === undefined) {
          // Readable only if a read would return the last reply at once.
          return POLLOUT | (this.last?.isDone === true ? POLLIN : 0)
        }
        return sent.isDone ? POLLIN | POLLOUT : 0
      },
      release: () => { this.lastWatchers.delete(watchLast) }
    }
  }
}
