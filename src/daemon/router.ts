// The message router: each message family that is not the transport's own
// (control and transactions are answered inside the link and the peer) is
// handed to the typed handler registered for it, one method per message.
// Adding a message touches its family module and its handler only.
import type { Logger } from '../lib/log.js'
import { FAMILIES, familyOf, type FamilyName, type Handler, type Message } from '../transport/messages/index.js'

/** The messages of one family. */
export type MessageOf<F extends FamilyName> = Extract<Message, { type: keyof (typeof FAMILIES)[F] }>

type AnyHandler = Record<string, (peer: string, m: Message) => void>

export class Router {
  private readonly handlers = new Map<FamilyName, AnyHandler>()

  constructor (private readonly log: Logger) {}

  handle<F extends FamilyName> (family: F, handler: Handler<MessageOf<F>>): void {
    this.handlers.set(family, handler as unknown as AnyHandler)
  }

  /** A message from a peer's live link. A handler that throws is logged; the link stays. */
  deliver (peer: string, m: Message): void {
    const family = familyOf(m)
    const h = this.handlers.get(family)
    if (h === undefined) {
      this.log.debug({ peer, type: m.type }, 'no handler for message family; dropped')
      return
    }
    try {
      h[m.type](peer, m)
    } catch (err) {
      this.log.error({ peer, type: m.type, err }, 'message handler failed')
    }
  }
}
