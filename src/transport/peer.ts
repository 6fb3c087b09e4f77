// One configured peer: its link, its reconnect schedule and its
// transactions.
//
// States: 'connecting' (never up yet, dialing) -> 'up' <-> 'down' (lost,
// redialing with exponential backoff and jitter) -> 'dead' (retry budget
// spent; no dialing until revive(), an inbound call, or ctl reset).
// Exactly one live link: when two come up (both sides dialed), the one whose
// initiator has the smaller static key wins everywhere; the side that closes
// the loser says 'bye superseded' first so the other waits for the winner
// instead of reporting the peer down.
//
// Links never flap: a dial the peer refuses (our key, ctl disconnect there)
// or a link that dies before the peer sent anything on it is a failed
// attempt: it spends the retry budget and backs off (a refusal straight to
// backoffMaxMs). Only a link the peer answered on refills the budget.
// Our requests in flight to the peer are bounded by requestWindowBytes
// (further ones wait), which bounds what the peer must queue for us.
import { EventEmitter } from 'node:events'
import type { Clock, Timer } from '../lib/clock.js'
import type { PeerConfig } from '../config.js'
import { E, PeerfsError, TxError, errnoToWire, wireToErrno } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import { isRefusal, Refusal, type Link } from './link.js'
import type { Message } from './messages/index.js'
import { RequestWindow } from './window.js'

export type PeerState = 'connecting' | 'up' | 'down' | 'dead'

export interface PeerSettings {
  retryBudget: number
  backoffMinMs: number
  backoffMaxMs: number
  handshakeTimeoutMs: number
  /** Bytes of our requests in flight (sent, not answered) before new ones wait. */
  requestWindowBytes: number
}

export interface PeerEnv {
  clock: Clock
  log: Logger
  settings: PeerSettings
  /** Opens an initiator link to the peer's address. */
  dial: (peer: Peer) => Link
  /** Answers a request a peer sent us. */
  serve: (peerId: string, svc: number, payload: Buffer) => Promise<Buffer>
  /** Hands every message the transport does not answer itself to the layers above. */
  deliver: (peerId: string, m: Message) => void
}

interface Pending {
  resolve: (b: Buffer) => void
  reject: (e: Error) => void
  timer: Timer
  link: Link
  bytes: number
}

export declare interface Peer {
  on(event: 'state', fn: (state: PeerState, detail: string) => void): this
}

export class Peer extends EventEmitter {
  state: PeerState
  since: number
  retriesLeft: number
  lastError = ''
  link: Link | undefined
  private dialing: Link | undefined
  private dialTimer: Timer | undefined
  private graceTimer: Timer | undefined
  private attempt = 0
  /** Set by ctl disconnect: stay down until reconnect or reset. */
  private held = false
  private stopped = false
  private nextTx = 1
  private readonly pending = new Map<number, Pending>()
  private readonly upWaiters = new Set<() => void>()
  private readonly window: RequestWindow
  private txBase = 0
  private rxBase = 0

  constructor (public cfg: PeerConfig, private readonly env: PeerEnv) {
    super()
    this.state = cfg.address === undefined ? 'down' : 'connecting'
    this.since = env.clock.now()
    this.retriesLeft = env.settings.retryBudget
    this.window = new RequestWindow(env.clock, env.settings.requestWindowBytes)
  }

  get id (): string { return this.cfg.id }
  get inflight (): number { return this.pending.size }
  get txBytes (): number { return this.txBase + (this.link?.txBytes ?? 0) }
  get rxBytes (): number { return this.rxBase + (this.link?.rxBytes ?? 0) }

  start (): void {
    if (this.cfg.address !== undefined) this.dialNow()
  }

  stop (): void {
    this.stopped = true
    this.env.clock.clearTimeout(this.dialTimer)
    this.env.clock.clearTimeout(this.graceTimer)
    this.dialing?.close()
    this.link?.goodbye('shutdown')
  }

  /** Why an authenticated call from this peer is refused now, if it is. */
  refusal (): Refusal | undefined {
    if (this.stopped) return new Refusal('shutdown', `${this.id} is being removed`)
    if (this.held) return new Refusal('disconnected', `${this.id} is disconnected by ctl`)
    return undefined
  }

  /** ctl: reconnect (drop the link, dial now), reset (also refill the retry budget), disconnect. */
  control (cmd: 'reconnect' | 'reset' | 'disconnect'): void {
    if (cmd === 'disconnect') {
      this.held = true
      this.env.clock.clearTimeout(this.dialTimer)
      this.dialing?.close()
      this.link?.goodbye('disconnected', new TxError(E.ECONNABORTED, 'disconnected by ctl'))
      if (this.state === 'up' || this.state === 'connecting') this.setState('down', 'disconnected by ctl')
      return
    }
    this.held = false
    if (cmd === 'reset') {
      this.retriesLeft = this.env.settings.retryBudget
      this.attempt = 0
    }
    if (cmd === 'reconnect') this.link?.goodbye('shutdown', new TxError(E.ECONNABORTED, 'reconnect by ctl'))
    if (this.state === 'dead') this.setState('down', `revived by ${cmd}`)
    if (this.link === undefined && this.cfg.address !== undefined) this.dialNow()
  }

  /** SIGUSR1: a dead peer gets a fresh retry budget. */
  revive (why: string): void {
    if (this.state === 'dead') this.control('reset')
    else if (this.state !== 'up') this.env.log.debug({ peer: this.id, why }, 'revive: peer not dead')
  }

  /** Called by the manager with a link that finished its handshake. */
  attach (link: Link): void {
    // Disconnected by ctl: administratively down, its calls refused too
    // (the manager refuses them in the handshake; this is the dial side).
    if (this.stopped || this.held) {
      link.goodbye(this.held ? 'disconnected' : 'shutdown')
      return
    }
    const current = this.link
    if (current !== undefined && current !== link) {
      if (Buffer.compare(Buffer.from(link.initiatorKey), Buffer.from(current.initiatorKey)) > 0) {
        link.goodbye('superseded')
        return
      }
      this.link = undefined
      this.retire(current)
      current.goodbye('superseded')
    }
    if (this.dialing === link) this.dialing = undefined
    this.link = link
    this.env.clock.clearTimeout(this.graceTimer)
    this.env.clock.clearTimeout(this.dialTimer)
    const proved = (): void => {
      if (this.link !== link) return
      this.attempt = 0
      this.retriesLeft = this.env.settings.retryBudget
    }
    if (link.proven) proved()
    else link.once('proved', proved)
    link.on('message', (m) => this.onMessage(link, m))
    link.on('closed', (err) => this.onLinkClosed(link, err))
    if (this.state !== 'up') this.setState('up', `link ${link.role === 'initiator' ? 'to' : 'from'} ${this.cfg.address === undefined ? 'peer' : `${this.cfg.address.host}:${this.cfg.address.port}`}`)
    for (const w of this.upWaiters) w()
    this.upWaiters.clear()
  }

  /** The live link's peer understands the optional message (hello.ts FEATURES). */
  supports (feature: string): boolean {
    return this.link?.state === 'up' && this.link.features.has(feature)
  }

  /** Sends a message on the live link; throws EHOSTUNREACH if there is none. */
  send (m: Message): void {
    if (this.link?.state !== 'up') throw new TxError(E.EHOSTUNREACH, `${this.id} is ${this.state}`)
    this.link.send(m)
  }

  /** Sends one transaction and waits for its reply. */
  async request (svc: number, payload: Buffer, timeoutMs: number): Promise<Buffer> {
    const deadline = this.env.clock.now() + timeoutMs
    const bytes = payload.length
    await this.window.take(bytes, deadline, () => new TxError(E.ETIMEDOUT, `no room to send to ${this.id} within ${timeoutMs} ms`))
    let pending = false
    try {
      const link = await this.linkBy(deadline)
      const left = deadline - this.env.clock.now()
      const tx = this.nextTx
      this.nextTx = this.nextTx >= 0xffffffff ? 1 : this.nextTx + 1
      return await new Promise<Buffer>((resolve, reject) => {
        link.send({ type: 'req', tx, svc, payload }, { ours: true })
        const timer = this.env.clock.setTimeout(() => {
          if (this.settle(tx) === undefined) return
          reject(new TxError(E.ETIMEDOUT, `no reply from ${this.id} within ${timeoutMs} ms`))
        }, Math.max(1, left))
        this.pending.set(tx, { resolve, reject, timer, link, bytes })
        pending = true
      })
    } finally {
      // Settled requests gave their share back in settle().
      if (!pending) this.window.give(bytes)
    }
  }

  /** Forgets a pending request and frees its share of the window. */
  private settle (tx: number): Pending | undefined {
    const p = this.pending.get(tx)
    if (p === undefined) return undefined
    this.pending.delete(tx)
    this.env.clock.clearTimeout(p.timer)
    this.window.give(p.bytes)
    return p
  }

  private async linkBy (deadline: number): Promise<Link> {
    for (;;) {
      if (this.link?.state === 'up') return this.link
      if (this.state === 'dead') throw new TxError(E.EHOSTUNREACH, `${this.id} is dead (retry budget spent): ${this.lastError}`)
      if (this.held) throw new TxError(E.EHOSTUNREACH, `${this.id} is disconnected by ctl`)
      const left = deadline - this.env.clock.now()
      if (left <= 0) throw new TxError(E.EHOSTUNREACH, `${this.id} not reachable in time${this.lastError === '' ? '' : `: ${this.lastError}`}`)
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.env.clock.clearTimeout(t)
          this.upWaiters.delete(done)
          resolve()
        }
        const t = this.env.clock.setTimeout(done, left)
        this.upWaiters.add(done)
      })
    }
  }

  private onMessage (link: Link, m: Message): void {
    if (m.type === 'rep') {
      if (this.pending.get(m.tx)?.link !== link) return
      const p = this.settle(m.tx) as Pending
      if (m.status === 0) p.resolve(m.payload)
      else p.reject(new TxError(wireToErrno(m.status), `${this.id} answered ${wireToErrno(m.status)}: ${m.payload.toString('utf8', 0, 200)}`))
    } else if (m.type === 'req') {
      this.env.serve(this.id, m.svc, m.payload).then(
        (reply) => ({ status: 0, payload: reply }),
        (err: unknown) => {
          if (!(err instanceof PeerfsError)) this.env.log.error({ peer: this.id, svc: m.svc, err }, 'service failed')
          const errno = err instanceof PeerfsError ? err.errno : E.EIO
          return { status: errnoToWire(errno), payload: Buffer.from((err as Error).message ?? '') }
        }
      ).then(({ status, payload }) => {
        if (link.state === 'up') link.send({ type: 'rep', tx: m.tx, status, payload })
      }).catch((err: unknown) => this.env.log.error({ peer: this.id, err }, 'cannot send reply'))
    } else {
      this.env.deliver(this.id, m)
    }
  }

  /** Accounts a link's bytes once it stops being the live one. */
  private retire (link: Link): void {
    this.txBase += link.txBytes
    this.rxBase += link.rxBytes
    for (const [tx, p] of this.pending) {
      if (p.link !== link) continue
      this.settle(tx)
      p.reject(new TxError(E.EHOSTUNREACH, `link to ${this.id} lost before the reply`))
    }
  }

  private onLinkClosed (link: Link, err: Error | undefined): void {
    if (this.link !== link) return
    this.link = undefined
    this.retire(link)
    this.lastError = err?.message ?? 'link closed'
    if (this.stopped || this.held) return
    if (err instanceof PeerfsError && err.errno === E.EALREADY) {
      // The peer kept the other link of a simultaneous dial; it is on its
      // way. Report down only if it does not arrive.
      this.graceTimer = this.env.clock.setTimeout(() => {
        if (this.link === undefined) this.lost()
      }, this.env.settings.handshakeTimeoutMs)
      return
    }
    if (link.proven && !isRefusal(err)) {
      this.lost()
      return
    }
    this.setState('down', this.lastError)
    if (this.cfg.address !== undefined) this.failedAttempt(err)
  }

  private lost (): void {
    this.setState('down', this.lastError)
    if (this.cfg.address !== undefined) this.scheduleDial()
  }

  private dialNow (): void {
    if (this.stopped || this.held || this.dialing !== undefined || this.link !== undefined) return
    this.env.clock.clearTimeout(this.dialTimer)
    const link = this.env.dial(this)
    this.dialing = link
    link.on('closed', (err) => {
      if (this.dialing !== link) return
      this.dialing = undefined
      this.lastError = err?.message ?? 'closed during handshake'
      this.env.log.debug({ peer: this.id, err: this.lastError }, 'dial failed')
      this.failedAttempt(err)
    })
  }

  private failedAttempt (err: Error | undefined): void {
    if (this.stopped || this.held || this.link !== undefined) return
    if (this.retriesLeft <= 0) {
      this.setState('dead', `retry budget of ${this.env.settings.retryBudget} spent: ${this.lastError}`)
      return
    }
    this.retriesLeft--
    // The peer said no: asking again at the shortest interval would only
    // repeat the answer, so wait the longest.
    if (isRefusal(err)) this.attempt = Math.max(this.attempt, 30)
    this.scheduleDial()
  }

  private scheduleDial (): void {
    const { backoffMinMs, backoffMaxMs } = this.env.settings
    const ceiling = Math.min(backoffMaxMs, backoffMinMs * 2 ** Math.min(this.attempt, 30))
    this.attempt++
    // Equal jitter: at least half the ceiling, so retries still back off.
    const delay = ceiling / 2 + this.env.clock.random() * ceiling / 2
    this.env.clock.clearTimeout(this.dialTimer)
    this.dialTimer = this.env.clock.setTimeout(() => this.dialNow(), delay)
  }

  private setState (state: PeerState, detail: string): void {
    if (state === this.state) return
    this.state = state
    this.since = this.env.clock.now()
    this.env.log.info({ peer: this.id, state, detail }, `peer ${this.id} ${state}`)
    this.emit('state', state, detail)
  }
}
