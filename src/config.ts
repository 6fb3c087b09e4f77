// Loads and validates the TOML config. Every problem names the file, the key
// and what is wrong, and unknown keys are errors: a typo must not silently
// fall back to a default. Relative paths are relative to the config file.
import type { TransferSettings } from './services/transfer/shared.js'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { parse as parseToml, TomlError } from 'smol-toml'
import { ConfigError } from './lib/errors.js'
import { parsePublicKey, type PublicKey } from './lib/keys.js'
import { DEFAULT_IGNORE } from './services/files/names.js'
import { MAX_PACKET_LIMIT } from './transport/messages/pkt.js'
import { CREDIT_EVERY, DEFAULT_MAX_BULK_IN_FLIGHT_BYTES } from './transport/credit.js'

export interface HostPort { host: string, port: number }

export interface PeerConfig {
  id: string
  address?: HostPort
  key: PublicKey
  alias?: string
  requestTimeoutMs: number
  /** Where files from this peer are delivered (default state/inbox/<id>). */
  inbox?: string
  /** Most bytes this peer may have in our inbox; 0: no limit. */
  inboxQuotaBytes: number
}

/** The transfer settings, declared (and documented) once where they are used. */
export type TransferConfig = TransferSettings

/** Bounds on links and on callers not yet authenticated (policy, so here, not in the transport). */
export interface LinkLimits {
  /** Bytes a peer must drain before we read from it again (high-water mark; low is half). */
  queueBytes: number
  /** Bulk bytes sent that the peer has not read yet; transactions wait behind no more than this in socket buffers. */
  bulkInFlightBytes: number
  handshakeTimeoutMs: number
  /** Unauthenticated connections held at once, in all and per source address. */
  maxUnauthenticated: number
  maxUnauthenticatedPerAddress: number
  /** Handshakes we start per second (each costs several X25519 operations); a burst of as many. */
  handshakesPerS: number
  /** Refused connections are logged as one summary per interval. */
  refusalLogMs: number
}

export interface ServiceConfig {
  id: number
  /** Peers that may call it; undefined: every configured peer. */
  allow: string[] | undefined
}

export interface Config {
  file: string
  id: string
  keyFile: string
  listen?: HostPort
  state: string
  mountpoint?: string
  peers: PeerConfig[]
  requestTimeoutMs: number
  keepaliveMs: number
  downAfterMs: number
  retryBudget: number
  backoffMinMs: number
  backoffMaxMs: number
  limits: LinkLimits
  maxRequestBytes: number
  maxQueuedRequests: number
  deferMaxAgeMs: number
  services: ServiceConfig[]
  transfer: TransferConfig
  gossipMs: number
  /** Ed25519 keys (base64url) whose managed files we accept; undefined: ours and our peers'. */
  filesTrust: string[] | undefined
  /** Shell patterns (* ?) for managed names that stay local. */
  filesIgnore: string[]
  /** Largest managed file; a write past it fails with EFBIG. */
  filesMaxBytes: number
  entryTimeoutS: number
  logLevel: string
  /** Optional HTTP listener serving <mnt>/metrics for Prometheus. */
  metricsListen?: HostPort
  /** pkt/NN: largest payload, and what each peer may have unread per channel here. */
  maxPacketBytes: number
  pktWindowBytes: number
}

const ID_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/
const ALIAS_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

type Table = Record<string, unknown>

/** Reads typed values out of one TOML table, naming keys as `peer[1].key`. */
class Reader {
  private readonly seen = new Set<string>()
  constructor (private readonly file: string, private readonly table: Table, private readonly prefix = '') {}

  fail (key: string, problem: string): never {
    throw new ConfigError(this.file, this.prefix + key, problem)
  }

  private get (key: string): unknown {
    this.seen.add(key)
    return this.table[key]
  }

  string (key: string, required: true): string
  string (key: string, required?: false): string | undefined
  string (key: string, required = false): string | undefined {
    const v = this.get(key)
    if (v === undefined) return required ? this.fail(key, 'is required') : undefined
    if (typeof v !== 'string') return this.fail(key, `must be a string, got ${describe(v)}`)
    if (v === '') return this.fail(key, 'must not be empty')
    return v
  }

  int (key: string, dflt: number, min: number, max: number): number {
    const v = this.get(key)
    if (v === undefined) return dflt
    if (typeof v !== 'number' && typeof v !== 'bigint') return this.fail(key, `must be an integer, got ${describe(v)}`)
    const n = Number(v)
    if (!Number.isInteger(n)) return this.fail(key, `must be an integer, got ${n}`)
    if (n < min || n > max) return this.fail(key, `must be between ${min} and ${max}, got ${n}`)
    return n
  }

  number (key: string, dflt: number, min: number, max: number): number {
    const v = this.get(key)
    if (v === undefined) return dflt
    if (typeof v !== 'number') return this.fail(key, `must be a number, got ${describe(v)}`)
    if (!(v >= min && v <= max)) return this.fail(key, `must be between ${min} and ${max}, got ${v}`)
    return v
  }

  strings (key: string): string[] | undefined {
    const v = this.get(key)
    if (v === undefined) return undefined
    if (!Array.isArray(v) || v.some(x => typeof x !== 'string')) return this.fail(key, `must be an array of strings, got ${describe(v)}`)
    return v as string[]
  }

  tables (key: string): Table[] {
    const v = this.get(key)
    if (v === undefined) return []
    if (!Array.isArray(v) || v.some(t => t === null || typeof t !== 'object' || Array.isArray(t))) {
      return this.fail(key, `must be an array of tables ([[${key}]]), got ${describe(v)}`)
    }
    return v as Table[]
  }

  /** Call after reading every known key. */
  done (): void {
    for (const key of Object.keys(this.table)) {
      if (!this.seen.has(key)) this.fail(key, 'unknown key')
    }
  }
}

function describe (v: unknown): string {
  if (Array.isArray(v)) return 'an array'
  if (v instanceof Date) return 'a date'
  if (typeof v === 'object' && v !== null) return 'a table'
  return `${typeof v} ${JSON.stringify(v)}`
}

function hostPort (r: Reader, key: string, text: string | undefined): HostPort | undefined {
  if (text === undefined) return undefined
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text)
  if (m === null) return r.fail(key, `must be "host:port" (e.g. "127.0.0.1:7701"), got ${JSON.stringify(text)}`)
  const port = Number(m[3])
  if (port < 1 || port > 65535) return r.fail(key, `port must be between 1 and 65535, got ${port}`)
  return { host: m[1] ?? m[2], port }
}

function filesIgnore (r: Reader): string[] {
  const pats = r.strings('files_ignore') ?? [...DEFAULT_IGNORE]
  for (const p of pats) if (p === '' || p.includes('/')) r.fail('files_ignore', `${JSON.stringify(p)}: a pattern matches one name component: not empty, no "/"`)
  return pats
}

function transferConfig (r: Reader): TransferConfig {
  const packetBytes = r.int('packet_bytes', 65_000, 1 << 10, 1 << 20)
  const windowBytes = r.int('window_bytes', 8 << 20, 64 << 10, 1 << 30)
  const largeFileBytes = r.int('large_file_bytes', 4 << 20, 1, 2 ** 40)
  const retryMs = r.int('transfer_retry_ms', 5000, 10, 3_600_000)
  return {
    batchFiles: r.int('batch_files', 1000, 1, 100_000),
    batchMs: r.int('batch_ms', 500, 0, 3_600_000),
    packetBytes,
    windowBytes,
    largeFileBytes,
    bundleMaxBytes: r.int('bundle_max_bytes', Math.max(largeFileBytes, 32 << 20), 1, 2 ** 40),
    ackEveryBytes: r.int('ack_every_bytes', Math.min(4 << 20, Math.max(packetBytes, windowBytes >> 2)), 1 << 10, 1 << 30),
    checkpointBytes: r.int('checkpoint_bytes', 64 << 20, 64 << 10, 2 ** 40),
    checkpointMs: r.int('checkpoint_ms', 2000, 10, 3_600_000),
    retryMs,
    retryMaxMs: r.int('transfer_retry_max_ms', Math.max(retryMs, 300_000), retryMs, 24 * 3600_000),
    timeoutMs: r.int('transfer_timeout_ms', 30_000, 100, 3_600_000),
    maxTransfers: r.int('outbox_max_transfers', 8, 1, 1000),
    maxQueued: r.int('outbox_max_queued', 100_000, 1, 10_000_000),
    pruneMs: r.int('outbox_prune_ms', 30_000, 100, 24 * 3600_000),
    maxPartials: r.int('inbox_max_partials', 16, 1, 10_000),
    maxAgeMs: r.int('partial_max_age_ms', 7 * 24 * 3600_000, 1000, 10 * 365 * 24 * 3600_000)
  }
}

/** Validates parsed TOML. Pure: reads no files. */
export function configFromToml (file: string, toml: Table): Config {
  const dir = path.dirname(path.resolve(file))
  const resolve = (p: string | undefined): string | undefined => p === undefined ? undefined : path.resolve(dir, p)
  const r = new Reader(file, toml)

  const id = r.string('id', true)
  if (!ID_RE.test(id)) r.fail('id', `must be 1-32 characters of a-z, 0-9, _ and -, starting with a letter or digit; got ${JSON.stringify(id)}`)
  const requestTimeoutMs = r.int('request_timeout_ms', 10_000, 10, 3_600_000)
  const cfg: Config = {
    file: path.resolve(file),
    id,
    keyFile: resolve(r.string('key', true)) as string,
    listen: hostPort(r, 'listen', r.string('listen')),
    state: resolve(r.string('state', true)) as string,
    mountpoint: resolve(r.string('mountpoint')),
    peers: [],
    requestTimeoutMs,
    keepaliveMs: r.int('keepalive_ms', 1000, 50, 600_000),
    downAfterMs: r.int('down_after_ms', 3000, 100, 3_600_000),
    retryBudget: r.int('retry_budget', 10, 0, 1_000_000),
    backoffMinMs: r.int('backoff_min_ms', 200, 1, 3_600_000),
    backoffMaxMs: r.int('backoff_max_ms', 10_000, 1, 3_600_000),
    limits: {
      queueBytes: r.int('link_queue_bytes', 16 << 20, 256 << 10, 1 << 30),
      bulkInFlightBytes: r.int('link_bulk_in_flight_bytes', DEFAULT_MAX_BULK_IN_FLIGHT_BYTES, 2 * CREDIT_EVERY, 1 << 30),
      handshakeTimeoutMs: r.int('handshake_timeout_ms', 5000, 100, 600_000),
      maxUnauthenticated: r.int('max_unauthenticated', 64, 1, 100_000),
      maxUnauthenticatedPerAddress: r.int('max_unauthenticated_per_address', 8, 1, 100_000),
      handshakesPerS: r.int('handshakes_per_s', 20, 1, 100_000),
      refusalLogMs: r.int('refusal_log_ms', 10_000, 100, 3_600_000)
    },
    maxRequestBytes: r.int('max_request_bytes', 1 << 20, 1, 16 << 20),
    maxQueuedRequests: r.int('max_queued_requests', 256, 1, 100_000),
    deferMaxAgeMs: r.int('defer_max_age_ms', 7 * 24 * 3600_000, 1000, 10 * 365 * 24 * 3600_000),
    services: [],
    transfer: transferConfig(r),
    gossipMs: r.int('gossip_ms', 2000, 50, 3_600_000),
    filesTrust: r.strings('files_trust')?.map((t) => {
      try {
        return parsePublicKey(t).sign.toString('base64url')
      } catch (err) {
        return r.fail('files_trust', `${JSON.stringify(t.slice(0, 20))}: ${(err as Error).message}`)
      }
    }),
    filesIgnore: filesIgnore(r),
    filesMaxBytes: r.int('files_max_bytes', 1 << 30, 1, 2 ** 50),
    entryTimeoutS: r.number('cache_timeout_s', 1, 0, 3600),
    logLevel: r.string('log_level') ?? 'info',
    metricsListen: hostPort(r, 'metrics_listen', r.string('metrics_listen')),
    maxPacketBytes: r.int('max_packet_bytes', 64 << 10, 1, MAX_PACKET_LIMIT),
    pktWindowBytes: r.int('pkt_window_bytes', 256 << 10, 1 << 10, 64 << 20)
  }
  if (!LOG_LEVELS.includes(cfg.logLevel)) r.fail('log_level', `must be one of ${LOG_LEVELS.join(', ')}; got ${JSON.stringify(cfg.logLevel)}`)
  if (cfg.downAfterMs <= cfg.keepaliveMs) r.fail('down_after_ms', `must be larger than keepalive_ms (${cfg.keepaliveMs})`)
  if (cfg.backoffMaxMs < cfg.backoffMinMs) r.fail('backoff_max_ms', `must not be smaller than backoff_min_ms (${cfg.backoffMinMs})`)
  if (cfg.limits.maxUnauthenticatedPerAddress > cfg.limits.maxUnauthenticated) r.fail('max_unauthenticated_per_address', `must not be larger than max_unauthenticated (${cfg.limits.maxUnauthenticated})`)
  // Our own bulk window counts against the link's bound; over it we would stop reading our own acks.
  if (cfg.limits.queueBytes < cfg.transfer.windowBytes) r.fail('link_queue_bytes', `must not be smaller than window_bytes (${cfg.transfer.windowBytes})`)

  const quota = r.int('inbox_quota_bytes', 0, 0, 2 ** 50)
  const ids = new Set([id])
  const keys = new Set<string>()
  const aliases = new Set<string>()
  r.tables('peer').forEach((t, i) => {
    const pr = new Reader(file, t, `peer[${i + 1}].`)
    const pid = pr.string('id', true)
    if (!ID_RE.test(pid)) pr.fail('id', `must be 1-32 characters of a-z, 0-9, _ and -, starting with a letter or digit; got ${JSON.stringify(pid)}`)
    if (ids.has(pid)) pr.fail('id', pid === id ? 'is this node\'s own id' : `duplicate peer id ${JSON.stringify(pid)}`)
    ids.add(pid)
    const keyText = pr.string('key', true)
    let key: PublicKey
    try {
      key = parsePublicKey(keyText)
    } catch (err) {
      return pr.fail('key', (err as Error).message)
    }
    if (keys.has(key.text)) pr.fail('key', 'the same key is given for another peer')
    keys.add(key.text)
    const alias = pr.string('alias')
    if (alias !== undefined) {
      if (!ALIAS_RE.test(alias)) pr.fail('alias', `must be 1-32 characters of A-Z, a-z, 0-9, _ and -; got ${JSON.stringify(alias)}`)
      if (aliases.has(alias)) pr.fail('alias', `duplicate alias ${JSON.stringify(alias)}`)
      aliases.add(alias)
    }
    cfg.peers.push({
      id: pid,
      address: hostPort(pr, 'address', pr.string('address')),
      key,
      alias,
      requestTimeoutMs: pr.int('request_timeout_ms', requestTimeoutMs, 10, 3_600_000),
      inbox: resolve(pr.string('inbox')),
      inboxQuotaBytes: pr.int('inbox_quota_bytes', quota, 0, 2 ** 50)
    })
    pr.done()
  })
  const svcIds = new Set<number>()
  r.tables('service').forEach((t, i) => {
    const sr = new Reader(file, t, `service[${i + 1}].`)
    const sid = sr.int('id', 0, 1, 63)
    if (sid === 0) sr.fail('id', 'is required (a service number 1..63)')
    if (svcIds.has(sid)) sr.fail('id', `service ${sid} is configured twice`)
    svcIds.add(sid)
    const allow = sr.strings('allow')
    for (const p of allow ?? []) {
      if (!ids.has(p) || p === id) sr.fail('allow', `${JSON.stringify(p)} is not a configured peer`)
    }
    cfg.services.push({ id: sid, allow })
    sr.done()
  })
  r.done()
  return cfg
}

export function parseConfig (file: string, text: string): Config {
  let toml: Table
  try {
    toml = parseToml(text) as Table
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : ''
    throw new ConfigError(file, '(syntax)', `not valid TOML${where}: ${(err as Error).message.split('\n')[0]}`)
  }
  return configFromToml(file, toml)
}

export async function loadConfig (file: string): Promise<Config> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, '(file)', `cannot read: ${(err as Error).message}`)
  }
  return parseConfig(file, text)
}
