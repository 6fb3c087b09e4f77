// Managed files: the folder every node converges on.
//
// A local write under files/ (closed, or renamed into place) publishes a
// version: a manifest {name, version, size, sha256, deleted, signer}
// signed with this node's Ed25519 key; a removal publishes a signed
// tombstone. A node accepts a manifest only if its signer is trusted and
// it is newer than what it holds: higher version, then higher signer key,
// then higher hash, the same order on every node. New content is written
// aside, checked against the manifest's hash, fsynced, then renamed into
// place, so a reader never sees half a file.
//
// Gossip: a changed manifest is pushed to every peer that is up, a peer
// that comes up gets all of them, and every gossipMs one random up peer
// gets all of them again (anti-entropy). A node that sees a newer manifest
// asks the advertiser for that content, and once it has it, advertises it
// onward, so files cross several hops.
//
// State: <dir>/data/<name> (what files/ shows), <dir>/manifests/<b64 name>.json.
import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises'
import path from 'node:path'
import nacl from 'tweetnacl'
import type { Clock, Timer } from '../lib/clock.js'
import type { Logger } from '../lib/log.js'
import type { Message } from '../transport/messages/index.js'
import { badRelPath } from '../lib/names.js'
import { fsErrorOf, fsyncDir, setTimes, writeDurable } from '../lib/durable.js'

export const STATUS_NAME = '.peerfs-status'
export const MAX_FILE_BYTES = 16 << 20
const ADVERT_CHUNK = 500

export interface Manifest {
  name: string
  version: number
  size: number
  sha256: string
  deleted: boolean
  /** Ed25519 public key, base64url. */
  signer: string
  /** Signature over signedBytes(), base64url. */
  sig: string
}

export function signedBytes (m: Omit<Manifest, 'sig'>): Uint8Array {
  return Buffer.from(JSON.stringify(['peerfs-file-v1', m.name, m.version, m.size, m.sha256, m.deleted, m.signer]))
}

export function signManifest (m: Omit<Manifest, 'sig' | 'signer'>, signSecret: Uint8Array): Manifest {
  const signer = Buffer.from(signSecret.subarray(32)).toString('base64url')
  const body = { ...m, signer }
  return { ...body, sig: Buffer.from(nacl.sign.detached(signedBytes(body), signSecret)).toString('base64url') }
}

/** Checks shape and signature; returns why it is refused, or undefined. */
export function badManifest (x: unknown, trusted: (signer: string) => boolean): string | undefined {
  const m = x as Manifest
  if (typeof m !== 'object' || m === null) return 'not an object'
  if (typeof m.name !== 'string' || badRelPath(m.name) !== undefined || m.name.split('/').some(p => p.startsWith('.'))) return `bad name ${JSON.stringify(String(m.name).slice(0, 100))}`
  if (!Number.isSafeInteger(m.version) || m.version < 0) return 'bad version'
  if (!Number.isSafeInteger(m.size) || m.size < 0 || m.size > MAX_FILE_BYTES) return 'bad size'
  if (typeof m.deleted !== 'boolean') return 'bad deleted flag'
  if (typeof m.sha256 !== 'string' || !(m.deleted ? m.sha256 === '' : /^[0-9a-f]{64}$/.test(m.sha256))) return 'bad sha256'
  if (typeof m.signer !== 'string' || typeof m.sig !== 'string') return 'unsigned'
  const key = Buffer.from(m.signer, 'base64url')
  const sig = Buffer.from(m.sig, 'base64url')
  if (key.length !== 32 || sig.length !== 64) return 'unsigned'
  if (!trusted(m.signer)) return `signed by an untrusted key ${m.signer}`
  if (!nacl.sign.detached.verify(signedBytes(m), sig, key)) return 'bad signature'
  return undefined
}

/** True if a should replace b: the same order on every node. */
export function newer (a: Manifest, b: Manifest | undefined): boolean {
  if (b === undefined) return true
  if (a.version !== b.version) return a.version > b.version
  if (a.signer !== b.signer) return a.signer > b.signer
  return a.sha256 > b.sha256
}

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
  clock: Clock
  log: Logger
  link: FilesLink
  onUpdate: (name: string) => void
}

export class ManagedFiles {
  private readonly manifests = new Map<string, Manifest>()
  private readonly asked = new Map<string, number>()
  /** Files open for writing: published when the last writer closes, not before. */
  private readonly writers = new Map<string, number>()
  /** Publishes of one name run one after the other. */
  private readonly publishing = new Map<string, Promise<void>>()
  private timer: Timer | undefined
  private stopped = false
  private statusChain: Promise<void> = Promise.resolve()

  constructor (private readonly opts: FilesOptions) {}

  get dataDir (): string { return path.join(this.opts.dir, 'data') }
  private get manifestDir (): string { return path.join(this.opts.dir, 'manifests') }
  private manifestFile (name: string): string { return path.join(this.manifestDir, `${Buffer.from(name).toString('base64url')}.json`) }

  async start (): Promise<void> {
    await mkdir(this.dataDir, { recursive: true, mode: 0o755 })
    await mkdir(this.manifestDir, { recursive: true, mode: 0o700 })
    await mkdir(path.join(this.opts.dir, 'incoming'), { recursive: true, mode: 0o700 })
    for (const f of await readdir(this.manifestDir)) {
      try {
        const m = JSON.parse(await readFile(path.join(this.manifestDir, f), 'utf8')) as Manifest
        const bad = badManifest(m, () => true)
        if (bad !== undefined) throw new Error(bad)
        this.manifests.set(m.name, m)
      } catch (err) {
        this.opts.log.error({ file: f, err: (err as Error).message }, 'unreadable file manifest ignored')
      }
    }
    // Edits made while the daemon was down, or content newer than its manifest.
    for (const name of await this.localNames()) {
      const m = this.manifests.get(name)
      const st = await stat(path.join(this.dataDir, name))
      if (m === undefined || m.deleted || m.size !== st.size || m.sha256 !== await sha256Of(path.join(this.dataDir, name))) await this.publish(name)
    }
    for (const m of this.manifests.values()) {
      if (!m.deleted && !(await exists(path.join(this.dataDir, m.name)))) await this.publish(m.name)
    }
    await this.writeStatus()
    this.schedule()
  }

  stop (): void {
    this.stopped = true
    this.opts.clock.clearTimeout(this.timer)
  }

  writing (rel: string, delta: number): void {
    const n = (this.writers.get(rel) ?? 0) + delta
    if (n <= 0) this.writers.delete(rel)
    else this.writers.set(rel, n)
  }

  /** Hooks for the files/ folder: a file, or a folder renamed into place. */
  ready (rel: string): void {
    if (this.writers.has(rel)) return
    const run = async (): Promise<void> => {
      const st = await stat(path.join(this.dataDir, rel)).catch(() => undefined)
      const names = st?.isDirectory() === true ? (await this.localNames()).filter(n => n.startsWith(rel + '/')) : [rel]
      for (const n of names) await this.publish(n)
    }
    run().catch((err: unknown) => this.opts.log.error({ name: rel, err }, 'cannot publish file'))
  }

  /** A file or a whole folder went away: tombstones for everything under it. */
  gone (rel: string): void {
    const run = async (): Promise<void> => {
      for (const n of [...this.manifests.keys()].filter(k => k === rel || k.startsWith(rel + '/'))) await this.publish(n)
    }
    run().catch((err: unknown) => this.opts.log.error({ name: rel, err }, 'cannot publish removal'))
  }

  linkUp (peer: string): void { this.advertiseTo(peer, [...this.manifests.values()]) }

  list (): Manifest[] { return [...this.manifests.values()].sort((a, b) => a.name < b.name ? -1 : 1) }

  onMessage (peer: string, m: Message): void {
    const run = async (): Promise<void> => {
      if (m.type === 'fadvert') await this.onAdvert(peer, m.manifests)
      else if (m.type === 'fget') await this.onGet(peer, m.name, m.sha256)
      else if (m.type === 'fput') await this.onPut(peer, m.manifest, m.data)
    }
    run().catch((err: unknown) => this.opts.log.error({ peer, type: m.type, err }, 'managed file message failed'))
  }

  private schedule (): void {
    if (this.stopped) return
    this.timer = this.opts.clock.setTimeout(() => {
      const up = this.opts.link.upPeers()
      if (up.length > 0) this.advertiseTo(up[Math.floor(this.opts.clock.random() * up.length)], [...this.manifests.values()])
      this.schedule()
    }, this.opts.gossipMs)
  }

  private advertiseTo (peer: string, ms: Manifest[]): void {
    for (let i = 0; i < ms.length; i += ADVERT_CHUNK) {
      try {
        this.opts.link.send(peer, { type: 'fadvert', manifests: ms.slice(i, i + ADVERT_CHUNK) })
      } catch {
        return
      }
    }
  }

  private advertise (m: Manifest, except?: string): void {
    for (const p of this.opts.link.upPeers()) if (p !== except) this.advertiseTo(p, [m])
  }

  /** Signs the local state of name (its content, or its absence) as a new version. */
  private async publish (name: string): Promise<void> {
    const run = (this.publishing.get(name) ?? Promise.resolve()).then(async () => await this.publishNow(name))
    const settled = run.catch(() => {})
    this.publishing.set(name, settled)
    void settled.then(() => { if (this.publishing.get(name) === settled) this.publishing.delete(name) })
    await run
  }

  private async publishNow (name: string): Promise<void> {
    if (name.split('/').some(p => p.startsWith('.'))) return
    const file = path.join(this.dataDir, name)
    const prev = this.manifests.get(name)
    const st = await stat(file).catch(() => undefined)
    if (st !== undefined && !st.isFile()) return
    if (st === undefined && (prev === undefined || prev.deleted)) return
    if (st !== undefined && st.size > MAX_FILE_BYTES) {
      this.opts.log.error({ name, size: st.size }, `managed files are limited to ${MAX_FILE_BYTES} bytes; not published`)
      return
    }
    const sha = st === undefined ? '' : await sha256Of(file)
    if (prev !== undefined && !prev.deleted && st !== undefined && prev.sha256 === sha) return
    const version = Math.max(this.opts.clock.now(), (prev?.version ?? 0) + 1)
    const m = signManifest({ name, version, size: st?.size ?? 0, sha256: sha, deleted: st === undefined }, this.opts.signSecret)
    await this.store(m)
    this.opts.log.info({ name, version, deleted: m.deleted }, 'published managed file')
    this.opts.onUpdate(name)
    this.advertise(m)
  }

  private async store (m: Manifest): Promise<void> {
    await writeDurable(this.manifestFile(m.name), JSON.stringify(m))
    this.manifests.set(m.name, m)
    await this.writeStatus()
  }

  private async onAdvert (peer: string, list: unknown[]): Promise<void> {
    for (const x of list) {
      const bad = badManifest(x, this.opts.trusted)
      if (bad !== undefined) {
        this.opts.log.warn({ peer, reason: bad }, 'refused a file manifest')
        continue
      }
      const m = x as Manifest
      if (!newer(m, this.manifests.get(m.name))) continue
      if (m.deleted) {
        await rm(path.join(this.dataDir, m.name), { force: true })
        await this.store(m)
        this.opts.onUpdate(m.name)
        this.advertise(m, peer)
        continue
      }
      const key = `${m.name}\n${m.sha256}`
      const last = this.asked.get(key)
      if (last !== undefined && this.opts.clock.now() - last < this.opts.gossipMs) continue
      this.asked.set(key, this.opts.clock.now())
      try {
        this.opts.link.send(peer, { type: 'fget', name: m.name, sha256: m.sha256 })
      } catch {
        this.asked.delete(key)
      }
    }
  }

  private async onGet (peer: string, name: string, sha: string): Promise<void> {
    const m = this.manifests.get(name)
    if (m === undefined || m.deleted || m.sha256 !== sha) return
    const data = await readFile(path.join(this.dataDir, name)).catch(() => undefined)
    if (data === undefined || createHash('sha256').update(data).digest('hex') !== sha) return
    this.opts.link.send(peer, { type: 'fput', manifest: m, data })
  }

  private async onPut (peer: string, x: unknown, data: Buffer): Promise<void> {
    const bad = badManifest(x, this.opts.trusted)
    if (bad !== undefined) {
      this.opts.log.warn({ peer, reason: bad }, 'refused a managed file')
      return
    }
    const m = x as Manifest
    this.asked.delete(`${m.name}\n${m.sha256}`)
    if (m.deleted || !newer(m, this.manifests.get(m.name))) return
    if (data.length !== m.size || createHash('sha256').update(data).digest('hex') !== m.sha256) {
      this.opts.log.error({ peer, name: m.name }, 'refused a managed file whose content does not match its signed hash')
      return
    }
    const tmp = path.join(this.opts.dir, 'incoming', `${m.sha256}.tmp`)
    const dest = path.join(this.dataDir, m.name)
    try {
      await writeDurable(tmp, data, 0o644)
      await setTimes(tmp, m.version, m.version)
      const parent = path.dirname(dest)
      await mkdir(parent, { recursive: true, mode: 0o755 })
      await rename(tmp, dest)
      await fsyncDir(parent)
    } catch (err) {
      await rm(tmp, { force: true })
      throw fsErrorOf(err, `installing managed file ${m.name}`)
    }
    await this.store(m)
    this.opts.log.info({ peer, name: m.name, version: m.version }, 'managed file updated')
    this.opts.onUpdate(m.name)
    this.advertise(m, peer)
  }

  private async localNames (): Promise<string[]> {
    const out: string[] = []
    const walk = async (rel: string): Promise<void> => {
      for (const e of await readdir(path.join(this.dataDir, rel), { withFileTypes: true })) {
        if (e.name.startsWith('.')) continue
        const r = rel === '' ? e.name : `${rel}/${e.name}`
        if (e.isDirectory()) await walk(r)
        else if (e.isFile()) out.push(r)
      }
    }
    await walk('')
    return out
  }

  /** files/.peerfs-status: one line per name; rewritten whole, atomically, in order. */
  private async writeStatus (): Promise<void> {
    const text = this.list().map(m => [
      m.name, m.version, m.deleted ? 'deleted' : m.size, this.opts.signerName(m.signer), m.deleted ? '-' : m.sha256
    ].join('\t')).join('\n')
    const run = this.statusChain.then(async () => await writeDurable(path.join(this.dataDir, STATUS_NAME), `# name\tversion\tsize\tsigner\tsha256\n${text}${text === '' ? '' : '\n'}`, 0o444))
    this.statusChain = run.catch(() => {})
    await run
  }
}

async function sha256Of (file: string): Promise<string> {
  return createHash('sha256').update(await readFile(file)).digest('hex')
}

async function exists (file: string): Promise<boolean> {
  return await stat(file).then(() => true, () => false)
}
