// One logger for the daemon: JSON lines on stderr (stdout carries the
// `mounted` line and command output). PEERFS_LOG overrides the level.
import { pino, type Logger } from 'pino'

export type { Logger }

export function makeLogger (level = 'info'): Logger {
  return pino({ level: process.env.PEERFS_LOG ?? level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }))
}

export const silentLogger: Logger = pino({ level: 'silent' })
