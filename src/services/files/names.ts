// Which names are managed, on top of the shared relative-path rules
// (src/lib/names.ts): no component starting with "." (local or in
// progress, like rsync's temp files), no control characters (they would
// forge lines in listings), and none matching files_ignore (editor
// debris by default). escapeName() is the one way a name is printed in a
// listing, so even a name that slipped past the rules cannot forge a line.
import { E } from '../../lib/errors.js'
import { isHidden, NameError, relPathError } from '../../lib/names.js'

export const DEFAULT_IGNORE = ['*~', '#*#', '*.swp']

// C0 controls and DEL; tab and newline among them.
const CONTROL = /[\u0000-\u001f\u007f]/

/** A name a user may create under files/ (hidden and ignored names included: they stay local). */
export function creatableError (rel: string): NameError | undefined {
  if (CONTROL.test(rel)) return new NameError(E.EINVAL, `name ${escapeName(rel)} contains a control character`)
  return undefined
}

/** Why a name from a peer or the disk cannot be a managed file, or undefined. */
export function managedNameError (rel: string): string | undefined {
  const err = relPathError(rel) ?? creatableError(rel)
  if (err !== undefined) return err.message
  if (isHidden(rel)) return `hidden name ${escapeName(rel)}`
  return undefined
}

/**
 * files_ignore: shell patterns (* and ?) matched against each component
 * of a name; a name with a matching component is local to this node.
 */
export class IgnoreList {
  private readonly res: RegExp[]

  constructor (readonly patterns: readonly string[] = DEFAULT_IGNORE) {
    this.res = patterns.map(p => new RegExp('^' + p.split('').map(c => c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.+()|[\]{}]/g, '\\$&')).join('') + '$', 's'))
  }

  ignored (rel: string): boolean {
    if (this.res.length === 0) return false
    return rel.split('/').some(part => this.res.some(re => re.test(part)))
  }
}

/** Backslash escapes for \, tab, newline and other control characters. */
export function escapeName (name: string): string {
  return name.replace(/[\\\u0000-\u001f\u007f]/g, (c) => {
    if (c === '\\') return '\\\\'
    if (c === '\t') return '\\t'
    if (c === '\n') return '\\n'
    return '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0')
  })
}
