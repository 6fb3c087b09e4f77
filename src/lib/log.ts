// One logger for the daemon, on stderr (stdout carries the `mounted` line
// and command output) or a file. Two formats of the same records: readable
// text at a terminal (`2025-06-01 12:00:00.123 INFO  alpha mounted
// mountpoint=/mnt`), JSON lines elsewhere (ISO time, level as a word), for
// journald, files and jq. The command line's choice of level (-v, or
// PEERFS_LOG) wins over the config's `log_level`, also on reload, and
// applyConfigLevel says so rather than ignoring the config silently.
import { openSync } from 'node:fs'
import { pino, type DestinationStream, type Logger } from 'pino'

export type { Logger }
export type LogFormat = 'text' | 'json'
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json']

interface Settings {
  format: LogFormat | undefined
  /** A level fixed outside the config, and where it came from. */
  forced: { level: string, by: string } | undefined
  /** Append to this file instead of stderr. */
  file: string | undefined
}

const settings: Settings = {
  format: undefined,
  forced: process.env.PEERFS_LOG !== undefined && process.env.PEERFS_LOG !== '' ? { level: process.env.PEERFS_LOG, by: 'PEERFS_LOG' } : undefined,
  file: undefined
}

/** Called once by the command line, before the daemon makes its logger. */
export function configureLogs (opts: { format?: LogFormat, verbose?: boolean, file?: string }): void {
  if (opts.format !== undefined) settings.format = opts.format
  if (opts.verbose === true) settings.forced = { level: 'debug', by: '-v on the command line' }
  if (opts.file !== undefined) settings.file = opts.file
}

export function makeLogger (level = 'info'): Logger {
  const fd = settings.file === undefined ? 2 : openSync(settings.file, 'a', 0o600)
  const format = settings.format ?? (settings.file === undefined && process.stderr.isTTY ? 'text' : 'json')
  const dest = pino.destination({ fd, sync: true })
  return pino({
    level: settings.forced?.level ?? level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) }
  }, format === 'text' ? textStream(dest) : dest)
}

/**
 * Applies a (reloaded) config's log_level. Returns why it was not applied,
 * or undefined. pino children inherit their parent's level methods through
 * the prototype, so setting it on the daemon's logger reaches every child.
 */
export function applyConfigLevel (log: Logger, level: string): string | undefined {
  if (settings.forced !== undefined) return `log_level ${level} not applied: level ${settings.forced.level} is set by ${settings.forced.by}`
  log.level = level
  return undefined
}

const LEVEL_WIDTH = 5
const SKIP = new Set(['time', 'level', 'msg', 'pid', 'node'])

/** One JSON record as a text line: time, level, node, message, then key=value fields. */
export function formatText (json: string): string {
  let rec: Record<string, unknown>
  try {
    rec = JSON.parse(json) as Record<string, unknown>
  } catch {
    return json
  }
  const time = typeof rec.time === 'string' ? localTime(new Date(rec.time)) : ''
  const head = [time, String(rec.level ?? '').toUpperCase().padEnd(LEVEL_WIDTH)]
  if (rec.node !== undefined) head.push(String(rec.node))
  head.push(String(rec.msg ?? ''))
  const fields = Object.entries(rec).filter(([k]) => !SKIP.has(k)).map(([k, v]) => `${k}=${fieldText(v)}`)
  return [...head, ...fields].join(' ') + '\n'
}

function fieldText (v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)
  if (v !== null && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string') {
    // pino's serialized Error: its message (and code) is what a reader needs.
    const e = v as { message: string, code?: unknown }
    return JSON.stringify(e.code === undefined ? e.message : `${String(e.code)}: ${e.message}`)
  }
  return JSON.stringify(v)
}

function localTime (d: Date): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`
}

function textStream (dest: DestinationStream): DestinationStream {
  return { write: (chunk: string) => { dest.write(chunk.split('\n').filter(l => l !== '').map(formatText).join('')) } }
}

export const silentLogger: Logger = pino({ level: 'silent' })
