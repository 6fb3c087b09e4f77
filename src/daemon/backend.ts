// The Backend the tree sees (src/fs/backend.ts), built over narrow views of
// the peer table and the per-peer services: the tree reads status, sends
// transactions and queues deferred requests, and never sees a Peer, a link
// or the config.
import type { Backend, PacketHost, PeerView, ServiceHost } from '../fs/backend.js'
import type { PassHooks } from '../fs/passthrough.js'
import { PEER_COMMANDS } from '../fs/tree.js'
import { E, FsError } from '../lib/errors.js'
import type { EventBus } from '../lib/events.js'
import type { Packets } from '../services/packets.js'
import type { Peer } from '../transport/peer.js'
import type { PeerServices } from './peer-services.js'
import type { StateLayout } from './state.js'
import { peerStatus } from './status.js'

/** What the backend reads of the daemon. */
export interface BackendEnv {
  peers: () => Iterable<Peer>
  peer: (id: string) => Peer | undefined
  services: PeerServices
  packets: Packets
  layout: StateLayout
  maxRequestBytes: () => number
  summary: () => string
  metrics: () => string
  events: EventBus
  startedAt: number
  local: ServiceHost
  filesHooks: PassHooks
}

class PeerViewImpl implements PeerView {
  constructor (private readonly peer: Peer, private readonly env: BackendEnv) {}
  get id (): string { return this.peer.id }
  get alias (): string | undefined { return this.peer.cfg.alias }
  get maxRequestBytes (): number { return this.env.maxRequestBytes() }
  get outboxDir (): string { return this.env.layout.outbox(this.peer.id) }
  get inboxDir (): string { return this.env.layout.inbox(this.peer.id) }
  get outboxHooks (): PassHooks {
    // Looked up per call: a reload may replace the sender.
    const sender = (): ReturnType<PeerServices['outboxes']['get']> => this.env.services.outboxes.get(this.peer.id)
    return {
      ready: (rel, st) => sender()?.ready(rel, st),
      gone: (rel) => sender()?.gone(rel),
      writing: (rel, delta) => sender()?.writing(rel, delta),
      grew: (rel, end) => sender()?.grew(rel, end),
      failed: (rel, why) => sender()?.writeFailed(rel, why),
      renamed: (from, to) => sender()?.renamed(from, to)
    }
  }

  state (): string { return this.peer.state }
  status (): [string, string | number][] { return peerStatus(this.peer, this.env.services, this.env.packets) }

  control (cmd: string): void {
    const c = PEER_COMMANDS.find(x => x === cmd)
    if (c === undefined) throw new FsError(E.EINVAL, `unknown command ${cmd}`)
    this.peer.control(c)
  }

  request (svc: number, payload: Buffer): Promise<Buffer> {
    return this.peer.request(svc, payload, this.peer.cfg.requestTimeoutMs)
  }

  async defer (svc: number, payload: Buffer): Promise<void> {
    const s = this.env.services.deferred.get(this.peer.id)
    if (s === undefined) throw new FsError(E.EIO, `no deferred spool for ${this.peer.id}`)
    await s.enqueue(svc, payload)
  }

  async deferLog (): Promise<Buffer> {
    return await (this.env.services.deferred.get(this.peer.id)?.spool.readLog() ?? Buffer.alloc(0))
  }
}

export class TreeBackend implements Backend {
  private readonly views = new WeakMap<Peer, PeerViewImpl>()

  constructor (private readonly env: BackendEnv) {}

  get events (): EventBus { return this.env.events }
  get startedAt (): number { return this.env.startedAt }
  get services (): ServiceHost { return this.env.local }
  get packets (): PacketHost { return this.env.packets }
  get filesDir (): string { return this.env.layout.filesData }
  get filesHooks (): PassHooks { return this.env.filesHooks }

  summary (): string { return this.env.summary() }
  metrics (): string { return this.env.metrics() }

  peers (): PeerView[] {
    return [...this.env.peers()].map(p => this.view(p))
  }

  peer (id: string): PeerView | undefined {
    const p = this.env.peer(id)
    return p === undefined ? undefined : this.view(p)
  }

  private view (p: Peer): PeerViewImpl {
    let v = this.views.get(p)
    if (v === undefined) {
      v = new PeerViewImpl(p, this.env)
      this.views.set(p, v)
    }
    return v
  }
}
