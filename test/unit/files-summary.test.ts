// The summary exchange (anti-entropy) between two nodes, driven message by
// message in memory: it must find exactly what each side lacks or holds
// older, and cost one root fingerprint when both hold the same.
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { LEAF_ITEMS, Summary } from '../../src/services/files/summary.js'
import type { SumId, SumNode } from '../../src/transport/messages/files.js'

interface Item { version: number, salt: number }
type Side = Map<string, Item>

const hashOf = (name: string, it: Item): Buffer => createHash('sha256').update(`${name}\0${it.version}\0${it.salt}`).digest()

function summaryOf (side: Side): Summary {
  const s = new Summary()
  for (const [name, it] of side) s.set(name, it.version, hashOf(name, it))
  return s
}

type Msg = { to: 0 | 1, kind: 'sum', nodes: SumNode[] } | { to: 0 | 1, kind: 'ids', level: number, prefix: number, items: SumId[] }

/** Runs one exchange started by side 0; returns what each side sends the other (pushes plus the other's wants), and the message count. */
function exchange (a: Side, b: Side): { sent: [Set<string>, Set<string>], messages: number } {
  const sums = [summaryOf(a), summaryOf(b)]
  const sent: [Set<string>, Set<string>] = [new Set(), new Set()]
  const queue: Msg[] = [{ to: 1, kind: 'sum', nodes: [sums[0].root()] }]
  let messages = 0
  while (queue.length > 0) {
    const m = queue.shift() as Msg
    messages++
    expect(messages).toBeLessThan(100_000)
    const me = m.to
    const other = (1 - me) as 0 | 1
    if (m.kind === 'sum') {
      const r = sums[me].answerSums(m.nodes)
      if (r.sums.length > 0) queue.push({ to: other, kind: 'sum', nodes: r.sums })
      for (const ids of r.ids) queue.push({ to: other, kind: 'ids', ...ids })
      for (const n of r.push) sent[me].add(n)
    } else {
      const r = sums[me].compareIds(m.level, m.prefix, m.items)
      for (const n of r.push) sent[me].add(n)
      for (const n of r.want) sent[other].add(n)
    }
  }
  return { sent, messages }
}

/** What `from` must send `to`: names it has that `to` lacks, or holds with a different item at a version not newer than ours. */
function expected (from: Side, to: Side): Set<string> {
  const out = new Set<string>()
  for (const [name, it] of from) {
    const t = to.get(name)
    if (t === undefined || ((t.version !== it.version || t.salt !== it.salt) && it.version >= t.version)) out.add(name)
  }
  return out
}

const names = fc.constantFrom(...Array.from({ length: 400 }, (_, i) => `dir${i % 7}/file-${i}`))
const item = fc.record({ version: fc.integer({ min: 1, max: 4 }), salt: fc.integer({ min: 0, max: 1 }) })
const side = fc.array(fc.tuple(names, item), { maxLength: 300 }).map(xs => new Map(xs))

describe('summary exchange', () => {
  it('sends exactly what the other side lacks or holds older, both ways (property)', () => {
    fc.assert(fc.property(side, side, fc.double({ min: 0, max: 1, noNaN: true }), (a, b, share) => {
      // Make the sides overlap: b takes a share of a's items as they are.
      for (const [n, it] of a) if (hashOf(n, it)[0] / 255 < share) b.set(n, it)
      const { sent } = exchange(a, b)
      expect(sent[0]).toEqual(expected(a, b))
      expect(sent[1]).toEqual(expected(b, a))
    }), { numRuns: 300 })
  })

  it('finds a few differences among many items with few messages', () => {
    const a: Side = new Map(Array.from({ length: 10_000 }, (_, i) => [`f${i}`, { version: 1, salt: 0 }]))
    const b: Side = new Map(a)
    for (const i of [3, 777, 5000, 9999]) b.set(`f${i}`, { version: 2, salt: 0 })
    b.delete('f42')
    const { sent, messages } = exchange(a, b)
    expect(sent[0]).toEqual(new Set(['f42']))
    expect(sent[1]).toEqual(new Set(['f3', 'f777', 'f5000', 'f9999']))
    expect(messages).toBeLessThan(40)
  })

  it('costs one root fingerprint when both hold the same, whatever the number of items', () => {
    for (const n of [0, 10, 10_000]) {
      const a: Side = new Map(Array.from({ length: n }, (_, i) => [`f${i}`, { version: 1, salt: 0 }]))
      const { sent, messages } = exchange(a, new Map(a))
      expect(messages).toBe(1)
      expect(sent[0].size + sent[1].size).toBe(0)
    }
  })

  it('an empty side gets everything pushed without item lists', () => {
    const a: Side = new Map(Array.from({ length: 5 * LEAF_ITEMS }, (_, i) => [`f${i}`, { version: 1, salt: 0 }]))
    const { sent, messages } = exchange(a, new Map())
    expect(sent[0].size).toBe(a.size)
    expect(messages).toBe(2)
  })

  it('replacing an item updates the fingerprints; restoring it restores them', () => {
    const s = new Summary()
    s.set('x', 1, hashOf('x', { version: 1, salt: 0 }))
    const before = s.root()
    s.set('x', 2, hashOf('x', { version: 2, salt: 0 }))
    expect(s.root().fp.equals(before.fp)).toBe(false)
    expect(s.root().count).toBe(1)
    s.set('x', 1, hashOf('x', { version: 1, salt: 0 }))
    expect(s.root()).toEqual(before)
  })

  it('ignores nodes outside the tree', () => {
    const s = summaryOf(new Map([['x', { version: 1, salt: 0 }]]))
    expect(s.answerSums([{ level: 9, prefix: 0, count: 1, fp: Buffer.alloc(16) }, { level: 1, prefix: 99, count: 1, fp: Buffer.alloc(16) }]))
      .toEqual({ sums: [], ids: [], push: [] })
  })
})
