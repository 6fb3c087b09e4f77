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
export class Outcome {
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
  readonly stream = true
  /** The outcome of the last request sent at close, for the next open that reads without writing. */
  private last: Outcome | undefined
  /** Handles waiting on `last` for poll, told when it settles. */
  private readonly lastWatchers = new Set<() => void>()

  constructor (private readonly peer: PeerView, private readonly svc: number, private readonly mtimeMs: number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o666, size: 0, mtimeMs: this.mtimeMs }
  }

  truncate (): void {}

  open (ctx: OpenContext): RequestHandle {
    return new RequestHandle(this, ctx.wake)
  }

  get maxRequestBytes (): number { return this.peer.maxRequestBytes }

  send (payload: Buffer, onSettle: () => void): Outcome {
    return new Outcome(this.peer.request(this.svc, payload), onSettle)
  }

  get lastOutcome (): Outcome | undefined { return this.last }

  setLast (o: Outcome): void {
    this.last = o
    o.wait().then(() => { for (const w of this.lastWatchers) w() }, () => {})
  }

  /** Calls wake when the last outcome settles, until the returned function is called. */
  watchLast (wake: () => void): () => void {
    this.lastWatchers.add(wake)
    return () => { this.lastWatchers.delete(wake) }
  }
}

/** One open request file: the body being written, then the request it sent. */
export class RequestHandle implements Handle {
  readonly direct = true
  private readonly body: Body
  /** The request this handle's reads answer from; undefined until one is sent or adopted. */
  private sent: Outcome | undefined
  private readPos = 0
  private readonly unwatch: () => void

  constructor (private readonly file: RequestFile, private readonly wake: () => void) {
    this.body = new Body(() => file.maxRequestBytes)
    this.unwatch = file.watchLast(wake)
  }

  write (data: Buffer): number {
    this.sent = undefined
    return this.body.append(data)
  }

  async read (len: number, _pos: number, rc: ReadContext): Promise<Buffer> {
    if (this.sent === undefined) {
      const last = this.file.lastOutcome
      if (this.body.length === 0 && !this.body.failed && last !== undefined) this.sent = last
      else this.send()
    }
    const o = this.sent as Outcome
    if (!o.isDone) {
      if (rc.nonblock) throw new FsError(E.EAGAIN, 'reply not here yet')
      await o.wait(rc.signal)
    }
    if (o.error !== undefined) throw o.error
    const reply = o.reply as Buffer
    const out = reply.subarray(this.readPos, this.readPos + len)
    this.readPos += out.length
    return out
  }

  async flush (): Promise<void> {
    if (this.body.length === 0 && !this.body.failed) return
    const o = this.send()
    this.file.setLast(o)
    await o.wait()
    if (o.error !== undefined) throw o.error
  }

  poll (): number {
    // A caller polling after writing waits for the reply: send now.
    if (this.body.length > 0) this.send()
    if (this.sent === undefined) {
      // Readable only if a read would return the last reply at once.
      return POLLOUT | (this.file.lastOutcome?.isDone === true ? POLLIN : 0)
    }
    return this.sent.isDone ? POLLIN | POLLOUT : 0
  }

  release (): void {
    this.unwatch()
  }

  private send (): Outcome {
    const payload = this.body.take()
    this.readPos = 0
    this.sent = this.file.send(payload, this.wake)
    this.wake()
    return this.sent
  }
}
