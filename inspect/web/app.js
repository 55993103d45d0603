// exgrpo inspect: the page over the read-only JSON API of `exgrpo inspect serve`.
// State lives in the URL hash (#step=N&q=ID&t=ID&streams), so every view is a link.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let timeline = { points: [], k: 0, run: "", where: "" };
let index = 0;            // slider position: index into timeline.points
let stepTimer = null;     // debounce of the step fetch while the slider moves
let shownStep = null;     // step whose groups are on the page

// el builds an element; text children are text nodes (never parsed as HTML).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "href") e.setAttribute("href", v);
    else e.setAttribute(k, v);
  }
  for (const c of kids) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function showError(err) {
  const p = $("error");
  p.textContent = err ? String(err.message || err) : "";
  p.classList.toggle("hidden", !err);
}

// ---- hash state ----
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  return { step: h.has("step") ? Number(h.get("step")) : null, q: h.get("q"), t: h.get("t"), streams: h.has("streams") };
}
function writeHash(patch, push) {
  const h = new URLSearchParams(location.hash.slice(1));
  for (const [k, v] of Object.entries(patch)) {
    if (v === null || v === undefined || v === false) h.delete(k);
    else h.set(k, v === true ? "" : v);
  }
  const s = "#" + h.toString().replace(/=(&|$)/g, "$1");
  if (push) location.hash = s; else history.replaceState(null, "", s);
}
// link is an anchor that merges patch into the hash current when it is
// clicked (so opening a trajectory keeps the open question).
function link(patch, text, cls) {
  const h = new URLSearchParams();
  for (const [k, v] of Object.entries(patch)) h.set(k, v);
  const a = el("a", { href: "#" + h.toString(), class: cls || "" }, text);
  a.addEventListener("click", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.shiftKey) return; // a new tab gets the plain link
    ev.preventDefault();
    writeHash(patch, true);
  });
  return a;
}

// ---- charts ----
function histogram(p) {
  const box = $("hist");
  box.replaceChildren();
  const K = timeline.k;
  const W = 560, H = 220, L = 40, R = 10, T = 14, B = 34;
  let top = 1;
  for (const q of timeline.points) for (let k = 1; k < K; k++) top = Math.max(top, q.buckets[k] || 0);
  top = niceMax(top);
  const n = Math.max(1, K - 1), bw = (W - L - R) / n;
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - T - B) * (1 - i / 4);
    box.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" }));
    box.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, fmtInt(top * i / 4)));
  }
  for (let k = 1; k < K; k++) {
    const c = p ? p.buckets[k] || 0 : 0;
    const h = (H - T - B) * c / top;
    const x = L + (k - 1) * bw + bw * 0.15;
    box.append(svg("rect", { x, y: H - B - h, width: bw * 0.7, height: Math.max(h, 0.5), rx: 2, fill: bucketColor(k, K), "data-k": k }));
    box.append(svg("text", { x: x + bw * 0.35, y: H - B - h - 4, "text-anchor": "middle", class: "count", "data-k": k }, String(c)));
    box.append(svg("text", { x: x + bw * 0.35, y: H - B + 14, "text-anchor": "middle" }, "k=" + k));
  }
  box.append(svg("text", { x: L + (W - L - R) / 2, y: H - 4, "text-anchor": "middle", class: "title" },
    "questions per bucket (k of K=" + K + " rollouts correct)"));
}

function bucketColor(k, K) {
  // hard (few correct) warm, easy (most correct) cool
  const t = K > 2 ? (k - 1) / (K - 2) : 0.5;
  const hue = 20 + 190 * t;
  return `hsl(${hue}, 60%, 55%)`;
}

// niceMax is the histogram's top: four gridline steps of 1, 2 or 5 times a
// power of ten, so that the axis shows whole numbers.
function niceMax(x) {
  const raw = Math.max(1, x / 4);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return 4 * m * p;
  return 40 * p;
}
function fmtInt(x) { return Number.isInteger(x) ? String(x) : x.toFixed(1); }

function curve(id, key, label, color, fixedMax) {
  const box = $(id);
  box.replaceChildren();
  const pts = timeline.points;
  const W = 560, H = 150, L = 40, R = 10, T = 18, B = 22;
  let lo = 0, hi = fixedMax || 0;
  if (!fixedMax) for (const p of pts) hi = Math.max(hi, p[key]);
  if (hi <= lo) hi = lo + 1;
  const sx = (i) => L + (pts.length > 1 ? (W - L - R) * i / (pts.length - 1) : (W - L - R) / 2);
  const sy = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  for (let i = 0; i <= 2; i++) {
    const v = lo + (hi - lo) * i / 2, y = sy(v);
    box.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" }));
    box.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, v.toFixed(2)));
  }
  box.append(svg("text", { x: L, y: 12, class: "title" }, label));
  if (pts.length) {
    box.append(svg("text", { x: L, y: H - 6 }, "step " + pts[0].step));
    box.append(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, "step " + pts[pts.length - 1].step));
    const d = pts.map((p, i) => (i ? "L" : "M") + sx(i).toFixed(1) + " " + sy(p[key]).toFixed(1)).join(" ");
    box.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    const x = sx(index);
    box.append(svg("line", { x1: x, x2: x, y1: T, y2: H - B, class: "marker" }));
    box.append(svg("circle", { cx: x, cy: sy(pts[index][key]), r: 4, fill: color }));
    box.append(svg("text", { x: Math.min(x + 6, W - 60), y: T + 10, class: "title", "data-value": key },
      pts[index][key].toFixed(3)));
    const hit = svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "hit" });
    hit.addEventListener("click", (ev) => {
      const r = box.getBoundingClientRect();
      const vx = (ev.clientX - r.left) * W / r.width;
      const i = pts.length > 1 ? Math.round((vx - L) / (W - L - R) * (pts.length - 1)) : 0;
      setIndex(Math.max(0, Math.min(pts.length - 1, i)), true);
    });
    box.append(hit);
  }
}

// ---- pool at the slider's step ----
function setIndex(i, fromUser) {
  index = i;
  $("slider").value = String(i);
  renderPoint();
  if (fromUser) {
    writeHash({ step: timeline.points[i] ? timeline.points[i].step : null }, false);
    clearTimeout(stepTimer);
    stepTimer = setTimeout(loadStep, 120);
  }
}

function renderPoint() {
  const p = timeline.points[index];
  $("step-label").textContent = p ? String(p.step) : "-";
  $("stat-pool").textContent = p ? p.pool : "-";
  $("stat-retired").textContent = p ? p.retired : "-";
  $("stat-traj").textContent = p ? p.trajectories : "-";
  $("stat-replayed").textContent = p ? p.replayed + " of " + p.groups : "-";
  $("stat-pass1").textContent = p ? p.pass1.toFixed(3) : "-";
  const m = $("mixed");
  m.textContent = p ? (p.mixed ? "mixed mode" : "on-policy (before the delayed start)") : "";
  m.classList.toggle("on", !!(p && p.mixed));
  histogram(p);
  curve("reward", "pass1", "batch pass@1 (reward)", "#2f6fdf", 1);
  curve("entropy", "entropy", "mean token entropy", "#d9822b", 0);
}

// ---- step groups ----
async function loadStep() {
  const p = timeline.points[index];
  if (!p) return;
  if (shownStep === p.step) return;
  try {
    const s = await api("api/step/" + p.step);
    if (timeline.points[index] && timeline.points[index].step !== s.step) return; // moved on meanwhile
    shownStep = s.step;
    renderStep(s);
    showError(null);
  } catch (e) { showError(e); }
}

function renderStep(s) {
  $("step-title").textContent = "Step " + s.step;
  $("step-summary").textContent = `policy v${s.version} \u2192 v${s.new_version} \u00b7 pass@1 ${s.pass1.toFixed(3)} \u00b7 entropy ${s.entropy.toFixed(3)} \u00b7 loss ${s.loss.toPrecision(4)} \u00b7 grad norm ${s.grad_norm.toPrecision(3)} \u00b7 ${s.mixed ? "mixed mode" : "on-policy"}${s.skipped ? " \u00b7 update skipped" : ""} \u00b7 ${s.step_ms.toFixed(0)} ms`;
  const tb = $("groups").tBodies[0];
  tb.replaceChildren();
  for (const g of s.groups) {
    const chips = el("td", { class: "rollouts" });
    for (const r of g.rollouts) {
      const a = link({ t: r.id }, `${r.reward} ${r.advantage >= 0 ? "+" : ""}${r.advantage.toFixed(2)}`,
        "chip r" + (r.reward > 0 ? 1 : 0) + (r.replayed ? " rep" : ""));
      a.title = r.id + (r.replayed ? " (replayed)" : "") + (r.reason ? " \u00b7 " + r.reason : "");
      chips.append(a);
    }
    const reasons = [...new Set(g.rollouts.map((r) => r.reason).filter(Boolean))];
    tb.append(el("tr", { "data-q": g.question },
      el("td", {}, link({ q: g.question }, g.question, "qlink")),
      el("td", {}, el("span", { class: "badge " + (g.replayed ? "replayed" : "fresh") }, g.replayed ? "replayed" : "fresh")),
      el("td", { class: "k" }, g.k + "/" + g.size),
      chips,
      el("td", {}, reasons.join(", "))));
    if (g.candidates && g.candidates.length) {
      const td = el("td", { colspan: 5 }, "E7 candidates by entropy: ");
      g.candidates.forEach((c, i) => {
        if (i) td.append(", ");
        td.append(link({ t: c.id }, c.id, "cand" + (c.chosen ? " chosen" : "")), " " + c.entropy.toFixed(3));
      });
      tb.append(el("tr", { class: "cands" }, td));
    }
  }
}

// ---- question ----
async function showQuestion(id) {
  const card = $("question-card");
  if (!id) { card.classList.add("hidden"); return; }
  try {
    const q = await api("api/question?id=" + encodeURIComponent(id));
    $("q-title").textContent = "Question " + q.id;
    let state = "not in the pool (no mixed-mode step named it)";
    if (q.retired) state = "retired (solved K of K)";
    else if (q.bucket > 0) state = "in bucket " + q.bucket;
    else if (q.in_pool) state = "known, in no bucket";
    $("q-state").textContent = `${state} \u00b7 latest k ${q.latest_k} \u00b7 ${q.stored.length} stored trajectories`;
    const tb = $("q-steps").tBodies[0];
    tb.replaceChildren();
    for (const s of q.steps) {
      let ev = "";
      if (s.retired) ev = "retired"; else if (s.was_retired) ev = "already retired"; else if (s.from !== s.to) ev = "moved";
      const bk = s.mixed ? `${s.from || "none"} \u2192 ${s.to || "none"}` : "-";
      const cur = timeline.points[index];
      tb.append(el("tr", { class: cur && cur.step === s.step ? "sel" : "" },
        el("td", {}, link({ step: s.step }, String(s.step))),
        el("td", {}, s.mixed ? "mixed" : "on-policy"),
        el("td", {}, s.replayed ? "replayed" : "fresh"),
        el("td", { class: "k" }, s.k + "/" + s.size),
        el("td", {}, bk), el("td", {}, "+" + s.added), el("td", {}, ev)));
    }
    const st = $("q-stored").tBodies[0];
    st.replaceChildren();
    const ck = !!q.checkpoint;
    for (const c of document.querySelectorAll("#q-stored .ck")) c.classList.toggle("hidden", !ck);
    for (const t of q.stored) {
      st.append(el("tr", {},
        el("td", {}, link({ t: t.id }, t.id)),
        el("td", {}, String(t.step)), el("td", {}, "v" + t.version), el("td", {}, String(t.tokens)),
        el("td", {}, t.mean_logprob.toFixed(3)),
        ck ? el("td", {}, t.entropy !== undefined ? t.entropy.toFixed(3) : "-") : null,
        el("td", { class: "text", title: t.text }, t.text)));
    }
    card.classList.remove("hidden");
    showError(null);
  } catch (e) { card.classList.add("hidden"); showError(e); }
}

// ---- trajectory ----
async function showTrajectory(id) {
  const card = $("traj-card");
  if (!id) { card.classList.add("hidden"); return; }
  try {
    const t = await api("api/trajectory?id=" + encodeURIComponent(id));
    $("t-title").textContent = "Trajectory " + t.id;
    const dl = $("t-stats");
    dl.replaceChildren();
    const add = (k, v) => dl.append(el("div", {}, el("dt", {}, k), el("dd", {}, v)));
    add("question", link({ q: t.question }, t.question));
    add("step", link({ step: t.step }, String(t.step)));
    add("policy", "v" + t.version);
    add("reward", String(t.reward));
    add("verdict", t.reason + (t.extracted ? " (" + t.extracted + ")" : ""));
    add("gold", t.answer);
    add("tokens", t.tokens + " (" + t.finish + ")");
    add("mean logp", t.mean_logprob.toFixed(3));
    add("mean entropy", t.mean_entropy.toFixed(3));
    $("t-text").textContent = t.text;
    card.classList.remove("hidden");
    showError(null);
  } catch (e) { card.classList.add("hidden"); showError(e); }
}

// ---- streams ----
function ago(ms, now) {
  if (!ms) return "-";
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 60) return s.toFixed(0) + "s ago";
  if (s < 3600) return (s / 60).toFixed(0) + "m ago";
  return (s / 3600).toFixed(1) + "h ago";
}
function bytes(b) {
  if (b >= 1 << 30) return (b / (1 << 30)).toFixed(1) + " GiB";
  if (b >= 1 << 20) return (b / (1 << 20)).toFixed(1) + " MiB";
  if (b >= 1 << 10) return (b / (1 << 10)).toFixed(1) + " KiB";
  return b + " B";
}
async function showStreams(on) {
  const card = $("streams-card");
  if (!on) { card.classList.add("hidden"); return; }
  try {
    const v = await api("api/streams");
    const sb = $("streams").tBodies[0], cb = $("consumers").tBodies[0], db = $("dead").tBodies[0];
    sb.replaceChildren(); cb.replaceChildren(); db.replaceChildren();
    for (const s of v.streams) {
      sb.append(el("tr", {}, el("td", { title: s.name }, s.kind), el("td", {}, s.exists ? s.messages : "-"),
        el("td", {}, s.exists ? bytes(s.bytes) : "-"), el("td", {}, s.exists ? s.first_seq + ".." + s.last_seq : "-"),
        el("td", {}, ago(s.last_unix_ms, v.unix_ms))));
      for (const c of s.consumers) {
        cb.append(el("tr", {}, el("td", {}, s.kind), el("td", {}, c.name), el("td", {}, c.pending),
          el("td", {}, c.ack_pending), el("td", {}, c.redelivered), el("td", {}, c.waiting)));
      }
    }
    for (const d of v.dead) {
      db.append(el("tr", {}, el("td", {}, d.seq), el("td", {}, d.stream + " #" + d.orig_seq), el("td", {}, d.role),
        el("td", {}, d.deliveries), el("td", {}, d.reason)));
    }
    if (!v.dead.length) db.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no entries")));
    card.classList.remove("hidden");
  } catch (e) { card.classList.add("hidden"); showError(e); }
}

// ---- wiring ----
function indexOfStep(step) {
  const i = timeline.points.findIndex((p) => p.step === step && !p.skipped);
  return i;
}

async function loadTimeline() {
  const atEnd = index >= timeline.points.length - 1;
  const t = await api("api/timeline");
  const grew = t.points.length !== timeline.points.length;
  timeline = t;
  $("run").textContent = `run ${t.run} \u00b7 ${t.where} \u00b7 K=${t.k} \u00b7 ${t.points.length} steps`;
  const sl = $("slider");
  sl.max = String(Math.max(0, t.points.length - 1));
  return { grew, atEnd };
}

async function applyHash() {
  const h = readHash();
  if (h.step !== null) {
    const i = indexOfStep(h.step);
    if (i >= 0 && i !== index) setIndex(i, false);
  }
  await Promise.all([loadStep(), showQuestion(h.q), showTrajectory(h.t), showStreams(h.streams)]);
}

async function main() {
  $("slider").addEventListener("input", (e) => setIndex(Number(e.target.value), true));
  $("prev").addEventListener("click", () => setIndex(Math.max(0, index - 1), true));
  $("next").addEventListener("click", () => setIndex(Math.min(timeline.points.length - 1, index + 1), true));
  $("streams-link").addEventListener("click", (e) => { e.preventDefault(); writeHash({ streams: true }, true); });
  for (const b of document.querySelectorAll("button.close")) {
    b.addEventListener("click", () => writeHash({ [b.dataset.close]: null }, true));
  }
  window.addEventListener("hashchange", applyHash);
  try {
    await loadTimeline();
    const h = readHash();
    let i = timeline.points.length - 1;
    if (h.step !== null && indexOfStep(h.step) >= 0) i = indexOfStep(h.step);
    setIndex(Math.max(0, i), false);
    await applyHash();
    document.body.dataset.ready = "1";
  } catch (e) { showError(e); }
  // Live runs grow: follow the newest step while the slider is at the end.
  setInterval(async () => {
    try {
      const { grew, atEnd } = await loadTimeline();
      if (grew && atEnd) setIndex(timeline.points.length - 1, true);
      else if (grew) renderPoint();
    } catch (e) { /* the next poll retries */ }
  }, 5000);
}

main();
