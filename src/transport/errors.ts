// Why a link closed, as a typed error: the errno a waiting caller is told,
// and the bye reason when the peer gave one. One function maps each bye
// reason to its error, so the words a user sees in last_error live here.
import { E, PeerfsError } from '../lib/errors.js'
import type { ByeReason } from './messages/index.js'

/**
 * Why a link closed; errno is what a caller waiting on it is told. bye is
 * the reason the peer gave, when it said one.
 */
export class LinkError extends PeerfsError {
  constructor (errno: number, message: string, readonly bye?: ByeReason) { super(errno, message) }
}

/** Thrown by authorize() to refuse a caller; the caller is told `reason`. */
export class Refusal extends LinkError {
  constructor (readonly reason: ByeReason, message: string) { super(E.EACCES, message, reason) }
}

/** True when the peer refused us (our key, or ctl disconnect there): retrying soon will not help. */
export function isRefusal (err: unknown): boolean {
  return err instanceof LinkError && (err.bye === 'refused-key' || err.bye === 'disconnected')
}

export function byeError (reason: ByeReason): LinkError {
  switch (reason) {
    case 'superseded': return new LinkError(E.EALREADY, 'peer kept another link (superseded)', reason)
    case 'refused-key': return new LinkError(E.EACCES, 'refused our key (the peer has no [[peer]] entry with our public key)', reason)
    case 'disconnected': return new LinkError(E.ECONNABORTED, 'disconnected by peer (ctl disconnect there)', reason)
    case 'shutdown': return new LinkError(E.ECONNRESET, 'peer closed the link (shutdown)', reason)
  }
}
