// The outbox sends while it is still being written into, as cp -r does:
// files closed go while another is open, a folder their delivery emptied
// stays for the next file the writer puts there, and a large file written
// in order moves while it is written, to appear in the inbox at its close.
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { EventRecorder } from '../helpers/events.js'
import { Daemon, eventually, field, py, readText, sh, startPair, teardown, tempDir } from '../helpers/net.js'

afterEach(async () => {
  EventRecorder.stopAll()
  await teardown()
})

// Holds slow.bin open for writing the whole time; writes d/f0..f4, waits
// (on the events file) until each is reported sent, then writes d/f5.
const WRITER = `
import os, sys, time
mnt, out = sys.argv[1], sys.argv[2]
ev = os.open(os.path.join(mnt, 'events'), os.O_RDONLY)
slow = open(os.path.join(out, 'slow.bin'), 'wb')
slow.write(b'x' * 1000); slow.flush()
os.makedirs(os.path.join(out, 'd'))
for i in range(5):
    with open(os.path.join(out, 'd', 'f%d' % i), 'w') as f: f.write('file %d\\n' % i)
want, buf, end = {'d/f%d' % i for i in range(5)}, b'', time.monotonic() + 30
while want and time.monotonic() < end:
    buf += os.read(ev, 65536)
    *lines, buf = buf.split(b'\\n')
    for l in lines:
        p = l.decode().split(' ')
        if len(p) >= 4 and p[2] == 'sent': want.discard(p[3])
if want: sys.exit('not sent: %s' % sorted(want))
with open(os.path.join(out, 'd', 'f5'), 'w') as f: f.write('file 5\\n')
slow.write(b'y'); slow.close()
print('ok')
`

// Writes 24 MiB into big.bin in order and holds it open until the peer's
// status shows 20 MiB of it received with its inbox empty; then, by mode:
// rewrites its first bytes (rewrite), or says so in <sync>/streamed and
// waits for <sync>/go (kill: the test kills the peer meanwhile). Then the
// last MiB, the close, and the SHA-256 of all it wrote.
const STREAMER = `
import hashlib, os, re, sys, time
out, status, inbox, mode, sync = sys.argv[1:6]
data = bytearray()
f = open(os.path.join(out, 'big.bin'), 'wb', buffering=0)
for i in range(24):
    b = os.urandom(1 << 20); f.write(b); data += b
got, end = 0, time.monotonic() + 30
while got < 20 << 20 and time.monotonic() < end:
    m = re.search(r'^incoming_progress: (\\d+) bytes, the file still being written$', open(status).read(), re.M)
    got = int(m.group(1)) if m else got
    time.sleep(0.05)
if got < 20 << 20: sys.exit('not streamed: %d bytes at the peer' % got)
if os.listdir(inbox): sys.exit('in the inbox before the close: %s' % os.listdir(inbox))
if mode == 'rewrite':
    f.seek(0); f.write(b'HEAD'); data[0:4] = b'HEAD'; f.seek(0, 2)
if mode == 'kill':
    open(os.path.join(sync, 'streamed'), 'w').close()
    end = time.monotonic() + 60
    while not os.path.exists(os.path.join(sync, 'go')) and time.monotonic() < end: time.sleep(0.05)
b = os.urandom(1 << 20); f.write(b); data += b
f.close()
print(hashlib.sha256(data).hexdigest())
`

// Writes MiB after MiB into big.bin, each first kept in <sync>/attempted,
// says so in <sync>/streamed once the peer shows 8 MiB of it received, and
// goes on until a write fails (the test kills the sending daemon); prints
// the bytes its writes were told were written, and the error.
const WRITER_LOSES_DAEMON = `
import errno, os, re, sys, time
out, status, sync = sys.argv[1:4]
attempted = open(os.path.join(sync, 'attempted'), 'wb', buffering=0)
f = open(os.path.join(out, 'big.bin'), 'wb', buffering=0)
ok, told, end = 0, False, time.monotonic() + 60
try:
    while time.monotonic() < end:
        b = os.urandom(1 << 20)
        attempted.write(b)
        ok += f.write(b)
        if not told:
            m = re.search(r'^incoming_progress: (\\d+) bytes, the file still being written$', open(status).read(), re.M)
            if m and int(m.group(1)) >= 8 << 20:
                open(os.path.join(sync, 'streamed'), 'w').close()
                told = True
        time.sleep(0.05 if told else 0.01)
    sys.exit('no write failed')
except OSError as e:
    print(ok, errno.errorcode.get(e.errno, e.errno), flush=True)
    os._exit(0)
`

// Python: writes a dot to f every 50 ms until a write fails (the test kills
// the daemon) or time passes end; prints the error.
const DOTS_UNTIL_CUT = `
try:
    while time.monotonic() < end:
        time.sleep(0.05)
        f.write(b'.')
    sys.exit('no write failed')
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), flush=True)
    os._exit(0)
`

// Opens argv[1] for writing, writes half a note, says so in <sync>/half,
// and waits for a write to fail (the test kills the daemon); prints the error.
const HALF_WRITTEN = `
import errno, os, sys, time
f = open(sys.argv[1], 'wb', buffering=0)
f.write(b'half a note')
open(os.path.join(sys.argv[2], 'half'), 'w').close()
end = time.monotonic() + 30
${DOTS_UNTIL_CUT}`

// Writes "first" to <outbox>/a.log, renames it to logs/b.log while open (a
// mv of a log being written), writes "second", says so in <sync>/renamed.
// close: waits for <sync>/go, writes "last" and closes. kill: writes a dot
// every 50 ms until a write fails (the test kills the daemon); prints the error.
const RENAMED_WHILE_OPEN = `
import errno, os, sys, time
out, sync, mode = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.join(out, 'logs'), exist_ok=True)
f = open(os.path.join(out, 'a.log'), 'wb', buffering=0)
f.write(b'first\\n')
os.rename(os.path.join(out, 'a.log'), os.path.join(out, 'logs', 'b.log'))
f.write(b'second\\n')
open(os.path.join(sync, 'renamed'), 'w').close()
end = time.monotonic() + 60
if mode == 'close':
    while not os.path.exists(os.path.join(sync, 'go')):
        if time.monotonic() > end: sys.exit('no go')
        time.sleep(0.05)
    f.write(b'last\\n')
    f.close()
    sys.exit(0)
${DOTS_UNTIL_CUT}`

/**
 * rel, left unclosed in a's outbox, waits there (status counts it) while a
 * file written after it reaches b: the sender works, and passes it over.
 */
async function heldWhileOthersGo (a: Daemon, b: Daemon, rel: string, later = 'later.txt'): Promise<void> {
  expect((await sh(`echo later > ${a.path('peers/beta/outbox', later)}`)).code).toBe(0)
  await eventually(() => existsSync(b.path('peers/alpha/inbox', later)), `${later} delivered`, 30_000)
  expect(existsSync(b.path('peers/alpha/inbox', rel))).toBe(false)
  expect(existsSync(a.path('peers/beta/outbox', rel))).toBe(true)
  expect(await readText(a.path('peers/beta/status'))).toMatch(/^outbox_unclosed: 1$/m)
}

describe('outbox while it is written', () => {
  it('holds what a writer left when the sending daemon is killed -9 while it streams, and sends it once when touched: a prefix of what was written, at least what the writer was told', async () => {
    const { netw, a, b } = await startPair()
    const sync = await tempDir()
    const recv = await EventRecorder.open(b.path('events'))
    const run = py(WRITER_LOSES_DAEMON, [a.path('peers/beta/outbox'), b.path('peers/alpha/status'), sync], 90_000)
    await eventually(() => existsSync(path.join(sync, 'streamed')), 'streamed', 60_000)
    await a.kill()
    const r = await run
    expect(r.stderr).toBe('')
    const [told, err] = r.stdout.trim().split(' ')
    expect(err).toMatch(/^(ENOTCONN|ECONNABORTED|EIO)$/)
    // Restarted, alpha cancels the stream, and holds the file its writer never closed.
    const again = new Daemon(netw.node('alpha'))
    await again.start()
    await heldWhileOthersGo(again, b, 'big.bin')
    expect(again.stderr).toMatch(/a stream its writer had not closed is cancelled/)
    // The user's say-so: sent as it is.
    expect((await sh(`touch ${again.path('peers/beta/outbox/big.bin')}`)).code).toBe(0)
    const dest = b.path('peers/alpha/inbox/big.bin')
    const left = async (): Promise<number> => (await Promise.all([
      `${netw.node('alpha').dir}/state/outbox/beta`, `${netw.node('alpha').dir}/state/spool/beta`, `${netw.node('beta').dir}/state/partial/alpha`
    ].map(async d => (await readdir(d, { recursive: true }).catch(() => [])).length))).reduce((x, y) => x + y, 0)
    await eventually(async () => existsSync(dest) && await left() === 0, 'delivered, and nothing left at either end', 60_000)
    const got = await readFile(dest)
    const attempted = await readFile(path.join(sync, 'attempted'))
    expect(got.length).toBeGreaterThanOrEqual(Number(told))
    expect(got.equals(attempted.subarray(0, got.length))).toBe(true)
    expect(recv.matching(/ alpha recv big\.bin$/)).toHaveLength(1)
    expect(await readText(again.path('peers/beta/status'))).toMatch(/^outbox_unclosed: 0$/m)
  }, 150_000)

  it('delivers every file a cp -r of 1,500 had closed when the daemon was killed -9 under it, each once and whole, and holds the one it was writing', async () => {
    const { netw, a, b } = await startPair()
    const src = await tempDir()
    expect((await py(`
import os, sys
for i in range(1500):
    d = os.path.join(sys.argv[1], 't', 'd%02d' % (i % 30))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'f%05d' % i), 'wb') as f: f.write(os.urandom(65536))
`, [src], 60_000)).code).toBe(0)
    const recv = await EventRecorder.open(b.path('events'))
    const cp = sh(`cp -r ${src}/t ${a.path('peers/beta/outbox')}/`, 120_000)
    // Early in the cp, so that it is still copying when the kill comes, also on a loaded machine.
    await eventually(() => recv.matching(/ alpha recv t\//).length >= 50, '50 files delivered', 60_000)
    await a.kill()
    expect((await cp).code).not.toBe(0)
    const again = new Daemon(netw.node('alpha'))
    await again.start()
    const outbox = `${netw.node('alpha').dir}/state/outbox/beta`
    const left = async (): Promise<string[]> => (await sh(`cd ${outbox} && find . -type f | sort`)).stdout.split('\n').filter(l => l !== '').map(l => l.slice(2))
    const unclosed = async (): Promise<number> => Number(await field(again, 'beta', 'outbox_unclosed'))
    // All that is left in the outbox is what was held.
    await eventually(async () => (await left()).length === await unclosed(), 'the outbox sent all but what is held', 60_000)
    const held = await left()
    expect(held.length).toBeLessThanOrEqual(1)
    // Every file in the inbox is its source, byte for byte; none twice; none held.
    const inbox = b.path('peers/alpha/inbox')
    const diff = await sh(`cd ${inbox} && find t -type f | sort > ${src}/list && while read f; do cmp -s "$f" "${src}/$f" || echo "$f"; done < ${src}/list; wc -l < ${src}/list; rm -f ${src}/list`, 60_000)
    const lines = diff.stdout.trim().split('\n')
    expect(lines.slice(0, -1)).toEqual([])
    const delivered = Number(lines[lines.length - 1])
    expect(delivered).toBeGreaterThanOrEqual(50)
    expect(new Set(recv.matching(/ alpha recv t\//)).size).toBe(recv.matching(/ alpha recv t\//).length)
    for (const rel of held) expect(existsSync(path.join(inbox, rel))).toBe(false)
    // cp again of the one held: it goes, whole.
    for (const rel of held) {
      expect((await sh(`cp ${src}/${rel} ${again.path('peers/beta/outbox', rel)}`)).code).toBe(0)
      await eventually(async () => existsSync(path.join(inbox, rel)) && (await sh(`cmp ${path.join(inbox, rel)} ${src}/${rel}`)).code === 0, 'the held file, copied again, delivered whole', 30_000)
    }
  }, 180_000)

  it('holds a small file its writer was cut off from by kill -9 of the daemon, across a second restart, and sends it once it is written again', async () => {
    const { netw, a, b } = await startPair()
    const sync = await tempDir()
    const run = py(HALF_WRITTEN, [a.path('peers/beta/outbox/notes.txt'), sync], 60_000)
    await eventually(() => existsSync(path.join(sync, 'half')), 'half written', 30_000)
    await a.kill()
    expect((await run).stdout.trim()).toMatch(/^(ENOTCONN|ECONNABORTED|EIO)$/)
    let again = new Daemon(netw.node('alpha'))
    await again.start()
    await heldWhileOthersGo(again, b, 'notes.txt')
    expect(again.stderr).toMatch(/files still open for writing when peerfs last stopped are not sent/)
    await again.kill()
    again = new Daemon(netw.node('alpha'))
    await again.start()
    await heldWhileOthersGo(again, b, 'notes.txt', 'later-2.txt')
    // cp again, whole this time: that is what goes.
    const whole = 'the whole note\n'.repeat(100)
    expect((await sh(`printf '%s' '${whole}' > ${again.path('peers/beta/outbox/notes.txt')}`)).code).toBe(0)
    const dest = b.path('peers/alpha/inbox/notes.txt')
    await eventually(async () => existsSync(dest) && (await readFile(dest, 'utf8')) === whole, 'the rewritten file delivered', 30_000)
    expect(await readText(again.path('peers/beta/status'))).toMatch(/^outbox_unclosed: 0$/m)
  }, 120_000)

  it('sends a file renamed while its writer has it open (mv of a log being written) once closed, whole, under its new name; killed -9 so, holds it under that name', async () => {
    const { netw, a, b } = await startPair()
    const outbox = a.path('peers/beta/outbox')
    const inbox = b.path('peers/alpha/inbox')
    let sync = await tempDir()
    const run = py(RENAMED_WHILE_OPEN, [outbox, sync, 'close'], 90_000)
    await eventually(() => existsSync(path.join(sync, 'renamed')), 'renamed while open', 30_000)
    // A file written after it goes; it does not, under either name.
    expect((await sh(`echo later > ${outbox}/later.txt`)).code).toBe(0)
    await eventually(() => existsSync(path.join(inbox, 'later.txt')), 'later.txt delivered', 30_000)
    expect((await sh(`cd ${inbox} && find . -type f | sort`)).stdout).toBe('./later.txt\n')
    await writeFile(path.join(sync, 'go'), '')
    expect((await run).stderr).toBe('')
    const dest = path.join(inbox, 'logs/b.log')
    await eventually(async () => existsSync(dest) && (await readFile(dest, 'utf8')) === 'first\nsecond\nlast\n', 'b.log delivered whole', 30_000)
    await eventually(async () => (await sh(`find ${outbox} -type f`)).stdout === '', 'outbox empty', 30_000)
    expect((await sh(`cd ${inbox} && find . -type f | sort`)).stdout).toBe('./later.txt\n./logs/b.log\n')

    // The same, with the daemon killed under the writer: held under its new name.
    await sh(`rm -r ${inbox}/logs ${inbox}/later.txt`)
    sync = await tempDir()
    const cut = py(RENAMED_WHILE_OPEN, [outbox, sync, 'kill'], 90_000)
    await eventually(() => existsSync(path.join(sync, 'renamed')), 'renamed while open', 30_000)
    await a.kill()
    expect((await cut).stdout.trim()).toMatch(/^(ENOTCONN|ECONNABORTED|EIO)$/)
    const again = new Daemon(netw.node('alpha'))
    await again.start()
    await heldWhileOthersGo(again, b, 'logs/b.log')
    const left = await readFile(again.path('peers/beta/outbox/logs/b.log'), 'utf8')
    expect(left).toMatch(/^first\nsecond\n\.*$/)
    expect((await sh(`touch ${again.path('peers/beta/outbox/logs/b.log')}`)).code).toBe(0)
    await eventually(async () => existsSync(dest) && (await readFile(dest, 'utf8')) === left, 'b.log delivered as it was left, once touched', 30_000)
  }, 150_000)

  it('streams a file rsync -a writes under its temp name, and places it at rsync\'s rename: once, whole, with its times', async () => {
    const { a, b } = await startPair()
    const src = await tempDir()
    const file = path.join(src, 'big.bin')
    await writeFile(file, randomBytes(24 << 20))
    await sh(`touch -d '2024-01-02 03:04:05' ${file}`)
    const inbox = b.path('peers/alpha/inbox')
    const events = await EventRecorder.open(b.path('events'))
    // 24 MiB at 8 MB/s: three seconds of rsync writing its temp file.
    const rsync = sh(`rsync -a --bwlimit=8000 ${file} ${a.path('peers/beta/outbox')}/`, 60_000)
    let running = true
    void rsync.then(() => { running = false })
    let streamed = 0
    await eventually(async () => {
      const m = /^incoming_progress: (\d+) bytes, the file still being written$/m.exec(await readText(b.path('peers/alpha/status')))
      if (m !== null && running && (await readdir(inbox)).length === 0) streamed = Number(m[1])
      return streamed >= 12 << 20 || !running
    }, 'streamed while rsync runs', 60_000, 20)
    expect(streamed).toBeGreaterThanOrEqual(12 << 20)
    expect((await rsync).code).toBe(0)
    const dest = path.join(inbox, 'big.bin')
    await eventually(async () => existsSync(dest) && (await sh(`cmp ${file} ${dest}`)).code === 0, 'big.bin delivered whole', 30_000)
    expect((await sh(`stat -c %Y ${dest}`)).stdout).toBe((await sh(`stat -c %Y ${file}`)).stdout)
    await events.waitFor(/ recv big\.bin$/)
    expect(events.matching(/ recv /)).toHaveLength(1)
    expect(a.stderr).not.toMatch(/cancelling a transfer/)
    expect((await sh(`ls -A ${inbox}`)).stdout).toBe('big.bin\n')
  }, 120_000)

  it('an rsync stream cut off by kill -9 of the sender is cancelled at its restart; rsync run again delivers the file once, whole', async () => {
    const { netw, a, b } = await startPair()
    const src = await tempDir()
    const file = path.join(src, 'big.bin')
    await writeFile(file, randomBytes(24 << 20))
    const inbox = b.path('peers/alpha/inbox')
    const events = await EventRecorder.open(b.path('events'))
    const cut = sh(`rsync -a --bwlimit=8000 ${file} ${a.path('peers/beta/outbox')}/`, 60_000)
    await eventually(async () => /^incoming_progress: ([89]|\d\d)\d{6} bytes, the file still being written$/m.test(await readText(b.path('peers/alpha/status'))), '8 MB streamed', 60_000, 20)
    await a.kill()
    expect((await cut).code).not.toBe(0)
    const again = new Daemon(netw.node('alpha'))
    await again.start()
    expect(again.stderr).toMatch(/a stream its writer had not closed is cancelled/)
    await eventually(async () => (await sh(`find ${path.join(b.spec.dir, 'state')} -name '*.part'`)).stdout === '', 'the partial dropped', 30_000)
    expect((await readdir(inbox))).toEqual([])
    expect((await sh(`rsync -a ${file} ${again.path('peers/beta/outbox')}/`, 60_000)).code).toBe(0)
    const dest = path.join(inbox, 'big.bin')
    await eventually(async () => existsSync(dest) && (await sh(`cmp ${file} ${dest}`)).code === 0, 'big.bin delivered whole', 30_000)
    await events.waitFor(/ recv big\.bin$/)
    await eventually(async () => (await sh(`find ${again.path('peers/beta/outbox')} -type f -name big.bin`)).stdout === '', 'gone from the outbox', 30_000)
    expect(events.matching(/ recv /)).toHaveLength(1)
    expect((await sh(`ls -A ${inbox}`)).stdout).toBe('big.bin\n')
  }, 120_000)

  for (const mode of ['in order', 'rewrite', 'kill'] as const) {
    const what = {
      'in order': 'sends a large file while it is written: the peer holds most of it before the close, and its inbox shows it only once closed, whole',
      rewrite: 'sends a large file whose start is rewritten before the close as it was closed',
      kill: 'delivers a large file once when its peer is killed -9 and back while it is streamed'
    }[mode]
    it(what, async () => {
      const { a, b } = await startPair()
      const sync = await tempDir()
      const inbox = b.path('peers/alpha/inbox')
      const run = py(STREAMER, [a.path('peers/beta/outbox'), b.path('peers/alpha/status'), inbox, mode, sync], 90_000)
      if (mode === 'kill') {
        await eventually(() => existsSync(path.join(sync, 'streamed')), 'streamed', 60_000)
        await b.kill()
        await b.start()
        await writeFile(path.join(sync, 'go'), '')
      }
      const r = await run
      expect(r.stderr).toBe('')
      const sum = r.stdout.trim()
      expect(sum).toMatch(/^[0-9a-f]{64}$/)
      await eventually(async () => (await sh(`sha256sum ${inbox}/big.bin`)).stdout.startsWith(sum), 'big.bin delivered as it was closed', 60_000)
      // Nothing left half-way at either end; the one file delivered once.
      await eventually(async () => (await sh(`find ${a.path('peers/beta/outbox')} -type f`)).stdout === '', 'outbox empty', 30_000)
      expect((await sh(`ls -A ${inbox}`)).stdout).toBe('big.bin\n')
      expect(b.stderr).not.toMatch(/SHA-256 check/)
    }, 150_000)
  }

  it('sends closed files while another is still open, and keeps the folder they emptied for the next file written there', async () => {
    const { a, b } = await startPair('outbox_prune_ms = 1000\n')
    const r = await py(WRITER, [a.path(), a.path('peers/beta/outbox')], 60_000)
    expect(r.stderr).toBe('')
    expect(r.stdout).toBe('ok\n')
    const inbox = b.path('peers/alpha/inbox')
    await eventually(async () => (await sh(`cat ${inbox}/d/f5`)).stdout === 'file 5\n', 'd/f5 delivered', 30_000)
    await eventually(async () => (await sh(`stat -c %s ${inbox}/slow.bin`)).stdout === '1001\n', 'slow.bin delivered whole', 30_000)
    expect((await sh(`cd ${inbox} && find . -type f | sort`)).stdout).toBe(['./d/f0', './d/f1', './d/f2', './d/f3', './d/f4', './d/f5', './slow.bin', ''].join('\n'))
    // Once nothing is written, the folders the deliveries emptied go too.
    await eventually(async () => (await sh(`find ${a.path('peers/beta/outbox')} -mindepth 1`)).stdout === '', 'outbox empty', 30_000)
    expect(await readText(a.path('peers/beta/status'))).toMatch(/^outbox_files: 0$/m)
  }, 120_000)

  it('keeps a folder delivery emptied for a writer that comes back within outbox_prune_ms (rsync -a sets the folders\' times last), then removes it', async () => {
    const { a, b } = await startPair('outbox_prune_ms = 5000\n')
    const out = a.path('peers/beta/outbox')
    expect((await sh(`mkdir -p ${out}/t/d && echo hi > ${out}/t/d/f`)).code).toBe(0)
    await eventually(async () => (await sh(`cat ${b.path('peers/alpha/inbox/t/d/f')}`)).stdout === 'hi\n', 't/d/f delivered')
    await eventually(async () => (await sh(`find ${out} -type f`)).stdout === '', 't/d/f gone from the outbox')
    // Past the old prune (1 s of quiet, checked each second), which rsync
    // could outwait on a busy machine before it set the folders' times: exit 23.
    await new Promise(resolve => setTimeout(resolve, 2500))
    const touched = await sh(`touch -c -d @1600000000 ${out}/t/d ${out}/t && stat -c '%F %Y' ${out}/t/d`)
    expect(touched.stderr).toBe('')
    expect(touched.stdout).toBe('directory 1600000000\n')
    await eventually(async () => (await sh(`find ${out} -mindepth 1`)).stdout === '', 'the emptied folders gone', 15_000)
  }, 60_000)
})
