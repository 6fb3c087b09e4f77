// Deferred requests: delivered in order, exactly once, whatever dies.
//
// Sender (one per peer): the head of the spool is sent when the link is up,
// one at a time, and sent again until a final answer comes back ('done',
// 'refused', 'dup') or it is older than the maximum age ('expired'). The
// outcome goes to the spool's log before the request leaves the spool.
//
// Receiver (one per node): per sender it keeps a durable record of the last
// applied request {epoch, seq, done, status, reply}. A request is applied
// when a server reads it (the record is fsynced first) or when a built-in
// answers it. A request at or below the recorded seq is never delivered
// again: the same seq gets the recorded outcome (or 'retry' while its
// server is still at work), an older one 'dup'.
import { readFile, mkdir } from 'node:fs/promises'
import path from 'node:path'
import type { Clock, Timer } from '../lib/clock.js'
import { E, PeerfsError, TxError, errnoToWire, wireToErrno } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import type { Dack, Dreq } from '../transport/messages/index.js'
import { svcName, MAX_BUILTIN } from './builtin.js'
import { writeDurable } from '../lib/durable.js'
import type { LocalServices } from './local.js'
import type { PeerLink } from './outbound.js'
import type { DeferredSpool } from './spool.js'


const RETRY_MIN_MS = 250
const RETRY_MAX_MS = 5_000
const REPLY_LOG_LIMIT = 64 << 10

export class DeferredSender {
  private inflight: number | undefined
  private ackTimer: Timer | undefined
  private retryTimer: Timer | undefined
  private retryMs = RETRY_MIN_MS
  private completing = false

  constructor (
    readonly peerId: string,
    readonly spool: DeferredSpool,
    private readonly link: PeerLink,
    private readonly opts: { clock: Clock, log: Logger, maxAgeMs: number, ackTimeoutMs: number }
  ) {}

  get pending (): number { return this.spool.pending }

  async enqueue (svc: number, payload: Buffer): Promise<void> {
    await this.spool.enqueue(svc, payload, this.opts.clock.now())
    this.kick()
  }

  linkUp (): void {
    this.retryMs = RETRY_MIN_MS
    this.kick()
  }

  linkDown (): void {
    this.inflight = undefined
    this.opts.clock.clearTimeout(this.ackTimer)
  }

  stop (): void {
    this.linkDown()
    this.opts.clock.clearTimeout(this.retryTimer)
  }

  /** Sends the head if nothing is in flight and the link is up. */
  kick (): void {
    if (this.inflight !== undefined || this.completing || !this.link.isUp()) return
    const it = this.spool.head()
    if (it === undefined) return
    const age = this.opts.clock.now() - it.created
    if (age > this.opts.maxAgeMs) {
      this.finish(it.seq, `expired after ${Math.round(age / 1000)} s undelivered`)
      return
    }
    this.opts.clock.clearTimeout(this.retryTimer)
    this.inflight = it.seq
    try {
      this.link.send({ type: 'dreq', epoch: this.spool.epoch, seq: it.seq, svc: it.svc, created: it.created, payload: it.payload })
    } catch (err) {
      this.inflight = undefined
      this.opts.log.debug({ peer: this.peerId, err: (err as Error).message }, 'deferred send failed; waiting for the link')
      return
    }
    this.ackTimer = this.opts.clock.setTimeout(() => {
      this.inflight = undefined
      this.kick()
    }, this.opts.ackTimeoutMs)
  }

  onAck (m: Dack): void {
    if (m.epoch !== this.spool.epoch || m.seq !== this.inflight) return
    this.opts.clock.clearTimeout(this.ackTimer)
    this.inflight = undefined
    switch (m.result) {
      case 'retry':
        this.opts.log.debug({ peer: this.peerId, seq: m.seq, why: m.payload.toString() }, 'deferred request not taken yet; will retry')
        this.retryTimer = this.opts.clock.setTimeout(() => this.kick(), this.retryMs)
        this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2)
        return
      case 'dup':
        this.finish(m.seq, 'done (applied earlier; reply not kept)')
        return
      case 'refused':
        this.finish(m.seq, `refused ${errName(wireToErrno(m.status))}: ${m.payload.toString('utf8', 0, 500).replace(/\n/g, ' ')}`)
        return
      case 'done':
        this.finish(m.seq, m.status === 0
          ? `ok ${m.payload.length} bytes: ${JSON.stringify(m.payload.subarray(0, REPLY_LOG_LIMIT).toString('utf8'))}`
          : `error ${errName(wireToErrno(m.status))}: ${m.payload.toString('utf8', 0, 500).replace(/\n/g, ' ')}`)
    }
  }

  private finish (seq: number, outcome: string): void {
    this.completing = true
    this.retryMs = RETRY_MIN_MS
    this.spool.complete(seq, outcome, this.opts.clock.now()).then(() => {
      this.opts.log.info({ peer: this.peerId, seq, outcome: outcome.slice(0, 200) }, 'deferred request finished')
    }, (err: unknown) => {
      // Not recorded: it stays at the head and is sent again, the receiver
      // answers from its record.
      this.opts.log.error({ peer: this.peerId, seq, err }, 'cannot record a deferred outcome')
    }).finally(() => {
      this.completing = false
      this.kick()
    })
  }
}

function errName (errno: number): string {
  for (const [k, v] of Object.entries(E)) if (v === errno) return k
  return `errno ${errno}`
}

interface AppliedRecord {
  epoch: string
  seq: number
  done: boolean
  status: number
  reply: string
}

export class DeferredReceiver {
  private readonly records = new Map<string, AppliedRecord>()
  /** Requests queued for a server and not yet read, per sender. */
  private readonly queued = new Map<string, number>()

  private constructor (private readonly dir: string, private readonly services: LocalServices, private readonly log: Logger) {}

  static async open (dir: string, services: LocalServices, log: Logger): Promise<DeferredReceiver> {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    return new DeferredReceiver(dir, services, log)
  }

  private async record (peer: string): Promise<AppliedRecord | undefined> {
    let r = this.records.get(peer)
    if (r === undefined) {
      const text = await readFile(path.join(this.dir, `${peer}.json`), 'utf8').catch(() => undefined)
      if (text !== undefined) {
        try {
          r = JSON.parse(text) as AppliedRecord
          if (!r.done) {
            // A server had it when the previous daemon died: its reply is
            // lost, and delivering it again would break exactly-once.
            r = { ...r, done: true, status: errnoToWire(E.ECONNRESET), reply: Buffer.from('the receiver restarted before the server replied').toString('base64') }
          }
          this.records.set(peer, r)
        } catch (err) {
          this.log.error({ peer, err: (err as Error).message }, 'unreadable applied record; refusing deferred requests from this peer')
          throw new TxError(E.EIO, 'applied record unreadable')
        }
      }
    }
    return r
  }

  private async save (peer: string, r: AppliedRecord): Promise<void> {
    await writeDurable(path.join(this.dir, `${peer}.json`), JSON.stringify(r))
    this.records.set(peer, r)
  }

  /** Handles one deferred request; answer sends the ack if the link is still up. */
  async onRequest (peer: string, m: Dreq, answer: (a: Dack) => void): Promise<void> {
    const epoch = m.epoch.toString(16)
    const ack = (result: Dack['result'], status = 0, payload: Buffer = Buffer.alloc(0)): void => {
      answer({ type: 'dack', epoch: m.epoch, seq: m.seq, result, status, payload })
    }
    const rec = await this.record(peer)
    const known = rec !== undefined && rec.epoch === epoch
    if (known && m.seq < rec.seq) return ack('dup')
    if (known && m.seq === rec.seq) {
      return rec.done ? ack('done', rec.status, Buffer.from(rec.reply, 'base64')) : ack('retry', 0, Buffer.from('still with its server'))
    }
    if (this.queued.get(peer) === m.seq) return ack('retry', 0, Buffer.from('queued for a server'))
    try {
      this.services.admit(peer, m.svc, m.payload)
    } catch (err) {
      const errno = (err as PeerfsError).errno
      // No server yet is not a failure: the request waits for one.
      if (errno === E.ECONNREFUSED) return ack('retry', 0, Buffer.from(`no server for service ${svcName(m.svc)} yet`))
      return ack('refused', errnoToWire(errno), Buffer.from((err as Error).message))
    }
    const applied = (done: boolean, status = 0, reply: Buffer = Buffer.alloc(0)): AppliedRecord =>
      ({ epoch, seq: m.seq, done, status, reply: reply.toString('base64') })

    if (m.svc <= MAX_BUILTIN) {
      const reply = await this.services.call(peer, m.svc, m.payload)
      await this.save(peer, applied(true, 0, reply))
      return ack('done', 0, reply)
    }
    this.queued.set(peer, m.seq)
    let taken = false
    const settle = (status: number, reply: Buffer): void => {
      this.save(peer, applied(true, status, reply)).then(() => ack('done', status, reply), (err: unknown) => {
        this.log.error({ peer, seq: m.seq, err }, 'cannot record a deferred outcome; the sender will ask again')
      })
    }
    this.services.enqueue({
      peer,
      svc: m.svc,
      payload: m.payload,
      onTaken: async () => {
        await this.save(peer, applied(false))
        taken = true
        this.queued.delete(peer)
      },
      resolve: (reply) => settle(0, reply),
      reject: (err) => {
        if (taken) {
          settle(errnoToWire(err.errno), Buffer.from(err.message))
          return
        }
        this.queued.delete(peer)
        ack('retry', 0, Buffer.from(err.message))
      }
    })
  }
}
