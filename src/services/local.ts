// Local services: requests from peers (live or deferred) meet the local
// processes that serve them through svc/NN.
//
// Each service has a bounded FIFO queue; a server session takes the head
// when it reads. A session holds at most one request, the one it read last:
// its next write answers it. A session that reads the next request without
// replying, or closes without replying, answers ECONNRESET. A request for a
// service with no server and no built-in is refused at once
// (ECONNREFUSED); a full queue answers EBUSY; when the last server of a
// service leaves, the requests still queued for it fail with ECONNRESET.
import { E, FsError, PeerfsError, TxError } from '../lib/errors.js'
import type { ServerSession, ServiceHost } from '../fs/backend.js'
import { Waiters } from '../lib/wait.js'
import { MAX_BUILTIN, svcName } from './builtin.js'

export const MAX_REPLY_BYTES = 16 << 20

export interface Incoming {
  peer: string
  svc: number
  payload: Buffer
  resolve: (reply: Buffer) => void
  reject: (err: PeerfsError) => void
  /** Runs before a server sees the request (deferred requests mark it applied). */
  onTaken?: () => Promise<void>
}

export interface LocalServicesOptions {
  id: string
  maxQueued: number
  maxRequestBytes: number
  builtin: (peer: string, svc: number, payload: Buffer) => Buffer
  /** May this peer call this service? */
  allowed: (peer: string, svc: number) => boolean
}

export class LocalServices implements ServiceHost {
  private readonly queues = new Map<number, Incoming[]>()
  private readonly sessions = new Map<number, Set<Session>>()
  private readonly arrivals = new Map<number, Waiters>()

  constructor (private readonly opts: LocalServicesOptions) {}

  userServices (): number[] {
    return Array.from({ length: 63 - MAX_BUILTIN }, (_, i) => i + MAX_BUILTIN + 1)
  }

  /** Services offered now: built-ins and those with a server. */
  offered (): number[] {
    return [1, 2, ...[...this.sessions.keys()].sort((a, b) => a - b)]
  }

  hasServer (svc: number): boolean {
    return svc <= MAX_BUILTIN || (this.sessions.get(svc)?.size ?? 0) > 0
  }

  /** Checks a request a peer may make, before it is queued or served. */
  admit (peer: string, svc: number, payload: Buffer): void {
    if (!this.opts.allowed(peer, svc)) throw new TxError(E.EACCES, `${peer} may not call service ${svcName(svc)} on ${this.opts.id}`)
    if (payload.length > this.opts.maxRequestBytes) throw new TxError(E.EMSGSIZE, `request of ${payload.length} bytes over the limit of ${this.opts.maxRequestBytes} on ${this.opts.id}`)
    if (!this.hasServer(svc)) throw new TxError(E.ECONNREFUSED, `no server for service ${svcName(svc)} on ${this.opts.id}`)
  }

  /** A live transaction from a peer. */
  async call (peer: string, svc: number, payload: Buffer): Promise<Buffer> {
    this.admit(peer, svc, payload)
    if (svc <= MAX_BUILTIN) return this.opts.builtin(peer, svc, payload)
    return await new Promise((resolve, reject) => this.enqueue({ peer, svc, payload, resolve, reject }))
  }

  enqueue (req: Incoming): void {
    const q = this.queues.get(req.svc) ?? []
    if (q.length >= this.opts.maxQueued) {
      req.reject(new TxError(E.EBUSY, `service ${svcName(req.svc)} on ${this.opts.id} has ${q.length} requests waiting`))
      return
    }
    q.push(req)
    this.queues.set(req.svc, q)
    this.arrivals.get(req.svc)?.notify()
    for (const s of this.sessions.get(req.svc) ?? []) s.wake()
  }

  serve (svc: number, wake: () => void): ServerSession {
    if (svc <= MAX_BUILTIN || svc > 63) throw new FsError(E.EACCES, `service ${svcName(svc)} is reserved for built-ins`)
    const s = new Session(this, svc, this.opts.id, wake)
    let set = this.sessions.get(svc)
    if (set === undefined) {
      set = new Set()
      this.sessions.set(svc, set)
      this.arrivals.set(svc, new Waiters())
    }
    set.add(s)
    return s
  }

  queued (svc: number): number {
    return this.queues.get(svc)?.length ?? 0
  }

  take (svc: number): Incoming | undefined {
    return this.queues.get(svc)?.shift()
  }

  async arrival (svc: number, signal?: AbortSignal): Promise<void> {
    await (this.arrivals.get(svc) as Waiters).wait(signal)
  }

  leave (s: Session): void {
    const set = this.sessions.get(s.svc)
    if (set === undefined) return
    set.delete(s)
    if (set.size > 0) return
    this.sessions.delete(s.svc)
    this.arrivals.delete(s.svc)
    const q = this.queues.get(s.svc) ?? []
    this.queues.delete(s.svc)
    for (const req of q) req.reject(new TxError(E.ECONNRESET, `the last server of service ${svcName(s.svc)} on ${this.opts.id} went away`))
  }
}

class Session implements ServerSession {
  private current: Incoming | undefined
  private answered = true
  private out: Buffer | undefined
  private outOff = 0
  private reply: Buffer[] = []
  private replySize = 0
  private closed = false

  constructor (private readonly host: LocalServices, readonly svc: number, private readonly id: string, readonly wake: () => void) {}

  async read (len: number, nonblock: boolean, signal?: AbortSignal): Promise<Buffer> {
    if (this.out === undefined || this.outOff >= this.out.length) {
      this.flush()
      this.abandon('the server read another request without replying')
      let req = this.host.take(this.svc)
      while (req === undefined) {
        if (nonblock) throw new FsError(E.EAGAIN, 'no request waiting')
        await this.host.arrival(this.svc, signal)
        req = this.host.take(this.svc)
      }
      try {
        await req.onTaken?.()
      } catch (err) {
        req.reject(err instanceof PeerfsError ? err : new TxError(E.EIO, String(err)))
        throw err
      }
      this.current = req
      this.answered = false
      this.out = Buffer.concat([Buffer.from(`${req.peer} ${req.payload.length}\n`), req.payload])
      this.outOff = 0
      this.wake()
    }
    const chunk = this.out.subarray(this.outOff, this.outOff + len)
    this.outOff += chunk.length
    return chunk
  }

  write (data: Buffer, final: boolean): number {
    if (this.current === undefined || this.answered) throw new FsError(E.EINVAL, 'no request to reply to: read one first')
    if (this.replySize + data.length > MAX_REPLY_BYTES) throw new FsError(E.EMSGSIZE, `reply over ${MAX_REPLY_BYTES} bytes`)
    this.reply.push(data)
    this.replySize += data.length
    if (final) this.flush()
    return data.length
  }

  flush (): void {
    if (this.replySize === 0 || this.current === undefined || this.answered) return
    const reply = Buffer.concat(this.reply, this.replySize)
    this.reply = []
    this.replySize = 0
    this.answered = true
    this.current.resolve(reply)
    this.wake()
  }

  readable (): boolean {
    return (this.out !== undefined && this.outOff < this.out.length) || this.host.queued(this.svc) > 0
  }

  writable (): boolean {
    return this.current !== undefined && !this.answered
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.flush()
    this.abandon(`the server of service ${svcName(this.svc)} on ${this.id} closed without replying`)
    this.host.leave(this)
  }

  private abandon (why: string): void {
    if (this.current !== undefined && !this.answered) this.current.reject(new TxError(E.ECONNRESET, why))
    this.answered = true
  }
}
