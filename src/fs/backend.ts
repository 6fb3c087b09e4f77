// What the tree needs from the daemon, and nothing more: src/fs never sees
// a socket, a link or a config file.
import type { EventBus } from '../events.js'

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
  readonly maxRequestBytes: number
}

export interface Backend {
  /** <mnt>/status: this node, then one line per peer. */
  summary(): string
  peers(): PeerView[]
  peer(id: string): PeerView | undefined
  readonly events: EventBus
  readonly startedAt: number
}
