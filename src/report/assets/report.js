"use strict";
// Hand-written drawing on <canvas>: the page must open from disk with no library or network.
// Each figure sets data-nonempty="true" once it has drawn data, so a test can tell.

const data = JSON.parse(document.getElementById("figure-data").textContent);
// No red: red marks stay segments.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#5254a3"];
const STAY = "#e00000";
const colour = (c) => PALETTE[c % PALETTE.length];
const labels = data.labels;
const steps = data.steps;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fig(id) { return document.getElementById(id); }
function markDrawn(figure) { figure.setAttribute("data-nonempty", "true"); }
function sub(figure, text) { figure.querySelector(".sub").textContent = text; }
function fmt(x, digits) {
  if (x === null || x === undefined) return "n/a";
  return Number(x).toFixed(digits === undefined ? 2 : digits);
}
function pct(x) { return x === null || x === undefined ? "n/a" : (100 * x).toFixed(1) + "%"; }

function canvas(container, height) {
  const width = Math.max(320, container.clientWidth || 1200);
  const ratio = window.devicePixelRatio || 1;
  const c = el("canvas");
  c.width = Math.round(width * ratio);
  c.height = Math.round(height * ratio);
  c.style.height = height + "px";
  container.appendChild(c);
  const ctx = c.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.font = "13px system-ui, sans-serif";
  return { ctx, width, height };
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
  return ticks;
}

function tickLabel(t) {
  if (Math.abs(t) >= 1000) return String(Math.round(t));
  return String(+t.toPrecision(4));
}

// Axes with ticks, grid and labels; returns the data-to-pixel maps.
function axes(plot, xr, yr, xlabel, ylabel, opts) {
  const o = opts || {};
  const { ctx, width, height } = plot;
  const left = 64, right = o.right || 16, top = 12, bottom = 46;
  const x = (v) => left + (v - xr[0]) / (xr[1] - xr[0] || 1) * (width - left - right);
  const y = (v) => height - bottom - (v - yr[0]) / (yr[1] - yr[0] || 1) * (height - top - bottom);
  ctx.save();
  ctx.strokeStyle = "#e6e6e6"; ctx.fillStyle = "#333"; ctx.lineWidth = 1;
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of (o.xticks || niceTicks(xr[0], xr[1], 8))) {
    if (t < xr[0] - 1e-9 || t > xr[1] + 1e-9) continue;
    ctx.beginPath(); ctx.moveTo(x(t), top); ctx.lineTo(x(t), height - bottom); ctx.stroke();
    ctx.fillText(o.xtickLabel ? o.xtickLabel(t) : tickLabel(t), x(t), height - bottom + 5);
  }
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const t of niceTicks(yr[0], yr[1], 6)) {
    if (t < yr[0] - 1e-9 || t > yr[1] + 1e-9) continue;
    ctx.beginPath(); ctx.moveTo(left, y(t)); ctx.lineTo(width - right, y(t)); ctx.stroke();
    ctx.fillText(tickLabel(t), left - 6, y(t));
  }
  ctx.strokeStyle = "#444";
  ctx.strokeRect(left, top, width - left - right, height - top - bottom);
  ctx.font = "600 13px system-ui, sans-serif";
  ctx.textAlign = "center"; ctx.textBaseline = "bottom";
  ctx.fillText(xlabel, (left + width - right) / 2, height - 4);
  ctx.translate(14, (top + height - bottom) / 2); ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = "middle";
  ctx.fillText(ylabel, 0, 0);
  ctx.restore();
  return { x, y, left, right: width - right, top, bottom: height - bottom };
}

function legend(container, items) {
  for (const item of items) {
    const span = el("span");
    const swatch = el("i", { class: item.shape || "" });
    swatch.style.background = item.colour;
    span.appendChild(swatch);
    span.appendChild(document.createTextNode(item.label));
    container.appendChild(span);
  }
}

function classLegend(container, extra) {
  legend(container, labels.map((label, c) => ({ label, colour: colour(c) })).concat(extra || []));
}

function stepRange() {
  const lo = steps.length ? steps[0] : 0;
  const hi = steps.length ? steps[steps.length - 1] : 1;
  return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
}

// Line chart of series aligned with the checkpoint steps; null values break the line.
function lineChart(figure, series, ylabel, yr, extras) {
  const plot = canvas(figure.querySelector(".plot"), 380);
  const a = axes(plot, stepRange(), yr, "training step", ylabel);
  const { ctx } = plot;
  let drawn = false;
  for (const s of series) {
    ctx.save();
    ctx.strokeStyle = s.colour; ctx.fillStyle = s.colour; ctx.lineWidth = s.width || 1.8;
    ctx.beginPath();
    let open = false;
    s.values.forEach((v, t) => {
      if (v === null || v === undefined) { open = false; return; }
      if (open) ctx.lineTo(a.x(steps[t]), a.y(v)); else ctx.moveTo(a.x(steps[t]), a.y(v));
      open = true; drawn = true;
    });
    ctx.stroke();
    s.values.forEach((v, t) => {
      if (v === null || v === undefined) return;
      ctx.beginPath(); ctx.arc(a.x(steps[t]), a.y(v), 2.2, 0, 2 * Math.PI); ctx.fill();
    });
    ctx.restore();
  }
  if (extras) extras(ctx, a);
  if (drawn) markDrawn(figure);
}

function seriesMax(series) {
  let m = 0;
  for (const s of series) for (const v of s) if (v !== null && v > m) m = v;
  return m;
}

function drawF1() {
  const figure = fig("fig-f1");
  const series = data.f1.map((values, c) => ({ values, colour: colour(c) }));
  series.push({ values: data.macro_f1, colour: "#000", width: 3.2 });
  lineChart(figure, series, "F1", [0, 1]);
  classLegend(figure.querySelector(".legend"), [{ label: "macro F1", colour: "#000" }]);
}

function drawSpeed() {
  const figure = fig("fig-speed");
  const delta = data.analysis ? data.analysis.reference_interval : null;
  sub(figure, "Mean speed of each class's probe examples: [CLS] displacement per " +
    (delta ? delta + " steps (the reference interval Δ)" : "reference interval") +
    ", at the interval's closing step, in the report's space (" +
    (data.analysis ? data.analysis.space : "n/a") + ").");
  const max = seriesMax(data.speed);
  lineChart(figure, data.speed.map((values, c) => ({ values, colour: colour(c) })),
    "speed", [0, max > 0 ? max * 1.05 : 1]);
  classLegend(figure.querySelector(".legend"));
}

function drawStraightness() {
  const figure = fig("fig-straightness");
  const rule = data.analysis ? data.analysis.straightness : null;
  sub(figure, rule
    ? "Mean S_t over each class (window k = " + rule.window + "); the dashed line is ε = " +
      rule.epsilon + ", below which a checkpoint is a stay point. Undefined for the last k checkpoints."
    : "No analysis yet.");
  lineChart(figure, data.straightness.map((values, c) => ({ values, colour: colour(c) })),
    "straightness", [0, Math.min(1, 1.1 * Math.max(seriesMax(data.straightness), rule ? 1.5 * rule.epsilon : 0)) || 1], (ctx, a) => {
      if (!rule) return;
      ctx.save(); ctx.strokeStyle = STAY; ctx.setLineDash([6, 4]); ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(a.left, a.y(rule.epsilon)); ctx.lineTo(a.right, a.y(rule.epsilon));
      ctx.stroke(); ctx.restore();
    });
  classLegend(figure.querySelector(".legend"), rule ? [{ label: "ε", colour: STAY }] : []);
}

function bounds(points) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of points) {
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
  if (!isFinite(x0)) return [[0, 1], [0, 1]];
  const px = (x1 - x0) * 0.05 || 1, py = (y1 - y0) * 0.05 || 1;
  return [[x0 - px, x1 + px], [y0 - py, y1 + py]];
}

function position(t, example) {
  const row = data.trajectories.cloud[t];
  return [row[2 * example], row[2 * example + 1]];
}

function marker(ctx, kind, x, y, fill) {
  ctx.save();
  ctx.fillStyle = fill; ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
  ctx.beginPath();
  if (kind === "circle") ctx.arc(x, y, 4.5, 0, 2 * Math.PI);
  else { ctx.moveTo(x, y - 6); ctx.lineTo(x + 5.5, y + 4); ctx.lineTo(x - 5.5, y + 4); ctx.closePath(); }
  ctx.fill(); ctx.stroke();
  ctx.restore();
}

function drawTrajectories() {
  const tr = data.trajectories;
  const n = steps.length;
  const points = [];
  if (tr) for (const e of tr.sampled) for (let t = 0; t < n; t++) points.push(position(t, e));
  const [xr, yr] = bounds(points);
  fig("trajectory-sub").textContent = tr
    ? tr.sampled.length + " probe examples (up to 10 per class), coloured by class, from the first checkpoint (circle) " +
      "to the last (triangle); segments between two stay points in red. One panel per detector at its current parameters, " +
      "applied in pca2 (the projection fitted on the latest checkpoint)."
    : "No analysis yet.";
  for (const detector of ["distance", "straightness", "relative"]) {
    const figure = fig("fig-trajectories-" + detector);
    const panel = tr ? tr.panels.find((p) => p.detector === detector) : null;
    if (!panel) { sub(figure, "No analysis yet."); continue; }
    sub(figure, panel.parameters);
    const plot = canvas(figure.querySelector(".plot"), 400);
    const a = axes(plot, xr, yr, "PC 1", "PC 2", { xticks: niceTicks(xr[0], xr[1], 5) });
    const { ctx } = plot;
    ctx.save();
    ctx.beginPath(); ctx.rect(a.left, a.top, a.right - a.left, a.bottom - a.top); ctx.clip();
    tr.sampled.forEach((e, i) => {
      const stays = panel.stays[i];
      const c = colour(tr.classes[e]);
      for (let t = 1; t < n; t++) {
        const [x0, y0] = position(t - 1, e), [x1, y1] = position(t, e);
        const stay = stays[t - 1] === "1" && stays[t] === "1";
        ctx.strokeStyle = stay ? STAY : c;
        ctx.lineWidth = stay ? 2.4 : 1.1;
        ctx.globalAlpha = stay ? 1 : 0.75;
        ctx.beginPath(); ctx.moveTo(a.x(x0), a.y(y0)); ctx.lineTo(a.x(x1), a.y(y1)); ctx.stroke();
      }
      ctx.globalAlpha = 1;
      for (let t = 0; t < n; t++) {
        if (stays[t] !== "1") continue;
        const [x, y] = position(t, e);
        ctx.fillStyle = STAY; ctx.beginPath(); ctx.arc(a.x(x), a.y(y), 2, 0, 2 * Math.PI); ctx.fill();
      }
    });
    tr.sampled.forEach((e) => {
      const c = colour(tr.classes[e]);
      const [sx, sy] = position(0, e), [ex, ey] = position(n - 1, e);
      marker(ctx, "circle", a.x(sx), a.y(sy), c);
      marker(ctx, "triangle", a.x(ex), a.y(ey), c);
    });
    ctx.restore();
    if (tr.sampled.length && n) markDrawn(figure);
  }
  classLegend(fig("trajectory-legend"), [
    { label: "stay segment / stay point", colour: STAY },
    { label: "first checkpoint", shape: "circle" },
    { label: "last checkpoint", shape: "triangle" },
  ]);
}

function drawCloud() {
  const figure = fig("fig-cloud");
  const tr = data.trajectories;
  const slider = fig("cloud-step"), button = fig("cloud-play"), label = fig("cloud-label");
  classLegend(figure.querySelector(".legend"));
  if (!tr || !steps.length) { sub(figure, "No checkpoint yet."); button.disabled = true; return; }
  const examples = tr.classes.length;
  const all = [];
  for (let t = 0; t < steps.length; t++) for (let e = 0; e < examples; e++) all.push(position(t, e));
  const [xr, yr] = bounds(all);
  const container = figure.querySelector(".plot");
  const plot = canvas(container, 520);
  slider.max = String(steps.length - 1);
  slider.value = String(steps.length - 1);
  function draw(t) {
    plot.ctx.clearRect(0, 0, plot.width, plot.height);
    const a = axes(plot, xr, yr, "PC 1", "PC 2");
    const ctx = plot.ctx;
    ctx.save();
    ctx.globalAlpha = 0.8;
    for (let e = 0; e < examples; e++) {
      const [x, y] = position(t, e);
      ctx.fillStyle = colour(tr.classes[e]);
      ctx.beginPath(); ctx.arc(a.x(x), a.y(y), 3.2, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.restore();
    label.textContent = "step " + steps[t] + " (" + (t + 1) + " of " + steps.length + ")";
  }
  let timer = null;
  function stop() { clearInterval(timer); timer = null; button.textContent = "▶ play"; }
  button.addEventListener("click", () => {
    if (timer) { stop(); return; }
    if (+slider.value >= steps.length - 1) slider.value = "0";
    button.textContent = "❚❚ pause";
    draw(+slider.value);
    timer = setInterval(() => {
      const next = +slider.value + 1;
      if (next >= steps.length) { stop(); return; }
      slider.value = String(next);
      draw(next);
    }, 500);
  });
  slider.addEventListener("input", () => { stop(); draw(+slider.value); });
  draw(steps.length - 1);
  if (examples) markDrawn(figure);
}

const ACTION_TEXT = {
  none: "no action", redefine_class: "redefine", targeted_data: "targeted data",
  add_data: "add data", wait: "wait", run_level: "see run advice",
};

function drawMatrix() {
  const figure = fig("fig-matrix");
  const m = data.matrix;
  if (!m) { sub(figure, "No advice yet."); return; }
  const cutoff = m.early_cutoff;
  sub(figure, "Each class by its dwell onset (" + m.detector + " detector) and its smoothed F1. " +
    (cutoff !== null ? "Early: onset ≤ step " + cutoff + "; " : "No class dwells yet; ") +
    "high: F1 ≥ " + m.f1_high_threshold + "." +
    (m.evidence_sufficient ? "" : " Not enough evidence yet: every class waits."));
  const latest = steps.length ? steps[steps.length - 1] : 1;
  const span = Math.max(latest, cutoff || 0, 1);
  const notYet = span * 1.12;
  const plot = canvas(figure.querySelector(".plot"), 430);
  const xticks = niceTicks(0, span, 6).filter((t) => t <= span).concat([notYet]);
  const a = axes(plot, [0, span * 1.2], [-0.04, 1.04], "class dwell onset (training step)", "smoothed F1", {
    xticks, xtickLabel: (t) => (t === notYet ? "none yet" : tickLabel(t)),
  });
  const { ctx } = plot;
  ctx.save();
  ctx.strokeStyle = "#555"; ctx.setLineDash([6, 4]); ctx.lineWidth = 1.5;
  if (cutoff !== null) {
    ctx.beginPath(); ctx.moveTo(a.x(cutoff), a.top); ctx.lineTo(a.x(cutoff), a.bottom); ctx.stroke();
  }
  ctx.beginPath(); ctx.moveTo(a.left, a.y(m.f1_high_threshold)); ctx.lineTo(a.right, a.y(m.f1_high_threshold)); ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = "#888"; ctx.font = "italic 12px system-ui, sans-serif";
  const split = cutoff !== null ? a.x(cutoff) : a.left;
  // Early labels hug the cutoff: classes crowd the left edge and the bottom (F1 0).
  const placed = [];
  const quadrant = (text, x, y, align) => {
    ctx.textAlign = align; ctx.textBaseline = "middle";
    ctx.fillText(text, x, y);
    const w = ctx.measureText(text).width;
    placed.push({ x: align === "right" ? x - w : x, y, w });
  };
  const early = cutoff !== null ? split - 6 : a.left + 6;
  const earlyAlign = cutoff !== null ? "right" : "left";
  quadrant("early · high: healthy", early, a.top + 10, earlyAlign);
  quadrant("early · low: redefine", early, a.bottom - 10, earlyAlign);
  quadrant("late · high: targeted data", split + 6, a.top + 10, "left");
  quadrant("late · low: add data", split + 6, a.bottom - 10, "left");
  ctx.restore();
  ctx.save();
  ctx.font = "12.5px system-ui, sans-serif"; ctx.textBaseline = "middle"; ctx.textAlign = "left";
  const shown = m.classes.map((c, i) => ({ c, i })).filter(({ c }) => c.f1 !== null)
    .sort((p, q) => q.c.f1 - p.c.f1);
  const spot = ({ c }) => [a.x(c.onset === null ? notYet : c.onset), a.y(c.f1)];
  // Points are obstacles too, so a label never covers another class's dot.
  for (const p of shown) { const [px, py] = spot(p); placed.push({ x: px - 7, y: py, w: 14 }); }
  const free = (x, y, w) => y > a.top + 6 && y < a.bottom - 6 &&
    !placed.some((b) => x < b.x + b.w && b.x < x + w && Math.abs(y - b.y) < 14);
  for (const p of shown) {
    const { c, i } = p;
    const [px, py] = spot(p);
    ctx.fillStyle = colour(i); ctx.strokeStyle = "#000";
    ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    const text = c.label + " → " + ACTION_TEXT[c.action] + (c.priority ? " #" + c.priority : "");
    const w = ctx.measureText(text).width;
    let lx = px + 10;
    if (lx + w > a.right - 2) lx = px - 10 - w;
    let ly = py;
    for (let k = 1; k < 40 && !free(lx, ly, w); k++) ly = py + (k % 2 ? -1 : 1) * 15 * Math.ceil(k / 2);
    placed.push({ x: lx, y: ly, w });
    if (ly !== py) { ctx.strokeStyle = "#aaa"; ctx.beginPath(); ctx.moveTo(px + 6, py); ctx.lineTo(lx - 2, ly); ctx.stroke(); }
    ctx.fillStyle = "#111"; ctx.fillText(text, lx, ly);
  }
  ctx.restore();
  const table = el("table");
  const head = el("tr");
  for (const h of ["class", "onset", "F1", "quadrant", "recommendation"]) head.appendChild(el("th", { class: h === "class" || h === "recommendation" || h === "quadrant" ? "l" : "" }, h));
  table.appendChild(head);
  m.classes.forEach((c, i) => {
    const row = el("tr");
    const name = el("td", { class: "l" });
    const swatch = el("i"); swatch.style.cssText = "display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:6px;background:" + colour(i);
    name.appendChild(swatch); name.appendChild(document.createTextNode(c.label));
    row.appendChild(name);
    row.appendChild(el("td", {}, c.onset === null ? "none yet" : String(c.onset)));
    row.appendChild(el("td", {}, fmt(c.f1)));
    row.appendChild(el("td", { class: "l" }, c.quadrant.replace("_", " · ")));
    row.appendChild(el("td", { class: "l" }, ACTION_TEXT[c.action] + (c.priority ? " (priority " + c.priority + ")" : "")));
    table.appendChild(row);
  });
  figure.querySelector(".side").appendChild(table);
  if (shown.length) markDrawn(figure);
}

function drawSweeps() {
  const figure = fig("fig-sweep");
  const body = figure.querySelector(".body");
  const wrap = el("div", { class: "sweeps" });
  body.appendChild(wrap);
  for (const s of data.sweeps) {
    const box = el("div");
    box.appendChild(el("h3", {}, s.detector + " detector: sweep of " + s.symbol));
    box.appendChild(el("p", {}, s.fixed + "; space " + s.space + "; per class: share of its trajectories with a stay point"));
    const table = el("table");
    const head = el("tr");
    head.appendChild(el("th", {}, s.symbol));
    head.appendChild(el("th", {}, "with stay"));
    head.appendChild(el("th", {}, "share"));
    for (const label of labels) head.appendChild(el("th", {}, label));
    table.appendChild(head);
    for (const row of s.rows) {
      const tr = el("tr");
      tr.appendChild(el("td", {}, String(+row.threshold.toPrecision(3))));
      tr.appendChild(el("td", {}, String(row.trajectories)));
      tr.appendChild(el("td", {}, pct(row.share)));
      row.per_class.forEach((n, c) => tr.appendChild(el("td", {}, data.probe_counts[c] ? pct(n / data.probe_counts[c]) : "–")));
      table.appendChild(tr);
    }
    box.appendChild(table);
    wrap.appendChild(box);
  }
  if (data.sweeps.some((s) => s.rows.length)) markDrawn(figure);
  else body.appendChild(el("p", { class: "empty" }, "No analysis yet."));
}

function drawRecommendations() {
  const figure = fig("fig-recommendations");
  const body = figure.querySelector(".body");
  const run = data.run_advice;
  if (run) {
    const list = el("ol", { class: "recs" });
    const item = el("li", { class: "run" });
    item.appendChild(el("span", { class: "badge" }, "run: " + run.finding.replace(/_/g, " ")));
    item.appendChild(document.createTextNode(run.message));
    const ev = run.evidence;
    const evidence = el("div", { class: "evidence" });
    for (const [k, v] of [
      ["classes", ev.classes.join(", ")],
      ["share of decided", pct(ev.share)],
      ["mean F1", fmt(ev.mean_f1)],
      ["median onset", ev.median_onset_step === null ? "none yet" : "step " + ev.median_onset_step],
    ]) evidence.appendChild(el("span", {}, k + ": " + v));
    item.appendChild(evidence);
    list.appendChild(item);
    body.appendChild(list);
    markDrawn(figure);
  }
  if (!data.recommendations.length) {
    if (run) return;
    body.appendChild(el("p", { class: "empty" }, data.matrix
      ? "Nothing to do: no class needs data or a new definition."
      : "No advice yet: no checkpoint has been analysed."));
    return;
  }
  const list = el("ol", { class: "recs" });
  for (const r of data.recommendations) {
    const item = el("li", { class: r.action });
    item.appendChild(el("span", { class: "badge" }, (r.priority ? "#" + r.priority + " " : "") + ACTION_TEXT[r.action]));
    item.appendChild(document.createTextNode(r.message));
    const ev = r.evidence;
    const evidence = el("div", { class: "evidence" });
    const facts = [
      ["onset", ev.onset_step === null ? "none yet" : "step " + ev.onset_step],
      ["dwelling", pct(ev.dwell_fraction)],
      ["F1 (smoothed)", fmt(ev.f1)],
      ["F1 latest", fmt(ev.f1_latest)],
      ["trend", ev.f1_trend === null ? "n/a" : (ev.f1_trend >= 0 ? "+" : "") + fmt(ev.f1_trend)],
      ["speed", fmt(ev.latest_speed, 3)],
      ["most confused with", ev.most_confused_with ? ev.most_confused_with.label + " (" + pct(ev.most_confused_with.share) + ")" : "n/a"],
      ["probe examples", String(ev.probe_count)],
      ["training examples", ev.train_count === undefined ? "n/a" : String(ev.train_count)],
      ["basis", ev.basis.replace(/_/g, " ")],
    ];
    for (const [k, v] of facts) evidence.appendChild(el("span", {}, k + ": " + v));
    item.appendChild(evidence);
    list.appendChild(item);
  }
  body.appendChild(list);
  markDrawn(figure);
}

function drawClustering() {
  const figure = fig("fig-clustering");
  const c = data.clustering;
  const body = figure.querySelector(".body");
  if (!c) { body.appendChild(el("p", { class: "empty" }, "No analysis yet.")); return; }
  sub(figure, "Ward linkage into " + c.clusters + " clusters: the latest checkpoint's embeddings (Euclidean, full space), " +
    "whole trajectories and trajectories up to each example's " + c.trimmed_by + " onset (DTW) over " + c.steps.length +
    " checkpoints. Adjusted Rand index 1 = the same partition, 0 = no more alike than chance.");
  const table = el("table");
  const head = el("tr");
  for (const h of ["method", "ARI vs classes", "ARI vs final", "clusters (size, majority class)"]) head.appendChild(el("th", { class: h.startsWith("clusters") || h === "method" ? "l" : "" }, h));
  table.appendChild(head);
  for (const name of ["final", "trajectory", "trimmed"]) {
    const m = c.methods[name];
    const tr = el("tr");
    tr.appendChild(el("td", { class: "l" }, name));
    tr.appendChild(el("td", {}, fmt(m.ari_vs_classes, 3)));
    tr.appendChild(el("td", {}, fmt(m.ari_vs_final, 3)));
    tr.appendChild(el("td", { class: "l" }, m.clusters.map((k) => k.size + " " + k.majority + " " + pct(k.majority_share)).join(", ")));
    table.appendChild(tr);
  }
  body.appendChild(table);
  body.appendChild(el("p", {}, c.moved.length + " examples travel with another cluster than the one they settle in" +
    (c.moved.length ? " (trimmed-trajectory cluster ≠ final cluster):" : ".")));
  if (c.moved.length) {
    const moved = el("table");
    const mh = el("tr");
    for (const h of ["example", "label", "travels with", "settles with"]) mh.appendChild(el("th", { class: "l" }, h));
    moved.appendChild(mh);
    for (const m of c.moved) {
      const tr = el("tr");
      for (const v of [m.id === null ? "#" + m.index : m.id, m.label, m.travels_with, m.settles_with]) tr.appendChild(el("td", { class: "l" }, String(v)));
      moved.appendChild(tr);
    }
    body.appendChild(moved);
  }
  markDrawn(figure);
}

function drawEvidence() {
  const figure = fig("fig-evidence");
  const e = data.detector_evidence;
  if (!e) return;
  figure.hidden = false;
  const wrap = el("div", { class: "sweeps" });
  for (const s of e.sweeps) {
    const box = el("div");
    box.appendChild(el("h3", {}, s.detector + " detector"));
    box.appendChild(el("p", {}, s.fixed));
    const table = el("table");
    const head = el("tr");
    for (const h of ["threshold", "ρ dwell fraction", "ρ onset"]) head.appendChild(el("th", {}, h));
    table.appendChild(head);
    for (const row of s.rows) {
      const tr = el("tr");
      tr.appendChild(el("td", {}, String(+row.threshold.toPrecision(3))));
      tr.appendChild(el("td", {}, row.dwell_fraction_rho === null ? "–" : fmt(row.dwell_fraction_rho, 3)));
      tr.appendChild(el("td", {}, row.onset_rho === null ? "–" : fmt(row.onset_rho, 3)));
      table.appendChild(tr);
    }
    box.appendChild(table);
    wrap.appendChild(box);
  }
  figure.querySelector(".body").appendChild(wrap);
  markDrawn(figure);
}

function drawSkipped() {
  const figure = fig("fig-skipped");
  if (!data.skipped.length) return;
  figure.hidden = false;
  const list = el("ul");
  for (const s of data.skipped) list.appendChild(el("li", {}, "step " + s.step + ": " + s.reason + " (" + s.file + ")"));
  figure.querySelector(".body").appendChild(list);
  markDrawn(figure);
}

fig("meta").textContent = data.model_type + " · " + labels.length + " classes · " + steps.length + " checkpoints" +
  (steps.length ? " (steps " + steps[0] + "–" + steps[steps.length - 1] +
    (data.max_steps ? " of " + data.max_steps + " planned" : "") + ")" : "");

for (const draw of [drawRecommendations, drawMatrix, drawTrajectories, drawCloud, drawF1,
  drawSpeed, drawStraightness, drawSweeps, drawClustering, drawEvidence, drawSkipped]) {
  try { draw(); } catch (error) { console.error(draw.name + ": " + (error && error.stack || error)); }
}
