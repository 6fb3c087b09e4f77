// A peer that sends crafted transfers: every one refused, nothing written
// outside the inbox, and the link stays usable; a flood of offers it never
// finishes leaves no fd and no partial behind once its link closes.
import { createHash, randomBytes } from 'node:crypto'
import { readdir, readlink } from 'node:fs/promises'
import tar from 'tar-stream'
import { afterEach, describe, expect, it } from 'vitest'
import type { Link } from '../../src/transport/link.js'
import type { Message } from '../../src/transport/messages/index.js'
import { closeAll, linkAs } from '../helpers/hostile.js'
import { Daemon, eventually, makeNetwork, sh, teardown, type Network } from '../helpers/net.js'

afterEach(async () => {
  closeAll()
  await teardown()
})

async function tarOf (entries: { name: string, type?: 'file' | 'symlink' | 'directory', data?: string, linkname?: string }[]): Promise<Buffer> {
  const pack = tar.pack()
  for (const e of entries) pack.entry({ name: e.name, type: e.type ?? 'file', linkname: e.linkname, size: e.data?.length ?? 0 }, e.data ?? '')
  pack.finalize()
  const chunks: Buffer[] = []
  for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c)
  return Buffer.concat(chunks)
}

/** Mallory's link to beta, with every answer kept and a way to wait for one. */
async function malloryLink (netw: Network): Promise<{ link: Link, answers: Message[], answer: (xid: Buffer, types: string[]) => Promise<Message> }> {
  const { link } = await linkAs(netw.node('mallory'), netw.node('beta'))
  const answers: Message[] = []
  const waiting = new Set<() => void>()
  link.on('message', (m) => {
    answers.push(m)
    for (const w of [...waiting]) w()
  })
  const answer = async (xid: Buffer, types: string[]): Promise<Message> => {
    const find = (): Message | undefined => answers.find(a => 'xid' in a && a.xid.equals(xid) && types.includes(a.type))
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(check)
        reject(new Error(`no ${types.join('/')} for ${xid.toString('hex')}`))
      }, 5000)
      const check = (): void => {
        const m = find()
        if (m === undefined) return
        clearTimeout(timer)
        waiting.delete(check)
        resolve(m)
      }
      waiting.add(check)
      check()
    })
  }
  return { link, answers, answer }
}

/** Open fds of a process, and those under dir. */
async function fds (pid: number, dir: string): Promise<{ all: number, under: number }> {
  const names = await readdir(`/proc/${pid}/fd`)
  const targets = await Promise.all(names.map(async n => await readlink(`/proc/${pid}/fd/${n}`).catch(() => '')))
  return { all: names.length, under: targets.filter(t => t.startsWith(dir)).length }
}

describe('hostile transfers', () => {
  it('refuses ../, absolute paths, links in a tar and a sender over its quota', async () => {
    const netw = await makeNetwork(['beta', 'mallory'], { peer: { 'beta>mallory': { address: null, extra: 'inbox_quota_bytes = 100000' } } })
    const b = new Daemon(netw.node('beta'))
    await b.start()
    const { link, answer } = await malloryLink(netw)
    const sendWhole = async (kind: 'file' | 'tar' | 'stream', name: string, data: Buffer): Promise<Message> => {
      const xid = randomBytes(16)
      // A stream's size is not known at its offer.
      link.send({ type: 'xoffer', xid, kind, size: kind === 'stream' ? 0 : data.length, window: 1 << 20, name })
      if ((await answer(xid, ['xaccept', 'xdone'])).type === 'xaccept') {
        link.send({ type: 'xdata', xid, offset: 0, data })
        link.send({ type: 'xend', xid, sha256: createHash('sha256').update(data).digest(), mode: 0o644, mtimeMs: Date.now() })
      }
      return await answer(xid, ['xdone'])
    }

    expect(await sendWhole('file', '../x', Buffer.from('escape'))).toMatchObject({ result: 'refused', reason: /"\.\." in path/ })
    expect(await sendWhole('file', '/etc/peerfs-x', Buffer.from('escape'))).toMatchObject({ result: 'refused', reason: /absolute path/ })
    expect(await sendWhole('tar', '', await tarOf([{ name: 'ok.txt', data: 'fine' }, { name: 'link', type: 'symlink', linkname: '/etc/passwd' }]))).toMatchObject({ result: 'refused', reason: /symlink/ })
    expect(await sendWhole('tar', '', await tarOf([{ name: '../../escape.txt', data: 'x' }]))).toMatchObject({ result: 'refused', reason: /"\.\." in path/ })
    expect(await sendWhole('tar', '', await tarOf([{ name: '/abs.txt', data: 'x' }]))).toMatchObject({ result: 'refused', reason: /absolute/ })
    expect(await sendWhole('file', 'huge.bin', randomBytes(200_000))).toMatchObject({ result: 'retry', reason: /over the inbox quota/ })
    expect(await sendWhole('stream', '../x', Buffer.from('escape'))).toMatchObject({ result: 'refused', reason: /"\.\." in path/ })
    // A stream is held to what the quota left at its offer, and dropped past it.
    expect(await sendWhole('stream', 'huge.bin', randomBytes(200_000))).toMatchObject({ result: 'retry', reason: /^no room: the stream passed the 100000 bytes/ })
    expect((await sh(`find ${netw.node('beta').dir}/state/partial/mallory -type f`)).stdout).toBe('')

    // Nothing of it anywhere: not in the inbox, not beside it, not in /etc.
    expect((await sh(`find ${b.path('peers/mallory/inbox')} -mindepth 1`)).stdout).toBe('')
    expect((await sh(`find ${netw.dir} -name 'escape*' -o -name 'x' -o -name 'abs.txt' -o -name 'ok.txt'`)).stdout).toBe('')
    expect((await sh('ls /etc/peerfs-x /etc/abs.txt 2>/dev/null')).stdout).toBe('')
    expect(b.stderr).toMatch(/refused a transfer/)

    // A good one still goes through on the same link.
    expect(await sendWhole('file', 'good/one.txt', Buffer.from('hello'))).toMatchObject({ result: 'ok' })
    expect((await sh(`cat ${b.path('peers/mallory/inbox/good/one.txt')}`)).stdout).toBe('hello')
    link.close()
  })

  it('3,000 offers never finished leave the fd count where it was and no partial once the link closes', async () => {
    const netw = await makeNetwork(['beta', 'mallory'], { peer: { 'beta>mallory': { address: null } } })
    const b = new Daemon(netw.node('beta'))
    await b.start()
    const partial = `${netw.node('beta').dir}/state/partial/mallory`
    const before = await fds(b.pid, partial)
    const { link, answers } = await malloryLink(netw)
    const N = 3000
    for (let i = 0; i < N; i++) {
      const xid = randomBytes(16)
      link.send({ type: 'xoffer', xid, kind: 'file', size: 1 << 20, window: 1 << 20, name: `flood/f${i}` })
      // Every tenth gets one byte, so its partial is opened; the rest stay empty.
      if (i % 10 === 0) link.send({ type: 'xdata', xid, offset: 0, data: Buffer.from('x') })
    }
    await eventually(() => answers.filter(m => m.type === 'xaccept').length === N, 'every offer answered', 60_000)
    // While the link lasts, what it holds open is capped (inbox_max_partials, 16 by default).
    expect((await fds(b.pid, partial)).under).toBeLessThanOrEqual(16)
    link.close()
    await eventually(async () => (await fds(b.pid, partial)).under === 0 && (await fds(b.pid, partial)).all <= before.all, `fd count back to ${before.all}`)
    await eventually(async () => (await readdir(partial).catch(() => [])).length === 0, 'no partial left')
    expect((await sh(`find ${b.path('peers/mallory/inbox')} -mindepth 1`)).stdout).toBe('')
  })
})
