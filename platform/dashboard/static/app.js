// The dashboard's script: /status lists the services and instances (the
// registry), /api/ is the API gateway (endpoints and calls), /stats each
// service's and each call's success, rate and latency over the last
// minute, /tap a service's requests live, /traces the traces the control
// plane keeps. Everything a service, a response or a
// span says is written as text, never as markup.
"use strict";

const $ = (sel) => document.querySelector(sel);
let status = { services: [] };
let selected = null; // {name, namespace}
// The last minute's figures: by service ("name.namespace"), and the calls.
let stats = { services: {}, edges: [] };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function showError(msg) { $("#error").textContent = msg || ""; }

async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({ detail: resp.statusText }));
  if (!resp.ok) throw new Error(body.detail || resp.statusText);
  return body;
}

// The gateway's path of a service: /name for the default namespace the
// gateway was given, /name.namespace otherwise — as GET /api/ lists them.
let gatewayPaths = {};

// load reads the services and their figures and shows them again; a
// refresh of its own (auto) leaves the open service's endpoint forms as
// they are — what the user typed, the last answer.
async function load(auto) {
  showError("");
  try {
    status = await getJSON("status");
    const index = await getJSON("api/");
    gatewayPaths = {};
    for (const s of index.services || []) gatewayPaths[s.name + "." + s.namespace] = s.path;
  } catch (e) {
    showError("loading: " + e.message);
    return;
  }
  try {
    const st = await getJSON("stats?methods=1");
    stats = { services: {}, edges: st.edges || [] };
    for (const s of st.services || []) stats.services[s.service] = s;
  } catch (e) {
    stats = { services: {}, edges: [] }; // the figures are extra: the rest shows without them
  }
  const nsSel = $("#namespace");
  const current = nsSel.value;
  const namespaces = [...new Set((status.services || []).map((s) => s.namespace))].sort();
  nsSel.replaceChildren(el("option", "all"));
  nsSel.firstChild.value = "";
  for (const ns of namespaces) {
    const o = el("option", ns);
    o.value = ns;
    nsSel.appendChild(o);
  }
  nsSel.value = namespaces.includes(current) ? current : "";
  renderServices();
  if (selected && $("#traces").hidden) {
    if (auto === true) renderFigures();
    else renderService();
  }
}

// renderExternals lists the services outside the mesh of the namespace
// shown (meshctl external): hidden when there are none.
function renderExternals(ns) {
  const list = (status.externals || []).filter((e) => !ns || (e.namespace || "default") === ns)
    .sort((a, b) => ((a.namespace || "") + a.name).localeCompare((b.namespace || "") + b.name));
  const body = $("#externals tbody");
  body.replaceChildren();
  for (const e of list) {
    const port = e.port && e.port !== 443 ? ":" + e.port : "";
    body.appendChild(el("tr"));
    body.lastChild.append(el("td", e.name), el("td", e.namespace || "default"), el("td", "https://" + e.host + port));
  }
  $("#externals").hidden = list.length === 0;
}

function renderServices() {
  const ns = $("#namespace").value;
  renderExternals(ns);
  const body = $("#services tbody");
  body.replaceChildren();
  const list = (status.services || []).filter((s) => !ns || s.namespace === ns)
    .sort((a, b) => (a.namespace + a.name).localeCompare(b.namespace + b.name));
  for (const s of list) {
    const tr = el("tr");
    const instances = s.instances || [];
    const passing = instances.filter((i) => i.health === "passing").length;
    tr.append(el("td", s.name), el("td", s.namespace),
      el("td", passing + "/" + instances.length, passing === instances.length && passing > 0 ? "passing" : "critical"),
      el("td", [...new Set(instances.map((i) => i.version).filter(Boolean))].join(", ")));
    const st = stats.services[s.name + "." + s.namespace];
    const t = trafficCells(st && st.traffic);
    tr.append(el("td", t.success, t.failing ? "critical" : ""), el("td", t.rps), el("td", t.p99));
    if (selected && selected.name === s.name && selected.namespace === s.namespace) tr.classList.add("selected");
    tr.addEventListener("click", () => {
      if (!selected || selected.name !== s.name || selected.namespace !== s.namespace) {
        stopTap("");
        $("#tap-list tbody").replaceChildren();
        $("#policy-note").textContent = "";
        $("#split-note").textContent = "";
        $("#rollout-note").textContent = "";
      }
      selected = { name: s.name, namespace: s.namespace };
      $("#traces").hidden = true; $("#health").hidden = true; renderServices(); renderService();
    });
    body.appendChild(tr);
  }
}

// renderFigures shows the open service's instances, calls and methods.
function renderFigures() {
  const s = (status.services || []).find((x) => x.name === selected.name && x.namespace === selected.namespace);
  const body = $("#instances tbody");
  body.replaceChildren();
  for (const i of (s && s.instances) || []) {
    const tr = el("tr");
    tr.append(el("td", i.id), el("td", i.address + ":" + (i.port || "")), el("td", i.quicPort || ""),
      el("td", i.kind || ""), el("td", i.protocol || ""), el("td", i.version || ""), el("td", i.health || "", i.health));
    body.appendChild(tr);
  }
  renderCalls(selected.name + "." + selected.namespace);
  renderMethods(selected.name + "." + selected.namespace);
  renderVersions(selected.name + "." + selected.namespace);
  renderPolicy(s);
  renderSplit();
}

// renderSplit shows the open service's split between its versions
// (meshctl split), if it has one.
function renderSplit() {
  const sp = (status.splits || []).find((x) => x.service === selected.name && (x.namespace || "default") === selected.namespace);
  $("#split-now").textContent = sp ? (sp.versions || []).map((v) => v.version + " " + (v.weight || 0) + "%").join(" · ") + (sp.header ? " (" + sp.header + " picks one)" : "") : "none (every instance alike)";
  $("#split-clear").hidden = !sp;
  // Its rollout (meshctl rollout), in progress or ended.
  const r = sp && sp.rollout;
  const progressing = r && r.state === "progressing";
  $("#rollout-now").textContent = !r ? "none" : r.from + " → " + r.to + ": " + r.state +
    (progressing ? ", step " + ((r.step || 0) + 1) + " of " + (r.steps || []).length : "") + (r.message ? " — " + r.message : "") +
    (r.retire && !r.retired ? " (the version that loses is stopped 30 s after the end)" : "");
  $("#rollout-abort").hidden = !progressing;
}

// changeRollout starts ({to}) or aborts ({abort: true}) the open service's
// rollout, then shows the listing again.
function changeRollout(change) {
  return postChange("rollout", change, $("#rollout-note"), change.abort ? "aborted: all traffic back" : "rollout started: the control plane takes it from here");
}

// changeSplit sets ({versions, header}) or clears ({clear: true}) the open
// service's split, then shows the listing again.
function changeSplit(change) {
  return postChange("split", change, $("#split-note"), change.clear ? "cleared" : "split: callers apply it in the next push");
}

// postChange posts a change of the open service to url, then says how it
// went in note (done when it went) and shows the listing again.
async function postChange(url, change, note, done) {
  note.textContent = "";
  try {
    const resp = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ service: selected.name, namespace: selected.namespace }, change)),
    });
    const body = await resp.json().catch(() => ({ detail: resp.statusText }));
    if (!resp.ok) throw new Error(body.detail || resp.statusText);
    note.textContent = done;
    note.className = "passing";
    await load(true);
  } catch (e) {
    note.textContent = e.message;
    note.className = "critical";
  }
}

$("#split-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const versions = {};
  for (const part of $("#split-input").value.trim().split(/[\s,]+/).filter(Boolean)) {
    const eq = part.indexOf("=");
    const n = Number(part.slice(eq + 1));
    if (eq <= 0 || !Number.isInteger(n) || n < 0) {
      $("#split-note").textContent = "write version=percent for each version, e.g. v1=90 v2=10";
      $("#split-note").className = "critical";
      return;
    }
    versions[part.slice(0, eq)] = n;
  }
  changeSplit({ versions, header: $("#split-header").value.trim() });
});
$("#split-clear").addEventListener("click", () => changeSplit({ clear: true }));
$("#rollout-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const to = $("#rollout-to").value.trim();
  if (!to) {
    $("#rollout-note").textContent = "name the version to roll out, one started with meshctl run --version";
    $("#rollout-note").className = "critical";
    return;
  }
  changeRollout({ to, retire: $("#rollout-retire").checked, interval: $("#rollout-interval").value.trim(), deadline: $("#rollout-deadline").value.trim() })
    .then(() => { if ($("#rollout-note").className === "passing") $("#rollout-to").value = ""; });
});
$("#rollout-abort").addEventListener("click", () => changeRollout({ abort: true }));

// renderPolicy shows the open service's policy: the keys its instances
// registered (the first's metadata, as meshctl services reads them) and
// the operator's over them, each of those with a button that clears it.
function renderPolicy(s) {
  const registered = {};
  const md = ((s && s.instances && s.instances[0]) || {}).metadata || {};
  for (const [k, v] of Object.entries(md)) {
    if (k.startsWith("policy_route_")) {
      const eq = v.indexOf("=");
      if (eq > 0) registered[v.slice(0, eq)] = v.slice(eq + 1);
    } else if (k.startsWith("policy_")) registered[k.slice("policy_".length)] = v;
  }
  const op = ((status.policies || []).find((p) => p.service === selected.name && (p.namespace || "default") === selected.namespace) || {}).keys || {};
  const body = $("#policy tbody");
  body.replaceChildren();
  for (const k of [...new Set([...Object.keys(registered), ...Object.keys(op)])].sort()) {
    const tr = el("tr");
    const by = k in op ? "operator" : "service";
    tr.append(el("td", k), el("td", k in op ? op[k] : registered[k]), el("td", by, by === "operator" ? "warning" : ""));
    const td = el("td");
    if (k in op) {
      const b = el("button", "clear");
      b.type = "button";
      b.addEventListener("click", () => changePolicy({ clear: [k] }));
      td.append(b);
    }
    tr.append(td);
    body.appendChild(tr);
  }
  if (!body.rows.length) {
    const tr = el("tr");
    const td = el("td", "the defaults (none set)");
    td.colSpan = 4;
    tr.append(td);
    body.appendChild(tr);
  }
}

// changePolicy sets or clears operator keys of the open service, then
// shows the listing again.
function changePolicy(change) {
  return postChange("policy", change, $("#policy-note"), change.set ? "set: the proxies apply it in the next push" : "cleared");
}

$("#policy-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = $("#policy-input").value.trim();
  const eq = v.indexOf("=");
  if (eq <= 0) {
    $("#policy-note").textContent = "write key=value (PATH:key=value for one path)";
    $("#policy-note").className = "critical";
    return;
  }
  changePolicy({ set: { [v.slice(0, eq)]: v.slice(eq + 1) } }).then(() => { if ($("#policy-note").className === "passing") $("#policy-input").value = ""; });
});

async function renderService() {
  const s = (status.services || []).find((x) => x.name === selected.name && x.namespace === selected.namespace);
  $("#service").hidden = false;
  $("#service-name").textContent = selected.name + "." + selected.namespace;
  renderFigures();
  const note = $("#endpoints-note");
  const list = $("#endpoints");
  list.replaceChildren();
  note.textContent = "";
  if (((s && s.instances) || []).some((i) => i.protocol === "tcp")) {
    note.textContent = "A TCP service: services reach it with meshctl run --upstream " + selected.name +
      "; from a terminal, meshctl port-forward " + selected.name + " PORT.";
    return;
  }
  const path = gatewayPaths[selected.name + "." + selected.namespace];
  if (!path) {
    note.textContent = selected.namespace === "micromesh"
      ? "A platform service: call it with meshctl."
      : "Not reachable through the API gateway yet.";
    return;
  }
  const grpc = ((s && s.instances) || []).some((i) => i.protocol === "grpc");
  if (!grpc) {
    note.textContent = "An HTTP service: the API gateway forwards requests to " + path + "/… as they come.";
    return;
  }
  const shown = selected;
  let described;
  try {
    described = await getJSON("api" + path);
  } catch (e) {
    if (selected === shown) note.textContent = "Its endpoints: " + e.message;
    return;
  }
  if (selected !== shown) return; // another service was opened meanwhile: its endpoints, not these
  for (const ep of described.endpoints || []) list.appendChild(endpointForm(ep));
}

// skeleton is a request's JSON with each field's zero value.
function skeleton(fields, depth) {
  const out = {};
  for (const f of fields || []) {
    if (f.type.startsWith("repeated ")) out[f.name] = [];
    else if (f.type.startsWith("map<")) out[f.name] = {};
    else if (f.fields && depth < 3) out[f.name] = skeleton(f.fields, depth + 1);
    else if (f.type === "bool") out[f.name] = false;
    else if (/^(u?int32|s?fixed32|sint32|float|double)$/.test(f.type)) out[f.name] = 0;
    else out[f.name] = "";
  }
  return out;
}

function describeFields(fields) {
  return (fields || []).map((f) => f.name + ": " + f.type).join(", ") || "(none)";
}

function endpointForm(ep) {
  const box = el("div", undefined, "endpoint");
  const kind = ep.client_streaming ? (ep.server_streaming ? "bidirectional stream" : "client stream") : (ep.server_streaming ? "server stream" : "");
  box.append(el("h4", "POST /api" + ep.path + (kind ? "  (" + kind + ")" : "")));
  box.append(el("div", "request " + ep.request.name + " { " + describeFields(ep.request.fields) + " }", "fields"));
  box.append(el("div", "response " + ep.response.name + " { " + describeFields(ep.response.fields) + " }", "fields"));
  const input = el("textarea");
  input.value = JSON.stringify(skeleton(ep.request.fields, 0), null, 2);
  input.setAttribute("aria-label", ep.name + " request");
  if (ep.client_streaming) input.title = "one JSON object per line";
  const button = el("button", "Call");
  button.type = "button";
  // Traced: the call brings a sampled W3C traceparent, so every hop
  // records its span whatever the mesh's sampling.
  const traced = el("input");
  traced.type = "checkbox";
  const traceLabel = el("label", " trace");
  traceLabel.prepend(traced);
  const result = el("div");
  button.addEventListener("click", async () => {
    result.replaceChildren(el("span", "calling…"));
    let body = input.value;
    if (ep.client_streaming) {
      // One message per line: each JSON value compacted onto its own line.
      try { body = body.split(/\n\s*\n/).map((m) => JSON.stringify(JSON.parse(m))).join("\n"); } catch (e) { /* sent as written */ }
    }
    const started = performance.now();
    try {
      const headers = { "Content-Type": "application/json" };
      // An account's token, for a service whose policy asks for one
      // (scopes): its sidecar verifies it. Kept in the page only.
      const token = $("#token").value.trim();
      if (token) headers.Authorization = "Bearer " + token;
      let trace = null;
      if (traced.checked) {
        trace = newTrace();
        headers.traceparent = trace.header;
      }
      const resp = await fetch("api" + ep.path, { method: "POST", headers, body });
      const text = await resp.text();
      const ms = Math.round(performance.now() - started);
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* streams: one value per line */ }
      result.replaceChildren(el("span", resp.status + " " + resp.statusText + " in " + ms + " ms", resp.ok ? "status-ok" : "status-err"));
      if (trace) {
        const link = el("a", "trace " + trace.id);
        link.className = "trace-link";
        link.addEventListener("click", () => showTrace(trace.id, 3000));
        result.append(link);
      }
      result.append(el("pre", shown));
    } catch (e) {
      result.replaceChildren(el("span", "failed: " + e.message, "status-err"));
    }
  });
  box.append(input, button, traceLabel, result);
  return box;
}

// newTrace is a new, sampled W3C trace context.
function newTrace() {
  const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
  const id = hex(16);
  return { id, header: "00-" + id + "-" + hex(8) + "-01" };
}

// trafficCells formats a Traffic of the stats API (protojson: zero
// fields left out, counts as strings, durations as "0.0015s").
function trafficCells(t) {
  t = t || {};
  const requests = Number(t.requests || 0);
  if (!requests) return { success: "-", rps: "0", p50: "-", p95: "-", p99: "-", failing: false };
  const rate = t.successRate || 0;
  return {
    success: (100 * rate).toFixed(1) + "%", rps: (t.requestsPerSecond || 0).toFixed(2),
    p50: t.p50 ? short(seconds(t.p50)) : "-", p95: t.p95 ? short(seconds(t.p95)) : "-", p99: t.p99 ? short(seconds(t.p99)) : "-",
    failing: rate < 0.95,
  };
}

// renderCalls lists the calls to and from a service ("name.namespace";
// a version's cluster, "name.ns|v2", is its service's).
function renderCalls(svc) {
  const body = $("#calls tbody");
  body.replaceChildren();
  const calls = stats.edges.filter((e) => e.source === svc || e.destination.split("|")[0] === svc);
  $("#calls-note").textContent = calls.length ? "" : "No calls to or from it in the last minute.";
  for (const e of calls) {
    const t = trafficCells(e.traffic);
    const tr = el("tr");
    tr.append(el("td", e.source), el("td", e.destination), el("td", t.success, t.failing ? "critical" : ""),
      el("td", t.rps), el("td", t.p50), el("td", t.p95), el("td", t.p99));
    body.appendChild(tr);
  }
}

// showHealth runs meshctl check's checks on the server and lists them:
// what failed or warns says what to look at.
async function showHealth() {
  $("#service").hidden = true;
  $("#traces").hidden = true;
  $("#health").hidden = false;
  const body = $("#checks tbody");
  body.replaceChildren();
  $("#health-note").textContent = "checking…";
  let res;
  try {
    res = await getJSON("check");
  } catch (e) {
    $("#health-note").textContent = "the checks: " + e.message;
    return;
  }
  const marks = { ok: "√", warn: "‼", fail: "×" };
  const classes = { ok: "passing", warn: "warning", fail: "critical" };
  for (const c of res.checks || []) {
    const tr = el("tr");
    tr.append(el("td", c.section), el("td", marks[c.status] || c.status, classes[c.status]), el("td", c.check), el("td", c.detail || ""));
    body.appendChild(tr);
  }
  const warns = (res.checks || []).filter((c) => c.status === "warn").length;
  $("#health-note").textContent = res.failed ? res.failed + " failed, " + warns + " warning(s)" : warns ? "no failures, " + warns + " warning(s)" : "all checks passed";
}

// renderMethods lists a service's figures by gRPC method.
function renderMethods(svc) {
  const methods = ((stats.services[svc] || {}).methods) || [];
  $("#methods-note").textContent = methods.length ? "" : "No gRPC calls to it in the last minute.";
  renderTrafficRows($("#methods tbody"), methods.map((m) => [m.method, m.traffic]));
}

// renderVersions lists a service's figures by the version of the
// instances that served them.
function renderVersions(svc) {
  const versions = ((stats.services[svc] || {}).versions) || [];
  $("#versions-note").textContent = versions.length ? "" : "No calls to a versioned instance of it in the last minute.";
  renderTrafficRows($("#versions tbody"), versions.map((v) => [v.version, v.traffic]));
}

// renderTrafficRows fills body with a row per [name, traffic].
function renderTrafficRows(body, rows) {
  body.replaceChildren();
  for (const [name, traffic] of rows) {
    const t = trafficCells(traffic);
    const tr = el("tr");
    tr.append(el("td", name), el("td", t.success, t.failing ? "critical" : ""),
      el("td", t.rps), el("td", t.p50), el("td", t.p95), el("td", t.p99));
    body.appendChild(tr);
  }
}

const seconds = (d) => parseFloat(String(d || "0s").replace("s", "")) || 0;
function short(sec) {
  if (sec >= 1) return sec.toFixed(3) + " s";
  if (sec >= 0.001) return (sec * 1000).toFixed(3) + " ms";
  return Math.round(sec * 1e6) + " µs";
}

async function showTraces() {
  $("#service").hidden = true;
  $("#health").hidden = true;
  $("#traces").hidden = false;
  $("#trace").hidden = true;
  const note = $("#traces-note");
  const body = $("#trace-list tbody");
  body.replaceChildren();
  note.textContent = "";
  let list;
  try {
    list = await getJSON("traces" + (selected ? "?service=" + encodeURIComponent(selected.name + "." + selected.namespace) : ""));
  } catch (e) {
    note.textContent = "Traces: " + e.message;
    return;
  }
  const traces = list.traces || [];
  if (selected) note.textContent = "Traces through " + selected.name + "." + selected.namespace + ".";
  if (traces.length === 0) {
    note.textContent = "No traces recorded. Tick 'trace' on a call, or raise meshctl server --trace-sampling.";
    return;
  }
  for (const t of traces) {
    const tr = el("tr");
    tr.append(el("td", t.traceId), el("td", new Date(t.start).toLocaleTimeString()), el("td", short(seconds(t.duration))),
      el("td", String(t.spans || 0)), el("td", t.errors ? String(t.errors) : "-", t.errors ? "critical" : ""),
      el("td", (t.rootService || "") + " " + (t.rootName || "")), el("td", (t.services || []).join(", ")));
    tr.addEventListener("click", () => showTrace(t.traceId, 0));
    body.appendChild(tr);
  }
}

// showTrace shows one trace as a tree in time; a trace just made may have
// spans on their way (the proxies export about once a second): waitMs.
async function showTrace(id, waitMs) {
  $("#service").hidden = true;
  $("#traces").hidden = false;
  const view = $("#trace");
  view.hidden = false;
  $("#trace-title").textContent = "trace " + id;
  const body = $("#spans tbody");
  body.replaceChildren();
  // Until the spans stop coming (none new for 1.2 s) or waitMs is up.
  let spans = [];
  let changed = Date.now();
  for (const until = Date.now() + waitMs; ;) {
    try {
      const got = (await getJSON("traces/" + id)).spans || [];
      if (got.length !== spans.length) changed = Date.now();
      spans = got;
    } catch (e) {
      if (Date.now() >= until) {
        $("#trace-title").textContent = "trace " + id + ": " + e.message;
        return;
      }
    }
    if (spans.length > 0 && (Date.now() >= until || Date.now() - changed >= 1200)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const ids = new Set(spans.map((s) => s.spanId));
  const kids = {};
  const roots = [];
  for (const s of spans) {
    if (s.parentSpanId && ids.has(s.parentSpanId)) (kids[s.parentSpanId] = kids[s.parentSpanId] || []).push(s);
    else roots.push(s);
  }
  const start = (s) => new Date(s.start).getTime() / 1000 + (Number(String(s.start).match(/\.(\d+)/)?.[1]?.slice(3).padEnd(6, "0") || 0) / 1e9);
  const first = Math.min(...spans.map(start));
  const last = Math.max(...spans.map((s) => start(s) + seconds(s.duration)));
  const total = Math.max(last - first, 1e-9);
  $("#trace-title").textContent = "trace " + id + ": " + spans.length + " spans, " + short(last - first);
  const walk = (s, depth) => {
    const off = start(s) - first, dur = seconds(s.duration);
    const bar = el("div", undefined, "bar");
    const fill = el("span", undefined, s.error ? "failed" : "");
    fill.style.left = (100 * off / total).toFixed(2) + "%";
    fill.style.width = (100 * dur / total).toFixed(2) + "%";
    bar.append(fill);
    const a = s.attributes || {};
    const st = [a["http.response.status_code"], a["rpc.grpc.status_code"] !== undefined ? "grpc " + a["rpc.grpc.status_code"] : "", s.error ? "ERROR" : "", s.message || ""]
      .filter(Boolean).join(" ");
    const tr = el("tr");
    const tl = el("td");
    tl.append(bar);
    tr.append(el("td", "+" + short(off)), el("td", short(dur)), el("td", s.service), el("td", (s.kind || "").replace("KIND_", "")),
      el("td", "  ".repeat(depth) + s.name), tl, el("td", st, s.error ? "critical" : ""));
    tr.title = Object.entries(a).map(([k, v]) => k + "=" + v).join("\n");
    body.appendChild(tr);
    for (const k of (kids[s.spanId] || []).sort((x, y) => start(x) - start(y))) walk(k, depth + 1);
  };
  for (const r of roots.sort((x, y) => start(x) - start(y))) walk(r, 0);
}

// Tap: the open service's requests as they end, newest first, from
// GET tap (a JSON object a line) until the user stops it, opens another
// service, or the server ends it (after 5 minutes).
let tapping = null; // {service, abort}
const tapRows = 200;

// caller is a SPIFFE ID as meshctl tap shows it: name.namespace.
function caller(id) {
  const m = /\/ns\/([^/]+)\/(?:svc|user)\/([^/]+)$/.exec(id || "");
  return m ? m[2] + "." + m[1] : (id || "-");
}

function tapRow(r) {
  const ms = Math.round(seconds(r.duration) * 1000);
  const code = String(r.code || "") + (r.grpcStatus >= 0 ? " grpc " + r.grpcStatus : "");
  const failed = r.code >= 500 || [2, 4, 12, 13, 14, 15].includes(r.grpcStatus);
  const tr = el("tr");
  tr.append(el("td", r.time ? new Date(r.time).toLocaleTimeString() : ""), el("td", r.instance || ""), el("td", caller(r.source)),
    el("td", (r.method || "") + " " + (r.path || "")), el("td", code, failed ? "critical" : ""),
    el("td", ms < 1 ? "<1ms" : ms + "ms"), el("td", r.protocol === "HTTP/3" ? "quic" : "tls"));
  return tr;
}

const tapIdle = $("#tap-note").textContent;
function stopTap(why) {
  if (tapping) {
    tapping.abort.abort();
    tapping = null;
    $("#tap").textContent = "tap";
  }
  $("#tap-note").textContent = why || tapIdle;
}

async function startTap() {
  const svc = selected;
  const abort = new AbortController();
  tapping = { service: svc.name + "." + svc.namespace, abort };
  $("#tap").textContent = "stop";
  $("#tap-list tbody").replaceChildren();
  $("#tap-note").textContent = "Tapping " + tapping.service + ": each request shows as it ends.";
  const mine = tapping;
  try {
    const resp = await fetch("tap?service=" + encodeURIComponent(svc.name) + "&namespace=" + encodeURIComponent(svc.namespace),
      { headers: { Accept: "application/x-ndjson" }, signal: abort.signal });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({ detail: resp.statusText }));
      throw new Error(body.detail || resp.statusText);
    }
    const reader = resp.body.getReader();
    const text = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += text.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        const r = JSON.parse(line);
        const body = $("#tap-list tbody");
        body.prepend(tapRow(r));
        while (body.rows.length > tapRows) body.deleteRow(-1);
        if (r.missed) $("#tap-note").textContent = "Tapping " + mine.service + ": " + r.missed + " request(s) missed (too many to show).";
      }
    }
    if (tapping === mine) stopTap("Stopped after 5 minutes: tap again to go on.");
  } catch (e) {
    if (tapping === mine) stopTap("tap: " + e.message);
  }
}

$("#tap").addEventListener("click", () => (tapping ? stopTap("Stopped.") : startTap()));
$("#refresh").addEventListener("click", () => load());
$("#show-traces").addEventListener("click", showTraces);
$("#show-health").addEventListener("click", showHealth);
$("#namespace").addEventListener("change", renderServices);
load();
// Every 5 s the services, their figures and the open service's instances,
// calls and methods again (sidecars report every 10 s) — not its endpoint
// forms, which hold what the user typed and the last answer.
setInterval(() => load(true), 5000);
