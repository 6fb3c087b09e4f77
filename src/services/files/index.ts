// Managed files: the folder every node converges on. This is the facade
// the daemon wires: the passthrough hooks of files/ (ready, gone, writing,
// admit), the link events, and a typed handler for the files message
// family.
//
// A local write (closed, or renamed into place) publishes a version: a
// manifest signed with this node's key, stamped max(now, previous + 1); a
// removal publishes a tombstone. A peer's manifest that is trusted, valid
// and newer (manifest.ts) is recorded first, then the disk follows
// (store.ts, status.ts), fetching the content by hash if needed (fetch.ts;
// serve.ts answers such fetches); gossip.ts carries manifests and
// summaries (summary.ts). Every change of one name, local or
// remote, runs under that name's lock, in order.
//
// Never losing a write: a version for a name open for writing here waits
// ('pending') until the last writer closes; if the file was written, the
// close publishes it as a newer version, otherwise the waiting one goes in.
// A file the last run left open for writing (lib/writers.ts) is not
// published at the start, and holds versions for its name back the same
// way, until it is written and closed again, touched, renamed or removed.
import { lstatSync } from 'node:fs'
import { readdir, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import type { Clock } from '../../lib/clock.js'
import { RefCounts } from '../../lib/counts.js'
import type { Logger } from '../../lib/log.js'
import { joinRel } from '../../lib/names.js'
import { walkFiles } from '../../lib/walk.js'
import { WriterLog } from '../../lib/writers.js'
import type { Handler, Message } from '../../transport/messages/index.js'
import type { FilesMessage } from '../../transport/messages/files.js'
import { Fetcher } from './fetch.js'
import { Gossip } from './gossip.js'
import { ContentServer } from './serve.js'
import { ManifestSigner, fieldsError, newer, type Manifest } from './manifest.js'
import { creatableError, escapeName, IgnoreList, managedNameError } from './names.js'
import { sameStamp, sha256Of, stampOf } from './disk.js'
import { FileStore, type EntryState } from './store.js'

/** Files left unclosed that are remembered: as many as could be open for writing at once, and more. */
const MAX_UNCLOSED = 100_000

export { STATUS_NAME } from './store.js'
export { DEFAULT_IGNORE } from './names.js'
export { signManifest, newer, type Manifest } from './manifest.js'

export interface FilesLink {
  upPeers: () => string[]
  send: (peer: string, m: Message) => void
}

export interface FilesOptions {
  dir: string
  signSecret: Uint8Array
  trusted: (signer: string) => boolean
  /** A readable name for a signer key in the status file. */
  signerName: (signer: string) => string
  gossipMs: number
  /** Largest managed file; a local write past it fails (the tree answers EFBIG). */
  maxFileBytes: number
  /** files_ignore patterns: names that stay local. */
  ignore: readonly string[]
  clock: Clock
  log: Logger
  link: FilesLink
  onUpdate: (name: string) => void
}

export class ManagedFiles {
  readonly handler: Handler<FilesMessage>
  private readonly store: FileStore
  private readonly gossip: Gossip
  private readonly fetcher: Fetcher
  private readonly server: ContentServer
  private readonly signer: ManifestSigner
  private readonly ignore: IgnoreList
  private readonly writers = new RefCounts<string>()
  /** Written and closed (or changed by path), not yet published. */
  private readonly dirty = new Set<string>()
  /** The files open for writing, kept for the next start, and those the last run left unclosed (not published until released). */
  private readonly writerLog: WriterLog
  /** Names whose placement waits for a writer of the key to close. */
  private readonly waiting = new Map<string, Set<string>>()
  /** Names with work queued under their lock, so a removal can follow a publish in flight. */
  private readonly queued = new RefCounts<string>()

  constructor (private readonly opts: FilesOptions) {
    this.signer = new ManifestSigner(opts.signSecret)
    this.ignore = new IgnoreList(opts.ignore)
    this.store = new FileStore({
      dir: opts.dir,
      log: opts.log,
      clock: opts.clock,
      signerName: opts.signerName,
      writing: (n) => this.holdsBack(n),
      ignored: (n) => this.ignore.ignored(n),
      maxFileBytes: opts.maxFileBytes
    })
    this.writerLog = new WriterLog(path.join(opts.dir, 'writing'), this.store.dataDir, MAX_UNCLOSED)
    const send = (peer: string, m: FilesMessage): void => opts.link.send(peer, m)
    this.fetcher = new Fetcher({
      host: this.store,
      send,
      upPeers: opts.link.upPeers,
      clock: opts.clock,
      log: opts.log,
      onContent: (sha, names) => this.onContent(sha, names)
    })
    this.server = new ContentServer({ contentPath: (sha, hint) => this.store.contentPath(sha, hint), send, log: opts.log })
    this.gossip = new Gossip({
      host: {
        summary: this.store.summary,
        manifest: (n) => this.store.get(n)?.m,
        refuse: (m) => this.refuse(m),
        accept: async (m, peer) => await this.run(m.name, async () => await this.accept(m, peer)),
        holds: (n, peer) => {
          const e = this.store.get(n)
          if (e?.state === 'fetching') this.fetcher.addSource(e.m.sha256, peer)
        },
        busy: () => this.fetcher.busy
      },
      send,
      gossipMs: opts.gossipMs,
      clock: opts.clock,
      log: opts.log
    })
    this.handler = {
      fsum: (peer, m) => this.gossip.onSum(peer, m.nodes),
      fids: (peer, m) => this.gossip.onIds(peer, m.level, m.prefix, m.items),
      fwant: (peer, m) => this.gossip.onWant(peer, m.names),
      fadv: (peer, m) => this.gossip.onAdvert(peer, m.manifests),
      fack: (peer) => this.gossip.onAck(peer),
      fget: (peer, m) => this.server.onGet(peer, m.ranges),
      fdata: (peer, m) => this.fetcher.onData(peer, m.sha256, m.offset, m.data),
      fnone: (peer, m) => this.fetcher.onNone(peer, m.sha256)
    }
  }

  get dataDir (): string { return this.store.dataDir }
  get stats (): { files: number, fetching: number, unclosed: number, verified: number, refused: number } {
    return { files: this.store.size, fetching: this.fetcher.size, unclosed: this.writerLog.heldCount, verified: this.gossip.stats.verified, refused: this.gossip.stats.refused }
  }

  /** Loads the table, publishes what changed on disk while we were down, and settles the rest. */
  async start (): Promise<void> {
    await this.store.open()
    await this.importLegacy()
    const unclosed = await this.writerLog.load()
    if (unclosed.length > 0) {
      this.opts.log.warn({ count: unclosed.length, names: unclosed.slice(0, 20).map(escapeName) }, 'managed files still open for writing when peerfs last stopped are not published until written again, touched or removed')
    }
    const seen = new Set<string>()
    const work: Array<Promise<void>> = []
    for await (const { rel, st } of walkFiles(this.dataDir, { skipHidden: true })) {
      seen.add(rel)
      if (!this.publishable(rel) || this.writerLog.held(rel)) continue
      const e = this.store.get(rel)
      if (e !== undefined && sameStamp(e.disk, st)) continue
      work.push(this.run(rel, async () => await this.publishNow(rel)))
    }
    for (const name of [...this.store.names()]) {
      if (this.store.get(name)?.disk !== null && !seen.has(name)) work.push(this.run(name, async () => await this.publishNow(name)))
    }
    await Promise.all(work)
    await Promise.all([...this.store.names()].map(async n => await this.run(n, async () => await this.settle(n))))
    // Partials no want claims are leftovers of versions since replaced.
    const dir = path.dirname(this.store.partialPath('x'))
    for (const f of await readdir(dir)) if (!this.fetcher.has(f.split('.')[0])) await rm(path.join(dir, f), { force: true })
    // Not fatal: a full disk must not keep the daemon from starting, and so
    // from sending what would free it. The next change writes it again.
    await this.store.writeStatus().catch((err: unknown) => this.opts.log.error({ err }, 'cannot write the managed-file status'))
    this.gossip.start()
  }

  /** State from before the journal (one JSON file per manifest): recorded once, then removed. */
  private async importLegacy (): Promise<void> {
    const dir = path.join(this.opts.dir, 'manifests')
    const files = await readdir(dir).catch(() => undefined)
    if (files === undefined) return
    for (const f of files) {
      const m = JSON.parse(await readFile(path.join(dir, f), 'utf8').catch(() => 'null')) as Manifest | null
      if (m === null || typeof m.name !== 'string' || this.refuse(m) !== undefined || !newer(m, this.store.get(m.name)?.m)) continue
      await this.store.record(m.name, m, null, m.deleted ? 'deleted' : 'fetching').durable
    }
    await rm(dir, { recursive: true, force: true })
    await rm(path.join(this.opts.dir, 'incoming'), { recursive: true, force: true })
  }

  async stop (): Promise<void> {
    this.gossip.stop()
    this.fetcher.stop()
    this.writerLog.close()
    await this.store.close()
  }

  linkUp (peer: string): void {
    this.server.linkUp(peer)
    this.fetcher.linkUp(peer)
    this.gossip.linkUp(peer)
  }

  linkDown (peer: string): void {
    this.gossip.linkDown(peer)
    this.fetcher.linkDown(peer)
    this.server.linkDown(peer)
  }

  list (): Manifest[] { return [...this.store.names()].sort().map(n => this.store.get(n)?.m as Manifest) }
  /** Where a name stands: 'ok' (on disk), 'deleted', 'fetching', 'pending', 'shadowed', 'blocked', 'ignored'. */
  state (name: string): EntryState | undefined { return this.store.get(name)?.state }

  /** Hook: refuses a new name the listings could not show (EINVAL). */
  admit (rel: string): void {
    const err = creatableError(rel)
    if (err !== undefined) throw err
  }

  /** Hook: a handle writing rel opened (+1) or closed (-1). */
  writing (rel: string, delta: number): void {
    const had = this.writers.has(rel)
    this.writers.add(rel, delta)
    // Only names that are published: editor debris and hidden names stay local, held or not.
    if (!had && this.writers.has(rel) && this.publishable(rel)) this.writerLog.opened(rel)
    if (delta < 0 && !this.writers.has(rel)) {
      this.writerLog.closed(rel)
      void this.run(rel, async () => await this.closed(rel))
    }
  }

  /**
   * Hook: a write to rel failed. Its content is not what its writer meant:
   * not published, and held, as one left unclosed is, until written again,
   * touched or removed; versions from peers wait for it meanwhile.
   */
  failed (rel: string, why: string): void {
    if (!this.publishable(rel)) return
    this.opts.log.warn({ name: escapeName(rel), reason: why }, 'a write to a managed file failed; it is not published until written again, touched or removed')
    this.writerLog.hold(rel)
    this.dirty.delete(rel)
  }

  /** Hook: the file at rel (or a folder of them) was written and closed, or changed by path. */
  ready (rel: string): void {
    this.writerLog.release(rel)
    this.publishSoon(rel)
  }

  /** rel changed: published once no writer has it open (its close does it then). */
  private publishSoon (rel: string): void {
    this.dirty.add(rel)
    if (!this.writers.has(rel)) void this.run(rel, async () => await this.publishAndWake(rel))
  }

  /** A local write of name is under way or unpublished, or one the last run left unclosed: versions from peers wait for it. */
  private holdsBack (name: string): boolean {
    return this.writers.has(name) || this.dirty.has(name) || this.writerLog.held(name)
  }

  /** name is one that is published: not editor debris, an ignored name, or a name the listings could not carry. */
  private publishable (name: string): boolean {
    return managedNameError(name) === undefined && !this.ignore.ignored(name)
  }

  /** Hook: rel (a file or a folder) went away: tombstones for what we published there. */
  gone (rel: string): void {
    const names = new Set([rel])
    if (this.store.liveBelow(rel) > 0) for (const n of this.store.namesUnder(rel)) names.add(n)
    for (const n of this.queued.keys()) if (n.startsWith(rel + '/')) names.add(n)
    for (const n of this.writerLog.heldUnder(rel)) names.add(n)
    for (const n of names) {
      this.writerLog.release(n)
      this.dirty.delete(n)
      void this.run(n, async () => await this.publishAndWake(n))
    }
  }

  /** Publishes name, then lets in the versions that waited for it (a file left unclosed holds them). */
  private async publishAndWake (name: string): Promise<void> {
    await this.publishNow(name)
    this.wake(name)
  }

  /** Runs fn under name's lock; a failure is logged, never thrown at a hook. */
  private async run (name: string, fn: () => Promise<unknown>): Promise<void> {
    this.queued.add(name, 1)
    try {
      await this.store.lock.run(name, fn)
    } catch (err) {
      this.opts.log.error({ name: escapeName(name), err }, 'managed file work failed')
    } finally {
      this.queued.add(name, -1)
    }
  }

  private refuse (m: Manifest): string | undefined {
    const bad = fieldsError(m) ?? managedNameError(m.name)
    if (bad !== undefined) return bad
    return this.opts.trusted(m.signer) ? undefined : 'signed by an untrusted key'
  }

  /** The last writer closed: publish what it wrote, or let a waiting version in. */
  private async closed (rel: string): Promise<void> {
    if (this.dirty.has(rel)) await this.publishNow(rel)
    else await this.settle(rel)
    this.wake(rel)
  }

  /** Settles the names that waited for rel's writer. */
  private wake (rel: string): void {
    const names = this.waiting.get(rel)
    if (names === undefined || this.holdsBack(rel)) return
    this.waiting.delete(rel)
    for (const n of names) void this.run(n, async () => await this.settle(n))
  }

  /** Signs the local state of name (its content, or its absence) as a new version. Under name's lock. */
  private async publishNow (name: string): Promise<void> {
    this.dirty.delete(name)
    if (!this.publishable(name)) return
    const file = path.join(this.dataDir, name)
    const st = lstatSync(file, { throwIfNoEntry: false })
    const e = this.store.get(name)
    if (st?.isDirectory() === true) {
      for await (const f of walkFiles(file, { skipHidden: true })) this.ready(joinRel(name, f.rel))
      return
    }
    if (st !== undefined && !st.isFile()) return
    let m: Manifest
    let sha = ''
    if (st === undefined) {
      if (e === undefined || e.m.deleted || e.disk === null) return
      m = this.signer.sign({ name, version: Math.max(this.opts.clock.now(), e.m.version + 1), size: 0, sha256: '', deleted: true })
    } else {
      if (st.size > this.opts.maxFileBytes) {
        this.opts.log.error({ name: escapeName(name), size: st.size, limit: this.opts.maxFileBytes }, 'managed file over files_max_bytes; not published')
        return
      }
      if (e !== undefined && sameStamp(e.disk, st) && e.state !== 'pending') return
      sha = await sha256Of(file, st.size).catch(() => '')
      if (sha === '') return
      // Rewritten while it was hashed (a save right after a save): the hash is of neither
      // version, and a manifest of it would never be fetched. Its close, or this, publishes it.
      const after = lstatSync(file, { throwIfNoEntry: false })
      if (after === undefined || !sameStamp(stampOf(st, sha), after)) return this.publishSoon(name)
      // Metadata only (touch, chmod), or the content we installed: no new version.
      if (e !== undefined && e.disk?.sha256 === sha && e.state !== 'pending') {
        await this.store.record(name, e.m, stampOf(st, sha), e.state).durable
        return
      }
      if (e !== undefined && !e.m.deleted && e.m.sha256 === sha) {
        await this.store.record(name, e.m, stampOf(st, sha), 'ok').durable
        return
      }
      m = this.signer.sign({ name, version: Math.max(this.opts.clock.now(), (e?.m.version ?? 0) + 1), size: st.size, sha256: sha, deleted: false })
    }
    const prev = e?.m
    const r = this.store.record(name, m, st === undefined ? null : stampOf(st, sha), m.deleted ? 'deleted' : 'ok')
    await r.durable
    if (prev !== undefined && !prev.deleted) this.fetcher.drop(prev.sha256, name)
    this.opts.log.info({ name: escapeName(name), version: m.version, deleted: m.deleted }, 'published managed file')
    this.changed(name, r.unshadow)
    this.wake(name)
  }

  /** A verified manifest from peer: recorded, then the disk follows. Under its name's lock. */
  private async accept (m: Manifest, peer: string): Promise<void> {
    const e = this.store.get(m.name)
    if (!newer(m, e?.m)) return
    const r = this.store.record(m.name, m, e?.disk ?? null, m.deleted ? 'deleted' : 'fetching')
    await r.durable
    if (e !== undefined && !e.m.deleted && e.m.sha256 !== m.sha256) this.fetcher.drop(e.m.sha256, m.name)
    for (const a of r.unshadow) void this.run(a, async () => await this.settle(a))
    const changed = await this.settle(m.name, peer)
    if (changed) this.opts.onUpdate(m.name)
    if (this.store.get(m.name)?.state !== 'fetching') this.gossip.push(m.name, peer)
  }

  /** The disk changed for name: tell the user and the peers. */
  private changed (name: string, unshadow: string[]): void {
    this.opts.onUpdate(name)
    this.gossip.push(name)
    for (const a of unshadow) void this.run(a, async () => await this.settle(a))
  }

  /** Brings the disk to name's entry; true if the disk changed. Under name's lock. */
  private async settle (name: string, source?: string): Promise<boolean> {
    const r = await this.store.settle(name)
    if (r.kind === 'done') return r.changed
    if (r.kind === 'fetch') {
      const e = this.store.get(name)
      if (e !== undefined) this.fetcher.want(e.m.sha256, e.m.size, name, source)
    } else if (r.kind === 'wait') {
      let s = this.waiting.get(r.on)
      if (s === undefined) this.waiting.set(r.on, s = new Set())
      s.add(name)
    } else {
      const a = r.name
      void this.run(a, async () => {
        if (await this.store.displace(a) === 'changed') {
          await this.publishNow(a)
          await this.store.displace(a)
        }
      }).then(async () => await this.run(name, async () => await this.settleAndPush(name)))
    }
    return false
  }

  private async settleAndPush (name: string): Promise<void> {
    const before = this.store.get(name)?.state
    if (await this.settle(name)) this.opts.onUpdate(name)
    const after = this.store.get(name)?.state
    if (after !== before && after !== 'fetching') this.gossip.push(name)
  }

  private onContent (sha: string, names: string[]): void {
    for (const n of names) {
      void this.run(n, async () => {
        if (this.store.get(n)?.m.sha256 === sha) await this.settleAndPush(n)
      })
    }
    // Fetched for names that have moved on since: not kept.
    void Promise.all(names.map(async n => await this.store.lock.run(n, async () => {}))).then(async () => await this.store.gcObject(sha))
  }
}
