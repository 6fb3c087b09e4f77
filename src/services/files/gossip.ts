// Manifests between peers: pushes of what changed, the summary exchange
// (anti-entropy), and the intake of adverts.
//
// Push: each peer that is up has a set of names to advertise; adverts of
// at most MAX_ADVERT manifests go out while fewer than WINDOW of them are
// unacknowledged. The receiver acknowledges an advert once it has
// recorded what it accepted, so a slow receiver slows the sender and
// neither side queues more than a window.
// Anti-entropy: every gossipMs one random quiet peer gets our summary's
// root (quiet: nothing to push, acknowledge or fetch, so a round is not
// spent on changes already under way); see summary.ts. When a link comes
// up both sides start one.
// Intake: per peer, one advert at a time, at most MAX_INTAKE waiting (a
// sender over its window loses the excess). Manifests are checked
// cheapest first: fields, name, trust, then whether it is newer than ours;
// only then the signature (~80 us). The loop yields every SLICE_MS, so one
// peer's input never holds the event loop longer than that; an advert
// with more than MAX_BAD bad signatures is abandoned; refusals are logged
// as one summary line per advert.
import type { Clock, Timer } from '../../lib/clock.js'
import type { Logger } from '../../lib/log.js'
import { yieldLoop } from '../../lib/wait.js'
import { MAX_ADVERT, MAX_SUM_NODES, MAX_WANT, type FilesMessage, type SumId, type SumNode, type WireManifest } from '../../transport/messages/files.js'
import { ManifestVerifier, fromWire, newer, toWire, type Manifest } from './manifest.js'
import type { Summary } from './summary.js'

const WINDOW = 4
const MAX_INTAKE = 2 * WINDOW
const SLICE_MS = 4
const MAX_BAD = 16
/** Nodes of one fsum we answer; the rest wait for the next round. */
const MAX_SUM_IN = 256

export interface GossipHost {
  summary: Summary
  manifest: (name: string) => Manifest | undefined
  /** Why a manifest from a peer is refused before its signature is checked, or undefined. */
  refuse: (m: Manifest) => string | undefined
  /** A verified manifest newer than ours. Resolves once it is recorded. */
  accept: (m: Manifest, peer: string) => Promise<void>
  /** peer holds exactly our version of name. */
  holds: (name: string, peer: string) => void
  /** Content is being fetched: the tables are mid-change, a summary round now would mostly find that. */
  busy: () => boolean
}

export interface GossipOptions {
  host: GossipHost
  send: (peer: string, m: FilesMessage) => void
  gossipMs: number
  clock: Clock
  log: Logger
}

class Session {
  readonly outgoing = new Set<string>()
  unacked = 0
  readonly intake: WireManifest[][] = []
  running = false
  pumping = false
  get quiet (): boolean { return this.outgoing.size === 0 && this.unacked === 0 && this.intake.length === 0 && !this.running }
}

export class Gossip {
  private readonly sessions = new Map<string, Session>()
  private readonly verifier = new ManifestVerifier()
  private timer: Timer | undefined
  private stopped = false
  /** Counters for status and tests. */
  readonly stats = { verified: 0, refused: 0, dropped: 0 }

  constructor (private readonly opts: GossipOptions) {}

  start (): void { this.schedule() }

  stop (): void {
    this.stopped = true
    this.opts.clock.clearTimeout(this.timer)
  }

  linkUp (peer: string): void {
    this.sessions.set(peer, new Session())
    this.sendSums(peer, [this.opts.host.summary.root()])
  }

  linkDown (peer: string): void { this.sessions.delete(peer) }

  /** Advertises name to every peer that is up but `except`. */
  push (name: string, except?: string): void {
    for (const [peer, s] of this.sessions) {
      if (peer === except) continue
      s.outgoing.add(name)
      this.schedulePump(peer, s)
    }
  }

  private send (peer: string, m: FilesMessage): boolean {
    try {
      this.opts.send(peer, m)
      return true
    } catch {
      return false
    }
  }

  /** Sends once the current burst of changes is in, so they share adverts. */
  private schedulePump (peer: string, s: Session): void {
    if (s.pumping) return
    s.pumping = true
    setImmediate(() => {
      s.pumping = false
      if (this.sessions.get(peer) === s) this.pump(peer, s)
    })
  }

  private pump (peer: string, s: Session): void {
    while (s.unacked < WINDOW && s.outgoing.size > 0) {
      const batch: WireManifest[] = []
      for (const name of s.outgoing) {
        s.outgoing.delete(name)
        const m = this.opts.host.manifest(name)
        if (m !== undefined) batch.push(toWire(m))
        if (batch.length === MAX_ADVERT) break
      }
      if (batch.length === 0) return
      if (!this.send(peer, { type: 'fadv', manifests: batch })) return
      s.unacked++
    }
  }

  private schedule (): void {
    if (this.stopped) return
    this.timer = this.opts.clock.setTimeout(() => {
      const quiet = this.opts.host.busy() ? [] : [...this.sessions].filter(([, s]) => s.quiet).map(([p]) => p)
      if (quiet.length > 0) this.sendSums(quiet[Math.floor(this.opts.clock.random() * quiet.length)], [this.opts.host.summary.root()])
      this.schedule()
    }, this.opts.gossipMs)
  }

  private sendSums (peer: string, nodes: SumNode[]): void {
    for (let i = 0; i < nodes.length; i += MAX_SUM_NODES) this.send(peer, { type: 'fsum', nodes: nodes.slice(i, i + MAX_SUM_NODES) })
  }

  private pushTo (peer: string, names: string[]): void {
    const s = this.sessions.get(peer)
    if (s === undefined || names.length === 0) return
    for (const n of names) s.outgoing.add(n)
    this.schedulePump(peer, s)
  }

  /** The typed handler's share: one method per message of the summary and advert kinds. */
  onSum (peer: string, nodes: SumNode[]): void {
    if (!this.sessions.has(peer)) return
    const a = this.opts.host.summary.answerSums(nodes.slice(0, MAX_SUM_IN))
    this.sendSums(peer, a.sums)
    for (const ids of a.ids) this.send(peer, { type: 'fids', ...ids })
    this.pushTo(peer, a.push)
  }

  onIds (peer: string, level: number, prefix: number, items: SumId[]): void {
    if (!this.sessions.has(peer)) return
    const c = this.opts.host.summary.compareIds(level, prefix, items)
    for (const n of c.same) this.opts.host.holds(n, peer)
    this.pushTo(peer, c.push)
    for (let i = 0; i < c.want.length; i += MAX_WANT) this.send(peer, { type: 'fwant', names: c.want.slice(i, i + MAX_WANT) })
  }

  onWant (peer: string, names: string[]): void { this.pushTo(peer, names.filter(n => this.opts.host.manifest(n) !== undefined)) }

  onAck (peer: string): void {
    const s = this.sessions.get(peer)
    if (s === undefined) return
    s.unacked = Math.max(0, s.unacked - 1)
    this.schedulePump(peer, s)
  }

  onAdvert (peer: string, manifests: WireManifest[]): void {
    const s = this.sessions.get(peer)
    if (s === undefined) return
    if (s.intake.length >= MAX_INTAKE) {
      this.stats.dropped++
      if (this.stats.dropped % 100 === 1) this.opts.log.warn({ peer, dropped: this.stats.dropped }, 'a peer sends adverts past its window; extra ones dropped')
      this.send(peer, { type: 'fack' })
      return
    }
    s.intake.push(manifests)
    if (!s.running) void this.runIntake(peer, s)
  }

  private async runIntake (peer: string, s: Session): Promise<void> {
    s.running = true
    let sliceStart = performance.now()
    try {
      while (s.intake.length > 0 && this.sessions.get(peer) === s) {
        const advert = s.intake.shift() as WireManifest[]
        const accepted: Array<Promise<void>> = []
        const refused = new Map<string, number>()
        let bad = 0
        for (const w of advert) {
          if (performance.now() - sliceStart > SLICE_MS) {
            await yieldLoop()
            sliceStart = performance.now()
            if (this.sessions.get(peer) !== s) return
          }
          const m = fromWire(w)
          const why = this.opts.host.refuse(m)
          if (why !== undefined) {
            refused.set(why, (refused.get(why) ?? 0) + 1)
            continue
          }
          const cur = this.opts.host.manifest(m.name)
          if (cur?.sig === m.sig) {
            this.opts.host.holds(m.name, peer)
            continue
          }
          if (!newer(m, cur)) continue
          this.stats.verified++
          if (!this.verifier.verify(m)) {
            refused.set('bad signature', (refused.get('bad signature') ?? 0) + 1)
            if (++bad > MAX_BAD) {
              refused.set('rest of the advert skipped', advert.length - advert.indexOf(w) - 1)
              break
            }
            continue
          }
          accepted.push(this.opts.host.accept(m, peer).catch((err: unknown) => this.opts.log.error({ peer, err }, 'managed file not recorded')))
        }
        if (refused.size > 0) {
          const n = [...refused.values()].reduce((a, b) => a + b, 0)
          this.stats.refused += n
          this.opts.log.warn({ peer, manifests: advert.length, refused: Object.fromEntries(refused) }, 'refused file manifests')
        }
        await Promise.all(accepted)
        this.send(peer, { type: 'fack' })
      }
    } finally {
      s.running = false
    }
  }
}
