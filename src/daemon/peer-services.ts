// The services kept per configured peer: its outbox sender and its
// deferred-request sender. Opened for every configured peer at start,
// added and stopped on reload; the tree and the router find them here.
import { mkdir } from 'node:fs/promises'
import type { Clock } from '../lib/clock.js'
import type { Config } from '../config.js'
import type { EventBus } from '../lib/events.js'
import type { Logger } from '../lib/log.js'
import { DeferredSender } from '../services/deferred.js'
import type { Outbound } from '../services/outbound.js'
import { DeferredSpool } from '../services/spool.js'
import { OutboxSender, type InboxReceiver, type TransferSettings } from '../services/transfer/index.js'
import type { StateLayout } from './state.js'

export interface PeerServicesEnv {
  clock: Clock
  log: Logger
  events: EventBus
  layout: StateLayout
  outbound: Outbound
  transfer: () => TransferSettings
}

export class PeerServices {
  readonly deferred = new Map<string, DeferredSender>()
  readonly outboxes = new Map<string, OutboxSender>()
  /** The one receiver of every peer's transfers; set once the daemon has started it. */
  inbox: InboxReceiver | undefined

  constructor (private readonly env: PeerServicesEnv) {}

  /** Opens the services of every configured peer that has none yet; stops removed ones. */
  async sync (config: Config): Promise<void> {
    const ids = new Set(config.peers.map(p => p.id))
    for (const table of [this.deferred, this.outboxes]) {
      for (const [id, s] of table) {
        if (ids.has(id)) continue
        s.stop()
        table.delete(id)
      }
    }
    const { clock, log, layout, outbound, events } = this.env
    for (const id of ids) {
      if (!this.outboxes.has(id)) {
        const outbox = new OutboxSender(id, layout.outbox(id), layout.transferSpool(id), outbound.to(id), {
          clock,
          log,
          settings: this.env.transfer(),
          writerLog: layout.outboxWriters(id),
          onSent: (rel) => events.emit(id, 'sent', rel)
        })
        this.outboxes.set(id, outbox)
        await outbox.start()
        await mkdir(layout.inbox(id), { recursive: true, mode: 0o700 })
      }
      if (this.deferred.has(id)) continue
      const spool = await DeferredSpool.open(layout.deferred(id), log)
      const sender = new DeferredSender(id, spool, outbound.to(id), { clock, log, maxAgeMs: config.deferMaxAgeMs, ackTimeoutMs: config.requestTimeoutMs })
      this.deferred.set(id, sender)
      sender.kick()
    }
  }

  linkUp (id: string): void {
    this.deferred.get(id)?.linkUp()
    this.outboxes.get(id)?.linkUp()
  }

  linkDown (id: string): void {
    this.deferred.get(id)?.linkDown()
    this.outboxes.get(id)?.linkDown()
  }

  stop (): void {
    for (const s of this.deferred.values()) s.stop()
    for (const o of this.outboxes.values()) o.stop()
  }
}
