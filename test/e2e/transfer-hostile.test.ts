// A peer that sends crafted transfers: every one refused, nothing written
// outside the inbox, and the link stays usable.
import { createHash, randomBytes } from 'node:crypto'
import net from 'node:net'
import tar from 'tar-stream'
import { afterEach, describe, expect, it } from 'vitest'
import { systemClock } from '../../src/lib/clock.js'
import { readKeyFile, parsePublicKey } from '../../src/lib/keys.js'
import { Link } from '../../src/transport/link.js'
import { keyPairFromSecret } from '../../src/transport/noise.js'
import type { Message } from '../../src/transport/messages/index.js'
import { Daemon, makeNetwork, sh, teardown } from '../helpers/net.js'

afterEach(teardown)

async function tarOf (entries: { name: string, type?: 'file' | 'symlink' | 'directory', data?: string, linkname?: string }[]): Promise<Buffer> {
  const pack = tar.pack()
  for (const e of entries) pack.entry({ name: e.name, type: e.type ?? 'file', linkname: e.linkname, size: e.data?.length ?? 0 }, e.data ?? '')
  pack.finalize()
  const chunks: Buffer[] = []
  for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c)
  return Buffer.concat(chunks)
}

describe('hostile transfers', () => {
  it('refuses ../, absolute paths, links in a tar and a sender over its quota', async () => {
    const netw = await makeNetwork(['beta', 'mallory'], { peer: { 'beta>mallory': { address: null, extra: 'inbox_quota_bytes = 100000' } } })
    const b = new Daemon(netw.node('beta'))
    await b.start()
    const me = await readKeyFile(netw.node('mallory').keyFile)
    const socket = net.connect(netw.node('beta').port, '127.0.0.1')
    const link = new Link(socket, {
      role: 'initiator', localId: 'mallory', staticKey: keyPairFromSecret(me.dhSecret), expectedKey: parsePublicKey(netw.node('beta').publicKey).dh,
      clock: systemClock, keepaliveMs: 1000, downAfterMs: 5000, handshakeTimeoutMs: 5000
    })
    await new Promise(resolve => link.once('up', resolve))
    const answers: Message[] = []
    link.on('message', (m) => answers.push(m))
    const verdict = async (xid: Buffer): Promise<Message> => {
      for (let i = 0; i < 200; i++) {
        const m = answers.find(a => 'xid' in a && a.xid.equals(xid) && a.type === 'xdone')
        if (m !== undefined) return m
        await new Promise(resolve => setTimeout(resolve, 25))
      }
      throw new Error('no verdict')
    }
    const sendWhole = async (kind: 'file' | 'tar', name: string, data: Buffer): Promise<Message> => {
      const xid = randomBytes(16)
      link.send({ type: 'xoffer', xid, kind, size: data.length, window: 1 << 20, name })
      for (let i = 0; i < 200 && !answers.some(a => 'xid' in a && a.xid.equals(xid)); i++) await new Promise(resolve => setTimeout(resolve, 25))
      if (answers.some(a => a.type === 'xaccept' && a.xid.equals(xid))) {
        link.send({ type: 'xdata', xid, offset: 0, data })
        link.send({ type: 'xend', xid, sha256: createHash('sha256').update(data).digest(), mode: 0o644, mtimeMs: Date.now() })
      }
      return await verdict(xid)
    }

    expect(await sendWhole('file', '../x', Buffer.from('escape'))).toMatchObject({ result: 'refused', reason: /"\.\." in path/ })
    expect(await sendWhole('file', '/etc/peerfs-x', Buffer.from('escape'))).toMatchObject({ result: 'refused', reason: /absolute path/ })
    expect(await sendWhole('tar', '', await tarOf([{ name: 'ok.txt', data: 'fine' }, { name: 'link', type: 'symlink', linkname: '/etc/passwd' }]))).toMatchObject({ result: 'refused', reason: /symlink/ })
    expect(await sendWhole('tar', '', await tarOf([{ name: '../../escape.txt', data: 'x' }]))).toMatchObject({ result: 'refused', reason: /"\.\." in path/ })
    expect(await sendWhole('tar', '', await tarOf([{ name: '/abs.txt', data: 'x' }]))).toMatchObject({ result: 'refused', reason: /absolute/ })
    expect(await sendWhole('file', 'huge.bin', randomBytes(200_000))).toMatchObject({ result: 'retry', reason: /over the inbox quota/ })

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
})
