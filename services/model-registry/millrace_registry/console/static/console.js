// The Millrace operator console: reads the registry's API and draws with uPlot.
// Everything the page shows comes from the registry it is served by; nothing loads from elsewhere.
"use strict";

const API = new URL("../", location.href);
const $ = (selector) => document.querySelector(selector);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
const charts = {};
const COMPACT = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 3 });

// -- talking to the registry ---------------------------------------------------------------

function token() { return $("#token").value.trim(); }

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, API), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data;
  try { data = JSON.parse(text); } catch { data = text; }
  return { status: response.status, ok: response.ok, data };
}

async function read(path) {
  const answer = await call("GET", path);
  if (!answer.ok) throw new Error(`${path}: ${answer.status} ${JSON.stringify(answer.data)}`);
  return answer.data;
}

// -- small DOM helpers ----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

const when = (seconds) => new Date(seconds * 1000).toLocaleString();
const fixed = (value, digits = 4) => (value === null || value === undefined ? "" : Number(value).toFixed(digits));

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// -- charts ---------------------------------------------------------------------------------

// lines: [{label, points: [[t, v]], dots?: true}]; marks: alias moves drawn as vertical lines.
function draw(id, lines, marks = [], range = null) {
  const box = $(`#${id}`);
  const usable = lines.filter((line) => line.points.length);
  if (!usable.length) {
    charts[id]?.destroy(); delete charts[id];
    box.replaceChildren(el("p", { class: "muted" }, "no points yet"));
    return;
  }
  const data = uPlot.join(usable.map((line) => [line.points.map((p) => p[0]), line.points.map((p) => p[1])]));
  const series = [{}, ...usable.map((line, i) => ({
    label: line.label,
    stroke: line.color || PALETTE[i % PALETTE.length],
    width: 2,
    spanGaps: true,
    ...(line.dots ? { paths: () => null, points: { show: true, size: 8 } } : { points: { show: false } }),
  }))];
  const options = {
    width: Math.max(420, Math.min(720, (window.innerWidth - 120) / 2)),
    height: 260,
    series,
    scales: { x: { time: true, ...(range ? { range: () => range } : {}) } },
    axes: [{}, { size: 60, values: (u, ticks) => ticks.map((t) => COMPACT.format(t)) }],
    hooks: { draw: [(u) => drawMarks(u, marks)] },
  };
  charts[id]?.destroy();
  box.replaceChildren();
  charts[id] = new uPlot(options, data, box);
}

function drawMarks(u, marks) {
  const ctx = u.ctx;
  const ratio = window.devicePixelRatio || 1;
  ctx.save();
  ctx.font = `${11 * ratio}px sans-serif`;
  for (const mark of marks) {
    const x = u.valToPos(mark.at, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.strokeStyle = ctx.fillStyle = mark.guardrail ? "#d62728" : "#777";
    ctx.lineWidth = (mark.guardrail ? 3 : 1) * ratio;
    ctx.setLineDash(mark.guardrail ? [] : [4 * ratio, 4 * ratio]);
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.fillText(mark.label, x + 3 * ratio, u.bbox.top + 12 * ratio);
  }
  ctx.restore();
}

// -- the page's parts -----------------------------------------------------------------------

function seriesNamed(all, name) { return all.filter((s) => s.name === name); }
// The newest versions only: a long-lived model has hundreds, and the newest tell the story.
const VERSIONS_DRAWN = 6;

function byVersion(all, name, prefix) {
  return seriesNamed(all, name)
    .sort((a, b) => Number(a.labels.version) - Number(b.labels.version))
    .slice(-VERSIONS_DRAWN)
    .map((s) => ({ label: `${prefix} v${s.labels.version}`, points: s.points }));
}
function one(all, name, label, color) {
  const found = seriesNamed(all, name)[0];
  return { label, color, points: found ? found.points : [] };
}
function latest(all, name) {
  const found = seriesNamed(all, name)[0];
  return found && found.points.length ? found.points[found.points.length - 1][1] : null;
}

function moveMarks(moves) {
  return moves.map((m) => {
    const guardrail = m.reason.startsWith("guardrail");
    const back = guardrail || m.kind === "rollback";
    return { at: m.at, guardrail, label: `${back ? "↩" : "→"}v${m.to_version}${guardrail ? " guardrail" : ""}` };
  });
}

// The window shown: the chosen hours, or less when the data starts later (a young stack).
function windowOf(hours, times) {
  const now = Date.now() / 1000;
  const first = times.reduce((low, t) => (t >= now - hours * 3600 && t < low ? t : low), now - 60);
  return [first - 0.02 * (now - first), now];
}

function timesOf(all) { return all.flatMap((s) => s.points.map((p) => p[0])); }

function renderCurve(all, versions, moves, hours) {
  const range = windowOf(hours, [...timesOf(all), ...versions.map((v) => v.created_at), ...moves.map((m) => m.at)]);
  const published = (metric) => ({
    label: `published (prequential ${metric.replace("_", "-")})`,
    dots: true,
    color: "#000",
    points: versions.filter((v) => v.metadata?.metrics?.prequential?.[metric] != null)
      .map((v) => [v.created_at, v.metadata.metrics.prequential[metric]]).sort((a, b) => a[0] - b[0]),
  });
  const marks = moveMarks(moves);
  draw("curve-loss", [
    one(all, "trainer.rolling_log_loss", "trainer rolling log-loss", "#000"),
    ...byVersion(all, "predictor.live_log_loss", "live log-loss"),
    published("log_loss"),
  ], marks, range);
  draw("curve-quality", [
    one(all, "trainer.rolling_auc", "trainer rolling AUC", "#000"),
    ...byVersion(all, "predictor.live_accuracy", "live accuracy"),
    published("auc"),
  ], marks, range);
  fill($("#moves"), moves.map((m) => el("li", { class: m.reason.startsWith("guardrail") ? "guardrail" : "" },
    `${when(m.at)} — ${m.alias}: v${m.from_version ?? "∅"} → v${m.to_version} `,
    el("span", { class: "muted" }, `(${m.kind} by ${m.actor}) `), m.reason || "")));
}

function renderVersions(model, versions, aliases) {
  const pointing = {};
  for (const a of aliases) (pointing[a.version] ||= []).push(a.alias);
  fill($("#versions tbody"), versions.map((v) => {
    const lineage = v.metadata?.lineage || {};
    // The baseline shows its own fit (labelled): scored prequentially it was still untrained.
    const fit = v.metadata?.metrics?.baseline_fit;
    const scores = (fit ? fit.training : v.metadata?.metrics?.prequential) || {};
    const held = fit?.held_out;
    const fitNote = held ? `${fit.what}; held out, the newest ${held.fraction * 100}%: log-loss ` +
      `${fixed(held.log_loss)}, AUC ${fixed(held.auc)} (${held.samples} samples)` : fit?.what || "";
    const suffix = fit ? " (fit)" : "";
    const learner = lineage.learner || {};
    const config = Object.entries(learner).filter(([k]) => k !== "kind").map(([k, x]) => `${k}=${JSON.stringify(x)}`).join(" ");
    const offsets = Object.entries(lineage.input_offsets || {}).map(([p, [a, b]]) => `${p}: ${a}–${b}`).join("; ");
    const promote = el("button", { class: "promote", "data-version": v.version }, "promote");
    promote.addEventListener("click", () => act("POST", `models/${model}/versions/${v.version}/promote`,
      { alias: "production", reason: "promoted from the console" }));
    return el("tr", { "data-version": v.version },
      el("td", { class: "num" }, v.version), el("td", {}, when(v.created_at)),
      el("td", {}, ...(pointing[v.version] || []).map((a) => el("span", { class: "alias" }, a))),
      el("td", { class: "num" }, lineage.parent ?? ""), el("td", {}, el("code", { class: "small", title: lineage.published_because ? `published by ${lineage.published_because}` : "" }, offsets)),
      el("td", {}, el("code", { class: "small", title: lineage.feature_schema || "" }, (lineage.feature_schema || "").slice(0, 12))),
      el("td", {}, el("code", { class: "small", title: config }, learner.kind ?? "")), el("td", {}, lineage.code_version ?? ""),
      el("td", { class: "num", title: fitNote }, fixed(scores.log_loss) + suffix),
      el("td", { class: "num", title: fitNote }, fixed(scores.auc) + suffix),
      el("td", { class: "num" }, scores.samples ?? ""),
      el("td", {}, el("code", { class: "small" }, JSON.stringify(v.metadata?.tags || {}))),
      el("td", {}, promote));
  }));
}

function renderHealth(all, targets, hours) {
  const range = windowOf(hours, timesOf(all));
  draw("throughput", [one(all, "featurizer.events_per_s", "featurizer events/s"),
    one(all, "trainer.samples_per_s", "trainer samples/s")], [], range);
  draw("lag", [one(all, "featurizer.lag_s", "event-time lag (s)")], [], range);
  draw("requests", byVersion(all, "predictor.requests_per_s", "requests/s"), [], range);
  draw("p99", byVersion(all, "predictor.p99_ms", "p99 ms"), [], range);
  const watermark = latest(all, "trainer.watermark_ms");
  const rows = [
    ["featurizer events/s", fixed(latest(all, "featurizer.events_per_s"), 1)],
    ["featurizer lag (s)", fixed(latest(all, "featurizer.lag_s"), 1)],
    ["trainer samples/s", fixed(latest(all, "trainer.samples_per_s"), 1)],
    ["trainer watermark", watermark ? new Date(watermark).toISOString() : ""],
    ["predictor serving version", latest(all, "predictor.serving_version") ?? ""],
  ];
  fill($("#summary tbody"), rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v))));
  fill($("#dead-letters tbody"), seriesNamed(all, "featurizer.dead_letters").map((s) =>
    el("tr", {}, el("td", {}, s.labels.kind), el("td", { class: "num" }, s.points[s.points.length - 1][1]))));
  fill($("#targets tbody"), targets.targets.map((t) => {
    const refused = Object.entries(t.detail?.refused || {}).map(([v, why]) => `refuses v${v}: ${why}`);
    const serving = t.detail?.version ? [`serves v${t.detail.version}`] : [];
    return el("tr", { "data-role": t.role },
      el("td", {}, t.role), el("td", {}, t.url),
      el("td", { class: t.up ? "up" : "down" }, t.up ? "up" : "down"), el("td", {}, when(t.at)),
      el("td", {}, [...serving, ...refused, t.error].filter(Boolean).join("; ")));
  }));
}

// -- actions --------------------------------------------------------------------------------

async function act(method, path, body) {
  const answer = await call(method, path, body);
  const box = $("#answer");
  box.className = answer.ok ? "ok" : "refused";
  box.textContent = `${method} /${path} → ${answer.status}\n${JSON.stringify(answer.data, null, 2)}`;
  await refresh();
}

function formValues(form) {
  const values = Object.fromEntries(new FormData(form).entries());
  const number = (x) => (x === "" || x === undefined ? null : Number(x));
  return { values, number };
}

$("#rollback-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const { values, number } = formValues(event.target);
  act("POST", `models/${$("#model").value}/rollback`,
    { alias: values.alias, to_version: number(values.to_version), reason: values.reason || "rollback from the console" });
});

$("#cas-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const { values, number } = formValues(event.target);
  act("PUT", `models/${$("#model").value}/aliases/${values.alias}`,
    { version: number(values.version), expected_version: number(values.expected_version), reason: values.reason || "set from the console" });
});

// -- refreshing -----------------------------------------------------------------------------

async function refresh() {
  try {
    const { models } = await read("models");
    const select = $("#model");
    if (select.options.length !== models.length) {
      const chosen = select.value || new URLSearchParams(location.search).get("model") || models[0];
      select.replaceChildren(...models.map((m) => el("option", { value: m }, m)));
      if (chosen) select.value = chosen;
    }
    const model = select.value;
    const hours = Number($("#hours").value);
    const [series, targets] = await Promise.all([read(`console/series?hours=${hours}`), read("console/targets")]);
    if (model) {
      const [versions, aliases, history] = await Promise.all([
        read(`models/${model}/versions?limit=200`), read(`models/${model}/aliases`),
        read(`models/${model}/aliases/production/history?limit=200`).catch(() => ({ items: [] })),
      ]);
      renderVersions(model, versions.items, aliases.items);
      renderCurve(series.series, versions.items, history.items, hours);
    }
    renderHealth(series.series, targets, hours);
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    $("#updated").textContent = `could not read the registry: ${error.message}`;
  }
}

$("#token").value = sessionStorage.getItem("millrace-token") || "";
$("#token").addEventListener("change", () => sessionStorage.setItem("millrace-token", token()));
$("#model").addEventListener("change", refresh);
$("#hours").addEventListener("change", refresh);
refresh();
setInterval(refresh, 10000);
