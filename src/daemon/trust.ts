// Whose managed files we accept, and how a signer is named in listings:
// the configured files_trust list, or by default this node and its
// configured peers. Keys are compared in their base64url form.
import type { Config } from '../config.js'
import type { Identity } from '../lib/keys.js'

export class Trust {
  constructor (private readonly identity: Identity, private readonly config: () => Config) {}

  private get own (): string { return Buffer.from(this.identity.signPublic).toString('base64url') }

  trusted (signer: string): boolean {
    const c = this.config()
    const list = c.filesTrust ?? [this.own, ...c.peers.map(p => p.key.sign.toString('base64url'))]
    return list.includes(signer)
  }

  /** A signer's peer id, or its key when it is no configured peer. */
  name (signer: string): string {
    const c = this.config()
    if (signer === this.own) return c.id
    return c.peers.find(p => p.key.sign.toString('base64url') === signer)?.id ?? signer
  }
}
