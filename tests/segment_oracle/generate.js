'use strict'
// Records Segment's own answers as golden files for segmetro's differential tests.
//
// Mappings: random nested mapping-kit expressions × tricky events, each evaluated with
// @segment/actions-core's transform() (result or thrown message) and mapping-kit's validate().
// Triggers: random FQL triggers × tricky events through @segment/destination-subscriptions'
// parseFql() + validate().
//
// Deterministic: a fixed seed, no clock, TZ pinned. Run with `npm run generate`.

process.env.TZ = 'UTC'

const fs = require('fs')
const path = require('path')
const zlib = require('zlib')
const crypto = require('crypto')
const { transform } = require('@segment/actions-core/mapping-kit')
const validateMapping = require('@segment/actions-core/mapping-kit/validate').default
const { parseFql, validate: validateTrigger } = require('@segment/destination-subscriptions')

const SEED = 20261202
const OUT = path.join(__dirname, 'golden')
const EXPRESSIONS_PER_DIRECTIVE = 150
const EVENTS_PER_EXPRESSION = 4
const TRIGGERS = 900
const EVENTS_PER_TRIGGER = 5
const GZIP_ABOVE = 5 * 1024 * 1024

// ------------------------------------------------------------------ deterministic randomness

function mulberry32(seed) {
  let a = seed >>> 0
  return function () {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const rand = mulberry32(SEED)
const chance = (p) => rand() < p
const int = (n) => Math.floor(rand() * n)
const pick = (items) => items[int(items.length)]

// ------------------------------------------------------------------ JSON text with big numbers

// A number written with exactly these digits in the JSON text (JavaScript parses it into the
// nearest double, Python keeps the digits): the "big numbers > 2^53" of real exports.
class Raw {
  constructor(text) {
    this.text = text
  }
}
const raw = (text) => new Raw(text)

function toText(value) {
  if (value instanceof Raw) return value.text
  if (Array.isArray(value)) return '[' + value.map(toText).join(',') + ']'
  if (value !== null && typeof value === 'object') {
    return '{' + Object.keys(value).map((k) => JSON.stringify(k) + ':' + toText(value[k])).join(',') + '}'
  }
  return JSON.stringify(value)
}

// ------------------------------------------------------------------ events

const MISSING = Symbol('missing')
const BIGS = ['12345678901234567891', '9007199254740993', '-9007199254740993', '123456789012345678901234567890']
const STRINGS = [
  'hello',
  '',
  ' ',
  'Straße',
  'ſtop',
  'İstanbul',
  'KELVIN \u212a',
  'émoji 😀',
  'a.b',
  '0',
  'false',
  'null',
  '{{userId}}',
  '<b>"Tom" & \'Jerry\'</b>',
  'https://shop.example.com/checkout?step=2&ref=email',
  'Mixed CASE text',
  'line\nbreak\ttab',
  '$5.00 (50%)',
  'a+b*c?',
  'ß',
]
const NUMBERS = [0, 1, -1, 2, 1.5, -2.25, 100, 1e21, 1e-7, 0.1, 42]

// Segment reads a bare string as text; segmetro's own syntax reads a bare `$…` string as
// JSONPath (a documented difference), so bare strings in expressions never start with `$`.
// Inside @literal they may: there both must keep the text.
const BARE_STRINGS = STRINGS.filter((s) => !s.startsWith('$'))

function bareScalar() {
  const value = scalar()
  return typeof value === 'string' && value.startsWith('$') ? pick(BARE_STRINGS) : value
}

function scalar() {
  const r = rand()
  if (r < 0.1) return null
  if (r < 0.17) return false
  if (r < 0.22) return true
  if (r < 0.5) return pick(NUMBERS)
  if (r < 0.55) return raw(pick(BIGS))
  return pick(STRINGS)
}

function maybe(value, p = 0.15) {
  return chance(p) ? MISSING : value
}

function obj(entries) {
  const out = {}
  for (const [k, v] of entries) if (v !== MISSING) out[k] = v
  return out
}

function makeEvent() {
  const items = []
  const n = pick([0, 1, 2, 3])
  for (let i = 0; i < n; i++) {
    items.push(
      obj([
        ['sku', maybe(pick(['SKU-1', 'sku-2', 'Größe-3', '']), 0.2)],
        ['qty', maybe(pick([1, 2, 0, null, '3', raw('12345678901234567891')]), 0.2)],
        ['price', maybe(pick([9.99, 10, 0, null]), 0.3)],
        ['tags', maybe(['a', 'b'], 0.6)],
      ])
    )
  }
  const properties = obj([
    ['amount', maybe(pick([0, 10, 12.5, -3, null, '', false, '7', raw('12345678901234567891'), 1e21]))],
    ['plan name', maybe(pick(['Pro Plan', '', null, 'Ünïcode plän']))],
    ['größe', maybe(pick(['XL', 'ß', 0]))],
    ['a.b', maybe(pick(['dotted key', null, 1]))],
    ['a', maybe(pick([{ b: 'nested b', c: null }, { b: null }, { b: { c: 'deep' } }, null, 'string a', []]))],
    ['items', maybe(chance(0.15) ? pick([null, 'not-an-array', {}]) : items, 0.1)],
    ['tags', maybe(pick(['alpha,beta', ['alpha', 'beta'], [], ['x'], '', 'tag']))],
    ['nested', maybe(pick([[[1, 2], [3]], [[], ['x', null]], [[{ k: 'v' }]]]))],
    ['url', maybe('https://shop.example.com/checkout?step=2&ref=email', 0.3)],
    ['html', maybe('<b>"Tom" & \'Jerry\'</b>', 0.4)],
    ['tpl', maybe(pick(['{{userId}}', '{{properties.url}}', 'plain', '{{{traits.name}}}']), 0.4)],
    ['json', maybe(pick(['{"a":1,"b":[true,null]}', '[1,2,3]', 'not json', '12345678901234567891', '"str"', '', 'null', '{"x":1e400}']), 0.3)],
    ['big', maybe(raw(pick(BIGS)), 0.4)],
    ['flag', maybe(pick([true, false, null, 'true', 0, 1]))],
    ['empty', maybe(pick([{}, [], '', null]), 0.4)],
    ['numkeys', maybe({ b: 1, 2: 'two', 1: 'one', a: null }, 0.7)],
    ['emoji', maybe('😀 ok', 0.5)],
    ['text', maybe(pick(STRINGS), 0.1)],
    ['n', maybe(pick(NUMBERS), 0.2)],
    ['s', maybe(scalar(), 0.1)],
    ['deep', maybe({ x: { y: { z: pick(['zz', null, 0, false, '']) } } }, 0.3)],
    ['atkey', maybe({ '@path': '$.userId' }, 0.7)],
  ])
  const traits = obj([
    ['email', maybe(pick(['Ann@Example.COM', 'bob@example.com', '', null]))],
    ['name', maybe(pick(['Ann Smith', 'Ærøskøbing', '{{userId}}', null, '']))],
    ['plan', maybe(pick(['pro', 'free', 'Enterprise']))],
    ['age', maybe(pick([30, 0, null, '30', raw('9007199254740993')]))],
  ])
  return obj([
    ['type', maybe(pick(['track', 'identify', 'page', 'group']), 0.05)],
    ['event', maybe(pick(['Order Completed', 'Signed Up', '', 'Ünicode Event', 'order completed']), 0.1)],
    ['userId', maybe(pick(['u-1', 'user 2', '', null, 123, raw('12345678901234567891')]), 0.1)],
    ['anonymousId', maybe('anon-1', 0.5)],
    ['messageId', maybe(pick(['m-1', 'm-2']), 0.1)],
    ['timestamp', maybe(pick(['2026-01-02T03:04:05.678Z', '2026-01-02', null]), 0.1)],
    ['properties', chance(0.05) ? pick([null, 'str', [], 0]) : maybe(properties, 0.03)],
    ['traits', maybe(traits, 0.3)],
    ['context', maybe({ ip: '1.2.3.4', locale: pick(['en-US', 'de-DE']), app: { version: pick(['1.0', 2, null]) } }, 0.3)],
    ['a.b', maybe('root dotted', 0.7)],
    ['key with space', maybe('spaced', 0.7)],
  ])
}

// ------------------------------------------------------------------ expressions

const DIRECTIVES = [
  '@path',
  '@template',
  '@literal',
  '@if',
  '@case',
  '@replace',
  '@merge',
  '@arrayPath',
  '@flatten',
  '@json',
  '@transform',
  '@excludeWhenNull',
  '@liquid',
]

const PATHS = [
  '$.properties.amount',
  'properties.amount',
  '$.properties',
  '$.properties.a',
  '$.properties.a.b',
  '$.properties.a.c',
  '$.properties.a.b.c',
  "$.properties['a.b']",
  '$.properties["a.b"]',
  "$.properties['plan name']",
  '$.properties.plan name',
  '$.properties.größe',
  "$.properties['größe']",
  '$.properties.items',
  '$.properties.items.length',
  '$.properties.items.0.sku',
  '$.properties.items[0].sku',
  "$.properties.items[0]['sku']",
  '$.properties.items]0.sku',
  '$.properties.items.1',
  '$.properties.items[1].qty',
  '$.properties.items[2]',
  '$.properties.items[-1]',
  '$.properties.items[*].sku',
  '$.properties.tags',
  '$.properties.tags[0]',
  '$.properties.tags.0',
  '$.properties.tags.length',
  '$.properties.tags[1].length',
  '$.properties.nested[0][1]',
  '$.properties.nested.1.0',
  '$.properties.nested[0]',
  '$.properties.url',
  '$.properties.html',
  '$.properties.tpl',
  '$.properties.json',
  '$.properties.big',
  '$.properties.flag',
  '$.properties.empty',
  '$.properties.numkeys',
  '$.properties.numkeys.1',
  '$.properties.emoji',
  '$.properties.emoji.length',
  '$.properties.text',
  '$.properties.text.length',
  '$.properties.text[0]',
  '$.properties.n',
  '$.properties.s',
  '$.properties.deep.x.y.z',
  '$.properties.deep.x.y.z.w',
  '$.properties.missing',
  '$.properties.missing.deeper',
  '$.properties.atkey',
  '$.traits.email',
  '$.traits.name',
  '$.traits.age',
  '$.traits',
  '$.userId',
  '$.event',
  '$.type',
  '$.timestamp',
  '$.context.app.version',
  "$['a.b']",
  '$.key with space',
  "$['key with space']",
  '$.nothing',
  '$.',
  '$',
  '',
  '.',
  'properties..amount',
  '$.properties.amount.',
  '$..amount',
  'traits.email',
  'userId',
]
// paths inside an @arrayPath item (relative to the item)
const ITEM_PATHS = ['$.sku', '$.qty', '$.price', '$.tags', '$.tags[0]', '$.tags.length', 'sku', '$.missing', '$', '$.', '$.length', '$.0']

const TEMPLATE_PIECES = [
  '{{properties.url}}',
  '{{{properties.url}}}',
  '{{properties.html}}',
  '{{{properties.html}}}',
  "{{properties['plan name']}}",
  '{{ properties["plan name"] }}',
  '{{properties.plan name}}',
  '{{properties.größe}}',
  "{{properties['a.b']}}",
  '{{properties.tags[0]}}',
  '{{properties.tags.length}}',
  '{{properties.items.length}}',
  '{{properties.items[0].sku}}',
  '{{properties.items.0.qty}}',
  '{{properties.items}}',
  '{{properties.tags}}',
  '{{properties.nested}}',
  '{{properties.a}}',
  '{{properties.a.b}}',
  '{{properties.amount}}',
  '{{properties.flag}}',
  '{{properties.big}}',
  '{{properties.n}}',
  '{{properties.empty}}',
  '{{properties.emoji}}',
  '{{{properties.tpl}}}',
  '{{properties.tpl}}',
  '{{{traits.name}}}',
  '{{traits.name}}',
  '{{ traits.email }}',
  '{{missing.key}}',
  '{{}}',
  '{{ }}',
  '{{userId}}',
  '{{event}}',
  '{{.}}',
  '{{properties}}',
  '{{{properties}}}',
  '{{properties.text}}',
  '{{properties.deep.x.y.z}}',
  '{{properties.a}b}}',
  '{{properties.items[0][\'sku\']}}',
]
const TEMPLATE_TEXT = ['', 'Hi ', ' - ', 'id:', '{', '}', '{{', ' }}', 'ü ', '$1 ', '&amp; ', '%s ']

const LIQUID = [
  '{{ properties.amount }}',
  '{{ properties.amount | plus: 1 }}',
  '{{ properties.amount | times: 2 }}',
  '{{ properties.amount | divided_by: 4 }}',
  '{{ properties.amount | divided_by: 0 }}',
  '{{ properties.amount | minus: 0.5 | round }}',
  '{{ properties.n | modulo: 3 }}',
  '{{ properties.n | abs | ceil }}',
  '{{ properties.n | floor }}',
  '{{ properties.n | at_least: 5 | at_most: 50 }}',
  '{% if properties.amount > 5 %}big{% else %}small{% endif %}',
  '{% if properties.amount == 0 %}zero{% elsif properties.amount %}some{% else %}none{% endif %}',
  '{% unless properties.flag %}off{% endunless %}',
  '{% if properties.items.size > 1 %}many{% endif %}',
  '{{ traits.name | upcase }}',
  '{{ traits.name | downcase }}',
  '{{ traits.email | downcase | strip }}',
  '{{ traits.name | capitalize }}',
  '{{ properties.text | upcase }}',
  '{{ properties.text | size }}',
  '{{ properties.text | truncate: 5 }}',
  '{{ properties.text | slice: 1, 3 }}',
  '{{ properties.text | replace: "a", "b" }}',
  '{{ properties.text | remove: "e" }}',
  '{{ properties.text | append: "!" | prepend: "<" }}',
  '{{ properties.text | escape }}',
  '{{ properties.text | url_encode }}',
  '{{ properties.url | url_encode }}',
  '{{ properties.url | split: "?" | first }}',
  '{{ properties.url | split: "&" | last }}',
  '{{ properties.tags | join: "," }}',
  '{{ properties.tags | size }}',
  '{{ properties.tags | first }}',
  '{{ properties.tags }}',
  '{{ properties.items.size }}',
  '{{ properties.items.first.sku }}',
  '{{ properties.items[0].sku }}',
  '{{ properties.items | map: "sku" }}',
  '{{ properties.items | where: "sku", "SKU-1" | size }}',
  '{{ properties.items | sort }}',
  '{{ properties.tags | reverse }}',
  '{{ properties.a }}',
  '{{ properties.a.b }}',
  '{{ properties.nested }}',
  '{{ properties["plan name"] }}',
  "{{ properties['a.b'] }}",
  '{{ properties.größe }}',
  '{{ properties.html }}',
  '{{ properties.big }}',
  '{{ properties.big | plus: 0 }}',
  '{{ properties.flag }}',
  '{{ properties.empty }}',
  '{{ properties.missing | default: "dflt" }}',
  '{{ properties.amount | default: "dflt" }}',
  '{{ userId }}',
  '{{ userId | append: "-x" }}',
  '{% assign x = properties.amount | times: 2 %}{{ x }}',
  '{% capture c %}{{ event }}!{% endcapture %}{{ c | upcase }}',
  '{% for t in properties.tags %}{{ t }}{% endfor %}',
  '{% case event %}{% when "Signed Up" %}s{% endcase %}',
  '{% raw %}{{ x }}{% endraw %}',
  '{{ "2026-01-02T03:04:05Z" | date: "%Y-%m-%d %H:%M" }}',
  '{{ timestamp | date: "%s" }}',
  '{{ properties.amount | json }}',
  '{{ traits | json }}',
  '{{ properties.json | split: "," | size }}',
  '{{ event | newline_to_br }}',
  '{{ "a,b" | split: "," | concat: properties.tags }}',
  '{{ properties.text | strip_html | strip_newlines }}',
  '{{ properties.missing.deeper }}',
  '{% if properties.text contains "a" %}has a{% endif %}',
  '{{ 10 | divided_by: 3.0 }}',
  '{{ 1e21 }}',
  '{{ 0.1 | plus: 0.2 }}',
  '{% if %}',
  '{{ properties.amount | nosuchfilter }}',
  '{{ unclosed',
  'plain text only',
  '',
]

function literalValue(depth = 0, dollar = false) {
  const r = rand()
  if (r < 0.45 || depth > 1) return dollar ? scalar() : bareScalar()
  if (r < 0.7) {
    const out = {}
    const n = int(3)
    for (let i = 0; i < n; i++) out[pick(['k', 'x', 'a b', 'ü', '0', 'n'])] = literalValue(depth + 1, dollar)
    return out
  }
  if (r < 0.85) return [literalValue(depth + 1, dollar), literalValue(depth + 1, dollar)].slice(0, 1 + int(2))
  return expr(1, null)
}

function pathValue() {
  const r = rand()
  if (r < 0.88) return pick(PATHS)
  if (r < 0.95) return { '@template': pick(['$.properties.{{properties.text}}', 'properties.{{event}}', '$.traits.email']) }
  if (r < 0.98) return { '@literal': pick(PATHS) }
  return pick([5, null, true, ['$.userId']])
}

function templateValue() {
  if (chance(0.04)) return pick([{ '@path': '$.properties.tpl' }, { '@literal': '{{userId}} lit' }, 7, null])
  let text = ''
  const n = 1 + int(3)
  for (let i = 0; i < n; i++) {
    if (chance(0.5)) text += pick(TEMPLATE_TEXT)
    text += pick(TEMPLATE_PIECES)
  }
  return text
}

function leaf() {
  const r = rand()
  if (r < 0.6) return { '@path': pathValue() }
  if (r < 0.75) return { '@template': templateValue() }
  if (r < 0.85) return { '@literal': scalar() }
  if (r < 0.92) return bareScalar()
  return pick(BARE_STRINGS)
}

function sub(depth) {
  if (depth <= 0 || chance(0.55)) return leaf()
  return expr(depth - 1, null)
}

function stringSub(depth) {
  if (chance(0.3)) return pick(BARE_STRINGS)
  return sub(depth)
}

const PATTERNS = ['e', 'E', '.', 's', 'S', 'ß', 'SS', '$', '(', ' ', ',', 'a+b', '*', 'com', '&', '{{', 'ü', 'K', 'k', 'i', 'I', '\\', 'o', '#', '']
const REPLACEMENTS = ['', 'x', '-', '$&', '$1', '$$', "$'", '$`', '\\', 'Ü', '$<n>', 'long', '{{userId}}']

function optionalFlag(name, out) {
  const r = rand()
  if (r < 0.35) out[name] = true
  else if (r < 0.7) out[name] = false
  else if (r < 0.74) out[name] = pick(['true', 1, null])
}

const BUILDERS = {
  '@path': () => pathValue(),
  '@template': () => templateValue(),
  '@literal': (depth) => (chance(0.3) ? expr(depth, null) : literalValue(0, true)),
  '@if': (depth) => {
    const out = {}
    const kind = chance(0.6) ? 'exists' : 'blank'
    const r = rand()
    if (r < 0.85) out[kind] = sub(depth)
    else if (r < 0.93) out[kind] = pick([0, '', false, null, 1, 'x', true])
    if (chance(0.04)) out[kind === 'exists' ? 'blank' : 'exists'] = sub(depth)
    if (chance(0.8)) out.then = chance(0.1) ? pick([0, '', false, null]) : sub(depth)
    if (chance(0.7)) out.else = chance(0.15) ? pick([0, '', false, null]) : sub(depth)
    if (chance(0.03)) out.other = 1
    return chance(0.02) ? pick(['exists', null, []]) : out
  },
  '@case': (depth) => {
    const out = {}
    const r = rand()
    if (r < 0.42) out.operator = 'lower'
    else if (r < 0.84) out.operator = 'upper'
    else if (r < 0.9) out.operator = pick(['UPPER', 'Lower'])
    else if (r < 0.95) out.operator = pick(['title', 5, ''])
    const v = rand()
    if (v < 0.85) out.value = stringSub(depth)
    else if (v < 0.93) out.value = pick([5, true, null, '', ['x']])
    return out
  },
  '@replace': (depth) => {
    const out = {}
    const p = rand()
    if (p < 0.9) out.pattern = pick(PATTERNS)
    else if (p < 0.95) out.pattern = pick(['elevenchars', 'much-too-long-pattern', 5])
    const q = rand()
    if (q < 0.8) out.replacement = pick(REPLACEMENTS)
    else if (q < 0.85) out.replacement = pick(['replacement!', 3, null])
    if (chance(0.93)) out.value = chance(0.1) ? pick([5, true, null, '', 1.5, raw('12345678901234567891')]) : stringSub(depth)
    optionalFlag('global', out)
    optionalFlag('ignorecase', out)
    if (chance(0.3)) {
      out.pattern2 = pick([...PATTERNS, 'way-too-long-pattern2', 7])
      if (chance(0.7)) out.replacement2 = pick([...REPLACEMENTS, 'much-too-long-2', null, 4])
    }
    return out
  },
  '@merge': (depth) => {
    const out = {}
    const n = int(4)
    if (chance(0.95)) {
      out.objects = []
      for (let i = 0; i < n; i++) {
        const r = rand()
        if (r < 0.35) {
          const o = {}
          const keys = 1 + int(3)
          for (let k = 0; k < keys; k++) o[pick(['x', 'y', '0', 'a b', 'ü', 'id'])] = sub(depth)
          out.objects.push(o)
        } else if (r < 0.8) {
          out.objects.push({ '@path': pick(['$.properties.a', '$.traits', '$.properties.numkeys', '$.properties.tags', '$.properties.text', '$.properties.missing', '$.properties.items', '$.properties.empty', '$.properties.n', '$.context', '$.properties.deep.x']) })
        } else if (r < 0.9) {
          out.objects.push(expr(Math.max(depth - 1, 0), pick(['@if', '@literal', '@json', '@transform', '@merge'])))
        } else {
          out.objects.push(pick(['str', ['a'], 5, null]))
        }
      }
    } else if (chance(0.5)) {
      out.objects = pick([{ x: 1 }, 'str'])
    }
    const d = rand()
    if (d < 0.45) out.direction = 'right'
    else if (d < 0.9) out.direction = 'left'
    else if (d < 0.95) out.direction = pick(['LEFT', 'up', ''])
    return out
  },
  '@arrayPath': (depth) => {
    const first = chance(0.85) ? pick(['$.properties.items', 'properties.items', '$.properties.tags', '$.properties.a', '$.properties.nested', '$.properties.missing', '$.properties.items[0]', '$.properties.text']) : sub(depth)
    const r = rand()
    if (r < 0.1) return [first]
    if (r < 0.15) return [first, {}]
    if (r < 0.2) return pick(['$.properties.items', { x: 1 }])
    const shape = {}
    const n = 1 + int(3)
    for (let i = 0; i < n; i++) {
      const key = pick(['sku', 'q', 'price', 'all', 'first tag', 'k'])
      const s = rand()
      if (s < 0.7) shape[key] = { '@path': pick(ITEM_PATHS) }
      else if (s < 0.85) shape[key] = { '@template': pick(['{{sku}}-{{qty}}', '{{tags}}', '{{.}}', 'x']) }
      else shape[key] = sub(Math.max(depth - 1, 0))
    }
    return [first, shape]
  },
  '@flatten': (depth) => {
    const out = {}
    if (chance(0.93)) out.value = chance(0.5) ? { '@path': pick(['$.properties', '$.properties.a', '$.traits', '$.properties.items', '$.properties.nested', '$.properties.text', '$.properties.empty', '$.properties.numkeys', '$.context']) } : sub(depth)
    const r = rand()
    if (r < 0.45) out.separator = '.'
    else if (r < 0.8) out.separator = pick(['_', '/', ' ', '::', 'ü'])
    else if (r < 0.85) out.separator = pick(['', 1, null])
    if (chance(0.4)) out.omitArrays = pick([true, false, 1, 'yes', null])
    return out
  },
  '@json': (depth) => {
    const out = {}
    const r = rand()
    if (r < 0.45) out.mode = 'encode'
    else if (r < 0.9) out.mode = 'decode'
    else out.mode = pick(['Encode', 'DECODE', 'parse', 5])
    if (chance(0.94)) {
      out.value = chance(0.4) ? { '@path': pick(['$.properties.json', '$.properties', '$.properties.a', '$.properties.big', '$.properties.text', '$.properties.items', '$.properties.numkeys', '$.properties.amount', '$.properties.missing', '$.traits', '$.properties.emoji']) } : chance(0.2) ? literalValue() : sub(depth)
    }
    return out
  },
  '@transform': (depth) => {
    const out = {}
    if (chance(0.95)) {
      const apply = {}
      const n = 1 + int(3)
      for (let i = 0; i < n; i++) apply[pick(['a', 'b', 'c', 'props', 'name'])] = sub(depth)
      if (chance(0.2)) apply.props = { '@path': '$.properties' }
      out.apply = chance(0.05) ? pick(['str', [1]]) : apply
    }
    if (chance(0.95)) {
      const mapping = {}
      const n = 1 + int(3)
      for (let i = 0; i < n; i++) {
        mapping[pick(['out', 'x', 'y'])] = chance(0.6) ? { '@path': pick(['$.a', '$.b', '$.c', '$.props.amount', '$.name', '$.properties.amount', '$']) } : sub(depth)
      }
      out.mapping = chance(0.05) ? pick([{ '@path': '$.a' }, 'str']) : mapping
    }
    return out
  },
  '@excludeWhenNull': (depth) => {
    const r = rand()
    if (r < 0.4) return { '@path': pick(['$.properties.amount', '$.properties.a', '$.properties', '$.traits', '$.properties.flag', '$.properties.deep', '$.properties.items', '$.properties.missing', '$.userId']) }
    if (r < 0.7) {
      const o = {}
      const n = 1 + int(3)
      for (let i = 0; i < n; i++) o[pick(['a', 'b', 'c', 'n'])] = chance(0.5) ? null : sub(depth)
      if (chance(0.3)) o.inner = { z: null, w: sub(0) }
      return o
    }
    if (r < 0.8) return pick([null, 0, '', false, [null], { a: null }])
    return sub(depth)
  },
  '@liquid': () => {
    const r = rand()
    if (r < 0.85) {
      let text = pick(LIQUID)
      if (chance(0.3)) text += pick([' ', ' | ', '-']) + pick(LIQUID)
      return text
    }
    if (r < 0.9) return '{{ userId }}'.repeat(pick([60, 100]))
    return pick([5, null, { '@path': '$.properties.tpl' }, ['x']])
  },
}

function expr(depth, directive) {
  const name = directive || pick(DIRECTIVES)
  const value = BUILDERS[name](depth)
  const out = { [name]: value }
  if (chance(0.01)) out._metadata = { note: 'kept' }
  return out
}

// a non-directive object or array around directives
function container(depth) {
  if (chance(0.05)) return { k: sub(depth), '@nope': 1 }
  if (chance(0.5)) return [sub(depth), sub(depth)]
  return { k: sub(depth), 'a b': sub(depth), n: pick([1, null, 'x']) }
}

// The minimal examples of issue 12, first in the corpus.
const FIXED = [
  { '@template': '{{properties.url}}' },
  { '@template': "{{properties['plan name']}}" },
  { '@template': '{{properties.tags[0]}}' },
  { '@template': '{{properties.items.length}}' },
  { '@template': '{{{properties.tpl}}}' },
  { '@path': '$.properties.amount' },
  { '@path': '$.properties.items.length' },
  { '@path': '$.properties.items.0.sku' },
  { '@path': '$.properties.plan name' },
  { '@path': '$.properties.größe' },
  { '@path': "$.properties['a.b']" },
  { '@merge': { objects: [{ x: 1 }, { x: { '@path': '$.missing' } }], direction: 'right' } },
  { '@merge': { objects: [{ k: 1 }, { '@path': '$.properties.text' }, { '@path': '$.properties.tags' }], direction: 'right' } },
  { '@literal': { a: { '@path': '$.userId' } } },
  { '@replace': { pattern: 's', replacement: 'x', ignorecase: true, value: 'ſtop' } },
  { '@path': '$.properties.big' },
  { '@replace': { pattern: 'much-too-long-pattern', value: 'x' } },
  { '@case': { operator: 'lower', value: 5 } },
  { '@merge': { objects: ['str', ['a']], direction: 'right' } },
  { '@if': { exists: 0, then: 'a' } },
  { '@if': { exists: { '@path': '$.userId' } } },
  { '@template': { '@path': '$.properties.tpl' } },
  { '@path': { '@template': '$.properties.{{properties.text}}' } },
  { '@case': { operator: 'UPPER', value: { '@path': '$.traits.name' } } },
  { '@path': '$.properties.atkey' },
  { '@json': { mode: 'encode', value: { '@path': '$.properties' } } },
  { '@path': '$.userId', other: 1 },
  { '@path': '$.userId', '@template': '{{userId}}' },
  { '@unknown': 1 },
  { '@path': '$.userId', _metadata: { x: 1 } },
]

// ------------------------------------------------------------------ evaluation

// The message of a throw; validate's AggregateError carries one error per refused place, and its
// own message embeds stack traces (machine paths), so only the inner messages are kept.
function clean(e) {
  if (e && e.name === 'AggregateError' && typeof e[Symbol.iterator] === 'function') {
    return [...e].map(clean).join('\n')
  }
  return e && e.message !== undefined ? String(e.message) : String(e)
}

function rootDirective(expression) {
  if (expression !== null && typeof expression === 'object' && !Array.isArray(expression)) {
    const key = Object.keys(expression).find((k) => k.startsWith('@'))
    if (DIRECTIVES.includes(key)) return key
  }
  return 'plain'
}

function evaluateMapping(mappingText, eventText) {
  const out = {}
  try {
    validateMapping(JSON.parse(mappingText))
    out.valid = true
  } catch (e) {
    out.valid = false
    out.validate_error = clean(e)
  }
  try {
    // a fresh copy each time: @replace writes its defaults into the mapping object
    const result = transform(JSON.parse(mappingText), JSON.parse(eventText))
    out.ok = true
    // what a destination sends: JSON.stringify's text (Infinity is null, functions vanish)
    out.result = JSON.stringify(result)
  } catch (e) {
    out.ok = false
    out.error = clean(e)
  }
  return out
}

function writeLines(name, rows) {
  const text = rows.map((r) => JSON.stringify(r)).join('\n') + '\n'
  fs.mkdirSync(OUT, { recursive: true })
  for (const old of [name, name + '.gz']) fs.rmSync(path.join(OUT, old), { force: true })
  if (Buffer.byteLength(text) > GZIP_ABOVE) {
    fs.writeFileSync(path.join(OUT, name + '.gz'), zlib.gzipSync(Buffer.from(text), { level: 9 }))
    return name + '.gz'
  }
  fs.writeFileSync(path.join(OUT, name), text)
  return name
}

function mappingCases(events) {
  const rows = []
  let id = 0
  const add = (expression, directive) => {
    const mappingText = toText({ v: expression })
    const chosen = new Set()
    while (chosen.size < EVENTS_PER_EXPRESSION) chosen.add(int(events.length))
    for (const index of chosen) {
      const outcome = evaluateMapping(mappingText, events[index])
      rows.push({ id: `m${id}-e${index}`, directive, mapping: mappingText, event: events[index], ...outcome })
    }
    id++
  }
  for (const expression of FIXED) add(expression, rootDirective(expression))
  for (const directive of DIRECTIVES) {
    for (let i = 0; i < EXPRESSIONS_PER_DIRECTIVE; i++) add(expr(1 + int(3), directive), directive)
  }
  for (let i = 0; i < 60; i++) add(container(2), 'plain')
  return rows
}

// ------------------------------------------------------------------ triggers

const T_FIELDS = [
  'type',
  'event',
  'name',
  'userId',
  'properties.amount',
  'properties.text',
  'properties.n',
  'properties.flag',
  'properties.big',
  'properties.a.b',
  'properties.a',
  'properties.items',
  'properties.items.length',
  'properties.items.0.sku',
  'properties.tags',
  'properties.tags.length',
  'properties.text.length',
  'properties.numkeys.1',
  'properties.missing',
  'properties.constructor',
  'properties.toString',
  'properties.deep.x.y.z',
  'traits.email',
  'traits.plan',
  'traits.age',
  'traits.name',
  'context.locale',
  'context.app.version',
  'context.ip',
  'properties',
  'traits',
  'context',
  'anonymousId',
  'messageId',
]
const T_OPS = ['=', '!=', '<', '<=', '>', '>=', '=', '=', '!=']
const T_STRING_VALUES = ['"track"', '"identify"', '"Order Completed"', '"order completed"', '"Signed Up"', '""', '"u-1"', '"pro"', '"Pro Plan"', '"hello"', '"Straße"', '"0"', '"10"', '"true"', '"null"', '"😀 ok"', '"a\\"b"', '"en-US"', '"1.0"']
const T_VALUES = [...T_STRING_VALUES, '0', '10', '-3', '12.5', '1e21', '2', '1', '30', '9007199254740993', '12345678901234567891', 'true', 'false', 'null', 'abc', "'single'", '"Infinity"', '0x10', '1e400', '.5']

function tCondition() {
  const r = rand()
  // non-ASCII names do not lex in fql-ts (a parse error): rare, so most triggers parse
  const field = chance(0.02) ? 'properties.größe' : pick(T_FIELDS)
  if (r < 0.12) return `contains(${field}, ${pick(['"o"', '"Order"', '"ß"', '""', '"e"', '1', 'x'])})`
  if (r < 0.2) return `match(${field}, ${pick(['"Order*"', '"*ed"', '"*"', '"u-*"', '"*Up"', '"S*"'])})`
  if (r < 0.25) return `!contains(${field}, ${pick(['"o"', '"x"', '""'])})`
  if (r < 0.28) return `!match(${field}, ${pick(['"Order*"', '"*ed"'])})`
  return `${field} ${pick(T_OPS)} ${pick(T_VALUES)}`
}

function tExpr(depth) {
  const n = 1 + int(3)
  const parts = []
  for (let i = 0; i < n; i++) {
    if (depth > 0 && chance(0.25)) parts.push('(' + tExpr(depth - 1) + ')')
    else parts.push(tCondition())
  }
  let text = parts[0]
  const connective = () => (chance(0.92) ? pick(['and', 'or']) : pick(['AND', 'OR', '&&', '||', '']))
  for (let i = 1; i < parts.length; i++) text += ' ' + connective() + ' ' + parts[i]
  return text
}

const T_ODD = [
  '',
  ' ',
  '()',
  'type = "track" and ()',
  '(type = "track"',
  'type = "track")',
  'type =',
  'type',
  'properties. = 1',
  'properties = 1',
  'event = "Order Completed" or',
  'contains(event)',
  'match(event, "x")',
  'type = "track" type = "identify"',
  'type = "track" and event = "Order Completed" or userId = "u-1"',
  '!(type = "track")',
  'type == "track"',
  'type = track',
  "type = 'track'",
  'properties.amount > "5"',
  'properties.amount = 10.0',
  'properties.flag = true',
  'properties.flag != null',
  'properties.missing = null',
  'userId = true',
  'name != null',
  'event = "Ünicode Event"',
  'properties.größe = "XL"',
  'traits.age > 9007199254740992',
  'properties.big = 12345678901234567000',
  'properties.big > 12345678901234567891',
  'context.app.version = 2',
  'properties.text.length > 3',
  'properties.items.length >= 2',
  '((properties.n = 1))',
  '(properties.n = 1) or (properties.n = 2)',
  'properties.items.0.sku = "SKU-1"',
  'traits.email = "bob@example.com" OR traits.plan = "pro"',
]

// An undefined condition in Segment's tree (an empty group, `()`): validate() throws a
// TypeError whenever evaluation reaches it, which and/or short-circuiting may hide on a given event.
function hasHole(node) {
  if (node === undefined || node === null) return true
  if (node.type === 'group') return node.children.some(hasHole)
  return false
}

function triggerCases(events) {
  const triggers = [...T_ODD]
  // parseFql cannot read a group inside a group (a parse error): one level of parentheses,
  // with a few deeper ones
  while (triggers.length < TRIGGERS) triggers.push(tExpr(chance(0.03) ? 2 : 1))
  const rows = []
  triggers.forEach((trigger, t) => {
    const ast = parseFql(trigger)
    const parseError = ast.error ? clean(ast.error) : null
    // whether Segment's evaluator throws for this trigger on any event of the pool
    let throwsAny = false
    const results = events.map((eventText) => {
      try {
        return { ok: true, matches: validateTrigger(ast, JSON.parse(eventText)) }
      } catch (e) {
        throwsAny = true
        return { ok: false, error: clean(e) }
      }
    })
    const chosen = new Set()
    while (chosen.size < EVENTS_PER_TRIGGER) chosen.add(int(events.length))
    for (const index of chosen) {
      rows.push({
        id: `t${t}-e${index}`,
        trigger,
        parse_error: parseError,
        throws_on_some_event: throwsAny,
        ast_has_hole: parseError === null && hasHole(ast),
        event: events[index],
        ...results[index],
      })
    }
  })
  return rows
}

// ------------------------------------------------------------------ main

function main() {
  const events = []
  for (let i = 0; i < 120; i++) events.push(toText(makeEvent()))
  const mapping = mappingCases(events)
  const triggers = triggerCases(events)
  const files = { mapping: writeLines('mapping.jsonl', mapping), triggers: writeLines('triggers.jsonl', triggers) }
  const lock = JSON.parse(fs.readFileSync(path.join(__dirname, 'package-lock.json'), 'utf8'))
  const version = (name) => lock.packages[`node_modules/${name}`].version
  const meta = {
    seed: SEED,
    // the goldens are stale when generate.js changed after them (tests compare this hash)
    generator_sha256: crypto.createHash('sha256').update(fs.readFileSync(__filename)).digest('hex'),
    node: process.version,
    packages: {
      '@segment/actions-core': version('@segment/actions-core'),
      '@segment/destination-subscriptions': version('@segment/destination-subscriptions'),
      liquidjs: version('liquidjs'),
    },
    files,
    counts: { mapping: mapping.length, triggers: triggers.length },
  }
  fs.writeFileSync(path.join(OUT, 'meta.json'), JSON.stringify(meta, null, 2) + '\n')
  console.log(`wrote ${mapping.length} mapping cases and ${triggers.length} trigger cases to ${OUT}`)
}

main()
