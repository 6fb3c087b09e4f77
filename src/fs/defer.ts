// peers/<id>/defer/NN: a deferred request to service NN on that peer.
// Everything written on one handle is one request; close returns only once
// it is fsynced in the spool (ENOSPC and other disk errors are close's
// error). Delivery happens later, whether or not the peer is up now.
import type { PeerView } from './backend.js'
import { Body } from './body.js'
import { S_IFREG, type Attr, type FileNode, type Handle } from './types.js'

export class DeferFile implements FileNode {
  readonly stream = true

  constructor (private readonly peer: PeerView, private readonly svc: number, private readonly mtimeMs: number) {}

  attr (): Attr {
    return { mode: S_IFREG | 0o222, size: 0, mtimeMs: this.mtimeMs }
  }

  truncate (): void {}

  open (): DeferHandle {
    return new DeferHandle(this.peer, this.svc)
  }
}

/** One open defer/NN: the request body, queued at close. */
export class DeferHandle implements Handle {
  readonly direct = true
  private readonly body: Body

  constructor (private readonly peer: PeerView, private readonly svc: number) {
    this.body = new Body(() => peer.maxRequestBytes)
  }

  write (data: Buffer): number {
    return this.body.append(data)
  }

  async flush (): Promise<void> {
    if (this.body.length === 0 && !this.body.failed) return
    await this.peer.defer(this.svc, this.body.take())
  }
}
