// The dashboard's script: /status lists the services and instances (the
// registry), /api/ is the API gateway (endpoints and calls). Everything a
// service or a response says is written as text, never as markup.
"use strict";

const $ = (sel) => document.querySelector(sel);
let status = { services: [] };
let selected = null; // {name, namespace}

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

async function load() {
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
  if (selected) renderService();
}

function renderServices() {
  const ns = $("#namespace").value;
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
    if (selected && selected.name === s.name && selected.namespace === s.namespace) tr.classList.add("selected");
    tr.addEventListener("click", () => { selected = { name: s.name, namespace: s.namespace }; renderServices(); renderService(); });
    body.appendChild(tr);
  }
}

async function renderService() {
  const s = (status.services || []).find((x) => x.name === selected.name && x.namespace === selected.namespace);
  $("#service").hidden = false;
  $("#service-name").textContent = selected.name + "." + selected.namespace;
  const body = $("#instances tbody");
  body.replaceChildren();
  for (const i of (s && s.instances) || []) {
    const tr = el("tr");
    tr.append(el("td", i.id), el("td", i.address + ":" + (i.port || "")), el("td", i.quicPort || ""),
      el("td", i.kind || ""), el("td", i.protocol || ""), el("td", i.version || ""), el("td", i.health || "", i.health));
    body.appendChild(tr);
  }
  const note = $("#endpoints-note");
  const list = $("#endpoints");
  list.replaceChildren();
  note.textContent = "";
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
  let described;
  try {
    described = await getJSON("api" + path);
  } catch (e) {
    note.textContent = "Its endpoints: " + e.message;
    return;
  }
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
      const resp = await fetch("api" + ep.path, { method: "POST", headers, body });
      const text = await resp.text();
      const ms = Math.round(performance.now() - started);
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* streams: one value per line */ }
      result.replaceChildren(el("span", resp.status + " " + resp.statusText + " in " + ms + " ms", resp.ok ? "status-ok" : "status-err"), el("pre", shown));
    } catch (e) {
      result.replaceChildren(el("span", "failed: " + e.message, "status-err"));
    }
  });
  box.append(input, button, result);
  return box;
}

$("#refresh").addEventListener("click", load);
$("#namespace").addEventListener("change", renderServices);
load();
setInterval(load, 5000);
