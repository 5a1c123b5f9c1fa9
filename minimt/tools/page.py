"""The trace as one page to look at: `python -m minimt trace TEXT --html PAGE.html`.

render(t) puts the dict trace.trace() returns (the very dict --json writes) into one self-contained HTML file: the
numbers sit inline as JSON, and a little plain JavaScript draws them as SVG (a canvas for the small attention maps).
The page loads nothing, so it opens offline, and it adds no Python dependency. What it draws:

    tokens      each token coloured by its share of the pooled vector (blue pulls the sentence its way, red against)
    attention   a grid, layers x heads, of small maps with each head's mean entropy; choosing one (a click, or the
                address #layer=3&head=5) draws that head's weights as a labelled heatmap over the model's own tokens
    layers      the norm of each layer's tokens, and how close each layer's pooled vector is to the final one
    words       the nearest of the built-in words; a checkpoint's head predictions
    pair        (--pair) the two texts' cosine as a sum over token pairs, and which tokens match
    compare     (--compare) the second model beside the first, its heads ranked by how far their attention moved

Every uncaught script error is written into the page (#errors), and the body gets data-ready="yes" once everything
is drawn: what a reader, and tests/test_page_browser.py's headless Chromium, can check.
"""
import json
import re

from minimt.errors import UserError

DATA_TAG = '<script type="application/json" id="trace">'


def render(t):
    """The trace dict -> the page's HTML. '<' is written as \\u003c inside the JSON, so no text of the trace (a
    token such as '</script>') can end the data early; JSON.parse reads it back as '<'."""
    data = json.dumps(t, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    head, tail = TEMPLATE.split("{{TRACE}}")
    return head + data + tail


def embedded(html):
    """The dict a page embeds: what render() was given."""
    m = re.search(re.escape(DATA_TAG) + r"(.*?)</script>", html, re.S)
    if m is None:
        raise UserError("this page holds no trace data; write one with `python -m minimt trace TEXT --html PAGE`")
    return json.loads(m.group(1))


TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>minimt trace</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1280px; padding: 0 1em; color: #222; }
  h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin: 1.6em 0 0.4em; }
  .note { color: #555; max-width: 75em; } .caption { color: #555; margin-right: 0.6em; }
  .tokens { margin: 0.4em 0; } .num { font-variant-numeric: tabular-nums; }
  .token { display: inline-block; padding: 2px 5px; margin: 2px; border: 1px solid #ccc; border-radius: 3px; }
  .grid { display: grid; gap: 3px; align-items: center; margin-bottom: 1em; }
  .head { border: 2px solid transparent; cursor: pointer; text-align: center; font-size: 11px; }
  .head canvas { width: 100%; aspect-ratio: 1; image-rendering: pixelated; border: 1px solid #ddd; display: block; }
  .head.selected { border-color: #d97706; } .rowhead, .colhead { font-size: 11px; color: #555; }
  .views { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
  figure { margin: 0; display: table; } /* as wide as its map: the caption wraps to it */
  figcaption { display: table-caption; caption-side: top; margin-bottom: 0.4em; min-width: 16em; }
  svg text { font-size: 11px; fill: #333; } table { border-collapse: collapse; }
  td, th { padding: 1px 8px; text-align: left; } tr.pick { cursor: pointer; } tr.pick:hover { background: #fef3c7; }
  .bar { display: inline-block; height: 10px; background: #2563eb; vertical-align: middle; }
  #errors { color: #b91c1c; white-space: pre-wrap; }
</style>
</head>
<body>
<pre id="errors"></pre>
<script>
// first, so that an error anywhere below (even a syntax error) shows on the page instead of a blank part
window.addEventListener("error", e => { document.getElementById("errors").textContent += e.message + "\n"; });
</script>
""" + DATA_TAG + r"""{{TRACE}}</script>
<main id="page"></main>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("trace").textContent);
const TRACES = DATA.compare ? [DATA, DATA.compare.trace] : [DATA];
const L = DATA.model.layers, NH = DATA.model.heads;

// a DOM element; "svg:" names an SVG one. Children are appended as text, never parsed as HTML.
function el(tag, attrs, ...kids) {
  const e = tag.startsWith("svg:") ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
                                   : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  e.append(...kids);
  return e;
}
const fmt = (v, d = 4) => (v < 0 ? "" : "+") + v.toFixed(d);
const tok = (x) => `${x.index}:${x.token}`;
const name = (t) => t.model.name || "the model";

// white to blue for positive values, white to red for negative ones; |v| >= top is the full colour
function shade(v, top) {
  const a = Math.min(1, Math.abs(v) / (top || 1)), c = v >= 0 ? [37, 99, 235] : [220, 38, 38];
  return `rgb(${c.map(x => Math.round(255 - a * (255 - x))).join(",")})`;
}

function section(id, title, note) {
  const s = el("section", {id}, el("h2", {}, title));
  if (note) s.append(el("p", {class: "note"}, note));
  document.getElementById("page").append(s);
  return s;
}

function tokenRow(t, caption, shares) {
  const top = Math.max(...shares.map(Math.abs));
  return el("div", {class: "tokens"}, el("span", {class: "caption"}, caption), ...t.tokens.map((x, i) =>
    el("span", {class: "token", style: `background:${shade(shares[i], top)}`,
                title: `${tok(x)} (id ${x.id}): ${fmt(shares[i])}`}, x.token)));
}

// labelled heatmap: values[i][j] for row label i, column label j; each cell's exact value in its tooltip
function heatmap(rows, cols, values, top, what) {
  const cell = Math.max(6, Math.min(22, 640 / Math.max(rows.length, cols.length)));
  const left = 10 + 6.5 * Math.max(...rows.map(r => r.length)), up = 10 + 6.5 * Math.max(...cols.map(c => c.length));
  const s = el("svg:svg", {class: "heatmap", width: left + cell * cols.length, height: up + cell * rows.length});
  rows.forEach((r, i) => s.append(el("svg:text", {x: left - 4, y: up + cell * (i + 0.7), "text-anchor": "end"}, r)));
  cols.forEach((c, j) => s.append(el("svg:text", {
    transform: `translate(${left + cell * (j + 0.7)},${up - 4}) rotate(-90)`}, c)));
  values.forEach((row, i) => row.forEach((v, j) => s.append(el("svg:rect", {
    class: "cell", x: left + cell * j, y: up + cell * i, width: cell - 1, height: cell - 1, fill: shade(v, top)},
    el("svg:title", {}, `${rows[i]} -> ${cols[j]}: ${what} ${v.toFixed(4)}`)))));
  return s;
}

// one head's T x T weights as T x T pixels (CSS scales them up), white to shade()'s blue
function miniMap(w) {
  const n = w.length, c = el("canvas", {width: n, height: n}), ctx = c.getContext("2d");
  const img = ctx.createImageData(n, n);
  w.forEach((row, q) => row.forEach((p, k) => img.data.set([255 - 218 * p, 255 - 156 * p, 255 - 20 * p, 255],
                                                           4 * (q * n + k))));
  ctx.putImageData(img, 0, 0);
  return c;
}

function headGrid(t, change) {
  const g = el("div", {class: "grid", style: `grid-template-columns: 4.5em repeat(${NH}, minmax(0, 56px))`});
  g.append(el("div"), ...t.heads[0].map(h => el("div", {class: "colhead"}, `head ${h.head}`)));
  t.attention.weights.forEach((layer, l) => {
    g.append(el("div", {class: "rowhead"}, `layer ${l}`));
    layer.forEach((w, h) => {
      const ent = t.heads[l][h].mean_entropy, moved = change ? change[l][h] : null;
      const cell = el("div", {class: "head", "data-layer": l, "data-head": h,
                              title: `layer ${l} head ${h}: mean entropy ${ent.toFixed(3)} nats` +
                                     (change ? `; change ${moved.toFixed(4)}` : "")},
                      miniMap(w), el("span", {class: "num"}, change ? `Δ ${moved.toFixed(3)}` : ent.toFixed(2)));
      if (change) cell.style.background = shade(moved, Math.max(...change.flat()));
      cell.onclick = () => { location.hash = `layer=${l}&head=${h}`; };
      g.append(cell);
    });
  });
  return g;
}

// draw head (l, h) of every traced model; anything but two integers in range is a message, not a blank
function select(l, h) {
  const view = document.getElementById("head-view");
  view.replaceChildren();
  if (!(Number.isInteger(l) && Number.isInteger(h) && l >= 0 && l < L && h >= 0 && h < NH)) {
    view.append(el("p", {class: "note"},
                   `There is no head layer=${l} head=${h}: layers 0-${L - 1}, heads 0-${NH - 1}.`));
    return;
  }
  for (const c of document.querySelectorAll(".head")) {
    c.classList.toggle("selected", +c.dataset.layer === l && +c.dataset.head === h);
  }
  Object.assign(view.dataset, {layer: l, head: h});
  for (const t of TRACES) {
    const s = t.heads[l][h], labels = t.tokens.map(tok);
    view.append(el("figure", {}, el("figcaption", {}, `${name(t)}: layer ${l}, head ${h}. Row = query token, ` +
      `column = key token it attends to; mean entropy ${s.mean_entropy.toFixed(3)} nats (max ` +
      `${t.attention.max_entropy.toFixed(3)}).`), heatmap(labels, labels, t.attention.weights[l][h], 1, "weight")));
  }
}

function fromHash() {
  const q = new URLSearchParams(location.hash.slice(1));
  if (q.has("layer") || q.has("head")) return select(Number(q.get("layer") || 0), Number(q.get("head") || 0));
  if (DATA.compare) return select(DATA.compare.ranked[0].layer, DATA.compare.ranked[0].head);
  const all = DATA.heads.flat().map((s, i) => [s.mean_entropy, i]).sort((a, b) => a[0] - b[0]);
  select(Math.floor(all[0][1] / NH), all[0][1] % NH);  // the most focused head: the lowest mean entropy
}

// a line per series over the stages (embeddings, layer 0, ...), dots for each token if a series has them
function lineChart(title, series, lo, hi) {
  const W = 440, H = 210, x0 = 46, y0 = 20, w = W - x0 - 10, h = H - y0 - 36, n = DATA.stages.length;
  const X = i => x0 + (w * i) / (n - 1), Y = v => y0 + h - (h * (v - lo)) / (hi - lo || 1);
  const s = el("svg:svg", {class: "chart", width: W, height: H}, el("svg:text", {x: x0, y: 12}, title));
  for (const v of [lo, (lo + hi) / 2, hi]) {
    s.append(el("svg:line", {x1: x0, x2: x0 + w, y1: Y(v), y2: Y(v), stroke: "#eee"}),
             el("svg:text", {x: x0 - 4, y: Y(v) + 4, "text-anchor": "end"}, v.toFixed(2)));
  }
  DATA.stages.forEach((st, i) => s.append(el("svg:text", {x: X(i), y: H - 20, "text-anchor": "middle"},
                                             i ? String(i - 1) : "emb")));
  s.append(el("svg:text", {x: x0 + w / 2, y: H - 4, "text-anchor": "middle"}, "stage: embeddings, then layer"));
  series.forEach(({values, dots, colour, label}, k) => {
    (dots || []).forEach((ds, i) => ds.forEach(v => s.append(
      el("svg:circle", {cx: X(i), cy: Y(v), r: 1.6, fill: colour, opacity: 0.3}))));
    const points = values.map((v, i) => `${X(i)},${Y(v)}`).join(" ");
    s.append(el("svg:polyline", {points, fill: "none", stroke: colour, "stroke-width": 2}),
             el("svg:text", {x: x0 + 6, y: y0 + 14 + 14 * k, style: `fill:${colour}`}, label));
  });
  return s;
}

const COLOURS = ["#2563eb", "#d97706"];

function drawTokens() {
  const s = section("tokens", "Tokens and their share of the sentence vector",
    `${DATA.tokens.length} tokens, [CLS] and [SEP] included. A token's share is its part of the ` +
    `${DATA.model.pooling} pooling projected on the pooled vector, over |pooled|²: the shares sum to 1; blue pulls ` +
    "the sentence vector its way, red points against it. Hover a token for its number.");
  TRACES.forEach(t => s.append(tokenRow(t, name(t), t.shares)));
}

function drawAttention() {
  const s = section("attention", "Attention: every head", "One small map per head: row = query token, column = " +
    "key token, darker = more weight. Under each: its entropy in nats averaged over the queries (0 = all weight " +
    `on one token, ln T = ${DATA.attention.max_entropy.toFixed(2)} = spread evenly)` +
    (DATA.compare ? `, and for the second model Δ, its change: ${DATA.compare.measure} (0 to ln 2).` : ".") +
    " Click a map, or open the page at #layer=3&head=5, to draw that head in full.");
  const grids = TRACES.map((t, k) => el("div", {}, el("h3", {}, name(t)),
                                        headGrid(t, k ? DATA.compare.change : null)));
  s.append(el("div", {class: "views"}, ...grids, el("div", {id: "head-view", class: "views"})));
}

function drawLayers() {
  const s = section("layers", "Layer by layer", "Left: the norm of each token vector (dots) and their mean " +
    "(line) after each stage. Right: the cosine of each stage's pooled vector to the final sentence vector: how " +
    "early the sentence's direction is settled.");
  const norms = TRACES.map((t, k) => ({values: t.stages.map(x => x.norm_mean), dots: t.stages.map(x => x.norms),
                                        colour: COLOURS[k], label: name(t)}));
  const cos = TRACES.map((t, k) => ({values: t.stages.map(x => x.cos_to_final), colour: COLOURS[k], label: name(t)}));
  const allNorms = norms.flatMap(x => x.dots.flat()), allCos = cos.flatMap(x => x.values);
  s.append(el("div", {class: "views"}, lineChart("|h| per token", norms, 0, Math.max(...allNorms)),
              lineChart("cos(stage's pooled vector, final one)", cos, Math.min(0, ...allCos), 1)));
}

// a table row: the cells' texts, then a bar `width` pixels long
const barRow = (cells, width) => el("tr", {}, ...cells.map(c => el("td", {class: "num"}, c)),
                                    el("td", {}, el("span", {class: "bar", style: `width:${Math.max(0, width)}px`})));

function drawWords() {
  const s = section("words", "Nearest words and predictions", `The sentence vector's nearest of ${DATA.n_words} ` +
    "built-in words (cosine; the words embedded by the same model), and a checkpoint's task heads on it.");
  const box = el("div", {class: "views"});
  for (const t of TRACES) {
    const words = t.neighbours.map(n => barRow([n.word, n.cosine.toFixed(3)], 150 * n.cosine));
    box.append(el("div", {}, el("h3", {}, `${name(t)}: nearest words`), el("table", {}, ...words)));
    for (const [task, p] of Object.entries(t.predictions || {})) {
      const rows = p.labels.map((label, i) => barRow([label, p.probabilities[i].toFixed(3)], 150 * p.probabilities[i]));
      box.append(el("div", {class: "prediction"}, el("h3", {}, `${name(t)}: head ${task} says ${p.label}`),
                    el("table", {}, ...rows)));
    }
  }
  s.append(box);
}

function drawPair(p) {
  const total = p.part.flat().reduce((x, y) => x + y, 0);
  const s = section("pair", `Two sentences: cosine ${p.cosine.toFixed(4)} (${name(DATA)})`, `The ${p.pooling} ` +
    "pooling makes each sentence vector a sum of token parts, so their cosine is a sum over token pairs: " +
    `part(i, j) = (c_i · d_j) / (|a| |b|). The parts below sum to ${total.toFixed(4)}; a token's shading is its ` +
    "row or column sum. Right: the cosine of the two token vectors, whatever their weight in the sentence.");
  s.append(tokenRow(DATA, "A", p.part_a), tokenRow({tokens: p.tokens}, "B", p.part_b));
  const top = Math.max(...p.part.flat().map(Math.abs)), rows = DATA.tokens.map(tok), cols = p.tokens.map(tok);
  s.append(el("div", {class: "views"},
    el("figure", {}, el("figcaption", {}, "each token pair's part of the cosine (rows: A, columns: B)"),
       heatmap(rows, cols, p.part, top, "part of the cosine")),
    el("figure", {}, el("figcaption", {}, "cosine of the two token vectors"),
       heatmap(rows, cols, p.token_cosine, 1, "token cosine"))));
}

function drawCompare(c) {
  const s = section("compare", "What changed between the two models", `Change of a head: ${c.measure}, in nats ` +
    `(0 = the same weights; ln 2 = ${c.max.toFixed(3)} = no key in common). A frozen layer with everything below ` +
    "it frozen does not move. Click a row to draw that head for both models.");
  const top = Math.max(...c.by_layer) || 1;
  const byLayer = c.by_layer.map((v, l) => barRow([`layer ${l}`, v.toFixed(4)], 200 * v / top));
  const most = c.ranked[0].change || 1;
  const ranked = c.ranked.slice(0, 12).map(r => {
    const tr = barRow([`layer ${r.layer} head ${r.head}`, r.change.toFixed(4)], 200 * r.change / most);
    tr.className = "pick";
    tr.onclick = () => { location.hash = `layer=${r.layer}&head=${r.head}`; };
    return tr;
  });
  const table = (heads, rows) => el("table", {}, el("tr", {}, ...heads.map(x => el("th", {}, x))), ...rows);
  s.append(el("div", {class: "views"}, table(["per layer", "mean change"], byLayer),
                                       table(["most changed heads", "change"], ranked)));
}

function main() {
  document.title = `minimt trace: ${DATA.text}`;
  document.getElementById("page").append(el("h1", {}, `“${DATA.text}”`), el("p", {class: "note"},
    TRACES.map(t => `${name(t)}: ${t.model.layers} layers × ${t.model.heads} heads, hidden ${t.model.hidden}, ` +
                    `${t.model.pooling} pooling`).join("; ") + `. Traced by python -m minimt trace; every number ` +
    "here is the --json output's."));
  drawTokens();
  if (DATA.pair) drawPair(DATA.pair);
  if (DATA.compare) drawCompare(DATA.compare);
  drawAttention();
  drawLayers();
  drawWords();
  window.addEventListener("hashchange", fromHash);
  fromHash();
  document.body.dataset.ready = "yes";
}
main();
</script>
</body>
</html>
"""
