// The event stream behind <mnt>/events: lines `<unix-ms> <peer-id> <event>
// [detail]`. Producers call emit; each subscriber (one per open of the file)
// gets every line from its subscription on.
export type Listener = (line: string) => void

export class EventBus {
  private readonly listeners = new Set<Listener>()

  constructor (private readonly now: () => number = Date.now) {}

  emit (peer: string, event: string, detail?: string): void {
    const tail = detail === undefined || detail === '' ? '' : ' ' + detail.replace(/[\r\n]+/g, ' ')
    const line = `${this.now()} ${peer} ${event}${tail}\n`
    for (const l of this.listeners) l(line)
  }

  subscribe (fn: Listener): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }
}
