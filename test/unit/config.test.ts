import { describe, expect, it } from 'vitest'
import { parseConfig } from '../../src/config.js'
import { encodePublicKey, identityFromSeed } from '../../src/lib/keys.js'

const KEY = encodePublicKey(identityFromSeed(new Uint8Array(32).fill(7)).publicKey)
const KEY2 = encodePublicKey(identityFromSeed(new Uint8Array(32).fill(8)).publicKey)
const BASE = `id = "alpha"\nkey = "alpha.key"\nstate = "state/alpha"\n`
const parse = (text: string) => parseConfig('/etc/peerfs/alpha.toml', text)
const fails = (text: string, re: RegExp) => expect(() => parse(text)).toThrow(re)

describe('config', () => {
  it('parses the example shape, resolving paths against the config file', () => {
    const c = parse(`${BASE}listen = "127.0.0.1:7701"\nmountpoint = "mnt/alpha"\n[[peer]]\nid = "beta"\naddress = "127.0.0.1:7702"\nkey = "${KEY}"\nalias = "ET"\n`)
    expect(c.keyFile).toBe('/etc/peerfs/alpha.key')
    expect(c.state).toBe('/etc/peerfs/state/alpha')
    expect(c.mountpoint).toBe('/etc/peerfs/mnt/alpha')
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 7701 })
    expect(c.peers).toHaveLength(1)
    expect(c.peers[0]).toMatchObject({ id: 'beta', alias: 'ET', address: { host: '127.0.0.1', port: 7702 }, requestTimeoutMs: 10_000 })
  })

  it('accepts a peer without address and an IPv6 listen address', () => {
    const c = parse(`${BASE}listen = "[::1]:7701"\n[[peer]]\nid = "beta"\nkey = "${KEY}"\n`)
    expect(c.listen).toEqual({ host: '::1', port: 7701 })
    expect(c.peers[0].address).toBeUndefined()
  })

  it('names the file and the key in every error', () => {
    fails(`${BASE}colour = "blue"\n`, /^\/etc\/peerfs\/alpha\.toml: colour: unknown key$/)
    fails('key = "k"\nstate = "s"\n', /alpha\.toml: id: is required/)
    fails(`${BASE.replace('"alpha"', '"Alpha!"')}`, /id: must be 1-32 characters/)
    fails(`${BASE}listen = "localhost"\n`, /listen: must be "host:port"/)
    fails(`${BASE}listen = "127.0.0.1:70000"\n`, /listen: port must be between 1 and 65535/)
    fails(`${BASE}retry_budget = "ten"\n`, /retry_budget: must be an integer, got string "ten"/)
    fails(`${BASE}keepalive_ms = 5000\ndown_after_ms = 1000\n`, /down_after_ms: must be larger than keepalive_ms/)
    fails(`${BASE}log_level = "loud"\n`, /log_level: must be one of/)
    fails(`${BASE}id = "x"\n`, /\(syntax\): not valid TOML/)
    fails(`${BASE}[[peer]]\nid = "beta"\n`, /peer\[1\]\.key: is required/)
    fails(`${BASE}[[peer]]\nid = "beta"\nkey = "abc"\n`, /peer\[1\]\.key: must be 86 characters/)
    fails(`${BASE}[[peer]]\nid = "beta"\nkey = "${KEY}"\nport = 1\n`, /peer\[1\]\.port: unknown key/)
    fails(`${BASE}[[peer]]\nid = "alpha"\nkey = "${KEY}"\n`, /peer\[1\]\.id: is this node's own id/)
    fails(`${BASE}[[peer]]\nid = "beta"\nkey = "${KEY}"\n[[peer]]\nid = "beta"\nkey = "${KEY2}"\n`, /peer\[2\]\.id: duplicate peer id/)
    fails(`${BASE}[[peer]]\nid = "beta"\nkey = "${KEY}"\n[[peer]]\nid = "gamma"\nkey = "${KEY}"\n`, /peer\[2\]\.key: the same key/)
    fails(`${BASE}[[peer]]\nid = "beta"\nkey = "${KEY}"\nalias = "E T"\n`, /peer\[1\]\.alias: must be/)
    fails(`${BASE}peer = 3\n`, /peer: must be an array of tables/)
  })
})
