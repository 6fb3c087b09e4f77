// The conformance driver without FUSE: system calls become calls on the
// node classes (lookup, attr, open, read, write, flush, release, poll).
// Where the kernel, not the tree, gives the answer, this does what the
// kernel does: EISDIR for a folder opened for writing, a file position per
// descriptor, one write(2) cut into MAX_WRITE pieces (a failing later piece
// makes a short write), ESPIPE on seeking a stream, flush then release at
// close. Errors the tree throws are PeerfsErrors; anything else is a bug
// and is rethrown as is.
import { constants as fsc } from 'node:fs'
import { constants } from 'node:os'
import { PeerfsError } from '../../src/lib/errors.js'
import { isDir, isFile, isSymlink, MAX_WRITE, POLLIN, type DirNode, type FileNode, type FsNode, type Handle } from '../../src/fs/types.js'
import { FsFail, kindOf, type Driver, type OpenMode, type StatResult } from './driver.js'

/** errno -> name, the first name where two share a number (EAGAIN, not EWOULDBLOCK), as Python's errorcode. */
const ERRNO_NAMES = new Map<number, string>()
for (const [k, v] of Object.entries(constants.errno)) if (!ERRNO_NAMES.has(v)) ERRNO_NAMES.set(v, k)
const O_FLAGS = { r: fsc.O_RDONLY, w: fsc.O_WRONLY, rw: fsc.O_RDWR }

interface OpenFile {
  node: FileNode | DirNode
  handle: Handle | undefined
  nonblock: boolean
  pos: number
  wakes: Set<() => void>
}

async function tree<T> (fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (err instanceof PeerfsError) throw new FsFail(ERRNO_NAMES.get(err.errno) ?? String(err.errno), err.message)
    throw err
  }
}

export class InProcessDriver implements Driver {
  private readonly fds = new Map<number, OpenFile>()
  private nextFd = 3

  constructor (private readonly root: DirNode) {}

  /** Descriptors still open (a case that leaks one shows here). */
  get openCount (): number { return this.fds.size }

  private async resolve (path: string): Promise<FsNode> {
    let node: FsNode = this.root
    for (const name of path.split('/').filter(p => p !== '' && p !== '.')) {
      if (!isDir(node)) throw new FsFail('ENOTDIR', path)
      const dir: DirNode = node
      const next = await tree(async () => await dir.lookup(name))
      if (next === undefined) throw new FsFail('ENOENT', path)
      node = next
    }
    return node
  }

  private fd (fd: number): OpenFile {
    const f = this.fds.get(fd)
    if (f === undefined) throw new FsFail('EBADF')
    return f
  }

  async list (path: string): Promise<string[]> {
    const node = await this.resolve(path)
    if (!isDir(node)) throw new FsFail('ENOTDIR', path)
    return (await tree(async () => await node.list())).sort()
  }

  async stat (path: string): Promise<StatResult> {
    const node = await this.resolve(path)
    const a = await tree(async () => await node.attr())
    return { kind: kindOf(a.mode), mode: a.mode, size: a.size ?? 0 }
  }

  async readlink (path: string): Promise<string> {
    const node = await this.resolve(path)
    if (!isSymlink(node)) throw new FsFail('EINVAL', path)
    return node.readlink()
  }

  async open (path: string, mode: OpenMode): Promise<number> {
    const node = await this.resolve(path)
    const fd = this.nextFd++
    const entry: OpenFile = { node: node as FileNode, handle: undefined, nonblock: mode.nonblock === true, pos: 0, wakes: new Set() }
    if (isDir(node)) {
      if (mode.acc !== 'r') throw new FsFail('EISDIR', path)
      entry.node = node
    } else {
      if (!isFile(node)) throw new FsFail('EINVAL', path)
      const wake = (): void => { for (const w of [...entry.wakes]) w() }
      const h = await tree(async () => await node.open({ flags: O_FLAGS[mode.acc] | (mode.nonblock === true ? fsc.O_NONBLOCK : 0), wake }))
      if ((mode.acc !== 'r' && h.write === undefined) || (mode.acc !== 'w' && h.read === undefined)) {
        await h.release?.()
        throw new FsFail('EACCES', path)
      }
      entry.handle = h
    }
    this.fds.set(fd, entry)
    return fd
  }

  async read (fd: number, len: number): Promise<Buffer> {
    const f = this.fd(fd)
    const h = f.handle
    if (h === undefined) throw new FsFail('EISDIR')
    if (h.read === undefined) throw new FsFail('EBADF')
    const read = h.read.bind(h)
    const data = await tree(async () => await read(len, f.pos, { nonblock: f.nonblock }))
    const out = data.subarray(0, len)
    f.pos += out.length
    return Buffer.from(out)
  }

  async write (fd: number, data: Buffer): Promise<number> {
    const f = this.fd(fd)
    const h = f.handle
    if (h?.write === undefined) throw new FsFail('EBADF')
    const write = h.write.bind(h)
    let done = 0
    while (done < data.length) {
      const piece = Buffer.from(data.subarray(done, done + MAX_WRITE))
      try {
        const n = await tree(async () => await write(piece, f.pos))
        done += n
        f.pos += n
        if (n < piece.length) break
      } catch (err) {
        if (done > 0) break
        throw err
      }
    }
    return done
  }

  async lseek (fd: number, offset: number): Promise<number> {
    const f = this.fd(fd)
    if (isFile(f.node) && f.node.stream === true) throw new FsFail('ESPIPE')
    f.pos = offset
    return offset
  }

  async close (fd: number): Promise<void> {
    const f = this.fd(fd)
    this.fds.delete(fd)
    const h = f.handle
    if (h === undefined) return
    try {
      if (h.flush !== undefined) await tree(async () => await h.flush?.())
    } finally {
      await h.release?.()
    }
  }

  async readable (fd: number, timeoutMs: number): Promise<boolean> {
    const f = this.fd(fd)
    const h = f.handle
    if (h?.poll === undefined) return true
    // The timer is a bound, not the wait: readiness arrives through the handle's wake.
    const deadline = Date.now() + timeoutMs
    for (;;) {
      let wake = (): void => {}
      const woken = new Promise<void>((resolve) => { wake = resolve })
      f.wakes.add(wake)
      const ready = (h.poll() & POLLIN) !== 0
      const left = deadline - Date.now()
      if (ready || left <= 0) {
        f.wakes.delete(wake)
        return ready
      }
      let timer: NodeJS.Timeout | undefined
      await Promise.race([woken, new Promise<void>((resolve) => { timer = setTimeout(resolve, left) })])
      clearTimeout(timer)
      f.wakes.delete(wake)
    }
  }
}
