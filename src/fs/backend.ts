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
  /** The real folder behind files/, and who to tell about changes in it. */
  readonly filesDir: string
  readonly filesHooks: PassHooks
}
