// Serving content to peers: each fget range is read from the file that
// holds that hash (in the tree, or set aside in objects/) and sent as one
// fdata on the bulk lane; a hash we do not hold is answered once per
// message with fnone. Ranges of one peer are read one at a time, in order,
// and at most MAX_QUEUED wait per peer: more is a peer asking past any
// window, and its excess is dropped (it asks again).
import { open } from 'node:fs/promises'
import { SerialLock } from '../../lib/lock.js'
import type { Logger } from '../../lib/log.js'
import type { FilesMessage, GetRange } from '../../transport/messages/files.js'

const MAX_QUEUED = 1024

export interface ServeOptions {
  /** Where we hold content for sha (hint: a name that may hold it), if we do. */
  contentPath: (sha: string, hint: string) => string | undefined
  send: (peer: string, m: FilesMessage) => void
  log: Logger
}

interface PeerQueue { queued: number, readonly lock: SerialLock }

export class ContentServer {
  private readonly peers = new Map<string, PeerQueue>()

  constructor (private readonly opts: ServeOptions) {}

  linkUp (peer: string): void { this.peers.set(peer, { queued: 0, lock: new SerialLock() }) }
  linkDown (peer: string): void { this.peers.delete(peer) }

  onGet (peer: string, ranges: GetRange[]): void {
    const p = this.peers.get(peer)
    if (p === undefined) return
    if (p.queued + ranges.length > MAX_QUEUED) {
      this.opts.log.warn({ peer, queued: p.queued }, 'managed-file requests over the limit dropped')
      return
    }
    p.queued += ranges.length
    void p.lock.run(async () => {
      const refused = new Set<string>()
      for (const r of ranges) {
        p.queued--
        if (this.peers.get(peer) !== p) continue
        const sha = r.sha256.toString('hex')
        if (refused.has(sha)) continue
        const data = await this.read(r, sha).catch(() => undefined)
        if (data === undefined) refused.add(sha)
        // The link went while it was read (and may be back): what was asked
        // on it is not answered on the next, where a stale "none" would
        // drop us as a source of what we hold.
        if (this.peers.get(peer) !== p) continue
        try {
          this.opts.send(peer, data === undefined ? { type: 'fnone', sha256: r.sha256 } : { type: 'fdata', sha256: r.sha256, offset: r.offset, data })
        } catch {
          // The link is going; linkDown ends this queue.
        }
      }
    })
  }

  /** The range's bytes, or a rejection if we do not hold sha (or cannot read it). */
  private async read (r: GetRange, sha: string): Promise<Buffer> {
    const file = this.opts.contentPath(sha, r.name)
    if (file === undefined) throw new Error('not held')
    const fh = await open(file, 'r')
    try {
      const buf = Buffer.allocUnsafe(r.len)
      const { bytesRead } = await fh.read(buf, 0, r.len, r.offset)
      return buf.subarray(0, bytesRead)
    } finally {
      await fh.close()
    }
  }
}
