// What the tree needs from the daemon, and nothing more: src/fs never sees
// a socket, a link or a config file.
import type { EventBus } from '../lib/events.js'
import type { PassHooks } from './passthrough.js'

export interface PeerView {
  readonly id: string
  readonly alias: string | undefined
  state(): string
  /** key: value pairs for peers/<id>/status, in order. */
  status(): [string, string | number][]
  /** A ctl command; throws FsError(EINVAL) for an unknown one. */
  control(cmd: string): void
  /** One transaction; rejects with a PeerfsError carrying the errno. */
  request(svc: number, payload: Buffer): Promise<Buffer>
  /** Queues a deferred request; resolves once it is durable on disk. */
  defer(svc: number, payload: Buffer): Promise<void>
  /** The outcome lines of finished deferred requests. */
  deferLog(): Promise<Buffer>
  /** Real folders behind outbox/ and inbox/. */
  readonly outboxDir: string
  readonly inboxDir: string
  /** Told when an outbox file is ready to send or gone. */
  readonly outboxHooks: PassHooks
  readonly maxRequestBytes: number
}

/**
 * One open svc/NN on the server side. It holds at most one request: the
 * one it read last, which its next write answers.
 */
export interface ServerSession {
  /** Bytes of the current request (header line, payload), taking the next when it is consumed. */
  read(len: number, nonblock: boolean, signal?: AbortSignal): Promise<Buffer>
  /** Appends to the reply; `final` marks its last piece. */
  write(data: Buffer, final: boolean): number
  /** The reply so far is complete (close). */
  flush(): void
  readable(): boolean
  writable(): boolean
  close(): void
}

export interface ServiceHost {
  /** Service numbers a local server may open (09..63). */
  userServices(): number[]
  /** Opens a server session for svc; wake is called when readiness may have changed. */
  serve(svc: number, wake: () => void): ServerSession
}

/** What a pkt/NN reader gets: a packet from a peer, or that peer's link coming or going. */
export type PacketRecord = { peer: string, payload: Buffer, event?: undefined } | { peer: string, event: 'up' | 'down' }

/** One open pkt/NN: it reads records and sends packets. */
export interface PacketSession {
  /** The next record for this reader, or undefined if none waits. */
  next(): PacketRecord | undefined
  /**
   * Sends one packet to a peer id, an alias or '*'. Returns when it is
   * taken at once, a promise when it must wait for the window; throws (or
   * rejects with) FsError: ENOENT, EHOSTUNREACH, ECONNREFUSED, EMSGSIZE,
   * EAGAIN (nonblock and the window is full).
   */
  send(to: string, payload: Buffer, nonblock: boolean): void | Promise<void>
  readable(): boolean
  /** A packet to every up peer with a reader would be taken now. */
  writable(): boolean
  close(): void
}

export interface PacketHost {
  readonly maxPacketBytes: number
  /** Opens pkt/NN (a reader unless write-only); wake is called when readiness may have changed. */
  open(chan: number, reads: boolean, wake: () => void): PacketSession
}

export interface Backend {
  /** <mnt>/status: this node, then one line per peer. */
  summary(): string
  /** <mnt>/metrics: the same figures in Prometheus text format. */
  metrics(): string
  peers(): PeerView[]
  peer(id: string): PeerView | undefined
  readonly events: EventBus
  readonly startedAt: number
  readonly services: ServiceHost
  readonly packets: PacketHost
  /** The real folder behind files/, and who to tell about changes in it. */
  readonly filesDir: string
  readonly filesHooks: PassHooks
}
