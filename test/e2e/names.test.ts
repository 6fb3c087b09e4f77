// Names that are not valid UTF-8 (DESIGN "Names"). fuse-native decodes
// path bytes as UTF-8, so `bad\xff` and `bad\xfe` would both arrive as
// `bad\uFFFD` and land on one file. They are refused with EILSEQ instead,
// at every way a name is made, in outbox/ and in files/; nothing written
// under a good name is touched.
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Daemon, makeNetwork, py, teardown } from '../helpers/net.js'

afterEach(teardown)

const ATTEMPTS = `
import errno, os, sys
def code(f):
    try:
        f(); return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
def create(path, data):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data); os.close(fd)
for d in map(os.fsencode, sys.argv[1:]):
    create(d + b'/good', b'first')
    res = [
        code(lambda: create(d + b'/bad\\xff', b'one')),
        code(lambda: create(d + b'/bad\\xfe', b'two')),
        code(lambda: create(d + b'/bad\\xef\\xbf\\xbd', b'three')),   # a genuine U+FFFD: indistinguishable, so refused too
        code(lambda: os.mkdir(d + b'/dir\\xff')),
        code(lambda: os.rename(d + b'/good', d + b'/good\\xff')),
        code(lambda: os.symlink(b'good', d + b'/ln\\xff')),
        code(lambda: os.link(d + b'/good', d + b'/hard\\xff')),
        code(lambda: os.mknod(d + b'/node\\xff')),
        code(lambda: os.stat(d + b'/bad\\xff')),
    ]
    print(' '.join(res))
    print(' '.join(sorted(n.decode('utf-8', 'backslashreplace') for n in os.listdir(d) if not n.startswith(b'.'))))
    print(open(d + b'/good', 'rb').read().decode())
`

describe('names that are not UTF-8', () => {
  it('are refused with EILSEQ in outbox/ and files/: no two names on one file, nothing lost', async () => {
    const netw = await makeNetwork(['alpha', 'beta'])
    const a = new Daemon(netw.node('alpha'))
    await a.start()
    const r = await py(ATTEMPTS, [a.path('peers/beta/outbox'), a.path('files')])
    const refused = Array(9).fill('EILSEQ').join(' ')
    expect(r.stderr).toBe('')
    expect(r.stdout.trim().split('\n')).toEqual([refused, 'good', 'first', refused, 'good', 'first'])
    // The real folders behind the tree hold the good file only.
    const state = path.join(a.spec.dir, 'state')
    expect(await readdir(path.join(state, 'outbox/beta'))).toEqual(['good'])
    expect(await readFile(path.join(state, 'outbox/beta/good'), 'utf8')).toBe('first')
    expect((await readdir(path.join(state, 'files/data'))).filter(n => !n.startsWith('.'))).toEqual(['good'])
  })
})
