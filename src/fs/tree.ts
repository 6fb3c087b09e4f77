// The mounted tree, built from tables (Plan 9's Dirtab) rather than path
// switches:
//
//   status  metrics  events  svc/NN  pkt/NN  files/  tile/<ALIAS> -> ../peers/<id>
//   peers/<id>/{state,status,ctl,svc/NN,defer/NN,defer/log,outbox/,inbox/}
//
// Per-peer folders are cached so a file's state (a request file's last
// reply) lives as long as the peer stays configured. A new kind of entry
// is one line in ROOT_DIRTAB or PEER_DIRTAB.
import { isReserved } from '../lib/names.js'
import { ALL_SERVICES, parseSvcName, svcName, USER_SERVICES } from '../lib/svc.js'
import type { Backend, PeerView, ServiceHost } from './backend.js'
import { CtlFile } from './ctl.js'
import { DeferFile } from './defer.js'
import { PassRoot } from './passthrough.js'
import { EventsFile } from './events-file.js'
import { PacketDir } from './packet.js'
import { RequestFile } from './request.js'
import { ServerFile } from './server.js'
import { TextFile, keyValueLines } from './text.js'
import { S_IFDIR, S_IFLNK, type Attr, type DirNode, type FsNode, type SymlinkNode } from './types.js'

export const PEER_COMMANDS = ['reconnect', 'reset', 'disconnect'] as const
const ALL_SVC_NAMES = ALL_SERVICES.map(svcName)

/** A directory of fixed entries. */
export class StaticDir implements DirNode {
  constructor (private readonly entries: Map<string, FsNode>, private readonly mtimeMs: number) {}
  attr (): Attr { return { mode: S_IFDIR | 0o755, mtimeMs: this.mtimeMs } }
  lookup (name: string): FsNode | undefined { return this.entries.get(name) }
  list (): string[] { return [...this.entries.keys()] }
}

class Symlink implements SymlinkNode {
  constructor (private readonly target: string, private readonly mtimeMs: number) {}
  attr (): Attr { return { mode: S_IFLNK | 0o777, size: this.target.length, mtimeMs: this.mtimeMs } }
  readlink (): string { return this.target }
}

interface RootEntry { name: string, make: (b: Backend, t: number, now: () => number) => FsNode }

const ROOT_DIRTAB: readonly RootEntry[] = [
  { name: 'status', make: (b, t, now) => new TextFile(() => b.summary(), t, now) },
  { name: 'metrics', make: (b, t, now) => new TextFile(() => b.metrics(), t, now) },
  { name: 'events', make: (b, t, now) => new EventsFile(b.events, t, now) },
  { name: 'svc', make: (b, t) => new ServerServiceDir(b.services, t) },
  { name: 'pkt', make: (b, t) => new PacketDir(b.packets, t) },
  { name: 'files', make: (b) => new PassRoot(b.filesDir, b.filesHooks, false).top() },
  { name: 'peers', make: (b, t) => new PeersDir(b, t) },
  { name: 'tile', make: (b, t) => new TileDir(b, t) }
]

interface PeerEntry { name: string, make: (p: PeerView, t: number) => FsNode }

const PEER_DIRTAB: readonly PeerEntry[] = [
  { name: 'state', make: (p, t) => new TextFile(() => p.state() + '\n', t) },
  { name: 'status', make: (p, t) => new TextFile(() => keyValueLines(p.status()), t) },
  { name: 'ctl', make: (p, t) => new CtlFile(PEER_COMMANDS, (cmd) => p.control(cmd), t) },
  { name: 'svc', make: (p, t) => new PerServiceDir((n) => new RequestFile(p, n, t), new Map(), t) },
  { name: 'defer', make: (p, t) => new PerServiceDir((n) => new DeferFile(p, n, t), new Map([['log', new TextFile(async () => await p.deferLog(), t)]]), t) },
  { name: 'outbox', make: (p) => new PassRoot(p.outboxDir, p.outboxHooks, false).top() },
  // A file placed across filesystems is copied beside its destination under a reserved name first (delivery.ts).
  { name: 'inbox', make: (p) => new PassRoot(p.inboxDir, {}, true, isReserved).top() }
]

/** A peer's svc/ or defer/: one file per service 01..63, made on first use, plus fixed extras. */
class PerServiceDir implements DirNode {
  private readonly files = new Map<string, FsNode>()
  constructor (private readonly make: (svc: number) => FsNode, private readonly extras: Map<string, FsNode>, private readonly mtimeMs: number) {}
  attr (): Attr { return { mode: S_IFDIR | 0o755, mtimeMs: this.mtimeMs } }
  list (): string[] { return [...ALL_SVC_NAMES, ...this.extras.keys()] }
  lookup (name: string): FsNode | undefined {
    const extra = this.extras.get(name)
    if (extra !== undefined) return extra
    const svc = parseSvcName(name)
    if (svc === undefined) return undefined
    let f = this.files.get(name)
    if (f === undefined) {
      f = this.make(svc)
      this.files.set(name, f)
    }
    return f
  }
}

/** svc/: one server file per user service, 09..63. */
class ServerServiceDir implements DirNode {
  private readonly files: Map<string, ServerFile>
  constructor (host: ServiceHost, private readonly mtimeMs: number) {
    this.files = new Map(USER_SERVICES.map(n => [svcName(n), new ServerFile(host, n, mtimeMs)]))
  }

  attr (): Attr { return { mode: S_IFDIR | 0o755, mtimeMs: this.mtimeMs } }
  list (): string[] { return [...this.files.keys()] }
  lookup (name: string): FsNode | undefined { return this.files.get(name) }
}

class PeersDir implements DirNode {
  private readonly dirs = new Map<string, { view: PeerView, dir: StaticDir }>()
  constructor (private readonly backend: Backend, private readonly mtimeMs: number) {}
  attr (): Attr { return { mode: S_IFDIR | 0o755, mtimeMs: this.mtimeMs } }
  list (): string[] { return this.backend.peers().map(p => p.id) }
  lookup (name: string): FsNode | undefined {
    const view = this.backend.peer(name)
    if (view === undefined) {
      this.dirs.delete(name)
      return undefined
    }
    let cached = this.dirs.get(name)
    if (cached === undefined || cached.view !== view) {
      cached = { view, dir: new StaticDir(new Map(PEER_DIRTAB.map(e => [e.name, e.make(view, this.mtimeMs)])), this.mtimeMs) }
      this.dirs.set(name, cached)
    }
    return cached.dir
  }
}

class TileDir implements DirNode {
  constructor (private readonly backend: Backend, private readonly mtimeMs: number) {}
  attr (): Attr { return { mode: S_IFDIR | 0o755, mtimeMs: this.mtimeMs } }
  list (): string[] { return this.backend.peers().flatMap(p => p.alias === undefined ? [] : [p.alias]) }
  lookup (name: string): FsNode | undefined {
    const p = this.backend.peers().find(v => v.alias === name)
    return p === undefined ? undefined : new Symlink(`../peers/${p.id}`, this.mtimeMs)
  }
}

export function buildTree (backend: Backend, now: () => number = Date.now): DirNode {
  const t = backend.startedAt
  return new StaticDir(new Map(ROOT_DIRTAB.map(e => [e.name, e.make(backend, t, now)])), t)
}
