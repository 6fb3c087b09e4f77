// Local services: requests from peers (live or deferred) meet the local
// processes that serve them through svc/NN. This module keeps the queues
// and the policy (who may call, limits, what a caller is told); how svc/NN
// reads and writes is the tree's (src/fs/server.ts), which sees a service
// only through a ServerSeat.
//
// Each service has a bounded FIFO queue (maxQueued; a full one answers
// EBUSY); a seat takes the head when its server reads. A request for a
// service with no server and no built-in is refused at once
// (ECONNREFUSED). A request its server abandons (reads the next one, or
// closes, without replying) answers ECONNRESET; when the last server of a
// service leaves, the requests still queued for it answer ECONNRESET too.
import { E, PeerfsError, TxError } from '../lib/errors.js'
import { Waiters } from '../lib/wait.js'
import { isBuiltin, isUserService, SVC_ECHO, SVC_INFO, svcName } from '../lib/svc.js'

export const MAX_REPLY_BYTES = 16 << 20

/** A request from a peer for a local service, until it is answered. */
export interface PeerRequest {
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

export class LocalServices {
  readonly maxReplyBytes = MAX_REPLY_BYTES
  private readonly queues = new Map<number, PeerRequest[]>()
  private readonly seats = new Map<number, Set<Seat>>()
  private readonly arrivals = new Map<number, Waiters>()

  constructor (private readonly opts: LocalServicesOptions) {}

  /** Services offered now: built-ins and those with a server. */
  offered (): number[] {
    return [SVC_ECHO, SVC_INFO, ...[...this.seats.keys()].sort((a, b) => a - b)]
  }

  hasServer (svc: number): boolean {
    return isBuiltin(svc) || (this.seats.get(svc)?.size ?? 0) > 0
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
    if (isBuiltin(svc)) return this.opts.builtin(peer, svc, payload)
    return await new Promise((resolve, reject) => this.enqueue({ peer, svc, payload, resolve, reject }))
  }

  enqueue (req: PeerRequest): void {
    const q = this.queues.get(req.svc) ?? []
    if (q.length >= this.opts.maxQueued) {
      req.reject(new TxError(E.EBUSY, `service ${svcName(req.svc)} on ${this.opts.id} has ${q.length} requests waiting`))
      return
    }
    q.push(req)
    this.queues.set(req.svc, q)
    this.arrivals.get(req.svc)?.notify()
    for (const s of this.seats.get(req.svc) ?? []) s.wake()
  }

  /** One more server of user service svc (an open svc/NN). */
  serve (svc: number, wake: () => void): Seat {
    // The tree offers svc/NN for user services only; anything else is a bug.
    if (!isUserService(svc)) throw new RangeError(`service ${svc} is not a user service (09..63)`)
    const s = new Seat(this, svc, this.opts.id, wake)
    let set = this.seats.get(svc)
    if (set === undefined) {
      set = new Set()
      this.seats.set(svc, set)
      this.arrivals.set(svc, new Waiters())
    }
    set.add(s)
    return s
  }

  queued (svc: number): number {
    return this.queues.get(svc)?.length ?? 0
  }

  take (svc: number): PeerRequest | undefined {
    return this.queues.get(svc)?.shift()
  }

  async arrival (svc: number, signal?: AbortSignal): Promise<void> {
    await (this.arrivals.get(svc) as Waiters).wait(signal)
  }

  leave (s: Seat): void {
    const set = this.seats.get(s.svc)
    if (set === undefined || !set.delete(s) || set.size > 0) return
    this.seats.delete(s.svc)
    this.arrivals.delete(s.svc)
    const q = this.queues.get(s.svc) ?? []
    this.queues.delete(s.svc)
    for (const req of q) req.reject(new TxError(E.ECONNRESET, `the last server of service ${svcName(s.svc)} on ${this.opts.id} went away`))
  }
}

/** One server's place at a service's queue (fs/backend.ts ServerSeat). */
class Seat {
  constructor (private readonly host: LocalServices, readonly svc: number, private readonly id: string, readonly wake: () => void) {}

  take (): Taken | undefined {
    const req = this.host.take(this.svc)
    return req === undefined ? undefined : new Taken(req, `the server of service ${svcName(this.svc)} on ${this.id}`)
  }

  waiting (): boolean {
    return this.host.queued(this.svc) > 0
  }

  async arrival (signal?: AbortSignal): Promise<void> {
    await this.host.arrival(this.svc, signal)
  }

  leave (): void {
    this.host.leave(this)
  }
}

/** A request a server took (fs/backend.ts TakenRequest); settled once. */
class Taken {
  private settled = false

  constructor (private readonly req: PeerRequest, private readonly server: string) {}

  get peer (): string { return this.req.peer }
  get payload (): Buffer { return this.req.payload }

  async accept (): Promise<void> {
    try {
      await this.req.onTaken?.()
    } catch (err) {
      this.fail(err instanceof PeerfsError ? err : new TxError(E.EIO, String(err)))
      throw err
    }
  }

  reply (data: Buffer): void {
    if (this.settled) return
    this.settled = true
    this.req.resolve(data)
  }

  abandon (why: string): void {
    this.fail(new TxError(E.ECONNRESET, `${this.server} ${why}`))
  }

  private fail (err: PeerfsError): void {
    if (this.settled) return
    this.settled = true
    this.req.reject(err)
  }
}
