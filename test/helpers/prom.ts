// A strict parser for the Prometheus text exposition format (0.0.4), for
// tests: it throws on anything a Prometheus server would reject or that
// promtool flags as malformed: bad names, unescaped label values, a TYPE
// after its samples or twice, a family's samples not together, a repeated
// series, a value that is not a float, no final newline.
export interface Sample { name: string, labels: Record<string, string>, value: number }
export interface Family { name: string, type: string, help: string | undefined, samples: Sample[] }

const METRIC = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])
const FLOAT = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?Inf$|^NaN$/

/** The family a sample name belongs to (histogram and summary suffixes). */
function familyOf (name: string, types: Map<string, string>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    const base = name.slice(0, -suffix.length)
    if (name.endsWith(suffix) && (types.get(base) === 'histogram' || types.get(base) === 'summary')) return base
  }
  return name
}

function parseLabels (text: string, line: number): [Record<string, string>, string] {
  const labels: Record<string, string> = {}
  let i = 0
  if (text[i] !== '{') return [labels, text]
  i++
  while (text[i] !== '}') {
    const eq = text.indexOf('=', i)
    if (eq < 0) throw new Error(`line ${line}: label without =`)
    const name = text.slice(i, eq)
    if (!LABEL.test(name) || name.startsWith('__')) throw new Error(`line ${line}: bad label name ${JSON.stringify(name)}`)
    if (name in labels) throw new Error(`line ${line}: label ${name} twice`)
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label value not quoted`)
    let v = ''
    let j = eq + 2
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\n') throw new Error(`line ${line}: raw newline in label value`)
      if (text[j] === '\\') {
        const c = text[++j]
        if (c === 'n') v += '\n'
        else if (c === '\\' || c === '"') v += c
        else throw new Error(`line ${line}: bad escape \\${c} in label value`)
      } else v += text[j]
    }
    if (text[j] !== '"') throw new Error(`line ${line}: unterminated label value`)
    labels[name] = v
    i = j + 1
    if (text[i] === ',') i++
    else if (text[i] !== '}') throw new Error(`line ${line}: expected , or } after a label`)
  }
  return [labels, text.slice(i + 1)]
}

export function parsePrometheusText (text: string): Map<string, Family> {
  if (text !== '' && !text.endsWith('\n')) throw new Error('does not end with a newline')
  const families = new Map<string, Family>()
  const types = new Map<string, string>()
  const closed = new Set<string>()
  const series = new Set<string>()
  let current: string | undefined
  const enter = (name: string): Family => {
    if (current !== name) {
      if (current !== undefined) closed.add(current)
      if (closed.has(name)) throw new Error(`family ${name}: its lines are not together`)
      current = name
    }
    let f = families.get(name)
    if (f === undefined) {
      f = { name, type: types.get(name) ?? 'untyped', help: undefined, samples: [] }
      families.set(name, f)
    }
    return f
  }
  text.split('\n').slice(0, -1).forEach((raw, idx) => {
    const line = idx + 1
    if (raw.trim() === '') return
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw)
      if (m === null) return // a plain comment
      const [, kind, name, rest] = m
      if (!METRIC.test(name)) throw new Error(`line ${line}: bad metric name ${name}`)
      const f = enter(name)
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`line ${line}: bad type ${rest}`)
        if (types.has(name)) throw new Error(`line ${line}: second TYPE for ${name}`)
        if (f.samples.length > 0) throw new Error(`line ${line}: TYPE for ${name} after its samples`)
        types.set(name, rest)
        f.type = rest
      } else {
        if (f.help !== undefined) throw new Error(`line ${line}: second HELP for ${name}`)
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) throw new Error(`line ${line}: bad escape in HELP`)
        f.help = rest
      }
      return
    }
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(raw)
    if (nm === null) throw new Error(`line ${line}: no metric name: ${raw}`)
    const name = nm[0]
    const [labels, rest] = parseLabels(raw.slice(name.length), line)
    const parts = rest.split(' ')
    if (parts[0] !== '' || parts.length < 2 || parts.length > 3) throw new Error(`line ${line}: expected " value [timestamp]": ${raw}`)
    if (!FLOAT.test(parts[1])) throw new Error(`line ${line}: bad value ${parts[1]}`)
    if (parts.length === 3 && !/^-?\d+$/.test(parts[2])) throw new Error(`line ${line}: bad timestamp ${parts[2]}`)
    const key = name + JSON.stringify(Object.entries(labels).sort())
    if (series.has(key)) throw new Error(`line ${line}: series repeated: ${raw}`)
    series.add(key)
    const f = enter(familyOf(name, types))
    f.samples.push({ name, labels, value: parts[1].endsWith('Inf') || parts[1] === 'NaN' ? Number(parts[1].replace('Inf', 'Infinity')) : Number(parts[1]) })
  })
  return families
}
