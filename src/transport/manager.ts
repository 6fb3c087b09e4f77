// The peer manager: the listener, the dialer, and the table of peers keyed
// by id and by static key. A caller is only ever attached to the peer whose
// configured key it proved in the handshake; an unknown key (or a peer held
// down by ctl disconnect) is refused with a bye saying why, and logged in
// Admission's summaries, without touching any existing link. Callers not
// yet authenticated pass Admission's caps before any work is done for them.
import { EventEmitter } from 'node:events'
import net from 'node:net'
import v8 from 'node:v8'
import vm from 'node:vm'
import type { Clock, Timer } from '../lib/clock.js'
import type { Config, PeerConfig } from '../config.js'
import { E, PeerfsError } from '../lib/errors.js'
import { encodePublicKey, type Identity } from '../lib/keys.js'
import type { Logger } from '../lib/log.js'
import { Admission, type RefusalReason } from './admission.js'
import { Link, LinkError, Refusal, type LinkOptions } from './link.js'
import { keyPairFromSecret, type KeyPair } from './noise.js'
import { Peer, type PeerEnv, type PeerState } from './peer.js'

export interface ManagerOptions {
  config: Config
  identity: Identity
  clock: Clock
  log: Logger
  serve: PeerEnv['serve']
  deliver: PeerEnv['deliver']
}

export declare interface PeerManager {
  on(event: 'state', fn: (peer: Peer, state: PeerState, detail: string) => void): this
}

export class PeerManager extends EventEmitter {
  readonly peers = new Map<string, Peer>()
  private config: Config
  private readonly staticKey: KeyPair
  private readonly publicKey: string
  private server: net.Server | undefined
  private readonly inbound = new Set<Link>()
  private readonly admission: Admission
  private reclaimTimer: Timer | undefined

  constructor (private readonly opts: ManagerOptions) {
    super()
    this.config = opts.config
    this.staticKey = keyPairFromSecret(opts.identity.dhSecret)
    this.publicKey = encodePublicKey(opts.identity.publicKey)
    this.admission = new Admission(opts.config.limits, opts.clock, opts.log)
  }

  async start (): Promise<void> {
    for (const pc of this.config.peers) this.addPeer(pc)
    const listen = this.config.listen
    if (listen !== undefined) {
      const server = net.createServer((socket) => this.onConnection(socket))
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(listen.port, listen.host, () => {
          server.off('error', reject)
          resolve()
        })
      })
      server.on('error', (err) => this.opts.log.error({ err }, 'listener error'))
      this.server = server
      this.opts.log.info({ listen: `${listen.host}:${listen.port}` }, 'listening')
    }
    for (const p of this.peers.values()) p.start()
  }

  async stop (): Promise<void> {
    for (const p of this.peers.values()) p.stop()
    for (const l of this.inbound) l.close()
    this.admission.stop()
    this.opts.clock.clearTimeout(this.reclaimTimer)
    if (this.server !== undefined) {
      const server = this.server
      this.server = undefined
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }

  /** SIGHUP: adds and removes peers; peers whose entry is unchanged keep their link. */
  reload (config: Config): void {
    const next = new Map(config.peers.map(p => [p.id, p]))
    for (const [id, peer] of this.peers) {
      const pc = next.get(id)
      if (pc !== undefined && samePeer(pc, peer.cfg)) {
        peer.cfg = pc
        continue
      }
      peer.stop()
      this.peers.delete(id)
      this.opts.log.info({ peer: id }, pc === undefined ? 'peer removed' : 'peer changed; restarting it')
    }
    this.config = config
    this.admission.limits = config.limits
    for (const pc of config.peers) {
      if (!this.peers.has(pc.id)) this.addPeer(pc).start()
    }
  }

  reviveAll (why: string): void {
    for (const p of this.peers.values()) p.revive(why)
  }

  private addPeer (pc: PeerConfig): Peer {
    const peer = new Peer(pc, {
      clock: this.opts.clock,
      log: this.opts.log,
      serve: this.opts.serve,
      deliver: this.opts.deliver,
      settings: {
        retryBudget: this.config.retryBudget,
        backoffMinMs: this.config.backoffMinMs,
        backoffMaxMs: this.config.backoffMaxMs,
        handshakeTimeoutMs: this.config.limits.handshakeTimeoutMs,
        // Half the peer's bound on what it queues for us (if it is set like
        // ours), so our requests alone never make it stop reading us.
        requestWindowBytes: this.config.limits.queueBytes / 2
      },
      dial: (p) => this.dial(p)
    })
    peer.on('state', (state, detail) => this.emit('state', peer, state, detail))
    this.peers.set(pc.id, peer)
    return peer
  }

  private linkOptions (): Omit<LinkOptions, 'role'> {
    return {
      localId: this.config.id,
      staticKey: this.staticKey,
      publicKey: this.publicKey,
      clock: this.opts.clock,
      keepaliveMs: this.config.keepaliveMs,
      downAfterMs: this.config.downAfterMs,
      handshakeTimeoutMs: this.config.limits.handshakeTimeoutMs,
      maxQueuedBytes: this.config.limits.queueBytes,
      maxBulkInFlightBytes: this.config.limits.bulkInFlightBytes
    }
  }

  private dial (peer: Peer): Link {
    const addr = peer.cfg.address
    if (addr === undefined) throw new Error(`peer ${peer.id} has no address`)
    const socket = net.connect({ host: addr.host, port: addr.port })
    socket.setNoDelay(true)
    const link = new Link(socket, { ...this.linkOptions(), role: 'initiator', expectedKey: peer.cfg.key.dh })
    link.on('closed', () => this.reclaimAfter(link))
    link.on('up', () => {
      if (link.peerId !== peer.id) {
        this.opts.log.warn({ peer: peer.id, claims: link.peerId }, 'peer calls itself by another id; using the configured one')
      }
      const current = this.peers.get(peer.id)
      if (current === undefined) link.goodbye('shutdown')
      else current.attach(link)
    })
    return link
  }

  /** Collects the garbage of a link that held much, once, a moment after it closed. */
  private reclaimAfter (link: Link): void {
    if (link.peakOwedBytes < this.config.limits.queueBytes / 2 || this.reclaimTimer !== undefined) return
    this.reclaimTimer = this.opts.clock.setTimeout(() => {
      this.reclaimTimer = undefined
      collectGarbage()
    }, 1000)
  }

  private onConnection (socket: net.Socket): void {
    const address = socket.remoteAddress ?? '?'
    const from = `${address}:${socket.remotePort}`
    const full = this.admission.enter(address)
    if (full !== undefined) {
      socket.destroy()
      this.admission.refused(full, { from })
      return
    }
    socket.setNoDelay(true)
    const link = new Link(socket, {
      ...this.linkOptions(),
      role: 'responder',
      admit: () => this.admission.takeHandshake() ? undefined : new LinkError(E.EBUSY, `over handshakes_per_s (${this.config.limits.handshakesPerS}); try later`),
      authorize: (remoteKey, claimedId, claimedKey) => {
        for (const p of this.peers.values()) {
          if (Buffer.from(remoteKey).equals(p.cfg.key.dh)) {
            const no = p.refusal()
            if (no !== undefined) throw no
            return p.id
          }
        }
        throw new Refusal('refused-key', `unknown key ${claimedKey} (claims to be ${JSON.stringify(claimedId)})`)
      }
    })
    this.inbound.add(link)
    link.on('closed', () => this.reclaimAfter(link))
    link.on('up', () => {
      this.inbound.delete(link)
      this.admission.leave(address)
      const peer = this.peers.get(link.peerId)
      if (peer === undefined) {
        link.goodbye('shutdown')
        return
      }
      if (peer.state === 'dead') this.opts.log.info({ peer: peer.id }, 'dead peer called in; reviving it')
      peer.attach(link)
    })
    link.on('closed', (err) => {
      if (!this.inbound.delete(link)) return
      this.admission.leave(address)
      this.admission.refused(reasonOf(err), { from, err: err?.message })
    })
  }
}

/**
 * A link that came near its bound (a peer that did not read) leaves tens
 * of MB of buffers behind. They are garbage once it closes, but V8 collects
 * on allocation, and an idle daemon allocates little, so without this the
 * memory would stay taken until traffic resumes.
 */
let fullGc: (() => void) | undefined
function collectGarbage (): void {
  if (fullGc === undefined) {
    v8.setFlagsFromString('--expose-gc')
    const gc: unknown = vm.runInNewContext('typeof gc === "function" ? gc : undefined')
    fullGc = typeof gc === 'function' ? gc as () => void : () => {}
  }
  fullGc()
}

function reasonOf (err: Error | undefined): RefusalReason {
  if (err instanceof Refusal) return err.reason === 'refused-key' ? 'unknown_key' : err.reason === 'disconnected' ? 'disconnected' : 'shutdown'
  if (!(err instanceof PeerfsError)) return 'other'
  switch (err.errno) {
    case E.EBUSY: return 'handshake_rate'
    case E.ETIMEDOUT: return 'handshake_timeout'
    case E.EPROTO: return 'protocol'
    case E.ECONNRESET: return 'closed'
    default: return 'other'
  }
}

function samePeer (a: PeerConfig, b: PeerConfig): boolean {
  return a.key.text === b.key.text && a.address?.host === b.address?.host && a.address?.port === b.address?.port
}
