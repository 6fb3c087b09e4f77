// The daemon: loads the config and key, starts the peer manager, builds the
// tree over a Backend that adapts peers to views, mounts it, and handles
// signals (INT/TERM unmount and exit 0, HUP reloads the config, USR1
// revives dead peers and logs a status report).
import { execFile } from 'node:child_process'
import { mkdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { systemClock, type Clock, type Timer } from './lib/clock.js'
import { loadConfig, type Config } from './config.js'
import { ConfigError, E, FsError } from './lib/errors.js'
import { EventBus } from './lib/events.js'
import { FuseAdapter } from './fs/adapter.js'
import type { Backend, PeerView } from './fs/backend.js'
import { buildTree, PEER_COMMANDS } from './fs/tree.js'
import { readKeyFile, type Identity } from './lib/keys.js'
import { makeLogger, type Logger } from './lib/log.js'
import { serveBuiltin, svcName, VERSION } from './services/builtin.js'
import { LocalServices } from './services/local.js'
import { DeferredReceiver, DeferredSender } from './services/deferred.js'
import { ManagedFiles } from './services/files.js'
import { DeferredSpool } from './services/spool.js'
import { PeerManager } from './transport/manager.js'
import type { Peer, PeerState } from './transport/peer.js'
import type { Message } from './transport/messages/index.js'
import { InboxReceiver, OutboxSender, type TransferSettings, type XferLink } from './transport/transfer.js'
import type { PassHooks } from './fs/passthrough.js'

const run = promisify(execFile)

class PeerViewImpl implements PeerView {
  constructor (private readonly peer: Peer, private readonly daemon: Daemon) {}
  get id (): string { return this.peer.id }
  get alias (): string | undefined { return this.peer.cfg.alias }
  get maxRequestBytes (): number { return this.daemon.config.maxRequestBytes }
  get outboxDir (): string { return this.daemon.outboxDir(this.peer.id) }
  get inboxDir (): string { return this.daemon.inboxDir(this.peer.id) }
  get outboxHooks (): PassHooks {
    const sender = (): OutboxSender | undefined => this.daemon.outboxes.get(this.peer.id)
    return {
      ready: (rel) => sender()?.ready(rel),
      gone: (rel) => sender()?.gone(rel),
      writing: (rel, delta) => sender()?.writing(rel, delta)
    }
  }

  state (): string { return this.peer.state }

  status (): [string, string | number][] {
    const p = this.peer
    const a = p.cfg.address
    return [
      ['state', p.state],
      ['address', a === undefined ? '(accepts calls only)' : `${a.host}:${a.port}`],
      ['since', new Date(p.since).toISOString()],
      ['retries_left', p.retriesLeft],
      ['rtt_ms', p.link?.rttMs ?? '-'],
      ['inflight', p.inflight],
      ['deferred', this.daemon.senders.get(p.id)?.pending ?? 0],
      ...this.outboxStatus(),
      ['tx_bytes', p.txBytes],
      ['rx_bytes', p.rxBytes],
      ['last_error', p.lastError === '' ? '-' : p.lastError]
    ]
  }

  private outboxStatus (): [string, string | number][] {
    const s = this.daemon.outboxes.get(this.peer.id)?.stats()
    if (s === undefined) return [['outbox_files', 0], ['outbox_bytes', 0]]
    return [
      ['outbox_files', s.files],
      ['outbox_bytes', s.bytes],
      ['transfer', s.transfer],
      ['transfer_progress', s.progress],
      ['transfer_rate_bps', s.rateBps]
    ]
  }

  control (cmd: string): void {
    const c = PEER_COMMANDS.find(x => x === cmd)
    if (c === undefined) throw new FsError(E.EINVAL, `unknown command ${cmd}`)
    this.peer.control(c)
  }

  request (svc: number, payload: Buffer): Promise<Buffer> {
    return this.peer.request(svc, payload, this.peer.cfg.requestTimeoutMs)
  }

  async defer (svc: number, payload: Buffer): Promise<void> {
    const s = this.daemon.senders.get(this.peer.id)
    if (s === undefined) throw new FsError(E.EIO, `no deferred spool for ${this.peer.id}`)
    await s.enqueue(svc, payload)
  }

  async deferLog (): Promise<Buffer> {
    return await (this.daemon.senders.get(this.peer.id)?.spool.readLog() ?? Buffer.alloc(0))
  }
}

export interface DaemonOptions {
  configFile: string
  mountpoint?: string
  clock?: Clock
}

export class Daemon implements Backend {
  readonly events: EventBus
  readonly startedAt: number
  readonly services: LocalServices
  readonly senders = new Map<string, DeferredSender>()
  readonly outboxes = new Map<string, OutboxSender>()
  private receiver: DeferredReceiver | undefined
  private inbox: InboxReceiver | undefined
  private files: ManagedFiles | undefined
  private readonly views = new WeakMap<Peer, PeerViewImpl>()
  private adapter: FuseAdapter | undefined
  private stopping: Promise<void> | undefined
  private watchTimer: Timer | undefined
  /** Called when the mount disappears under us (peerfs unmount, fusermount -u). */
  onUnmounted: () => void = () => {}

  private constructor (
    public config: Config,
    readonly identity: Identity,
    readonly mountpoint: string,
    readonly log: Logger,
    readonly manager: PeerManager,
    private readonly clock: Clock
  ) {
    this.startedAt = clock.now()
    this.events = new EventBus(() => clock.now())
    this.services = new LocalServices({
      id: config.id,
      maxQueued: config.maxQueuedRequests,
      maxRequestBytes: config.maxRequestBytes,
      builtin: (_peer, svc, payload) => serveBuiltin({
        id: this.config.id,
        startedAt: this.startedAt,
        now: () => this.clock.now(),
        offered: () => this.services.offered()
      }, svc, payload),
      allowed: (peer, svc) => {
        const rule = this.config.services.find(s => s.id === svc)
        return rule?.allow === undefined || rule.allow.includes(peer)
      }
    })
  }

  static async load (opts: DaemonOptions): Promise<Daemon> {
    const config = await loadConfig(opts.configFile)
    let identity: Identity
    try {
      identity = await readKeyFile(config.keyFile)
    } catch (err) {
      throw new ConfigError(config.file, 'key', `${config.keyFile}: ${(err as Error).message}`)
    }
    const mnt = opts.mountpoint === undefined ? config.mountpoint : path.resolve(opts.mountpoint)
    if (mnt === undefined) throw new ConfigError(config.file, 'mountpoint', 'no mountpoint on the command line or in the config')
    const clock = opts.clock ?? systemClock
    const log = makeLogger(config.logLevel).child({ node: config.id })
    let daemon: Daemon | undefined
    const manager = new PeerManager({
      config,
      identity,
      clock,
      log,
      serve: async (peerId, svc, payload) => (daemon as Daemon).serve(peerId, svc, payload)
    })
    daemon = new Daemon(config, identity, mnt, log, manager, clock)
    manager.on('state', (peer, state, detail) => daemon?.onPeerState(peer, state, detail))
    manager.on('message', (peer, m) => daemon?.onPeerMessage(peer, m))
    return daemon
  }

  private onPeerState (peer: Peer, state: PeerState, detail: string): void {
    this.events.emit(peer.id, state, detail)
    const s = this.senders.get(peer.id)
    const o = this.outboxes.get(peer.id)
    if (state === 'up') {
      s?.linkUp()
      o?.linkUp()
      this.files?.linkUp(peer.id)
    } else {
      s?.linkDown()
      o?.linkDown()
    }
  }

  outboxDir (id: string): string { return path.join(this.config.state, 'outbox', id) }

  get filesDir (): string { return path.join(this.config.state, 'files', 'data') }

  get filesHooks (): PassHooks {
    return {
      ready: (rel) => this.files?.ready(rel),
      gone: (rel) => this.files?.gone(rel),
      writing: (rel, delta) => this.files?.writing(rel, delta)
    }
  }

  /** Signers whose managed files we accept: the configured list, or us and our peers. */
  private trustedSigners (): Set<string> {
    const own = Buffer.from(this.identity.signPublic).toString('base64url')
    return new Set(this.config.filesTrust ?? [own, ...this.config.peers.map(p => p.key.sign.toString('base64url'))])
  }

  private signerName (signer: string): string {
    if (signer === Buffer.from(this.identity.signPublic).toString('base64url')) return this.config.id
    return this.config.peers.find(p => p.key.sign.toString('base64url') === signer)?.id ?? signer
  }

  inboxDir (id: string): string {
    return this.config.peers.find(p => p.id === id)?.inbox ?? path.join(this.config.state, 'inbox', id)
  }

  private transferSettings (): TransferSettings {
    const t = this.config.transfer
    return {
      ...t,
      bundleMaxBytes: Math.max(t.largeFileBytes, 32 << 20),
      ackEveryBytes: Math.min(4 << 20, Math.max(t.packetBytes, t.windowBytes >> 2)),
      retryMs: 5000
    }
  }

  private onPeerMessage (peer: Peer, m: Message): void {
    const reply = (r: Message): void => {
      try {
        peer.send(r)
      } catch {
        // The link is gone; the sender offers the transfer again when it is back.
      }
    }
    if (m.type === 'xaccept' || m.type === 'xack' || m.type === 'xdone') {
      this.outboxes.get(peer.id)?.onMessage(m)
    } else if (m.type === 'xoffer' || m.type === 'xdata' || m.type === 'xend' || m.type === 'xcancel') {
      this.inbox?.onMessage(peer.id, m, reply)
    } else if (m.type === 'fadvert' || m.type === 'fget' || m.type === 'fput') {
      this.files?.onMessage(peer.id, m)
    } else if (m.type === 'dack') {
      this.senders.get(peer.id)?.onAck(m)
    } else if (m.type === 'dreq') {
      const receiver = this.receiver
      if (receiver === undefined) return
      receiver.onRequest(peer.id, m, (ack) => {
        try {
          peer.send(ack)
        } catch {
          // The link is gone; the sender asks again and gets the recorded outcome.
        }
      }).catch((err: unknown) => this.log.error({ peer: peer.id, seq: m.seq, err }, 'deferred request failed'))
    }
  }

  /** Opens the spools of every configured peer that has none yet; stops removed ones. */
  private async syncSenders (): Promise<void> {
    const ids = new Set(this.config.peers.map(p => p.id))
    for (const [id, s] of this.senders) {
      if (!ids.has(id)) {
        s.stop()
        this.senders.delete(id)
      }
    }
    for (const [id, o] of this.outboxes) {
      if (!ids.has(id)) {
        o.stop()
        this.outboxes.delete(id)
      }
    }
    for (const id of ids) {
      if (!this.outboxes.has(id)) {
        const link = this.linkTo(id)
        const outbox = new OutboxSender(id, this.outboxDir(id), path.join(this.config.state, 'spool', id), link, {
          clock: this.clock,
          log: this.log,
          settings: this.transferSettings(),
          onSent: (rel) => this.events.emit(id, 'sent', rel)
        })
        this.outboxes.set(id, outbox)
        await outbox.start()
        await mkdir(this.inboxDir(id), { recursive: true, mode: 0o700 })
      }
      if (this.senders.has(id)) continue
      const spool = await DeferredSpool.open(path.join(this.config.state, 'deferred', id), this.log)
      const sender = new DeferredSender(id, spool, this.linkTo(id), { clock: this.clock, log: this.log, maxAgeMs: this.config.deferMaxAgeMs, ackTimeoutMs: this.config.requestTimeoutMs })
      this.senders.set(id, sender)
      sender.kick()
    }
  }

  async serve (peerId: string, svc: number, payload: Buffer): Promise<Buffer> {
    return await this.services.call(peerId, svc, payload)
  }

  /** Sends to a peer by id, whichever Peer object holds it after reloads. */
  private linkTo (id: string): XferLink {
    return {
      isUp: () => this.manager.peers.get(id)?.state === 'up',
      send: (m) => {
        const p = this.manager.peers.get(id)
        if (p === undefined) throw new FsError(E.EHOSTUNREACH, `${id} is not configured`)
        p.send(m)
      }
    }
  }

  async start (): Promise<void> {
    await mkdir(this.config.state, { recursive: true, mode: 0o700 })
    await cleanStaleMount(this.mountpoint, this.log)
    this.receiver = await DeferredReceiver.open(path.join(this.config.state, 'applied'), this.services, this.log)
    this.files = new ManagedFiles({
      dir: path.join(this.config.state, 'files'),
      signSecret: this.identity.signSecret,
      trusted: (signer) => this.trustedSigners().has(signer),
      signerName: (signer) => this.signerName(signer),
      gossipMs: this.config.gossipMs,
      clock: this.clock,
      log: this.log,
      link: {
        upPeers: () => [...this.manager.peers.values()].filter(p => p.state === 'up').map(p => p.id),
        send: (id, m) => this.linkTo(id).send(m)
      },
      onUpdate: (name) => this.events.emit(this.config.id, 'file', name)
    })
    await this.files.start()
    this.inbox = new InboxReceiver(path.join(this.config.state, 'partial'), {
      log: this.log,
      settings: this.transferSettings(),
      inboxOf: (id) => this.inboxDir(id),
      quotaOf: (id) => this.config.peers.find(p => p.id === id)?.inboxQuotaBytes ?? 0,
      onReceived: (id, rel) => this.events.emit(id, 'recv', rel)
    })
    await this.syncSenders()
    await this.manager.start()
    this.adapter = new FuseAdapter(buildTree(this, () => this.clock.now()), {
      mountpoint: this.mountpoint,
      cacheTimeoutS: this.config.entryTimeoutS,
      log: this.log
    })
    try {
      await this.adapter.mount()
    } catch (err) {
      await this.manager.stop()
      throw new Error(`cannot mount ${this.mountpoint}: ${(err as Error).message}`)
    }
    this.events.emit(this.config.id, 'mounted', this.mountpoint)
    this.log.info({ mountpoint: this.mountpoint, version: VERSION }, 'mounted')
    this.watchMount()
  }

  // fuse-native does not report the end of the FUSE loop; an unmount from
  // outside is noticed here within a second.
  private watchMount (): void {
    this.watchTimer = this.clock.setTimeout(() => {
      isFuseMounted(this.mountpoint).then((mounted) => {
        if (this.stopping) return
        if (mounted) {
          this.watchMount()
          return
        }
        this.log.info({ mountpoint: this.mountpoint }, 'unmounted from outside; stopping')
        this.onUnmounted()
      }, (err: unknown) => this.log.error({ err }, 'cannot read the mount table'))
    }, 1000)
  }

  /**
   * Unmounts and stops. Every caller gets the same promise: Ctrl-C signals
   * the whole process group, so SIGINT and a parent's SIGTERM both arrive,
   * and the second must not exit before the first has unmounted.
   */
  async stop (): Promise<void> {
    this.stopping ??= this.shutdown()
    await this.stopping
  }

  private async shutdown (): Promise<void> {
    this.clock.clearTimeout(this.watchTimer)
    try {
      if (await isFuseMounted(this.mountpoint)) await this.adapter?.unmount()
    } catch (err) {
      this.log.error({ err }, 'unmount failed')
    }
    for (const s of this.senders.values()) s.stop()
    for (const o of this.outboxes.values()) o.stop()
    this.files?.stop()
    await this.manager.stop()
    this.log.info('stopped')
  }

  async reload (): Promise<void> {
    const next = await loadConfig(this.config.file)
    if (next.id !== this.config.id || next.keyFile !== this.config.keyFile || next.listen?.port !== this.config.listen?.port || next.state !== this.config.state) {
      throw new ConfigError(next.file, 'id/key/listen/state', 'cannot change while running; restart the daemon')
    }
    this.config = next
    this.manager.reload(next)
    await this.syncSenders()
    this.log.info({ peers: next.peers.map(p => p.id) }, 'config reloaded')
  }

  reportStatus (): void {
    this.manager.reviveAll('SIGUSR1')
    const peers = this.peers().map(v => Object.fromEntries(v.status()))
    this.log.info({ node: this.config.id, uptime_s: Math.floor((this.clock.now() - this.startedAt) / 1000), fuse: this.adapter?.stats(), peers }, 'status report')
  }

  // Backend

  peers (): PeerView[] {
    return [...this.manager.peers.values()].map(p => this.view(p))
  }

  peer (id: string): PeerView | undefined {
    const p = this.manager.peers.get(id)
    return p === undefined ? undefined : this.view(p)
  }

  private view (p: Peer): PeerViewImpl {
    let v = this.views.get(p)
    if (v === undefined) {
      v = new PeerViewImpl(p, this)
      this.views.set(p, v)
    }
    return v
  }

  summary (): string {
    const peers = [...this.manager.peers.values()]
    const up = peers.filter(p => p.state === 'up').length
    const l = this.config.listen
    const head = [
      `node: ${this.config.id}`,
      `version: ${VERSION}`,
      `listen: ${l === undefined ? '-' : `${l.host}:${l.port}`}`,
      `uptime_s: ${Math.floor((this.clock.now() - this.startedAt) / 1000)}`,
      `services: ${this.services.offered().map(svcName).join(' ')}`,
      `peers: ${peers.length} (${up} up)`,
      ''
    ]
    const rows = peers.map(p => {
      const a = p.cfg.address
      return [
        p.id.padEnd(16),
        p.state.padEnd(10),
        (a === undefined ? '-' : `${a.host}:${a.port}`).padEnd(22),
        `since ${new Date(p.since).toISOString()}`,
        `rtt_ms ${p.link?.rttMs ?? '-'}`,
        p.cfg.alias === undefined ? '' : `alias ${p.cfg.alias}`
      ].join(' ').trimEnd()
    })
    return [...head, ...rows].join('\n') + '\n'
  }
}

async function isFuseMounted (mnt: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mounts', 'utf8')
  return mounts.split('\n').some(line => {
    const [, where, type] = line.split(' ')
    return where !== undefined && unescapeMount(where) === mnt && type?.startsWith('fuse') === true
  })
}

/** A mount left by a crashed daemon answers ENOTCONN; detach it first. */
async function cleanStaleMount (mnt: string, log: Logger): Promise<void> {
  if (!await isFuseMounted(mnt)) return
  log.warn({ mountpoint: mnt }, 'stale mount found; unmounting it')
  await run('fusermount', ['-uz', mnt])
}

function unescapeMount (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}
