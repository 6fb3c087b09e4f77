// Name rules, written once: what a path component and a relative path may
// be, wherever a name comes from (a create in the tree, a peer's transfer
// offer, a tar entry, a managed file's manifest). A refusal is a NameError
// carrying the errno the tree returns and a message naming the problem.
import { E, PeerfsError } from './errors.js'

export const NAME_MAX = 255
export const PATH_MAX = 4096
export const DEPTH_MAX = 64
/** Names we keep for ourselves (status files, temp files beside deliveries). */
export const RESERVED_PREFIX = '.peerfs-'

export class NameError extends PeerfsError {}

/** A name of ours (a status file, a copy in progress beside a delivery). */
export const isReserved = (name: string): boolean => name.startsWith(RESERVED_PREFIX)

/**
 * File names are bytes, but fuse-native hands paths to us as strings
 * decoded from UTF-8, and every invalid sequence becomes U+FFFD: `bad\xff`
 * and `bad\xfe` arrive as one string. Carrying bytes through would change
 * every path in the tree and on the wire, so a name holding U+FFFD is
 * refused instead (EILSEQ), a genuine U+FFFD included: the two cannot be
 * told apart, and refusing both is what keeps two names off one file.
 */
export const REPLACEMENT_CHAR = '\uFFFD'

/** Why a name or path as fuse-native gave it cannot be used, or undefined. */
export function encodingError (name: string): NameError | undefined {
  if (!name.includes(REPLACEMENT_CHAR)) return undefined
  return new NameError(E.EILSEQ, `name ${JSON.stringify(name.slice(0, 200))} is not valid UTF-8 (or holds U+FFFD)`)
}

/** One path component: not empty, not . or .., no / or NUL, valid UTF-8, at most NAME_MAX bytes. */
export function componentError (name: string): NameError | undefined {
  if (name === '' || name === '.' || name === '..') return new NameError(E.EINVAL, `bad name ${JSON.stringify(name)}`)
  if (name.includes('/') || name.includes('\0')) return new NameError(E.EINVAL, `bad name ${JSON.stringify(name.slice(0, 200))}: contains / or NUL`)
  const enc = encodingError(name)
  if (enc !== undefined) return enc
  if (Buffer.byteLength(name) > NAME_MAX) return new NameError(E.ENAMETOOLONG, `name of ${Buffer.byteLength(name)} bytes over ${NAME_MAX}`)
  return undefined
}

export function checkComponent (name: string): void {
  const err = componentError(name)
  if (err !== undefined) throw err
}

/**
 * A relative path from elsewhere (a peer, a tar, a manifest): components
 * as above, not absolute, at most PATH_MAX bytes and DEPTH_MAX deep, and
 * no component in our reserved namespace.
 */
export function relPathError (rel: string): NameError | undefined {
  if (rel === '') return new NameError(E.EINVAL, 'empty name')
  if (Buffer.byteLength(rel) > PATH_MAX) return new NameError(E.ENAMETOOLONG, 'path too long')
  if (rel.startsWith('/')) return new NameError(E.EINVAL, 'absolute path')
  const parts = rel.split('/')
  if (parts.length > DEPTH_MAX) return new NameError(E.EINVAL, 'path too deep')
  for (const p of parts) {
    if (p === '..') return new NameError(E.EINVAL, '".." in path')
    if (p === '' || p === '.') return new NameError(E.EINVAL, 'empty path component')
    const err = componentError(p)
    if (err !== undefined) return err
    if (isReserved(p)) return new NameError(E.EINVAL, 'reserved name')
  }
  return undefined
}

/** Why a relative path is refused, or undefined. */
export function badRelPath (rel: string): string | undefined {
  return relPathError(rel)?.message
}

/** A name with a component starting with "." is local or in progress (rsync's temp files). */
export function isHidden (rel: string): boolean {
  return rel.split('/').some(p => p === '' || p.startsWith('.'))
}

/** rsync's temp file: "." + the file's name + "." + six letters or digits, beside it (receiver.c, get_tmpname). */
const RSYNC_TEMP_RE = /^\.(.+)\.[A-Za-z0-9]{6}$/

/**
 * The name rsync will rename its temp file rel to, if rel looks like one:
 * a guess (rsync shortens a name too long for the pattern), which only the
 * rename confirms.
 */
export function rsyncTarget (rel: string): string | undefined {
  const slash = rel.lastIndexOf('/')
  const m = RSYNC_TEMP_RE.exec(rel.slice(slash + 1))
  if (m === null) return undefined
  const target = rel.slice(0, slash + 1) + m[1]
  return isHidden(target) ? undefined : target
}

/** Joins a folder's relative path and a child name ('' is the root). */
export function joinRel (dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`
}

/** rel is base itself or lies under it. */
export function isUnder (rel: string, base: string): boolean {
  return rel === base || rel.startsWith(base + '/')
}
