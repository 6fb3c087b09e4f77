// How services send to peers, written once for all of them: a view of one
// peer's live link, and of all peers for the services that gossip. The
// daemon implements both over the peer manager; services never see a
// socket or a Peer object.
import type { Message } from '../transport/messages/index.js'

export interface PeerLink {
  isUp: () => boolean
  /** The peer, on the live link, understands the optional message (transport/hello.ts); absent: none. */
  supports?: (feature: string) => boolean
  /** Throws a TxError(EHOSTUNREACH) when the peer has no live link. */
  send: (m: Message) => void
}

export interface Outbound {
  /** The link to one peer, by id, whichever link carries it now. */
  to: (peer: string) => PeerLink
  upPeers: () => string[]
}
