// Typed errors shared by every layer. Each carries the errno the tree must
// return for it, so the FUSE adapter converts errors in one place and never
// has to guess from a message or pass a Node errno through by accident.
import { constants } from 'node:os'

export const E = constants.errno

export class PeerfsError extends Error {
  constructor (readonly errno: number, message: string) {
    super(message)
    this.name = new.target.name
  }
}

/** An error the tree returns as is: a bad name, a bad write, a missing file. */
export class FsError extends PeerfsError {}

/** A transaction that did not get a reply. */
export class TxError extends PeerfsError {}

/** A peer broke the protocol; the link to it is closed. */
export class ProtocolError extends PeerfsError {
  constructor (message: string) { super(E.EPROTO, message) }
}

/** The config file is unusable; the daemon does not start. */
export class ConfigError extends Error {
  constructor (readonly file: string, readonly key: string, problem: string) {
    super(`${file}: ${key}: ${problem}`)
    this.name = 'ConfigError'
  }
}

// Transaction outcomes on the wire. One table maps both ways; the numbers
// are part of the protocol and never reused.
const WIRE_ERRNOS: readonly number[] = [
  0,
  E.ECONNREFUSED, // 1: no server for that service
  E.ECONNRESET, //   2: the server went away without replying
  E.EACCES, //       3: the caller may not use that service
  E.EMSGSIZE, //     4: request over the receiver's limit
  E.EBUSY, //        5: the service's queue is full
  E.ETIMEDOUT, //    6: no server replied in time
  E.EIO //           7: the receiver failed
]

export function errnoToWire (errno: number): number {
  const code = WIRE_ERRNOS.indexOf(errno)
  return code > 0 ? code : WIRE_ERRNOS.indexOf(E.EIO)
}

export function wireToErrno (code: number): number {
  return code > 0 && code < WIRE_ERRNOS.length ? WIRE_ERRNOS[code] : E.EIO
}
