// Admission of callers that have not authenticated yet, kept cheap because
// anyone can connect: the caps on connections held (in all, and per source
// address) are checked at accept, before any handshake work; a token
// bucket bounds the handshakes started per second (each costs the
// responder several X25519 operations); refusals are logged as summaries,
// the first after a quiet interval at once and then one line per interval
// with counts per reason, so a flood writes a few lines, not one per
// connection.
// Bounded: the per-address table holds only addresses with a connection
// held now (at most maxUnauthenticated of them); a summary keeps one count
// and one example per reason.
import type { Clock, Timer } from '../lib/clock.js'
import type { Logger } from '../lib/log.js'
import type { LinkLimits } from '../config.js'

/** Why a caller was refused; the keys of a summary's counts. */
export type RefusalReason =
  | 'too_many_unauthenticated' | 'too_many_from_address' | 'handshake_rate'
  | 'handshake_timeout' | 'unknown_key' | 'disconnected' | 'shutdown'
  | 'protocol' | 'closed' | 'other'

export class Admission {
  private held = 0
  private readonly perAddress = new Map<string, number>()
  private tokens: number
  private refilledAt: number
  private counts = new Map<RefusalReason, number>()
  private examples = new Map<RefusalReason, Record<string, unknown>>()
  private timer: Timer | undefined

  constructor (public limits: LinkLimits, private readonly clock: Clock, private readonly log: Logger) {
    this.tokens = limits.handshakesPerS
    this.refilledAt = clock.now()
  }

  /** Connections held now that have not authenticated. */
  get unauthenticated (): number { return this.held }

  /** At accept: takes a place for the caller, or says why there is none. */
  enter (address: string): RefusalReason | undefined {
    if (this.held >= this.limits.maxUnauthenticated) return 'too_many_unauthenticated'
    const n = this.perAddress.get(address) ?? 0
    if (n >= this.limits.maxUnauthenticatedPerAddress) return 'too_many_from_address'
    this.held++
    this.perAddress.set(address, n + 1)
    return undefined
  }

  /** The caller authenticated or went away: its place is free. */
  leave (address: string): void {
    const n = this.perAddress.get(address)
    if (n === undefined) return
    this.held--
    if (n <= 1) this.perAddress.delete(address)
    else this.perAddress.set(address, n - 1)
  }

  /** Before a caller's first handshake message costs us any DH. */
  takeHandshake (): boolean {
    const now = this.clock.now()
    const rate = this.limits.handshakesPerS
    this.tokens = Math.min(rate, this.tokens + (now - this.refilledAt) * rate / 1000)
    this.refilledAt = now
    if (this.tokens < 1) return false
    this.tokens--
    return true
  }

  refused (reason: RefusalReason, detail: Record<string, unknown>): void {
    if (this.timer === undefined) {
      this.log.warn({ reason, ...detail }, 'refused incoming connection')
      this.schedule()
      return
    }
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1)
    if (!this.examples.has(reason)) this.examples.set(reason, detail)
  }

  stop (): void {
    this.clock.clearTimeout(this.timer)
    this.timer = undefined
  }

  private schedule (): void {
    this.timer = this.clock.setTimeout(() => {
      if (this.counts.size === 0) {
        // Quiet for a whole interval: the next refusal is logged at once.
        this.timer = undefined
        return
      }
      const refused = Object.fromEntries(this.counts)
      const total = [...this.counts.values()].reduce((a, b) => a + b, 0)
      this.log.warn({ refused, total, interval_ms: this.limits.refusalLogMs, examples: Object.fromEntries(this.examples) },
        `refused incoming connections: ${total} in ${this.limits.refusalLogMs} ms`)
      this.counts = new Map()
      this.examples = new Map()
      this.schedule()
    }, this.limits.refusalLogMs)
  }
}
