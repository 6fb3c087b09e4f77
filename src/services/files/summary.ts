// The summary two nodes compare to find what one has and the other lacks
// (anti-entropy), without sending every manifest.
//
// Items are (name, version, hash of the manifest). A name's key is the top
// 32 bits of SHA-256(name); the items form a 16-ary tree on the key, LEVELS
// deep: the node at level L with prefix p holds the items whose key's top
// 4L bits are p. Each node keeps its item count and fingerprint (the XOR of
// its items' hashes), updated in O(LEVELS) per change, so a node's
// fingerprint costs nothing to read.
//
// The exchange is stateless, each message a self-contained question: A
// sends its fingerprints of some nodes (the root, at first); B answers each
// node that differs with its 16 children's fingerprints, or, once the node
// is small on either side, with its items. Whoever receives items compares
// them with its own in that node and knows both what to push and what to
// ask for. Equal sets cost one root fingerprint each way and nothing more:
// at rest a round costs the same whatever the number of files.
import { createHash } from 'node:crypto'
import type { SumId, SumNode } from '../../transport/messages/files.js'
import { FP_BYTES, ID_HASH_BYTES } from '../../transport/messages/files.js'

export const LEVELS = 4
const BITS = 4
/** A node this small on either side is answered with its items, not its children. */
export const LEAF_ITEMS = 64

interface Item { key: number, version: number, hash: Buffer }
interface Node { count: number, fp: Buffer }

export interface SumAnswer {
  /** Fingerprints to send back (children of nodes that differ). */
  sums: SumNode[]
  /** Our items of nodes that differ and are small. */
  ids: Array<{ level: number, prefix: number, items: SumId[] }>
  /** Names to push: the other side has nothing in their node. */
  push: string[]
}

export interface IdsAnswer {
  /** Our names the other side lacks or holds older (or different at the same version). */
  push: string[]
  /** Their names we lack or hold older (or different at the same version). */
  want: string[]
  /** Their names whose item equals ours. */
  same: string[]
}

export function keyOf (name: string): number {
  return createHash('sha256').update(name).digest().readUInt32BE(0)
}

function prefixOf (key: number, level: number): number {
  return level === 0 ? 0 : key >>> (32 - BITS * level)
}

function xorInto (fp: Buffer, h: Buffer): void {
  for (let i = 0; i < FP_BYTES; i++) fp[i] ^= h[i]
}

export class Summary {
  private readonly items = new Map<string, Item>()
  private readonly nodes: Array<Map<number, Node>> = Array.from({ length: LEVELS + 1 }, () => new Map())
  private readonly leaves = new Map<number, Set<string>>()

  get size (): number { return this.items.size }

  /** Adds an item, or replaces the one of the same name. */
  set (name: string, version: number, hash: Buffer): void {
    const old = this.items.get(name)
    const key = old?.key ?? keyOf(name)
    if (old !== undefined) this.apply(key, old.hash, -1)
    const item = { key, version, hash: Buffer.from(hash.subarray(0, FP_BYTES)) }
    this.items.set(name, item)
    this.apply(key, item.hash, 1)
    if (old === undefined) {
      const leaf = prefixOf(key, LEVELS)
      let set = this.leaves.get(leaf)
      if (set === undefined) this.leaves.set(leaf, set = new Set())
      set.add(name)
    }
  }

  private apply (key: number, hash: Buffer, delta: number): void {
    for (let level = 0; level <= LEVELS; level++) {
      const p = prefixOf(key, level)
      const map = this.nodes[level]
      let n = map.get(p)
      if (n === undefined) map.set(p, n = { count: 0, fp: Buffer.alloc(FP_BYTES) })
      n.count += delta
      xorInto(n.fp, hash)
      if (n.count === 0) map.delete(p)
    }
  }

  node (level: number, prefix: number): SumNode {
    const n = this.nodes[level]?.get(prefix)
    return { level, prefix, count: n?.count ?? 0, fp: n === undefined ? Buffer.alloc(FP_BYTES) : Buffer.from(n.fp) }
  }

  root (): SumNode { return this.node(0, 0) }

  private children (level: number, prefix: number): SumNode[] {
    const out: SumNode[] = []
    for (let i = 0; i < 1 << BITS; i++) out.push(this.node(level + 1, (prefix << BITS | i) >>> 0))
    return out
  }

  /** Names in a node, walking only nodes that hold something. */
  namesUnder (level: number, prefix: number): string[] {
    if (level === LEVELS) return [...(this.leaves.get(prefix) ?? [])]
    if (!this.nodes[level].has(prefix)) return []
    const out: string[] = []
    for (let i = 0; i < 1 << BITS; i++) out.push(...this.namesUnder(level + 1, (prefix << BITS | i) >>> 0))
    return out
  }

  private idsUnder (level: number, prefix: number): SumId[] {
    return this.namesUnder(level, prefix).map(name => {
      const it = this.items.get(name) as Item
      return { name, version: it.version, hash: it.hash.subarray(0, ID_HASH_BYTES) }
    })
  }

  /** Answers another node's fingerprints. Nodes outside the tree are ignored. */
  answerSums (theirs: SumNode[]): SumAnswer {
    const out: SumAnswer = { sums: [], ids: [], push: [] }
    for (const t of theirs) {
      if (t.level > LEVELS || t.prefix >= 2 ** (BITS * t.level)) continue
      const mine = this.node(t.level, t.prefix)
      if (mine.count === t.count && mine.fp.equals(t.fp)) continue
      if (t.count === 0) out.push.push(...this.namesUnder(t.level, t.prefix))
      else if (mine.count <= LEAF_ITEMS || t.count <= LEAF_ITEMS || t.level === LEVELS) out.ids.push({ level: t.level, prefix: t.prefix, items: this.idsUnder(t.level, t.prefix) })
      else out.sums.push(...this.children(t.level, t.prefix))
    }
    return out
  }

  /** Compares another node's complete items of one node with ours. */
  compareIds (level: number, prefix: number, theirs: SumId[]): IdsAnswer {
    const out: IdsAnswer = { push: [], want: [], same: [] }
    if (level > LEVELS) return out
    const seen = new Set<string>()
    for (const t of theirs) {
      seen.add(t.name)
      const mine = this.items.get(t.name)
      // An item outside the node is the other side's mistake; we still answer for it.
      if (mine === undefined || mine.version < t.version) out.want.push(t.name)
      else if (mine.hash.subarray(0, ID_HASH_BYTES).equals(t.hash)) out.same.push(t.name)
      else if (mine.version > t.version) out.push.push(t.name)
      else {
        out.push.push(t.name)
        out.want.push(t.name)
      }
    }
    for (const name of this.namesUnder(level, prefix)) if (!seen.has(name)) out.push.push(name)
    return out
  }
}
