// The handshake and transport ciphers against the published cacophony
// vectors in ../shared/vectors/noise: every handshake and transport message,
// both directions, and the final handshake hash.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { HandshakeState, keyPairFromSecret, type TransportKeys } from '../../src/transport/noise.js'

interface Vector {
  protocol_name: string
  init_prologue: string
  resp_prologue: string
  init_static?: string
  resp_static?: string
  init_ephemeral: string
  resp_ephemeral: string
  init_remote_static?: string
  resp_remote_static?: string
  handshake_hash: string
  messages: { payload: string, ciphertext: string }[]
}

const file = path.resolve(__dirname, '../../../shared/vectors/noise/cacophony-subset.json')
const vectors: Vector[] = JSON.parse(readFileSync(file, 'utf8')).vectors
const hex = (s: string): Buffer => Buffer.from(s, 'hex')
const kp = (s?: string) => s === undefined ? undefined : keyPairFromSecret(hex(s))

describe('Noise against cacophony vectors', () => {
  it('has the eight vectors', () => expect(vectors).toHaveLength(8))

  for (const v of vectors) {
    it(v.protocol_name, () => {
      const init = new HandshakeState({
        protocolName: v.protocol_name, initiator: true, prologue: hex(v.init_prologue),
        s: kp(v.init_static), e: kp(v.init_ephemeral), rs: v.init_remote_static === undefined ? undefined : hex(v.init_remote_static)
      })
      const resp = new HandshakeState({
        protocolName: v.protocol_name, initiator: false, prologue: hex(v.resp_prologue),
        s: kp(v.resp_static), e: kp(v.resp_ephemeral), rs: v.resp_remote_static === undefined ? undefined : hex(v.resp_remote_static)
      })
      let i = 0
      for (; !init.done; i++) {
        const [w, r] = i % 2 === 0 ? [init, resp] : [resp, init]
        const ct = w.writeMessage(hex(v.messages[i].payload))
        expect(ct.toString('hex')).toBe(v.messages[i].ciphertext)
        expect(r.readMessage(ct).toString('hex')).toBe(v.messages[i].payload)
      }
      expect(resp.done).toBe(true)
      expect(init.handshakeHash.toString('hex')).toBe(v.handshake_hash)
      expect(resp.handshakeHash.toString('hex')).toBe(v.handshake_hash)
      const ik: TransportKeys = init.split()
      const rk: TransportKeys = resp.split()
      // After the handshake, senders keep alternating, starting with the
      // party that did not send the last handshake message.
      let initSends = i % 2 === 0
      for (; i < v.messages.length; i++, initSends = !initSends) {
        const [s, r] = initSends ? [ik.send, rk.recv] : [rk.send, ik.recv]
        const ct = s.encryptWithAd(Buffer.alloc(0), hex(v.messages[i].payload))
        expect(ct.toString('hex')).toBe(v.messages[i].ciphertext)
        expect(r.decryptWithAd(Buffer.alloc(0), ct).toString('hex')).toBe(v.messages[i].payload)
      }
    })
  }
})
