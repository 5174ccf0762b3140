// netaware ui: the link matrix as a heatmap, read from the CLI's own
// /api/view (nodes with their groups, group × group cells and, up to 150
// nodes, every link as `netaware matrix -o json` prints it), /api/pairs (a
// zoom into two groups), /api/node, /api/watch (a pair, live) and
// /api/place. Plain SVG, no libraries:
// the page is served from the binary and must work offline.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// Viridis (matplotlib, CC0): perceptually uniform and readable with the
// common colour-vision deficiencies. Brighter is worse for every metric.
const PALETTE = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e",
  "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
const POLL_MS = 5000;
// The CLI decides what the rows are (view.kind, view.level): nodes up to
// 150, else the groups of the finest level with at most 150; a click on a
// group cell zooms into the two groups' nodes.
const CELL = 18;
const LABEL = 90;
const HISTORY = 60;

// Each metric of a link (`of`), and of a group × group cell (`cell`: the
// median of its measured pairs, or the largest, "max", which for l1
// groups is what an unmeasured pair between them is taken to be, as Place
// does).
const scaled = (field, by) => (c, which) => {
  const v = c && c[field] && c[field][which];
  return v === null || v === undefined ? undefined : v / by;
};
const METRICS = {
  rtt_p50: { name: "RTT p50", unit: "ms", log: true, worse: "higher",
    of: (l) => l && l.smoothed.rtt_p50_us / 1000, cell: scaled("rtt_p50_us", 1000) },
  rtt_p99: { name: "RTT p99", unit: "ms", log: true, worse: "higher",
    of: (l) => l && l.smoothed.rtt_p99_us / 1000, cell: scaled("rtt_p99_us", 1000) },
  jitter: { name: "jitter", unit: "ms", log: true, worse: "higher",
    of: (l) => l && l.smoothed.jitter_us / 1000, cell: scaled("jitter_us", 1000) },
  loss: { name: "loss", unit: "%", log: false, worse: "higher",
    of: (l) => l && l.smoothed.loss_ppm / 1e4, cell: scaled("loss_ppm", 1e4) },
  // Bandwidth is never estimated: an untested pair stays grey.
  bandwidth: { name: "bandwidth", unit: "Mbit/s", log: true, worse: "lower",
    of: (l, bw) => bw, cell: (c, which) => which === "max" ? undefined : scaled("bandwidth_mbps", 1)(c, which) },
};

const state = {
  view: null, // the latest /api/view answer
  cells: new Map(), // "group\u0000group" -> cell (l1, or view.level's)
  zoomCells: new Map(), // l1 cells among a zoom's nodes
  groupOf: new Map(), // node -> its l1 group
  links: new Map(), // "src\u0000dst" -> link (every link, or a zoom's)
  bandwidth: new Map(), // "sender\u0000receiver" -> Mbit/s
  // The pair shown, live from /api/watch (WatchLinks): its EventSource,
  // the latest link per "src\u0000dst\u0000method", and the RTT p50 of each
  // window that arrived per "src\u0000dst" (UDP) while it is shown.
  pair: null,
  live: null,
  liveLinks: new Map(),
  history: new Map(),
  chosen: new Set(), // nodes of the shown placement
  zoom: null, // [l1 group a, l1 group b] when zoomed in
  failures: 0,
};

const $ = (id) => document.getElementById(id);
const key = (a, b) => a + "\u0000" + b;
const fmt = (v, unit) => v === undefined || v === null || Number.isNaN(v)
  ? "not measured" : `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ${unit}`;

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// Nodes in group order (l3, l2, l1, name), so blocks of near nodes show.
function ordered(nodes) {
  return nodes.filter((n) => n.name).slice().sort((a, b) =>
    (a.group_l3 || "").localeCompare(b.group_l3 || "") ||
    (a.group_l2 || "").localeCompare(b.group_l2 || "") ||
    (a.group_l1 || "").localeCompare(b.group_l1 || "") ||
    a.name.localeCompare(b.name));
}

function value(metric, src, dst) {
  const m = METRICS[metric];
  return m.of(state.links.get(key(src, dst)), state.bandwidth.get(key(src, dst)));
}

// An unmeasured pair's figure from its groups (sparse probe plans past 64
// nodes measure a few pairs per group pair): the largest measured between
// the two l1 groups, on the slow side as Place estimates.
function estimate(metric, src, dst) {
  const a = state.groupOf.get(src), b = state.groupOf.get(dst);
  if (!a || !b) return undefined;
  const cells = state.zoom ? state.zoomCells : state.cells;
  return METRICS[metric].cell(cells.get(key(a, b)), "max");
}

// Bucket (0 … PALETTE.length − 1) of a value between lo and hi, brighter
// worse: the scale the legend draws.
function scale(metric, values) {
  const m = METRICS[metric];
  const vs = values.filter((v) => v !== undefined && v !== null && Number.isFinite(v) && (!m.log || v > 0));
  if (vs.length === 0) return { bucket: () => null, lo: 0, hi: 0, m };
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (hi === lo) hi = lo * 1.0001 + 1e-9;
  const t = m.log ? (v) => (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))
    : (v) => (v - lo) / (hi - lo);
  const bucket = (v) => {
    if (v === undefined || v === null || !Number.isFinite(v) || (m.log && v <= 0)) return null;
    let f = Math.min(1, Math.max(0, t(v)));
    if (m.worse === "lower") f = 1 - f;
    return Math.min(PALETTE.length - 1, Math.floor(f * PALETTE.length));
  };
  return { bucket, lo, hi, m };
}

// The rows and columns to draw: nodes, or on a large cluster the groups
// of the level the CLI chose (view.level).
function axes() {
  const nodes = ordered(state.view.nodes);
  const field = "group_l" + (state.view.level || 1);
  if (state.zoom) {
    const [a, b] = state.zoom;
    const pick = (g) => nodes.filter((n) => n[field] === g);
    return { kind: "node", rows: pick(a), cols: pick(b) };
  }
  if (state.view.kind !== "groups") return { kind: "node", rows: nodes, cols: nodes };
  // Nodes are ordered l3, l2, l1: each group of the level is one run.
  const groups = [];
  for (const n of nodes) {
    const last = groups[groups.length - 1];
    if (last && last.id === n[field]) last.members.push(n.name);
    else groups.push({ id: n[field], group_l1: n.group_l1, group_l2: n.group_l2, group_l3: n.group_l3, members: [n.name] });
  }
  return { kind: "group", level: state.view.level || 1, rows: groups, cols: groups };
}

function draw() {
  const svg = $("heatmap");
  svg.replaceChildren();
  if (!state.view) return;
  const metric = $("metric").value;
  const ax = axes();
  const name = (x) => ax.kind === "node" ? x.name : x.id;
  // [value, estimated?] of a cell: a pair measured, a pair estimated from
  // its groups, or a group pair's median.
  const cellValue = (r, c) => {
    if (ax.kind === "group") return [METRICS[metric].cell(state.cells.get(key(r.id, c.id)), "median"), false];
    if (r.name === c.name) return [undefined, false];
    if (state.links.has(key(r.name, c.name)) || metric === "bandwidth") return [value(metric, r.name, c.name), false];
    const e = estimate(metric, r.name, c.name);
    return [e, e !== undefined];
  };
  const values = [];
  for (const r of ax.rows) for (const c of ax.cols) values.push(cellValue(r, c)[0]);
  const sc = scale(metric, values);
  svg.setAttribute("width", LABEL + ax.cols.length * CELL + 2);
  svg.setAttribute("height", LABEL + ax.rows.length * CELL + 2);
  svg.dataset.kind = ax.kind;
  ax.cols.forEach((c, j) => {
    const t = el("text", { x: LABEL + j * CELL + CELL / 2, y: LABEL - 4, class: "col label",
      transform: `rotate(-60 ${LABEL + j * CELL + CELL / 2} ${LABEL - 4})`, "data-name": name(c) }, svg);
    t.textContent = name(c);
    if (ax.kind === "node" && state.chosen.has(c.name)) t.classList.add("chosen");
  });
  ax.rows.forEach((r, i) => {
    const t = el("text", { x: LABEL - 4, y: LABEL + i * CELL + CELL * 0.7, class: "row label",
      tabindex: 0, role: "rowheader", "data-name": name(r) }, svg);
    t.textContent = name(r);
    if (ax.kind === "node") {
      if (state.chosen.has(r.name)) t.classList.add("chosen");
      const show = () => showNode(r);
      t.addEventListener("click", show);
      t.addEventListener("keydown", (e) => { if (e.key === "Enter") show(); });
    }
    ax.cols.forEach((c, j) => {
      const [v, estimated] = cellValue(r, c);
      const b = sc.bucket(v);
      const self = ax.kind === "node" && r.name === c.name;
      const link = ax.kind === "node" ? state.links.get(key(r.name, c.name)) : null;
      const cls = ["cell"];
      if (self) cls.push("self");
      else if (b === null) cls.push("unmeasured");
      else if (estimated) cls.push("estimated");
      if (link && link.stale) cls.push("stale");
      if (ax.kind === "node" && state.chosen.has(r.name) && state.chosen.has(c.name) && !self) cls.push("chosen");
      const rect = el("rect", {
        x: LABEL + j * CELL, y: LABEL + i * CELL, width: CELL - 1, height: CELL - 1,
        class: cls.join(" "), fill: b === null ? "" : PALETTE[b], tabindex: self ? -1 : 0,
        role: "gridcell", "data-src": name(r), "data-dst": name(c),
        "data-bucket": b === null ? "" : b, "data-value": v === undefined ? "" : v,
      }, svg);
      const groupCell = ax.kind === "group" ? state.cells.get(key(r.id, c.id)) : null;
      const what = self ? `${name(r)} itself`
        : `${name(r)} → ${name(c)}: ${sc.m.name} ${fmt(v, sc.m.unit)}${link && link.stale ? " (stale)" : ""}` +
          (estimated ? " (not measured: estimated from the groups, as Place does)" : "") +
          (ax.kind === "group" ? ` (median of ${groupCell ? groupCell.measured : 0} measured of ${r.members.length * c.members.length - (r.id === c.id ? r.members.length : 0)} pairs)` : "");
      rect.setAttribute("aria-label", what);
      el("title", {}, rect).textContent = what;
      if (!self) {
        const open = () => ax.kind === "node" ? showPair(r.name, c.name) : zoomInto(r.id, c.id);
        rect.addEventListener("click", open);
        rect.addEventListener("focus", () => { if (ax.kind === "node") showPair(r.name, c.name); });
        rect.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
      }
    });
  });
  drawBoundaries(svg, ax);
  drawLegend(sc);
}

// Lines where the l1, l2 and l3 groups change along each axis.
function drawBoundaries(svg, ax) {
  for (const level of [1, 2, 3]) {
    // Group rows have no boundaries finer than themselves.
    if (ax.kind === "group" && level < ax.level) continue;
    const g = (x) => ax.kind === "group" && level === ax.level ? x.id : x["group_l" + level];
    const edges = (list) => list.map((x, i) => i > 0 && g(x) !== g(list[i - 1]) ? i : null).filter((i) => i !== null);
    for (const i of edges(ax.rows)) {
      el("line", { x1: LABEL, x2: LABEL + ax.cols.length * CELL, y1: LABEL + i * CELL - 0.5,
        y2: LABEL + i * CELL - 0.5, class: `boundary l${level}`, "data-level": level,
        "data-axis": "row", "data-index": i }, svg);
    }
    for (const j of edges(ax.cols)) {
      el("line", { y1: LABEL, y2: LABEL + ax.rows.length * CELL, x1: LABEL + j * CELL - 0.5,
        x2: LABEL + j * CELL - 0.5, class: `boundary l${level}`, "data-level": level,
        "data-axis": "col", "data-index": j }, svg);
    }
  }
}

function drawLegend(sc) {
  const lg = $("legend");
  lg.replaceChildren();
  if (sc.hi === 0 && sc.lo === 0) {
    lg.textContent = `no ${sc.m.name} measured yet`;
    return;
  }
  const row = document.createElement("div");
  row.className = "swatches";
  PALETTE.forEach((c, i) => {
    const s = document.createElement("span");
    s.style.background = c;
    s.title = `bucket ${i}`;
    row.appendChild(s);
  });
  const lo = sc.m.worse === "lower" ? sc.hi : sc.lo;
  const hi = sc.m.worse === "lower" ? sc.lo : sc.hi;
  const text = document.createElement("p");
  text.textContent = `${sc.m.name}: ${fmt(lo, sc.m.unit)} … ${fmt(hi, sc.m.unit)}` +
    ` (${sc.m.log ? "log scale, " : ""}brighter is worse; grey: not measured; faded with a dotted edge: ` +
    "not measured, estimated from the groups; dashed: stale)";
  lg.append(row, text);
}

// Into two groups of a large cluster (of view.level): their links alone.
async function zoomInto(a, b) {
  state.zoom = [a, b];
  try {
    await refreshZoom();
  } catch (e) {
    state.zoom = null;
    setStatus();
    $("status").textContent += ` · cannot zoom into ${a} × ${b}: ${e.message}`;
    return;
  }
  draw();
  setStatus();
}

async function refreshZoom() {
  if (!state.zoom) return;
  const [a, b] = state.zoom;
  const level = String(state.view.level || 1);
  const m = await fetchJson(`/api/pairs?${new URLSearchParams({ a, b, level })}`);
  takeLinks(m);
  // The l1 cells among the two groups' nodes: their estimates.
  state.zoomCells = new Map(m.cells.map((c) => [key(c.src, c.dst), c]));
}

function unzoom() {
  state.zoom = null;
  if (state.view && state.view.kind === "groups") state.links = new Map();
  draw();
  setStatus();
}

// One direction of the shown pair: every method the live stream brought
// (UDP from the view until it has).
function linkText(src, dst) {
  const bw = state.bandwidth.get(key(src, dst));
  const lines = [`${src} → ${dst}`];
  let links = [...state.liveLinks.values()].filter((l) => l.src === src && l.dst === dst);
  if (links.length === 0 && state.links.has(key(src, dst))) links = [state.links.get(key(src, dst))];
  links.sort((x, y) => x.method.localeCompare(y.method));
  if (links.length === 0) lines.push("  not measured");
  for (const l of links) {
    const s = l.smoothed, w = l.latest;
    lines.push(`  ${l.method} smoothed: RTT p50 ${fmt(s.rtt_p50_us / 1000, "ms")}, p99 ${fmt(s.rtt_p99_us / 1000, "ms")}, ` +
      `jitter ${fmt(s.jitter_us / 1000, "ms")}, loss ${fmt(s.loss_ppm / 1e4, "%")}${l.stale ? " (stale)" : ""}`);
    lines.push(`  ${l.method} latest window: ${w.received} of ${w.sent} probes back, ` +
      `RTT p50 ${fmt(w.rtt_p50_ns / 1e6, "ms")}, p99 ${fmt(w.rtt_p99_ns / 1e6, "ms")}, ` +
      `ended ${new Date(w.window_end_unix_us / 1000).toLocaleTimeString()}`);
  }
  lines.push(`  bandwidth: ${bw === undefined ? "not tested" : fmt(bw, "Mbit/s")}`);
  return lines.join("\n");
}

function sparkline(src, dst) {
  const h = state.history.get(key(src, dst)) || [];
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("width", "240");
  svg.setAttribute("height", "40");
  svg.setAttribute("aria-label", `RTT p50 of each window of ${src} → ${dst} (UDP) while shown: ${h.map((v) => fmt(v, "ms")).join(", ") || "none yet"}`);
  svg.dataset.points = h.length;
  if (h.length > 1) {
    const lo = Math.min(...h), hi = Math.max(...h) || 1;
    const y = (v) => 38 - (hi === lo ? 18 : ((v - lo) / (hi - lo)) * 36);
    const pts = h.map((v, i) => `${(i / (HISTORY - 1)) * 238 + 1},${y(v)}`).join(" ");
    el("polyline", { points: pts, class: "spark" }, svg);
  }
  return svg;
}

// Show a pair, and follow it live: /api/watch streams every window of
// both directions (WatchLinks); the browser reconnects the stream by
// itself when it ends (the aggregator restarting, say).
function showPair(a, b) {
  if (!state.pair || state.pair[0] !== a || state.pair[1] !== b) {
    if (state.live) state.live.close();
    state.pair = [a, b];
    state.liveLinks = new Map();
    state.history = new Map();
    const es = new EventSource(`/api/watch?${new URLSearchParams({ a, b })}`);
    es.addEventListener("open", () => setLive("live"));
    es.addEventListener("link", (e) => {
      const l = JSON.parse(e.data);
      const k = key(l.src, l.dst) + "\u0000" + l.method;
      const before = state.liveLinks.get(k);
      state.liveLinks.set(k, l);
      const fresh = !before || before.latest.window_end_unix_us !== l.latest.window_end_unix_us;
      if (l.method === "udp" && fresh && l.latest.received > 0) {
        const h = state.history.get(key(l.src, l.dst)) || [];
        h.push(l.latest.rtt_p50_ns / 1e6);
        if (h.length > HISTORY) h.shift();
        state.history.set(key(l.src, l.dst), h);
      }
      renderPair();
    });
    es.addEventListener("failed", (e) => setLive("reconnecting", JSON.parse(e.data).error));
    es.addEventListener("error", () => setLive("reconnecting"));
    state.live = es;
  }
  renderPair();
}

function setLive(how, why) {
  const p = $("pair-live");
  if (!p) return;
  p.dataset.state = how;
  p.textContent = how === "live" ? "live: each window as it arrives"
    : `reconnecting${why ? ` (${why})` : ""}: showing the last figures`;
}

function renderPair() {
  const [a, b] = state.pair;
  const d = $("detail");
  const was = $("pair-live");
  d.replaceChildren();
  const h = document.createElement("h2");
  h.textContent = `${a} ↔ ${b}`;
  const live = document.createElement("p");
  live.id = "pair-live";
  live.dataset.state = was ? was.dataset.state : "connecting";
  live.textContent = was ? was.textContent : "connecting…";
  const pre = document.createElement("pre");
  pre.id = "pair-figures";
  pre.textContent = linkText(a, b) + "\n\n" + linkText(b, a);
  const cap = document.createElement("p");
  cap.textContent = "RTT p50 of each window while shown (UDP), each direction:";
  d.append(h, live, pre, cap, sparkline(a, b), sparkline(b, a));
  d.dataset.pair = `${a} ${b}`;
}

// Showing something else ends the live stream.
function leavePair() {
  if (state.live) state.live.close();
  state.live = null;
  state.pair = null;
  delete $("detail").dataset.pair;
}

// A node's figures, asked when clicked (not on every refresh).
async function showNode(row) {
  leavePair();
  const d = $("detail");
  let n;
  try {
    n = await fetchJson(`/api/node?${new URLSearchParams({ name: row.name })}`);
  } catch (e) {
    d.textContent = `${row.name}: ${e.message}`;
    return;
  }
  d.replaceChildren();
  const h = document.createElement("h2");
  h.textContent = n.name;
  const pre = document.createElement("pre");
  pre.id = "node-figures";
  pre.textContent = [
    `groups: l1 ${n.group_l1 || "–"}, l2 ${n.group_l2 || "–"}, l3 ${n.group_l3 || "–"}`,
    `quality: ${n.quality ?? "not scored yet"}${n.fresh ? "" : " (stale)"}`,
    "figures behind the score (medians to its group's peers, worse direction):",
    `  RTT p50 ${fmt(n.rtt_p50_us / 1000, "ms")}, p99 ${fmt(n.rtt_p99_us / 1000, "ms")}`,
    `  jitter ${fmt(n.jitter_us / 1000, "ms")}, loss ${fmt(n.loss_ppm / 1e4, "%")}`,
    `  bandwidth ${n.bandwidth_mbps ? fmt(n.bandwidth_mbps, "Mbit/s") : "not tested"}`,
  ].join("\n");
  // The Node's labels as a nodeAffinity or topology level names them.
  const labels = document.createElement("pre");
  labels.id = "node-labels";
  const kv = Object.entries(n.labels || {});
  labels.textContent = kv.length
    ? ["labels netaware writes on its Node:", ...kv.map(([k, v]) => `  ${k}=${v}`)].join("\n")
    : "labels netaware writes on its Node: none computed yet";
  d.append(h, pre, labels);
  d.dataset.node = n.name;
}

function setStatus(extra) {
  const v = state.view;
  const parts = [];
  if (state.failures > 0) parts.push(`aggregator unreachable (${extra || "no answer"}): showing the last picture, retrying every ${POLL_MS / 1000} s`);
  else if (v) parts.push(`live: ${v.nodes.length} nodes, ${v.links_total} links, updated ${new Date().toLocaleTimeString()}`);
  if (state.view && state.view.kind === "groups") parts.push(`cells are pairs of l${state.view.level} groups; click one to zoom in`);
  if (state.zoom) parts.push(`zoomed into ${state.zoom[0]} × ${state.zoom[1]} (Escape: all groups)`);
  $("status").textContent = parts.join(" · ");
  $("status").dataset.state = state.failures > 0 ? "down" : "live";
}

async function fetchJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(body.error || `${r.status}`);
  return body;
}

// Links (and bandwidth tests) of a matrix answer.
function takeLinks(m) {
  state.links = new Map(m.links.map((l) => [key(l.src, l.dst), l]));
  state.bandwidth = new Map(m.bandwidth.map((b) => [key(b.sender, b.receiver), b.mbps]));
}

async function refresh() {
  try {
    const v = await fetchJson("/api/view");
    state.view = v;
    state.cells = new Map(v.cells.map((c) => [key(c.src, c.dst), c]));
    state.groupOf = new Map(v.nodes.filter((n) => n.group_l1).map((n) => [n.name, n.group_l1]));
    if (v.matrix) takeLinks(v.matrix);
    else if (state.zoom) await refreshZoom();
    else state.links = new Map();
    state.failures = 0;
    draw();
    setStatus();
    if (state.pair) renderPair();
  } catch (e) {
    state.failures += 1;
    setStatus(e.message);
  }
}

async function place(ev) {
  ev.preventDefault();
  const q = new URLSearchParams({ k: $("k").value, selector: $("selector").value, bytes: $("bytes").value });
  const out = $("placement");
  out.hidden = false;
  try {
    const p = await fetchJson(`/api/place?${q}`);
    state.chosen = new Set(p.nodes);
    unzoom();
    const lines = [`chosen: ${p.nodes.join(" ")}`,
      `largest RTT ${fmt(p.max_rtt_us / 1000, "ms")}, bottleneck ${p.bottleneck_bandwidth_mbps ? fmt(p.bottleneck_bandwidth_mbps, "Mbit/s") : "not measured"}`];
    if (p.prediction) {
      const x = p.prediction;
      lines.push(`predicted all-reduce ${fmt(x.total_ms, "ms")} (latency ${fmt(x.latency_ms, "ms")}, bandwidth ${fmt(x.bandwidth_ms, "ms")}, loss ${fmt(x.loss_ms, "ms")})`);
    }
    if (p.runner_up) lines.push(`runner-up ${p.runner_up.nodes.join(" ")}: ${p.runner_up.why}`);
    for (const e of p.exclusions) lines.push(`not ${e.node}: ${e.reason}`);
    out.replaceChildren();
    const pre = document.createElement("pre");
    pre.textContent = lines.join("\n");
    out.appendChild(pre);
  } catch (e) {
    state.chosen = new Set();
    draw();
    out.textContent = `cannot place: ${e.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("metric").addEventListener("change", draw);
  $("place").addEventListener("submit", place);
  $("clear").addEventListener("click", () => {
    state.chosen = new Set();
    $("placement").hidden = true;
    draw();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.zoom) unzoom();
  });
  refresh();
  setInterval(refresh, POLL_MS);
});
