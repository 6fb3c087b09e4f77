// What a conformance case may do to a tree: the system calls a user makes,
// with paths relative to the tree's root. Two implementations: the node
// classes driven in-process (inprocess-driver.ts) and a real mount driven
// by a Python process (python-driver.ts). A failing call rejects with
// FsFail carrying the errno's name, the same on both.

export interface OpenMode {
  acc: 'r' | 'w' | 'rw'
  nonblock?: boolean
}

export interface StatResult {
  kind: 'dir' | 'file' | 'symlink' | 'other'
  mode: number
  size: number
}

export interface Driver {
  /** readdir(3) without . and .., sorted. */
  list: (path: string) => Promise<string[]>
  /** lstat(2). */
  stat: (path: string) => Promise<StatResult>
  readlink: (path: string) => Promise<string>
  open: (path: string, mode: OpenMode) => Promise<number>
  read: (fd: number, len: number) => Promise<Buffer>
  write: (fd: number, data: Buffer) => Promise<number>
  /** lseek(fd, offset, SEEK_SET). */
  lseek: (fd: number, offset: number) => Promise<number>
  close: (fd: number) => Promise<void>
  /** select(2) for reading: true once fd is readable, false after timeoutMs (0: ask once). */
  readable: (fd: number, timeoutMs: number) => Promise<boolean>
}

export class FsFail extends Error {
  constructor (readonly code: string, detail = '') {
    super(detail === '' ? code : `${code}: ${detail}`)
  }
}

export const S_IFMT = 0o170000

export function kindOf (mode: number): StatResult['kind'] {
  switch (mode & S_IFMT) {
    case 0o040000: return 'dir'
    case 0o100000: return 'file'
    case 0o120000: return 'symlink'
    default: return 'other'
  }
}
