// tradectl dashboard: renders the daemon's snapshot document; kept current by server-sent events.
// Plain DOM and SVG, no dependencies: everything the page needs ships in the package.
"use strict";

const MISSING = "—";
const SVG_NS = "http://www.w3.org/2000/svg";
const MAX_EVENTS = 50;

const $ = (id) => document.getElementById(id);

function num(value) {
  if (value === null || value === undefined || value === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

// 1234567.891 -> "1,234,567.89" (the same text as Python's f"{x:,.2f}")
function money(value) {
  const n = num(value);
  if (n === null) return MISSING;
  const [whole, frac] = Math.abs(n).toFixed(2).split(".");
  const sign = n < 0 ? "-" : "";
  return sign + whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + frac;
}

function pct(value, digits = 2) {
  const n = num(value);
  return n === null ? MISSING : (n * 100).toFixed(digits) + "%";
}

// a figure for people: 10402.800000000001 -> "10402.80", 0.00032422 -> "0.0003242"
function figure(value) {
  if (typeof value !== "number" || Number.isInteger(value)) return value;
  return Math.abs(value) >= 100 ? Number(value.toFixed(2)) : Number(value.toPrecision(4));
}

function text(value) {
  if (value === null || value === undefined || value === "") return MISSING;
  if (typeof value === "number") return String(figure(value));
  if (typeof value === "object") return JSON.stringify(value, (_k, v) => figure(v));
  return String(value);
}

function when(ts) {
  const n = num(ts);
  return n === null ? MISSING : new Date(n * 1000).toISOString().replace("T", " ").slice(0, 16);
}

function signClass(el, value) {
  const n = num(value);
  el.classList.toggle("up", n !== null && n > 0);
  el.classList.toggle("down", n !== null && n < 0);
}

function setText(id, value) {
  $(id).textContent = value;
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fillTable(id, rows, build, emptyText) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  if (!rows || rows.length === 0) {
    const tr = body.insertRow();
    const td = cell(tr, emptyText, "dim");
    td.colSpan = $(id).tHead.rows[0].cells.length;
    return;
  }
  for (const item of rows) build(body.insertRow(), item);
}

// --- charts --------------------------------------------------------------

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function scale(values, height, pad) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  return (v) => pad + (height - 2 * pad) * (1 - (v - lo) / (hi - lo));
}

function drawEquity(points) {
  const svg = $("equity-chart");
  svg.replaceChildren();
  if (points.length < 2) return;
  const values = points.map((p) => p[1]);
  const y = scale(values, 160, 6);
  const step = 600 / (points.length - 1);
  const d = values.map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${y(v).toFixed(1)}`).join("");
  svg.appendChild(svgEl("path", { d, class: "equity" }));
  setText("equity-range", `${when(points[0][0])} → ${when(points[points.length - 1][0])}, ` +
    `low ${money(Math.min(...values))}, high ${money(Math.max(...values))}`);
}

function drawDrawdown(points) {
  const svg = $("drawdown-chart");
  svg.replaceChildren();
  if (points.length < 2) return;
  let peak = -Infinity;
  const dd = points.map((p) => { peak = Math.max(peak, p[1]); return peak > 0 ? (peak - p[1]) / peak : 0; });
  const worst = Math.max(...dd, 1e-9);
  const step = 600 / (dd.length - 1);
  const d = "M0,0" + dd.map((v, i) => `L${(i * step).toFixed(1)},${(96 * v / worst).toFixed(1)}`).join("") + `L600,0Z`;
  svg.appendChild(svgEl("path", { d, class: "dd" }));
  setText("drawdown-max", `worst ${pct(Math.max(...dd))} over the charted points`);
}

// --- sections ------------------------------------------------------------

function renderHeader(doc) {
  const s = doc.status || {};
  const state = $("state");
  state.textContent = text(s.state);
  state.className = "badge " + String(s.state || "").toLowerCase();
  setText("equity", money(s.equity));
  setText("pnl-today", money(s.pnl_today));
  signClass($("pnl-today"), s.pnl_today);
  setText("drawdown", pct(doc.drawdown));
  setText("cash", money(s.cash));
  setText("pnl-split", `${money(s.realized_pnl)} / ${money(s.unrealized_pnl)}`);
  setText("broker", text(s.broker));
  const health = doc.health || {};
  const feed = s.feed || {};
  setText("connection", health.ok ? (feed.done ? "connected, feed finished" : "connected") : `down: ${text(health.reason)}`);
  $("connection").className = health.ok ? "up" : "down";
  setText("feed", `${text(feed.kind)} ${text(feed.position)}/${text(feed.total)}, lag ${text(feed.lag_seconds)} s`);
  setText("bars", text((s.counts || {}).bars));
  const strategy = s.strategy || {};
  setText("strategy", `strategy ${text(strategy.name)}${strategy.model_sha256 ? " " + String(strategy.model_sha256).slice(0, 12) : ""}, run ${text(s.run_id)}`);
  setText("updated", `updated ${new Date().toISOString().slice(11, 19)} UTC`);
}

function renderPositions(doc) {
  fillTable("positions", (doc.status || {}).positions, (tr, p) => {
    cell(tr, text(p.symbol));
    cell(tr, text(p.quantity), "num");
    cell(tr, text(p.average_price), "num");
    cell(tr, text(p.last_price), "num");
    signClass(cell(tr, money(p.unrealized_pnl), "num"), p.unrealized_pnl);
  }, "no open positions");
}

function renderTrades(doc) {
  fillTable("trades", doc.trades, (tr, t) => {
    cell(tr, text(t.symbol));
    cell(tr, Number(t.direction) > 0 ? "long" : "short");
    cell(tr, text(t.quantity), "num");
    cell(tr, text(t.entry_price), "num");
    cell(tr, text(t.exit_price), "num");
    cell(tr, when(t.exit_ts));
    signClass(cell(tr, money(t.pnl), "num"), t.pnl);
  }, "no closed trades yet");
}

const ACTIONS = ["HOLD", "BUY", "SELL", "CLOSE"];

function probabilities(values) {
  if (!Array.isArray(values)) return MISSING;
  return values.map((v, i) => `${ACTIONS[i] || i} ${pct(v, 0)}`).join(" ");
}

function renderDecisions(doc) {
  fillTable("decisions", doc.decisions, (tr, d) => {
    cell(tr, when(d.ts));
    cell(tr, text(d.symbol));
    cell(tr, text(d.action));
    cell(tr, probabilities(d.probabilities));
    cell(tr, num(d.confidence) === null ? MISSING : Number(d.confidence).toFixed(2), "num");
    cell(tr, d.verdict ? `${d.verdict}${d.verdict_layer ? " (" + d.verdict_layer + ")" : ""}` : "no order");
  }, "no decisions yet");
  const dl = $("regime");
  dl.replaceChildren();
  const latest = (doc.decisions || [])[0] || {};
  const extras = latest.extras || {};
  const shown = Object.entries(extras).filter(([k]) => /regime|controller|volatility|bonus|hold/i.test(k));
  if (shown.length === 0) shown.push(["regime", "not reported by this strategy"]);
  for (const [k, v] of shown) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = typeof v === "number" ? v.toFixed(3) : text(v);
    dl.append(dt, dd);
  }
}

// layers whose limit is a floor (the value must stay above it); every other numeric limit is a ceiling
const FLOOR_LAYERS = new Set(["confidence", "trading_window"]);

function meter(name, value, limit) {
  // decimals arrive as strings; booleans and states ("active") have no meter
  const v = typeof value === "boolean" ? null : num(value), l = typeof limit === "boolean" ? null : num(limit);
  const wrap = document.createElement("div");
  wrap.className = "meter";
  if (v === null || l === null || l === 0) { wrap.style.visibility = "hidden"; return wrap; }
  const ratio = FLOOR_LAYERS.has(name) ? (v <= 0 ? 1 : l / v) : Math.abs(v / l);
  const use = Math.max(0, Math.min(1, ratio));
  if (use >= 1) wrap.classList.add("full"); else if (use >= 0.75) wrap.classList.add("high");
  const bar = document.createElement("div");
  bar.style.width = (use * 100).toFixed(0) + "%";
  wrap.appendChild(bar);
  wrap.title = pct(use, 0) + " of the limit";
  return wrap;
}

function renderRisk(doc) {
  const layers = (doc.risk || {}).layers || [];
  fillTable("risk", layers, (tr, layer) => {
    const f = layer.figures || {};
    cell(tr, text(layer.name));
    cell(tr, text(f.value), "num");
    cell(tr, text(f.limit), "num");
    cell(tr, "").appendChild(meter(layer.name, f.value, f.limit));
    const rest = Object.entries(f).filter(([k]) => k !== "value" && k !== "limit");
    cell(tr, rest.map(([k, v]) => `${k}=${text(v)}`).join(", "), "dim wrap");
  }, "no risk layers configured");
}

function render(doc) {
  renderHeader(doc);
  const points = Array.isArray(doc.equity) ? doc.equity : [];
  drawEquity(points);
  drawDrawdown(points);
  renderPositions(doc);
  renderTrades(doc);
  renderDecisions(doc);
  renderRisk(doc);
}

function addEvent(ev) {
  const li = document.createElement("li");
  const t = new Date((ev.wall_ts || Date.now() / 1000) * 1000).toISOString().slice(11, 19);
  li.textContent = `${t} ${ev.kind}: ${ev.message}`;
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function connect() {
  const live = $("live");
  const source = new EventSource("/events");
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "badge active"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "badge off"; });
  source.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
  source.addEventListener("event", (e) => addEvent(JSON.parse(e.data)));
}

async function start() {
  try {
    const response = await fetch("/dashboard.json", { cache: "no-store" });
    if (response.ok) render(await response.json());
  } catch (err) {
    console.warn("dashboard: first load failed, waiting for the live feed", err);
  }
  connect();
}

start();
