// The state folder's layout: every path under state/ is named here and
// nowhere else, so a newcomer can read what lives on disk in one place.
//
//   outbox/<peer>/     the real folder behind peers/<peer>/outbox/
//   inbox/<peer>/      files that peer sent us (unless its config names a folder)
//   spool/<peer>/      the outbox sender's saved transfers
//   writing/<peer>     the outbox files open for writing (lib/writers.ts)
//   partial/           transfers being received, until verified and placed
//   deferred/<peer>/   deferred requests to that peer, until acknowledged
//   applied/           deferred requests we applied, for exactly once
//   files/             managed files: data/ (behind files/), journal, objects/, partial/, writing
import path from 'node:path'

export class StateLayout {
  constructor (
    readonly root: string,
    /** A peer's configured inbox folder, if it has one. */
    private readonly inboxOverride: (peer: string) => string | undefined = () => undefined
  ) {}

  outbox (peer: string): string { return path.join(this.root, 'outbox', peer) }
  inbox (peer: string): string { return this.inboxOverride(peer) ?? path.join(this.root, 'inbox', peer) }
  transferSpool (peer: string): string { return path.join(this.root, 'spool', peer) }
  outboxWriters (peer: string): string { return path.join(this.root, 'writing', peer) }
  deferred (peer: string): string { return path.join(this.root, 'deferred', peer) }
  get partial (): string { return path.join(this.root, 'partial') }
  get applied (): string { return path.join(this.root, 'applied') }
  get files (): string { return path.join(this.root, 'files') }
  /** The real folder behind files/. */
  get filesData (): string { return path.join(this.files, 'data') }
}
