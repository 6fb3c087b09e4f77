// The daemon's lifecycle: loads the config and key, builds every component
// and wires them (router, per-peer services, the tree's backend), mounts,
// and stops. Signals are mapped onto these methods by the CLI: INT/TERM
// stop, HUP reload, USR1 revive dead peers and report.
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { loadConfig, type Config } from '../config.js'
import { FuseAdapter } from '../fs/adapter.js'
import type { PassHooks } from '../fs/passthrough.js'
import { buildTree } from '../fs/tree.js'
import { systemClock, type Clock, type Timer } from '../lib/clock.js'
import { ConfigError, E, TxError } from '../lib/errors.js'
import { EventBus } from '../lib/events.js'
import { readKeyFile, type Identity } from '../lib/keys.js'
import { applyConfigLevel, makeLogger, type Logger } from '../lib/log.js'
import { settlesWithin } from '../lib/wait.js'
import { serveBuiltin, VERSION } from '../services/builtin.js'
import { DeferredReceiver } from '../services/deferred.js'
import { ManagedFiles } from '../services/files/index.js'
import { LocalServices } from '../services/local.js'
import { Packets } from '../services/packets.js'
import type { Outbound, PeerLink } from '../services/outbound.js'
import { PeerManager } from '../transport/manager.js'
import type { Message } from '../transport/messages/index.js'
import type { PeerState } from '../transport/peer.js'
import { InboxReceiver, xferHandler } from '../services/transfer/index.js'
import { TreeBackend } from './backend.js'
import { renderMetrics } from './metrics.js'
import { serveMetrics, type MetricsServer } from './metrics-http.js'
import type { MountOptions } from './mount-options.js'
import { fuseAccessProblem, isFuseMounted, MountpointError, prepareMountpoint, tablePath } from './mountpoint.js'
import { PeerServices } from './peer-services.js'
import { Router } from './router.js'
import { StateLayout } from './state.js'
import { peerStatus, summary } from './status.js'
import { Trust } from './trust.js'

export interface DaemonOptions {
  configFile: string
  mountpoint?: string
  clock?: Clock
  /** Create a missing mountpoint (--mkdir) instead of refusing. */
  mkdir?: boolean
  /** -o options (daemon/mount-options.ts). */
  mount?: MountOptions
}

/**
 * How long a stop may take. Past it the process exits without the rest:
 * every step's state on disk survives a kill -9, so what is skipped is
 * tidiness, while a daemon that does not exit holds its peers' links and
 * its port, and the restart that a supervisor wants.
 */
export const STOP_DEADLINE_MS = 15_000

type StopStep = 'unmount' | 'services' | 'files' | 'metrics listener' | 'links' | 'stopped'

export class Daemon {
  readonly events: EventBus
  readonly startedAt: number
  readonly layout: StateLayout
  private readonly services: LocalServices
  private readonly packets: Packets
  private readonly router: Router
  private readonly outbound: Outbound
  private readonly peerServices: PeerServices
  private receiver: DeferredReceiver | undefined
  private inbox: InboxReceiver | undefined
  private files: ManagedFiles | undefined
  private adapter: FuseAdapter | undefined
  private stopping: Promise<void> | undefined
  /** The step a stop is in, named when it runs past its deadline. */
  private stopStep: StopStep = 'unmount'
  private watchTimer: Timer | undefined
  /** The mountpoint as the mount table names it, resolved once at start. */
  private tableMountpoint = ''
  private launch: Pick<DaemonOptions, 'mkdir' | 'mount'> = {}
  private metricsServer: MetricsServer | undefined
  private readonly manager: PeerManager
  /** Called when the mount disappears under us (peerfs unmount, fusermount -u). */
  onUnmounted: () => void = () => {}

  private constructor (
    private config: Config,
    private readonly identity: Identity,
    readonly mountpoint: string,
    readonly log: Logger,
    private readonly clock: Clock
  ) {
    this.startedAt = clock.now()
    this.events = new EventBus(() => clock.now())
    this.layout = new StateLayout(config.state, (id) => this.config.peers.find(p => p.id === id)?.inbox)
    this.router = new Router(log)
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
    this.manager = new PeerManager({
      config,
      identity,
      clock,
      log,
      serve: async (peerId, svc, payload) => await this.services.call(peerId, svc, payload),
      deliver: (peerId, m) => this.router.deliver(peerId, m)
    })
    this.manager.on('state', (peer, state, detail) => this.onPeerState(peer.id, state, detail))
    this.outbound = {
      to: (id) => this.linkTo(id),
      upPeers: () => [...this.manager.peers.values()].filter(p => p.state === 'up').map(p => p.id)
    }
    this.packets = new Packets({
      maxPacketBytes: config.maxPacketBytes,
      windowBytes: config.pktWindowBytes,
      clock,
      log,
      send: (id, m) => this.outbound.to(id).send(m),
      peers: () => this.config.peers
    })
    this.router.handle('pkt', this.packets)
    this.peerServices = new PeerServices({
      clock,
      log,
      events: this.events,
      layout: this.layout,
      outbound: this.outbound,
      transfer: () => this.config.transfer
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
    const log = makeLogger(config.logLevel).child({ node: config.id })
    const daemon = new Daemon(config, identity, mnt, log, opts.clock ?? systemClock)
    daemon.launch = { mkdir: opts.mkdir, mount: opts.mount }
    return daemon
  }

  private onPeerState (id: string, state: PeerState, detail: string): void {
    this.events.emit(id, state, detail)
    if (state === 'up') {
      this.peerServices.linkUp(id)
      this.files?.linkUp(id)
      this.packets.linkUp(id)
    } else {
      this.peerServices.linkDown(id)
      this.packets.linkDown(id)
      this.files?.linkDown(id)
      this.inbox?.linkDown(id)
    }
  }

  /** Sends to a peer by id, whichever Peer object holds it after reloads. */
  private linkTo (id: string): PeerLink {
    return {
      isUp: () => this.manager.peers.get(id)?.state === 'up',
      supports: (feature) => this.manager.peers.get(id)?.supports(feature) === true,
      send: (m: Message) => {
        const p = this.manager.peers.get(id)
        if (p === undefined) throw new TxError(E.EHOSTUNREACH, `${id} is not configured`)
        p.send(m)
      }
    }
  }

  /** Sends an answer; a link that is gone is not an error: the sender asks again when it is back. */
  private answer (id: string, m: Message): void {
    try {
      this.linkTo(id).send(m)
    } catch {}
  }

  private get filesHooks (): PassHooks {
    return {
      ready: (rel) => this.files?.ready(rel),
      gone: (rel) => this.files?.gone(rel),
      writing: (rel, delta) => this.files?.writing(rel, delta),
      failed: (rel, why) => this.files?.failed(rel, why),
      admit: (rel) => this.files?.admit(rel),
      maxFileBytes: this.config.filesMaxBytes
    }
  }

  private registerHandlers (receiver: DeferredReceiver, inbox: InboxReceiver, files: ManagedFiles): void {
    this.router.handle('defer', {
      dreq: (id, m) => {
        receiver.onRequest(id, m, (ack) => this.answer(id, ack))
          .catch((err: unknown) => this.log.error({ peer: id, seq: m.seq, err }, 'deferred request failed'))
      },
      dack: (id, m) => this.peerServices.deferred.get(id)?.onAck(m)
    })
    this.router.handle('xfer', xferHandler((id) => this.peerServices.outboxes.get(id), inbox))
    this.router.handle('files', files.handler)
  }

  async start (): Promise<void> {
    const layout = this.layout
    await mkdir(this.config.state, { recursive: true, mode: 0o700 })
    const mo = this.launch.mount
    const problem = await fuseAccessProblem({ allowOther: mo?.allowOther === true })
    if (problem !== undefined) throw new MountpointError(this.mountpoint, problem)
    await prepareMountpoint(this.mountpoint, { mkdir: this.launch.mkdir, log: this.log })
    this.tableMountpoint = await tablePath(this.mountpoint)
    this.receiver = await DeferredReceiver.open(layout.applied, this.services, this.log)
    const trust = new Trust(this.identity, () => this.config)
    this.files = new ManagedFiles({
      dir: layout.files,
      signSecret: this.identity.signSecret,
      trusted: (signer) => trust.trusted(signer),
      signerName: (signer) => trust.name(signer),
      gossipMs: this.config.gossipMs,
      maxFileBytes: this.config.filesMaxBytes,
      ignore: this.config.filesIgnore,
      clock: this.clock,
      log: this.log,
      link: { upPeers: this.outbound.upPeers, send: (id, m) => this.outbound.to(id).send(m) },
      onUpdate: (name) => this.events.emit(this.config.id, 'file', name)
    })
    await this.files.start()
    this.inbox = new InboxReceiver(layout.partial, {
      clock: this.clock,
      log: this.log,
      settings: this.config.transfer,
      link: (id) => this.outbound.to(id),
      inboxOf: (id) => layout.inbox(id),
      quotaOf: (id) => this.config.peers.find(p => p.id === id)?.inboxQuotaBytes ?? 0,
      onReceived: (id, rel) => this.events.emit(id, 'recv', rel)
    })
    await this.inbox.start()
    this.peerServices.inbox = this.inbox
    this.registerHandlers(this.receiver, this.inbox, this.files)
    await this.peerServices.sync(this.config)
    await this.manager.start()
    if (this.config.metricsListen !== undefined) this.metricsServer = await serveMetrics(this.config.metricsListen, () => this.metrics(), this.log)
    const backend = new TreeBackend({
      peers: () => this.manager.peers.values(),
      peer: (id) => this.manager.peers.get(id),
      services: this.peerServices,
      packets: this.packets,
      layout,
      maxRequestBytes: () => this.config.maxRequestBytes,
      summary: () => this.summary(),
      metrics: () => this.metrics(),
      events: this.events,
      startedAt: this.startedAt,
      local: this.services,
      filesHooks: this.filesHooks
    })
    this.adapter = new FuseAdapter(buildTree(backend, () => this.clock.now()), {
      mountpoint: this.mountpoint,
      cacheTimeoutS: this.config.entryTimeoutS,
      log: this.log,
      readOnly: mo?.readOnly,
      allowOther: mo?.allowOther,
      fuseOptions: mo?.fuse,
      statfsPath: this.config.state
    })
    try {
      await this.adapter.mount()
    } catch (err) {
      await this.metricsServer?.close()
      await this.manager.stop()
      throw new Error(`cannot mount ${this.mountpoint}: ${(err as Error).message}`)
    }
    this.events.emit(this.config.id, 'mounted', this.mountpoint)
    this.log.info({ mountpoint: this.mountpoint, version: VERSION, options: mo === undefined ? [] : [...mo.allowOther ? ['allow_other'] : [], ...mo.readOnly ? ['ro'] : [], ...mo.fuse] }, 'mounted')
    this.watchMount()
  }

  // fuse-native does not report the end of the FUSE loop; an unmount from
  // outside is noticed here within a second.
  private watchMount (): void {
    this.watchTimer = this.clock.setTimeout(() => {
      if (this.stopping) return
      let mounted: boolean
      try {
        mounted = isFuseMounted(this.tableMountpoint)
      } catch (err) {
        this.log.error({ err }, 'cannot read the mount table')
        return
      }
      if (mounted) {
        this.watchMount()
        return
      }
      this.log.info({ mountpoint: this.mountpoint }, 'unmounted from outside; stopping')
      this.onUnmounted()
    }, 1000)
  }

  /**
   * Unmounts and stops. Every caller gets the same promise: Ctrl-C signals
   * the whole process group, so SIGINT and a parent's SIGTERM both arrive,
   * and the second must not exit before the first has unmounted. False if
   * it had not finished after deadlineMs (logged, naming the step): the
   * caller exits anyway.
   */
  async stop (deadlineMs = STOP_DEADLINE_MS): Promise<boolean> {
    this.stopping ??= this.shutdown()
    if (await settlesWithin(this.stopping, deadlineMs, this.clock)) {
      await this.stopping
      return true
    }
    this.log.error({ step: this.stopStep, deadline_ms: deadlineMs }, 'stop did not finish in time; exiting without the rest (what is on disk survives this as it does a kill -9)')
    return false
  }

  private async shutdown (): Promise<void> {
    this.clock.clearTimeout(this.watchTimer)
    try {
      if (isFuseMounted(this.tableMountpoint)) await this.adapter?.unmount()
    } catch (err) {
      this.log.error({ err }, 'unmount failed')
    }
    this.stopStep = 'services'
    this.peerServices.stop()
    this.inbox?.stop()
    this.packets.stop()
    this.stopStep = 'files'
    await this.files?.stop()
    this.stopStep = 'metrics listener'
    await this.metricsServer?.close()
    this.stopStep = 'links'
    await this.manager.stop()
    this.stopStep = 'stopped'
    this.log.info('stopped')
  }

  async reload (): Promise<void> {
    const next = await loadConfig(this.config.file)
    if (next.id !== this.config.id || next.keyFile !== this.config.keyFile || next.listen?.port !== this.config.listen?.port || next.state !== this.config.state) {
      throw new ConfigError(next.file, 'id/key/listen/state', 'cannot change while running; restart the daemon')
    }
    this.config = next
    this.manager.reload(next)
    await this.peerServices.sync(next)
    const notApplied = applyConfigLevel(this.log, next.logLevel)
    if (notApplied !== undefined) this.log.warn(notApplied)
    this.log.info({ peers: next.peers.map(p => p.id), log_level: this.log.level }, 'config reloaded')
  }

  private get uptimeS (): number { return Math.floor((this.clock.now() - this.startedAt) / 1000) }

  reportStatus (): void {
    this.manager.reviveAll('SIGUSR1')
    // The logger's bindings carry the node; each peer carries its own id.
    const peers = [...this.manager.peers.values()].map(p => ({ id: p.id, ...Object.fromEntries(peerStatus(p, this.peerServices, this.packets)) }))
    this.log.info({ uptime_s: this.uptimeS, fuse: this.adapter?.stats(), peers }, 'status report')
  }

  /** <mnt>/metrics and metrics_listen: the status figures in Prometheus text (daemon/metrics.ts). */
  private metrics (): string {
    const fuse = this.adapter?.stats()
    const files = this.files?.stats
    return renderMetrics({
      node: {
        id: this.config.id,
        version: VERSION,
        uptime_s: this.uptimeS,
        fields: [
          ['services_offered', this.services.offered().length],
          ['fuse_open_handles', fuse?.openHandles ?? 0],
          ['fuse_poll_handles', fuse?.pollHandles ?? 0],
          ['managed_files', files?.files ?? 0],
          ['managed_files_fetching', files?.fetching ?? 0],
          ['managed_files_unclosed', files?.unclosed ?? 0]
        ]
      },
      peers: [...this.manager.peers.values()].map(p => ({ id: p.id, state: p.state, fields: peerStatus(p, this.peerServices, this.packets) }))
    })
  }

  private summary (): string {
    return summary({ config: this.config, version: VERSION, uptimeS: this.uptimeS, services: this.services.offered() }, [...this.manager.peers.values()])
  }
}
