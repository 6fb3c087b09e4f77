// Content by hash: pulled from peers that hold it, in ranges of at most
// CHUNK bytes, each answered by one fdata on the bulk lane (so a large file
// never holds up a transaction).
//
// A want is one hash some names need. It is 'queued' on its first source
// that is up, 'active' while ranges are asked of that source, 'parked'
// while no source can give it (retried with backoff, then asking every
// peer that is up), 'arriving' once verified, while it moves to objects/.
// Bytes land in partial/<sha>.part at their offset, so a
// broken link or a restart resumes from what is there; the whole file is
// checked against the signed hash before it moves to objects/<sha>, and a
// mismatch discards the partial and drops that source.
// Bounds: per peer, WINDOW bytes and MAX_RANGES ranges in flight and
// MAX_ACTIVE wants at once. Serving them is serve.ts.
import { createHash } from 'node:crypto'
import { createReadStream, statSync } from 'node:fs'
import { open, rename, rm, type FileHandle } from 'node:fs/promises'
import type { Clock, Timer } from '../../lib/clock.js'
import type { Logger } from '../../lib/log.js'
import { MAX_CHUNK, MAX_GET, type FilesMessage, type GetRange } from '../../transport/messages/files.js'

export const CHUNK = MAX_CHUNK
/** Bytes asked of one peer and not yet answered, at most. */
export const WINDOW = 8 << 20
const MAX_RANGES = 128
const MAX_ACTIVE = 64
const PARK_MIN_MS = 1000
const PARK_MAX_MS = 5 * 60_000

export interface ContentHost {
  objectPath: (sha: string) => string
  partialPath: (sha: string) => string
  addObject: (sha: string) => void
}

export interface FetchOptions {
  host: ContentHost
  send: (peer: string, m: FilesMessage) => void
  upPeers: () => string[]
  clock: Clock
  log: Logger
  /** Verified content for sha is in objects/. */
  onContent: (sha: string, names: string[]) => void
}

type WantState = 'queued' | 'active' | 'parked' | 'arriving'

interface Want {
  sha: string
  size: number
  names: Set<string>
  /** Peers that may hold it, best first. */
  sources: string[]
  state: WantState
  peer: string | undefined
  /** Next offset to ask for, and next offset expected back. */
  asked: number
  got: number
  fh: FileHandle | undefined
  writes: Promise<void>
  parkMs: number
  timer: Timer | undefined
  /** Counts the times it was taken off a peer: a step of an earlier turn (a finish awaiting its writes) stops at a newer one. */
  turn: number
}

interface PeerState {
  bytes: number
  ranges: number
  active: Set<string>
  queue: Set<string>
  pumping: boolean
}

function rangeLen (w: Want, offset: number): number { return Math.min(CHUNK, w.size - offset) }

export class Fetcher {
  private readonly wants = new Map<string, Want>()
  private readonly peers = new Map<string, PeerState>()

  constructor (private readonly opts: FetchOptions) {}

  get size (): number { return this.wants.size }
  /** Wants being fetched or queued for a peer that is up (parked ones wait for a source). */
  get busy (): boolean {
    for (const p of this.peers.values()) if (p.active.size > 0 || p.queue.size > 0) return true
    return false
  }
  has (sha: string): boolean { return this.wants.has(sha) }

  /** Clears the retry timers (the daemon is stopping). */
  stop (): void {
    for (const w of this.wants.values()) this.opts.clock.clearTimeout(w.timer)
  }

  linkUp (peer: string): void {
    this.linkDown(peer)
    this.peers.set(peer, { bytes: 0, ranges: 0, active: new Set(), queue: new Set(), pumping: false })
    for (const w of this.wants.values()) {
      if (w.state !== 'parked') continue
      // A want no known source can serve asks the newcomer (after a restart, nobody is known yet).
      if (!w.sources.some(s => s !== peer && this.peers.has(s)) && !w.sources.includes(peer)) w.sources.push(peer)
      if (w.sources.includes(peer)) this.requeue(w)
    }
  }

  linkDown (peer: string): void {
    const p = this.peers.get(peer)
    this.peers.delete(peer)
    if (p === undefined) return
    for (const sha of [...p.active, ...p.queue]) {
      const w = this.wants.get(sha)
      if (w === undefined) continue
      this.halt(w)
      // Still a source once it is back; others first meanwhile.
      w.sources = [...w.sources.filter(s => s !== peer), peer]
      this.requeue(w)
    }
  }

  /** names[0] needs sha; source, if given, has just shown it holds it. */
  want (sha: string, size: number, name: string, source?: string): void {
    let w = this.wants.get(sha)
    if (w === undefined) {
      w = { sha, size, names: new Set(), sources: [], state: 'parked', peer: undefined, asked: 0, got: 0, fh: undefined, writes: Promise.resolve(), parkMs: PARK_MIN_MS, timer: undefined, turn: 0 }
      this.wants.set(sha, w)
    }
    w.names.add(name)
    if (source !== undefined) this.addSource(sha, source)
    else if (w.state === 'parked' && w.timer === undefined) {
      // No peer has shown it holds it: ask the ones that are up.
      w.sources = [...new Set([...w.sources, ...this.opts.upPeers()])]
      this.requeue(w)
    }
  }

  /** A peer holds sha (it advertised or summarised the same manifest). */
  addSource (sha: string, peer: string): void {
    const w = this.wants.get(sha)
    if (w === undefined || w.sources[0] === peer) return
    w.sources = [peer, ...w.sources.filter(s => s !== peer)]
    if (w.state === 'parked') this.requeue(w)
  }

  /** name no longer needs sha; the want goes when no name does. */
  drop (sha: string, name: string): void {
    const w = this.wants.get(sha)
    if (w === undefined || !w.names.delete(name) || w.names.size > 0) return
    this.wants.delete(sha)
    this.halt(w)
    this.opts.clock.clearTimeout(w.timer)
    void w.writes.then(async () => await rm(this.opts.host.partialPath(sha), { force: true }))
  }

  /** Takes a want off its peer: forgets what is in flight (late answers are ignored). */
  private halt (w: Want): void {
    w.turn++
    const p = w.peer === undefined ? undefined : this.peers.get(w.peer)
    if (p !== undefined) {
      p.active.delete(w.sha)
      p.queue.delete(w.sha)
      if (w.state === 'active') {
        p.bytes -= w.asked - w.got
        p.ranges -= Math.ceil((w.asked - w.got) / CHUNK)
      }
    }
    const fh = w.fh
    w.fh = undefined
    w.writes = w.writes.then(async () => await fh?.close()).catch(() => {})
    w.peer = undefined
    w.state = 'parked'
  }

  private requeue (w: Want): void {
    this.opts.clock.clearTimeout(w.timer)
    w.timer = undefined
    const peer = w.sources.find(s => this.peers.has(s))
    if (peer === undefined) {
      w.state = 'parked'
      // Nobody we know of holds it: after a while, ask every peer that is up.
      w.timer = this.opts.clock.setTimeout(() => {
        w.timer = undefined
        if (this.wants.get(w.sha) !== w) return
        w.sources = [...new Set([...w.sources, ...this.opts.upPeers()])]
        w.parkMs = Math.min(PARK_MAX_MS, w.parkMs * 2)
        if (w.sources.some(s => this.peers.has(s))) this.requeue(w)
      }, w.parkMs)
      return
    }
    w.state = 'queued'
    w.peer = peer
    const p = this.peers.get(peer) as PeerState
    p.queue.add(w.sha)
    this.schedulePump(peer)
  }

  /**
   * Asks for more once the current burst of events is handled, so many
   * wants queued together go out in a few fget messages, not one each.
   */
  private schedulePump (peer: string): void {
    const p = this.peers.get(peer)
    if (p === undefined || p.pumping) return
    p.pumping = true
    setImmediate(() => {
      p.pumping = false
      if (this.peers.get(peer) === p) this.pump(peer)
    })
  }

  private pump (peer: string): void {
    const p = this.peers.get(peer)
    if (p === undefined) return
    const ranges: GetRange[] = []
    const room = (): boolean => p.bytes < WINDOW && p.ranges < MAX_RANGES
    const ask = (w: Want): void => {
      while (w.asked < w.size && room()) {
        const len = rangeLen(w, w.asked)
        ranges.push({ name: w.names.values().next().value as string, sha256: Buffer.from(w.sha, 'hex'), offset: w.asked, len })
        w.asked += len
        p.bytes += len
        p.ranges++
      }
    }
    for (const sha of p.active) {
      if (!room()) break
      const w = this.wants.get(sha) as Want
      if (w.asked < w.size) ask(w)
    }
    for (const sha of p.queue) {
      if (!room() || p.active.size >= MAX_ACTIVE) break
      const w = this.wants.get(sha) as Want
      p.queue.delete(sha)
      p.active.add(sha)
      w.state = 'active'
      // Resume a large file from the bytes already kept.
      const have = w.size > CHUNK ? statSync(this.opts.host.partialPath(sha), { throwIfNoEntry: false })?.size ?? 0 : 0
      w.asked = w.got = Math.min(have, w.size)
      ask(w)
      if (w.asked === w.size && w.got === w.size) void this.finish(w, peer)
    }
    try {
      for (let i = 0; i < ranges.length; i += MAX_GET) this.opts.send(peer, { type: 'fget', ranges: ranges.slice(i, i + MAX_GET) })
    } catch {
      // The link is going; linkDown requeues.
    }
  }

  onData (peer: string, sha: Buffer, offset: number, data: Buffer): void {
    const w = this.wants.get(sha.toString('hex'))
    if (w === undefined || w.peer !== peer || w.state !== 'active' || offset !== w.got) return
    const p = this.peers.get(peer) as PeerState
    const len = rangeLen(w, offset)
    p.bytes -= len
    p.ranges--
    if (data.length !== len) {
      this.fail(w, peer, `sent ${data.length} bytes for a range of ${len}`, true)
      return
    }
    w.got += len
    if (offset === 0 && len === w.size) {
      void this.finishSmall(w, peer, data)
    } else {
      w.writes = w.writes.then(async () => {
        w.fh ??= await open(this.opts.host.partialPath(w.sha), offset === 0 ? 'w' : 'r+', 0o644)
        await w.fh.write(data, 0, data.length, offset)
      })
      if (w.got === w.size) void this.finish(w, peer)
    }
    this.schedulePump(peer)
  }

  onNone (peer: string, sha: Buffer): void {
    const w = this.wants.get(sha.toString('hex'))
    if (w !== undefined && w.peer === peer) this.fail(w, peer, 'does not hold it', false)
  }

  private fail (w: Want, peer: string, why: string, discard: boolean): void {
    this.opts.log.debug({ peer, sha: w.sha, why }, 'managed-file content not fetched from this peer')
    this.halt(w)
    w.sources = w.sources.filter(s => s !== peer)
    if (discard) w.writes = w.writes.then(async () => await rm(this.opts.host.partialPath(w.sha), { force: true }))
    this.requeue(w)
    this.schedulePump(peer)
  }

  private async finishSmall (w: Want, peer: string, data: Buffer): Promise<void> {
    if (createHash('sha256').update(data).digest('hex') !== w.sha) {
      this.fail(w, peer, 'content does not match its signed hash', true)
      return
    }
    this.done(w, peer)
    try {
      const part = this.opts.host.partialPath(w.sha)
      const fh = await open(part, 'w', 0o644)
      try {
        await fh.writeFile(data)
        await fh.sync()
      } finally {
        await fh.close()
      }
      await this.arrived(w, part)
    } catch (err) {
      this.lost(w, err)
    }
  }

  private async finish (w: Want, peer: string): Promise<void> {
    const turn = w.turn
    await w.writes
    // Taken off the peer meanwhile, even if it is back with this want: the new turn finishes it.
    if (this.wants.get(w.sha) !== w || w.turn !== turn || w.state !== 'active') return
    const part = this.opts.host.partialPath(w.sha)
    try {
      await w.fh?.sync()
      await w.fh?.close()
      w.fh = undefined
      const hash = createHash('sha256')
      for await (const chunk of createReadStream(part)) hash.update(chunk as Buffer)
      if (hash.digest('hex') !== w.sha) {
        this.fail(w, peer, 'content does not match its signed hash', true)
        return
      }
      this.done(w, peer)
      await this.arrived(w, part)
    } catch (err) {
      this.lost(w, err)
    }
  }

  /** The source delivered: off its books, so the next want can start. */
  private done (w: Want, peer: string): void {
    const p = this.peers.get(peer)
    p?.active.delete(w.sha)
    w.state = 'arriving'
    w.peer = undefined
    this.schedulePump(peer)
  }

  private async arrived (w: Want, part: string): Promise<void> {
    await rename(part, this.opts.host.objectPath(w.sha))
    this.opts.host.addObject(w.sha)
    if (this.wants.get(w.sha) === w) this.wants.delete(w.sha)
    this.opts.onContent(w.sha, [...w.names])
  }

  /** A local failure (disk full): try again later. */
  private lost (w: Want, err: unknown): void {
    this.opts.log.error({ sha: w.sha, err }, 'cannot keep fetched managed-file content')
    if (this.wants.get(w.sha) !== w) return
    w.state = 'parked'
    w.timer = this.opts.clock.setTimeout(() => this.requeue(w), w.parkMs)
    w.parkMs = Math.min(PARK_MAX_MS, w.parkMs * 2)
  }
}
