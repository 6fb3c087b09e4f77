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

/** A request from a peer that one local server took off its service's queue. */
export interface TakenRequest {
  readonly peer: string
  readonly payload: Buffer
  /**
   * Runs before the server sees the request (a deferred one is recorded as
   * applied). If it fails, the caller is told and this rejects.
   */
  accept(): Promise<void>
  /** The server's reply: the caller's transaction succeeds with it. */
  reply(data: Buffer): void
  /** The server dropped it without replying (read the next one, or closed). */
  abandon(why: string): void
}

/** One server's place at service NN (one open svc/NN): the queue, seen from the tree. */
export interface ServerSeat {
  /** Takes the request at the head of the queue, or undefined if none waits. */
  take(): TakenRequest | undefined
  /** A request is waiting. */
  waiting(): boolean
  /** Resolves when a request may have arrived; EINTR when signal aborts. */
  arrival(signal?: AbortSignal): Promise<void>
  /** This server leaves its service. */
  leave(): void
}

/** The queues and policy behind svc/NN; the read and write semantics are the tree's (server.ts). */
export interface ServiceHost {
  /** Joins user service svc (09..63) as one more server; wake is called when a request arrives. */
  serve(svc: number, wake: () => void): ServerSeat
  /** The largest reply a server may write. */
  readonly maxReplyBytes: number
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
