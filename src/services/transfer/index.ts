// Outbox to inbox file transfer: the sender (one per peer, sender.ts), the
// receiver (one for all peers, receiver.ts), and the one handler the
// daemon's router gives the xfer family: a sender's messages go to the
// receiver, the receiver's answers to that peer's sender.
import type { Handler } from '../../transport/messages/codec.js'
import type { XferMessage, XferToSender } from '../../transport/messages/xfer.js'
import type { InboxReceiver } from './receiver.js'

export { InboxReceiver, type InboxOptions } from './receiver.js'
export { OutboxSender, type SenderOptions } from './sender.js'
export type { StatusPairs, TransferSettings, XferLink } from './shared.js'

export function xferHandler (senderOf: (peer: string) => { answers: Handler<XferToSender> } | undefined, receiver: InboxReceiver): Handler<XferMessage> {
  return {
    ...receiver.handler,
    xaccept: (peer, m) => senderOf(peer)?.answers.xaccept(peer, m),
    xack: (peer, m) => senderOf(peer)?.answers.xack(peer, m),
    xdone: (peer, m) => senderOf(peer)?.answers.xdone(peer, m),
    xdelivered: (peer, m) => senderOf(peer)?.answers.xdelivered(peer, m),
    xforgot: (peer, m) => senderOf(peer)?.answers.xforgot(peer, m)
  }
}
