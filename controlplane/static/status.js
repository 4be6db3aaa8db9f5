// Sluice status page: polls the read-only JSON API and redraws. Never sends a token.
"use strict";
const REFRESH_MS = 3000;
const TERMINAL = { Succeeded: "ok", RolledBack: "bad", Failed: "bad" };
const PHASE = { ...TERMINAL, Progressing: "info", Promoting: "ok", RollingBack: "bad",
                Holding: "wait", Paused: "wait", Pending: "wait" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function num(x, digits = 3) {
  if (typeof x !== "number" || !isFinite(x)) return "–";
  return Math.abs(x) >= 1e4 ? x.toExponential(2) : String(Number(x.toPrecision(digits)));
}

// What each version measured (error rate, latency quantile), from the judge's details.
function values(m) {
  const d = m.details || {};
  const show = (c, b, f) => [d[c], d[b]].map((v) => (typeof v === "number" ? f(v) : "–")).join(" / ");
  if ("rate_candidate" in d) return show("rate_candidate", "rate_baseline", (v) => (100 * v).toFixed(2) + "%");
  if ("q_candidate_s" in d) return show("q_candidate_s", "q_baseline_s", (v) => (1000 * v).toFixed(0) + " ms");
  return "–";
}

// Evidence of harm against the rollback threshold: the e-value, or an anytime-valid p-value.
function evidence(m) {
  if (!m.alpha) return num(m.evalue);
  if (typeof m.evalue === "number") return `e=${num(m.evalue)} (rollback at ${num(1 / m.alpha)})`;
  return `p=${num(m.pvalue)} (rollback at ${num(m.alpha)})`;
}

// Seconds to a short human duration; null: no decision at the current effect and traffic.
function duration(s) {
  if (typeof s !== "number" || !isFinite(s)) return "not at this traffic";
  if (s < 90) return `~${Math.round(s)}s`;
  if (s < 5400) return `~${Math.round(s / 60)}m`;
  return `~${(s / 3600).toFixed(1)}h`;
}

function pill(text, kind) { return el("span", { class: "pill " + (kind || "") }, text); }

function bar(percent, declared) {
  const b = el("div", { class: "bar" + (declared ? " declared" : "") }, el("i"));
  b.firstChild.style.width = Math.max(0, Math.min(100, percent)) + "%";
  return b;
}

function table(head, rows, narrowHidden = []) {
  const hidden = (i) => (narrowHidden.includes(i) ? { class: "hide-narrow" } : {});
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, head.map((h, i) => el("th", hidden(i), h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", hidden(i), c)))))));
}

async function getJson(path) {
  // When the server requires a read token (--api-read-token-file), ask for it once;
  // it stays in this tab only (sessionStorage) and is only ever sent to this server.
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem("sluice-read-token");
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) {
    const given = window.prompt("This Sluice needs a read token to show its state:");
    if (given) sessionStorage.setItem("sluice-read-token", given.trim());
    throw new Error(path + ": a read token is required");
  }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function drawExperiments(list) {
  const box = document.getElementById("experiments");
  if (!list.length) { box.replaceChildren(el("p", { class: "muted" }, "No experiments.")); return; }
  box.replaceChildren(...list.map((e) => {
    const steps = e.steps || [];
    const step = steps.length ? `step ${e.step + 1}/${steps.length}` : "";
    const weights = el("div", { class: "weights" });
    for (const [v, w] of Object.entries(e.weights || {})) {
      weights.append(el("span", {}, v), bar(w), el("span", {}, num(w) + "%"));
    }
    const eta = e.eta || {};
    const etaOf = Object.fromEntries((eta.metrics || []).map((r) => [r.metric, r]));
    const metrics = ((e.judgment || {}).metrics || []).map((m) => {
      const iv = m.interval || [];
      const n = m.n || {};
      const r = etaOf[m.name];
      const when = !r ? "–" : el("span", r.warning ? { class: "FAIL", title: r.warning } : {},
                                 duration(r.decideInS) + (r.warning ? " ⚠" : ""));
      return [m.name, el("span", { class: m.verdict }, m.verdict), values(m), num(m.estimate),
              `${num(iv[0])} – ${num(iv[1])}`, evidence(m),
              `${num(n.candidate, 6)} / ${num(n.baseline, 6)}`, when];
    });
    const history = (e.decisions || []).slice(-8).reverse().map((d) =>
      el("li", {}, el("b", {}, `${d.from} → ${d.to}`), ` (step ${d.step + 1}, `,
         new Date(d.t * 1000).toLocaleTimeString(), "): ", d.reason));
    return el("div", { class: "card experiment", "data-name": e.name },
      el("h3", {}, e.name, pill(e.phase, PHASE[e.phase]), el("span", { class: "muted" },
        `${e.strategy} of ${e.candidate} against ${e.baseline} on ${e.service}`, step ? " · " + step : "")),
      weights,
      el("p", { class: "reason" }, el("b", {}, "Decision: "), e.reason || "–"),
      e.waitingFor ? el("p", { class: "muted" }, "waiting for: " + e.waitingFor) : null,
      eta.summary && !(e.phase in TERMINAL)
        ? el("p", { class: "eta" }, el("b", {}, "ETA: "), eta.summary) : null,
      metrics.length ? table(["metric", "verdict", `${e.candidate} / ${e.baseline}`, "ratio",
                              "interval", "evidence of harm", "n cand. / base.", "decides in"],
                             metrics, [3, 4, 6]) : null,
      history.length ? el("details", { open: "" }, el("summary", {}, "History"),
                          el("ol", { class: "history" }, history)) : null);
  }));
}

function drawServices(body) {
  const box = document.getElementById("services");
  const services = body.services || [];
  if (!services.length) { box.replaceChildren(el("p", { class: "muted" }, "No services.")); return; }
  box.replaceChildren(...services.map((s) => {
    const rows = Object.keys(s.weights).map((v) => {
      const endpoints = ((s.spec.versions || []).find((x) => x.name === v) || {}).endpoints || [];
      return [v, el("span", {}, num(s.declaredWeights[v]) + "% ", bar(s.declaredWeights[v], true)),
              el("span", {}, num(s.weights[v]) + "% ", bar(s.weights[v])),
              String(endpoints.length), s.envoy.clusters[v]];
    });
    return el("div", { class: "card service", "data-name": s.name },
      el("h3", {}, s.name, el("span", { class: "muted" }, "weights set by " + s.weightsSetBy)),
      table(["version", "declared", "effective", "endpoints", "Envoy cluster"], rows, [3, 4]));
  }));
}

function drawProxies(body) {
  const box = document.getElementById("proxies");
  const proxies = body.proxies || [];
  if (!proxies.length) { box.replaceChildren(el("p", { class: "muted" }, "No proxy connected.")); return; }
  box.replaceChildren(el("div", { class: "card" }, table(["proxy", "sync", "xDS", "types"],
    proxies.map((p) => [p.id, pill(p.synced ? "SYNCED" : "NOT SYNCED", p.synced ? "ok" : "wait"),
      p.variant, (p.types || []).map((t) => `${t.type.split(".").pop()}: ${t.status}`).join(", ")]),
    [3])));
}

async function refresh() {
  const health = document.getElementById("health");
  try {
    const [services, proxies, experiments] = await Promise.all([
      getJson("/api/v1/services"), getJson("/api/v1/proxies"), getJson("/api/v1/experiments")]);
    const detailed = await Promise.all((experiments.experiments || []).map((e) =>
      getJson("/api/v1/experiments/" + encodeURIComponent(e.name)).catch(() => e)));
    drawExperiments(detailed);
    drawServices(services);
    drawProxies(proxies);
    const valid = (services.sources || []).every((s) => s.valid);
    health.replaceWith(Object.assign(pill(valid ? "config valid" : "config errors",
                                          valid ? "ok" : "bad"), { id: "health" }));
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    health.replaceWith(Object.assign(pill("cannot reach Sluice", "bad"), { id: "health" }));
    document.getElementById("updated").textContent = String(err.message || err);
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
