// ClickAgg dashboard: plain SVG charts over the query API (no third-party code).
"use strict";
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 5000;
let timer = null;

function headers() { return { Authorization: "Bearer " + localStorage.getItem("clickagg_key") }; }

async function api(path) {
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function frame(container, yMax) {
  container.innerHTML = "";
  const W = 900, H = 240, L = 44, B = 22, T = 8, R = 8;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  container.appendChild(svg);
  const g = el("g", { class: "axis" }, svg);
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - B - T) * (1 - i / 4);
    el("line", { x1: L, x2: W - R, y1: y, y2: y }, g);
    const t = el("text", { x: L - 4, y: y + 3, "text-anchor": "end" }, g);
    const v = (yMax * i) / 4;
    t.textContent = yMax < 10 ? v.toFixed(2) : Math.round(v);
  }
  return { svg, W, H, L, B, T, R };
}

function lineChart(container, series) {
  // series: [{points: [{t, clicks}], color, cls}]
  const all = series.flatMap((s) => s.points);
  if (!all.length) { container.textContent = "no data in range"; return; }
  const yMax = Math.max(1, ...all.map((p) => p.clicks));
  const f = frame(container, yMax);
  const ts = all.map((p) => Date.parse(p.t));
  const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 1);
  const x = (t) => f.L + ((Date.parse(t) - t0) / (t1 - t0)) * (f.W - f.L - f.R);
  const y = (v) => f.T + (f.H - f.B - f.T) * (1 - v / yMax);
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + "," + y(p.clicks).toFixed(1)).join(" ");
    el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, class: "series " + s.cls }, f.svg);
  }
  const lab = el("g", { class: "axis" }, f.svg);
  [t0, (t0 + t1) / 2, t1].forEach((t, i) => {
    const tx = el("text", { x: f.L + (i / 2) * (f.W - f.L - f.R), y: f.H - 6, "text-anchor": ["start", "middle", "end"][i] }, lab);
    tx.textContent = new Date(t).toISOString().slice(11, 16) + " UTC";
  });
}

function barChart(container, rows) {
  if (!rows.length) { container.textContent = "no reconciled hours yet"; return; }
  const vals = rows.map((r) => r.relative_drift * 100);
  const yMax = Math.max(0.1, ...vals.map(Math.abs));
  const f = frame(container, yMax);
  const w = (f.W - f.L - f.R) / rows.length;
  rows.forEach((r, i) => {
    const v = Math.abs(vals[i]);
    const h = ((f.H - f.B - f.T) * v) / yMax;
    el("rect", { x: f.L + i * w + 1, y: f.H - f.B - h, width: Math.max(1, w - 2), height: Math.max(h, 1),
                 class: "bar" + (vals[i] < 0 ? " neg" : "") }, f.svg);
    if (rows.length <= 24 || i % 3 === 0) {
      const lab = el("text", { x: f.L + (i + 0.5) * w, y: f.H - 6, "text-anchor": "middle", class: "axis" }, f.svg);
      lab.textContent = r.hour.slice(11, 13) + ":00";
    }
  });
}

function tile(label, value, bad) {
  return `<div class="tile${bad ? " bad" : ""}"><div class="v">${value}</div><div class="l">${label}</div></div>`;
}

async function refresh() {
  const campaign = $("campaign").value;
  if (!campaign) return;
  const to = new Date(Date.now() + 60000), from = new Date(to - 3 * 3600 * 1000);
  const q = `from=${from.toISOString()}&to=${to.toISOString()}&granularity=minute`;
  const base = `/v1/campaigns/${encodeURIComponent(campaign)}`;
  try {
    const [hot, exact, drift, health] = await Promise.all([
      api(`${base}/clicks?${q}&accuracy=fast`),
      api(`${base}/clicks?${q}&accuracy=auto`),  // reconciled points only where reconciled
      api(`${base}/drift?from=${new Date(to - 24 * 3600 * 1000).toISOString()}&to=${to.toISOString()}`),
      api(`/v1/ops/health`),
    ]);
    lineChart($("chart-minutes"), [
      { points: hot.points, color: "#2b7bd6", cls: "hot" },
      { points: exact.points.filter((p) => p.source === "reconciled"), color: "#e0702b", cls: "exact" },
    ]);
    barChart($("chart-drift"), drift.hours);
    $("health").innerHTML =
      tile("consumer lag (records)", health.consumer_lag ?? "n/a", health.consumer_lag > 100000) +
      tile("watermark lag (s)", health.watermark_lag_s ?? "n/a", health.watermark_lag_s > 300) +
      tile("capture spool depth", health.spool_depth ?? "n/a", health.spool_depth > 0) +
      tile("last reconciled hour", health.last_reconciled_hour ? health.last_reconciled_hour.slice(0, 16).replace("T", " ") : "none", false);
    $("status").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  } catch (err) {
    $("status").textContent = String(err.message || err);
  }
}

async function start(ev) {
  if (ev) ev.preventDefault();
  const key = $("key").value.trim();
  if (key) localStorage.setItem("clickagg_key", key);
  try {
    const campaigns = await api("/v1/campaigns");
    const sel = $("campaign"), keep = sel.value;
    sel.replaceChildren(...campaigns.map((c) => {
      const o = document.createElement("option");  // text, never markup: names are user data
      o.value = c.campaign_id; o.textContent = c.name || c.campaign_id;
      return o;
    }));
    if (keep) sel.value = keep;
    if (!sel.value && campaigns.length) sel.value = campaigns[0].campaign_id;
  } catch (err) { $("status").textContent = String(err.message || err); return; }
  await refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

$("auth").addEventListener("submit", start);
$("campaign").addEventListener("change", refresh);
const fromHash = new URLSearchParams(location.hash.slice(1));
if (fromHash.get("key")) { localStorage.setItem("clickagg_key", fromHash.get("key")); history.replaceState(null, "", location.pathname); }
if (fromHash.get("campaign")) {
  const o = document.createElement("option");
  o.value = o.textContent = fromHash.get("campaign");
  $("campaign").replaceChildren(o);
}
if (localStorage.getItem("clickagg_key")) start();
