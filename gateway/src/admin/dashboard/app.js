// canarygate dashboard: polls /dashboard/data every second and draws it with uPlot.
// Every figure that /metrics also exports is rendered with data-metric, data-labels and
// data-value attributes naming that series, so a test can compare the page with a scrape.
"use strict";

const POLL_MS = 1000;
const COLORS = { stable: "#2f6fdf", canary: "#e8832a" };
const VARIANTS = ["stable", "canary"];
const charts = new Map(); // id -> uPlot
let renders = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// A number cell that names its /metrics series.
function metric(text, name, labels, value, cls) {
  return el("td", { class: "num" + (cls ? " " + cls : ""), "data-metric": name, "data-labels": labels, "data-value": String(value) }, text);
}

function fmtInt(n) { return n == null ? "-" : Number(n).toLocaleString("en-US"); }
function fmtUs(us) {
  if (us == null) return "-";
  if (us >= 1e6) return (us / 1e6).toFixed(2) + " s";
  if (us >= 1e3) return (us / 1e3).toFixed(us >= 1e4 ? 1 : 2) + " ms";
  return us + " µs";
}
function fmtPct(x, digits) { return x == null ? "-" : (x * 100).toFixed(digits == null ? 2 : digits) + "%"; }
function esc(v) { return String(v).replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n"); }

// Creates (once) or updates a uPlot time-series chart.
// `yMin` is the least top of the y axis (so a flat zero line is not scaled up).
function timeChart(id, target, series, data, yFmt, yMin) {
  let u = charts.get(id);
  if (!u) {
    const width = Math.max(360, target.clientWidth || 420);
    u = new uPlot({
      width, height: 180,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, yMin || 1)] } },
      legend: { live: false },
      series: [{}].concat(series.map(s => ({ label: s.label, stroke: s.color, width: 1.5, dash: s.dash, spanGaps: true,
        value: (u, v) => v == null ? "-" : yFmt(v) }))),
      axes: [{}, { values: (u, vals) => vals.map(yFmt), size: 70 }],
    }, data, target);
    charts.set(id, u);
  } else {
    u.setData(data);
  }
  return u;
}

// Latency histograms of stable and canary side by side, as shares of each variant's
// requests per bucket.
function histogramChart(id, target, route) {
  const h = route.stable.latency_histogram;
  const labels = h.le.map(le => "≤" + fmtUs(Math.round(le * 1e6))).concat(["more"]);
  const xs = labels.map((_, i) => i);
  const share = v => {
    const c = route[v].latency_histogram.counts;
    const n = c.reduce((a, b) => a + b, 0);
    return c.map(x => n ? x / n : null);
  };
  const data = [xs, share("stable"), share("canary")];
  let u = charts.get(id);
  if (!u) {
    const bars = uPlot.paths && uPlot.paths.bars;
    u = new uPlot({
      width: Math.max(360, target.clientWidth || 420), height: 180,
      scales: { x: { time: false } },
      legend: { live: false },
      series: [{ value: (u, i) => labels[i] || "" }].concat(VARIANTS.map((v, k) => ({
        label: v, stroke: COLORS[v], fill: COLORS[v] + "88", width: 1,
        paths: bars ? bars({ size: [0.4, 40], align: k === 0 ? -1 : 1 }) : undefined,
        value: (u, x) => x == null ? "-" : fmtPct(x, 1),
      }))),
      axes: [{ values: (u, vals) => vals.map(i => labels[i] || ""), rotate: 0, size: 40 },
             { values: (u, vals) => vals.map(x => fmtPct(x, 0)), size: 50 }],
    }, data, target);
    charts.set(id, u);
  } else {
    u.setData(data);
  }
}

function routeCard(key) {
  let card = document.getElementById("route-" + key);
  if (card) return card;
  card = el("section", { class: "card", id: "route-" + key });
  card.innerHTML = `
    <h2 class="title"></h2>
    <div class="share"></div>
    <h3>Totals since start</h3><div class="totals"></div>
    <div class="charts">
      <div class="chart"><h4>Requests per second</h4><div class="c-rps"></div></div>
      <div class="chart"><h4>Error rate (5xx share)</h4><div class="c-err"></div></div>
      <div class="chart"><h4>Latency p50 / p99 per second</h4><div class="c-lat"></div></div>
      <div class="chart"><h4>Latency histogram (share of requests)</h4><div class="c-hist"></div></div>
    </div>
    <h3>Rollout</h3><div class="rollout"></div>
    <h3>Kill switch</h3><div class="killswitch"></div>
    <h3>Endpoints</h3><div class="endpoints"></div>`;
  document.getElementById("routes").append(card);
  return card;
}

function renderTotals(route) {
  const r = esc(route.route);
  const t = el("table", {}, el("tr", {}, ...["variant", "deployment", "requests", "2xx", "3xx", "4xx", "5xx", "upstream errors", "in flight", "p50", "p90", "p99"].map((h, i) => el("th", { class: i > 1 ? "num" : "" }, h))));
  for (const v of VARIANTS) {
    const s = route[v];
    const labels = `route="${r}",variant="${v}"`;
    const errs = Object.values(s.upstream_errors || {}).reduce((a, b) => a + b, 0);
    t.append(el("tr", { "data-variant": v },
      el("td", { class: v }, v), el("td", {}, s.deployment || "-"),
      metric(fmtInt(s.requests), "canarygate_requests_total", labels, s.requests),
      ...["2xx", "3xx", "4xx", "5xx"].map(c => metric(fmtInt(s.responses[c]), "canarygate_responses_total", `${labels},class="${c}"`, s.responses[c], c === "5xx" && s.responses[c] ? "bad" : "")),
      el("td", { class: "num" }, fmtInt(errs)),
      metric(fmtInt(s.in_flight), "canarygate_in_flight_requests", labels, s.in_flight),
      el("td", { class: "num" }, fmtUs(s.latency_us.p50)),
      el("td", { class: "num" }, fmtUs(s.latency_us.p90)),
      el("td", { class: "num" }, fmtUs(s.latency_us.p99))));
  }
  return t;
}

function renderShare(route) {
  const r = esc(route.route);
  const total = route.stable.requests + route.canary.requests;
  const observed = total ? route.canary.requests / total : null;
  const ratio = route.canary_percent / 100;
  const box = el("div", { class: "share" });
  const configured = el("span", { class: "big canary", "data-metric": "canarygate_canary_ratio", "data-labels": `route="${r}"`, "data-value": String(ratio) }, route.canary_percent + "%");
  box.append(el("span", {}, "canary share ", configured),
    el("span", {}, "observed ", el("b", {}, fmtPct(observed)), ` of ${fmtInt(total)} requests`));
  return box;
}

function renderRollout(route) {
  const ro = route.rollout;
  const r = esc(route.route);
  if (!ro || ro.state === "none") {
    return el("div", { class: "detail" }, "no rollout" + (ro && ro.file_plan ? " (plan in the file: " + ro.file_plan + ")" : ""));
  }
  const cls = ro.state === "promoted" ? "ok" : (ro.state === "rolled_back" || ro.state === "aborted") ? "bad" : "";
  const box = el("div", {});
  box.append(el("div", {},
    el("span", { class: "badge " + cls, "data-rollout-state": ro.state }, ro.state),
    " step ", el("b", { "data-metric": "canarygate_rollout_step", "data-labels": `route="${r}"`, "data-value": String(ro.step) }, String(ro.step)),
    ` of ${ro.steps.length} (${ro.steps.map(s => s + "%").join(" → ")}), deployment ${ro.deployment}, judge ${ro.judge}`,
    ro.reason ? el("span", { class: "detail" }, " — " + ro.reason) : "",
    ro.next_verdict_in_ms != null ? el("span", { class: "detail" }, ` — next verdict in ${(ro.next_verdict_in_ms / 1000).toFixed(1)} s`) : ""));
  box.append(el("div", { class: "detail" }, "plan: " + ro.plan));
  const t = el("table", {}, el("tr", {}, ...["step", "share", "verdict", "summary", "statistics"].map(h => el("th", {}, h))));
  for (const h of ro.history || []) {
    const vcls = h.verdict === "pass" ? "ok" : h.verdict === "fail" ? "bad" : "";
    t.append(el("tr", { "data-verdict": h.verdict },
      el("td", {}, String(h.step)), el("td", {}, h.percent + "%"),
      el("td", {}, el("span", { class: "badge " + vcls }, h.verdict)),
      el("td", { class: "detail" }, h.summary || ""),
      el("td", { class: "detail" }, describeDetail(h.detail))));
  }
  box.append(t);
  return box;
}

// The judge's statistics of one verdict (p-values, effect sizes, bounds), flattened.
function describeDetail(d) {
  if (d == null) return "";
  const out = [];
  const walk = (v, path) => {
    if (v == null) return;
    if (typeof v === "object" && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) walk(x, path ? path + "." + k : k);
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, path + "[" + i + "]"));
    } else {
      const shown = typeof v === "number" && !Number.isInteger(v) ? Number(v).toPrecision(3) : String(v);
      out.push(path + " " + shown);
    }
  };
  walk(d, "");
  return out.join(", ");
}

function renderKillSwitch(route) {
  const k = route.kill_switch;
  const r = esc(route.route);
  if (!k) return el("div", { class: "detail" }, "off");
  return el("div", {},
    el("span", { class: "badge " + (k.tripped ? "bad" : "ok"), "data-kill-switch": k.tripped ? "tripped" : "armed" }, k.tripped ? "TRIPPED" : "armed"),
    " trips ", el("b", { "data-metric": "canarygate_kill_switch_trips_total", "data-labels": `route="${r}"`, "data-value": String(k.trips) }, String(k.trips)),
    el("span", { class: "detail" }, ` — trips at ${k.threshold} failures in a window of ${k.window} per worker` + (k.last_trip ? "; last: " + k.last_trip : "")));
}

function renderEndpoints(route) {
  const list = route.endpoints || [];
  if (!list.length) return el("div", { class: "detail" }, "none");
  const t = el("table", {}, el("tr", {}, ...["variant", "deployment", "endpoint", "state", "check", "ejections", "in flight", "idle"].map(h => el("th", {}, h))));
  for (const e of list) {
    const up = e.state === "up";
    t.append(el("tr", { "data-endpoint": e.endpoint },
      el("td", { class: e.variant }, e.variant), el("td", {}, e.deployment),
      el("td", {}, e.endpoint),
      el("td", {}, el("span", { class: "badge " + (up ? "ok" : "bad"), "data-endpoint-state": e.state }, e.state + (e.panic ? " (PANIC)" : ""))),
      el("td", { class: "detail" }, e.check ? (e.check.last ? e.check.last.detail : e.check.kind) : "off"),
      el("td", { class: "num" }, fmtInt(e.ejections)),
      el("td", { class: "num" }, fmtInt(e.in_flight)),
      el("td", { class: "num" }, fmtInt(e.idle_connections))));
  }
  return t;
}

function renderKernel(d) {
  const k = d.kernel;
  const body = document.getElementById("kernel-body");
  body.replaceChildren();
  if (!k || !k.enabled) {
    body.append(el("div", { class: "detail", "data-kernel": "off" }, "kernel accounting is off"));
    return;
  }
  const t = el("table", {}, el("tr", {}, ...["variant", "connections", "bytes acked", "bytes received", "retransmits", "RTT p50", "RTT p99"].map((h, i) => el("th", { class: i ? "num" : "" }, h))));
  for (const v of VARIANTS) {
    const s = k[v];
    const labels = `side="upstream",variant="${v}"`;
    t.append(el("tr", { "data-kernel": v },
      el("td", { class: v }, v),
      metric(fmtInt(s.connections_opened), "canarygate_kernel_connections_opened_total", labels, s.connections_opened),
      metric(fmtInt(s.bytes_acked), "canarygate_kernel_bytes_acked_total", labels, s.bytes_acked),
      metric(fmtInt(s.bytes_received), "canarygate_kernel_bytes_received_total", labels, s.bytes_received),
      metric(fmtInt(s.retransmits), "canarygate_kernel_retransmits_total", labels, s.retransmits),
      el("td", { class: "num" }, fmtUs(s.rtt_us.p50)),
      el("td", { class: "num" }, fmtUs(s.rtt_us.p99))));
  }
  body.append(t);
  const ks = d.series.kernel;
  const ts = d.series.t.map(x => x / 1000);
  timeChart("kernel-rtt", document.getElementById("chart-kernel-rtt"), [
    { label: "stable p50", color: COLORS.stable }, { label: "stable p99", color: COLORS.stable, dash: [4, 3] },
    { label: "canary p50", color: COLORS.canary }, { label: "canary p99", color: COLORS.canary, dash: [4, 3] },
  ], [ts, ks.stable.rtt_p50_us, ks.stable.rtt_p99_us, ks.canary.rtt_p50_us, ks.canary.rtt_p99_us], fmtUs);
  timeChart("kernel-retrans", document.getElementById("chart-kernel-retrans"), VARIANTS.map(v => ({ label: v, color: COLORS[v] })),
    [ts, ks.stable.retransmits_per_s, ks.canary.retransmits_per_s], x => x.toFixed(1));
}

function render(d) {
  document.getElementById("version").textContent = d.version;
  document.getElementById("updated").textContent = new Date(d.now_unix_ms).toLocaleTimeString();
  document.getElementById("error").textContent = "";
  const ts = d.series.t.map(x => x / 1000);
  const seen = new Set();
  for (const route of d.routes) {
    const key = (route.stage + "-" + route.route).replace(/[^A-Za-z0-9_-]/g, "_");
    seen.add("route-" + key);
    const card = routeCard(key);
    card.querySelector(".title").textContent = `route ${route.route} (stage ${route.stage})`;
    card.querySelector(".share").replaceWith(Object.assign(renderShare(route), { className: "share" }));
    card.querySelector(".totals").replaceChildren(renderTotals(route));
    card.querySelector(".rollout").replaceChildren(renderRollout(route));
    card.querySelector(".killswitch").replaceChildren(renderKillSwitch(route));
    card.querySelector(".endpoints").replaceChildren(renderEndpoints(route));
    const s = d.series.routes.find(x => x.stage === route.stage && x.route === route.route);
    const col = (v, f) => s ? s[v][f] : [];
    const x = s ? ts : [];
    timeChart(key + "-rps", card.querySelector(".c-rps"), VARIANTS.map(v => ({ label: v, color: COLORS[v] })),
      [x, col("stable", "rps"), col("canary", "rps")], v => v.toFixed(0));
    timeChart(key + "-err", card.querySelector(".c-err"), VARIANTS.map(v => ({ label: v, color: COLORS[v] })),
      [x, col("stable", "error_rate"), col("canary", "error_rate")], v => fmtPct(v, 1), 0.01);
    timeChart(key + "-lat", card.querySelector(".c-lat"), [
      { label: "stable p50", color: COLORS.stable }, { label: "stable p99", color: COLORS.stable, dash: [4, 3] },
      { label: "canary p50", color: COLORS.canary }, { label: "canary p99", color: COLORS.canary, dash: [4, 3] },
    ], [x, col("stable", "p50_us"), col("stable", "p99_us"), col("canary", "p50_us"), col("canary", "p99_us")], fmtUs);
    histogramChart(key + "-hist", card.querySelector(".c-hist"), route);
  }
  for (const card of document.querySelectorAll("#routes > section")) {
    if (!seen.has(card.id)) card.remove();
  }
  renderKernel(d);
  renders += 1;
  document.body.dataset.renders = String(renders);
}

async function poll() {
  try {
    const r = await fetch("/dashboard/data", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    document.getElementById("error").textContent = "cannot read /dashboard/data: " + e.message;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
