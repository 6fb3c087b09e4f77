// Anchor for the outbox benchmark: the floor of a Node passthrough on this
// stack. A minimal filesystem on the same (patched) fuse-native, mounted
// with the data-path options peerfs uses (big_writes, max_write=128 KiB),
// passing every operation to a real folder with synchronous fs calls (the
// file handle is the real fd; writes are fs.writeSync). No flush, no
// names rule, no hooks: what is left is the cost of FUSE and the binding.
//   node bench/pass.cjs <mountpoint> <real folder> [direct]
// "direct" opens every file with direct_io. Prints "mounted" when ready;
// SIGTERM unmounts.
const fs = require('fs')
const Fuse = require('fuse-native')
const [mnt, dir, variant] = process.argv.slice(2)
const openFlags = variant === 'direct' ? Fuse.OPEN_DIRECT_IO : 0
const real = (p) => dir + p

// Runs fn and answers cb with its result, or with the negative errno of a
// Node fs error.
const call = (cb, fn) => {
  let res
  try {
    res = fn()
  } catch (err) {
    return cb(typeof err.errno === 'number' ? err.errno : Fuse.EIO)
  }
  cb(0, res)
}

const stat = (s) => ({ mode: s.mode, size: s.size, mtime: s.mtimeMs, atime: s.atimeMs, ctime: s.ctimeMs, uid: s.uid, gid: s.gid, nlink: s.nlink, ino: s.ino, blocks: s.blocks, blksize: s.blksize })

const ops = {
  getattr: (p, cb) => {
    const s = fs.lstatSync(real(p), { throwIfNoEntry: false })
    if (s === undefined) return cb(Fuse.ENOENT)
    cb(0, stat(s))
  },
  readdir: (p, cb) => call(cb, () => fs.readdirSync(real(p))),
  open: (p, flags, cb) => call((err, fd) => cb(err, fd, openFlags), () => fs.openSync(real(p), flags & 3)),
  create: (p, mode, cb) => call((err, fd) => cb(err, fd, openFlags), () => fs.openSync(real(p), fs.constants.O_CREAT | fs.constants.O_RDWR, mode)),
  read: (p, fd, buf, len, pos, cb) => call((err, n) => cb(err !== 0 ? err : n), () => fs.readSync(fd, buf, 0, len, pos)),
  write: (p, fd, buf, len, pos, cb) => call((err, n) => cb(err !== 0 ? err : n), () => fs.writeSync(fd, buf, 0, len, pos)),
  release: (p, fd, cb) => call(cb, () => fs.closeSync(fd)),
  fsync: (p, datasync, fd, cb) => call(cb, () => fs.fsyncSync(fd)),
  truncate: (p, size, cb) => call(cb, () => fs.truncateSync(real(p), size)),
  ftruncate: (p, fd, size, cb) => call(cb, () => fs.ftruncateSync(fd, size)),
  mkdir: (p, mode, cb) => call(cb, () => fs.mkdirSync(real(p), { mode })),
  unlink: (p, cb) => call(cb, () => fs.unlinkSync(real(p))),
  rmdir: (p, cb) => call(cb, () => fs.rmdirSync(real(p))),
  rename: (src, dest, cb) => call(cb, () => fs.renameSync(real(src), real(dest))),
  chmod: (p, mode, cb) => call(cb, () => fs.chmodSync(real(p), mode)),
  chown: (p, uid, gid, cb) => cb(0),
  utimens: (p, atime, mtime, cb) => call(cb, () => fs.utimesSync(real(p), atime / 1000, mtime / 1000))
}

const fuse = new Fuse(mnt, ops, { timeout: false, mkdir: true, options: ['default_permissions', 'big_writes', 'max_write=131072'] })
fuse.mount((err) => {
  if (err) {
    console.error(err.message)
    process.exit(1)
  }
  console.log('mounted')
})
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)))
