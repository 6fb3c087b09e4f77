// A Backend for driving the tree in-process: no sockets, no daemon. Node
// "alpha" with peers whose links are faked: a reachable peer is up and
// its transactions loop back into this node's own LocalServices (so
// peers/beta/svc/NN reaches this tree's svc/NN, and the server sees the
// caller as "alpha"); an unreachable one stays connecting and answers
// EHOSTUNREACH. ctl commands move the fake state and emit events the way
// the daemon does. Time is the injected fake clock.
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import type { Backend, PacketHost, PeerView } from '../../src/fs/backend.js'
import type { PassHooks } from '../../src/fs/passthrough.js'
import { PEER_COMMANDS } from '../../src/fs/tree.js'
import { E, FsError, TxError } from '../../src/lib/errors.js'
import { EventBus } from '../../src/lib/events.js'
import { serveBuiltin } from '../../src/services/builtin.js'
import { LocalServices } from '../../src/services/local.js'
import type { FakeClock } from './clock.js'

export interface FakePeerSpec { id: string, alias?: string, reachable: boolean }

export interface FakeBackendOptions {
  self: string
  peers: FakePeerSpec[]
  maxRequestBytes: number
  /** Where outbox/, inbox/ and files/ live. */
  dir: string
}

type FakeState = 'connecting' | 'up' | 'down' | 'dead'

export class FakePeer implements PeerView {
  private st: FakeState
  private held = false
  readonly deferred: Array<{ svc: number, payload: Buffer }> = []
  readonly outboxHooks: PassHooks = {}

  constructor (private readonly backend: FakeBackend, private readonly spec: FakePeerSpec, readonly outboxDir: string, readonly inboxDir: string) {
    this.st = spec.reachable ? 'up' : 'connecting'
  }

  get id (): string { return this.spec.id }
  get alias (): string | undefined { return this.spec.alias }
  get maxRequestBytes (): number { return this.backend.opts.maxRequestBytes }

  state (): string { return this.st }

  status (): [string, string | number][] {
    return [['state', this.st], ['address', '(fake)'], ['deferred', this.deferred.length], ['last_error', '-']]
  }

  control (cmd: string): void {
    if (!(PEER_COMMANDS as readonly string[]).includes(cmd)) throw new FsError(E.EINVAL, `unknown command ${cmd}`)
    if (cmd === 'disconnect') {
      this.held = true
      if (this.st === 'up' || this.st === 'connecting') this.setState('down', 'disconnected by ctl')
      return
    }
    this.held = false
    if (this.spec.reachable && this.st !== 'up') this.setState('up', 'link to fake')
    else if (!this.spec.reachable && this.st !== 'connecting') this.setState('connecting', `${cmd} by ctl`)
  }

  async request (svc: number, payload: Buffer): Promise<Buffer> {
    if (this.held) throw new TxError(E.EHOSTUNREACH, `${this.id} is disconnected by ctl`)
    if (this.st !== 'up') throw new TxError(E.EHOSTUNREACH, `${this.id} not reachable in time`)
    return await this.backend.services.call(this.backend.opts.self, svc, payload)
  }

  async defer (svc: number, payload: Buffer): Promise<void> {
    this.deferred.push({ svc, payload })
  }

  async deferLog (): Promise<Buffer> {
    return Buffer.alloc(0)
  }

  private setState (s: FakeState, detail: string): void {
    this.st = s
    this.backend.events.emit(this.id, s, detail)
  }
}

export class FakeBackend implements Backend {
  readonly events: EventBus
  readonly startedAt: number
  readonly services: LocalServices
  readonly filesDir: string
  readonly filesHooks: PassHooks = {}
  /** pkt/ is listed; its channels are not part of these cases. */
  readonly packets: PacketHost = {
    maxPacketBytes: 64 << 10,
    open: () => { throw new FsError(E.ENODEV, 'no packet channels in the fake backend') }
  }

  private readonly views: FakePeer[]

  private constructor (readonly clock: FakeClock, readonly opts: FakeBackendOptions) {
    this.startedAt = clock.now()
    this.events = new EventBus(() => clock.now())
    this.filesDir = path.join(opts.dir, 'files')
    this.services = new LocalServices({
      id: opts.self,
      maxQueued: 16,
      maxRequestBytes: opts.maxRequestBytes,
      builtin: (_peer, svc, payload) => serveBuiltin({ id: opts.self, startedAt: this.startedAt, now: () => clock.now(), offered: () => this.services.offered() }, svc, payload),
      allowed: () => true
    })
    this.views = opts.peers.map(p => new FakePeer(this, p, path.join(opts.dir, 'outbox', p.id), path.join(opts.dir, 'inbox', p.id)))
  }

  static async create (clock: FakeClock, opts: FakeBackendOptions): Promise<FakeBackend> {
    const b = new FakeBackend(clock, opts)
    await mkdir(b.filesDir, { recursive: true })
    for (const p of b.views) {
      await mkdir(p.outboxDir, { recursive: true })
      await mkdir(p.inboxDir, { recursive: true })
    }
    return b
  }

  summary (): string {
    return [`node: ${this.opts.self}`, '', ...this.views.map(p => `${p.id} ${p.state()}`)].join('\n') + '\n'
  }

  metrics (): string {
    return this.views.map(p => `peerfs_peer_up{peer="${p.id}"} ${p.state() === 'up' ? 1 : 0}`).join('\n') + '\n'
  }

  peers (): PeerView[] { return this.views }

  peer (id: string): PeerView | undefined { return this.views.find(p => p.id === id) }
}
