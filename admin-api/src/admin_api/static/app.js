// DICOM Lab web page: talks to the JSON API with the admin token of this tab.
//
// Live events: EventSource cannot send an Authorization header, so the page
// reads /api/events/stream with fetch() and parses the Server-Sent Events
// itself. The token stays in a header (never in a URL, where it would land in
// access logs and browser history), and resuming sends Last-Event-ID like
// EventSource would.
"use strict";

const TOKEN_KEY = "dicomlab.token";
const $ = (sel) => document.querySelector(sel);
// Text from the network (patient names, AE titles, descriptions) is only ever set as
// textContent, never parsed as HTML; control characters are shown as escapes, as
// dicomlab.text.safe_text does for the event stream and the terminal.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const NAMED = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };
const safeText = (value) => String(value).replace(UNSAFE, (c) => NAMED[c]
  || (c.charCodeAt(0) < 0x100 ? "\\x" : "\\u") + c.charCodeAt(0).toString(16).padStart(c.charCodeAt(0) < 0x100 ? 2 : 4, "0"));
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = safeText(text);
  return e;
};

// ---------------------------------------------------------------- token + API
function token() { return sessionStorage.getItem(TOKEN_KEY); }

function askToken(message) {
  $("#token-error").textContent = message || "";
  $("#token-overlay").hidden = false;
  $("#token-input").focus();
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { ok: false, status: 0, data: { error: "The admin API does not answer (is the lab running?)." } };
  }
  let data = null;
  const text = await resp.text();
  if (text) { try { data = JSON.parse(text); } catch (e) { data = { error: text }; } }
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopStream();
    askToken("That token is not right: give the ADMIN_TOKEN of this lab.");
  }
  return { ok: resp.ok, status: resp.status, data };
}

// --------------------------------------------------------- inline field errors
function clearErrors(form) {
  document.querySelectorAll(`[data-err^="${form}."]`).forEach((p) => { p.textContent = ""; });
  document.querySelectorAll(`#${form}-form [aria-invalid]`).forEach((i) => i.removeAttribute("aria-invalid"));
}

function showErrors(form, result) {
  const fields = (result.data && result.data.detail && result.data.detail.fields) || null;
  let shown = false;
  if (fields && result.status === 422) {
    for (const [name, msgs] of Object.entries(fields)) {
      const base = name.split(".")[0];
      const slot = document.querySelector(`[data-err="${form}.${base}"]`);
      if (slot) {
        slot.textContent = msgs.join(" ");
        const input = document.getElementById(`${form}-${base}`);
        if (input) input.setAttribute("aria-invalid", "true");
        shown = true;
      }
    }
  }
  if (!shown) {
    const slot = document.querySelector(`[data-err="${form}._form"]`);
    if (slot) slot.textContent = (result.data && result.data.error) || `The request failed (HTTP ${result.status}).`;
  }
}

// A number when the text is one; otherwise the text itself, so the server
// answers in plain words ("A port is a whole number from 1 to 65535.").
function numberOrText(v) {
  const t = v.trim();
  return /^\d+$/.test(t) ? Number(t) : t;
}

// A DIMSE status as typed: "0xA700", "A700h" or decimal; otherwise the text, for the server to refuse.
function statusOrText(v) {
  const t = v.trim();
  const hex = /^(?:0x)?([0-9a-f]{1,4})h?$/i.exec(t);
  if (/^0x/i.test(t) || /h$/i.test(t) || /[a-f]/i.test(t)) return hex ? parseInt(hex[1], 16) : t;
  return /^\d+$/.test(t) ? Number(t) : t;
}

// ------------------------------------------------------------------ listener
// A refresh (an event about the listener) never overwrites what the administrator is typing:
// while the form has unsaved edits, only the status lines are refreshed.
let scpEdited = false;

async function loadScp() {
  const r = await api("GET", "/api/scp");
  if (!r.ok) return;
  const s = r.data;
  showScpStatus(s);
  if (scpEdited) return;
  $("#scp-ae_title").value = s.ae_title;
  $("#scp-port").value = s.port;
  $("#scp-verbose").checked = !!s.verbose;
  $("#scp-tls_enabled").checked = !!s.tls_enabled;
  $("#scp-tls_port").value = s.tls_port;
  $("#scp-refusal_mode").value = s.refusal_mode || "reject";
  $("#scp-fault_delay_ms").value = s.fault_delay_ms || 0;
  $("#scp-fault_abort_after").value = s.fault_abort_after || 0;
  $("#scp-fault_status").value = s.fault_status ? `0x${s.fault_status.toString(16).toUpperCase().padStart(4, "0")}` : "0";
  $("#scp-fault_stall").checked = !!s.fault_stall;
  if (window.qrFill) window.qrFill(s); // qr.js: the Query/Retrieve settings
}

function showScpStatus(s) {
  if (typeof loadTls === "function") loadTls(); // tls.js
  const on = [];
  if (s.refusal_mode && s.refusal_mode !== "reject") on.push(`refusal mode ${s.refusal_mode}`);
  if (s.fault_delay_ms) on.push(`delay ${s.fault_delay_ms} ms`);
  if (s.fault_abort_after) on.push(`abort after ${s.fault_abort_after}`);
  if (s.fault_status) on.push(`status 0x${s.fault_status.toString(16).toUpperCase().padStart(4, "0")}`);
  if (s.fault_stall) on.push("stall");
  $("#scp-faults").textContent = on.length ? `Misbehaving on purpose: ${on.join(", ")}.` : "Behaving normally.";
  const l = s.listener || {};
  $("#scp-info").textContent = `PACS at ${l.host || "?"} : ${s.port} — ${l.running ? "listening" : "not reporting"}`;
  // Where a modality outside must send (Compose: the published port; it says when that is stale).
  const pub = l.public || {};
  $("#scp-address").textContent = pub.text || "";
  $("#scp-address").className = pub.current === false ? "err" : "muted";
  const h = $("#health");
  h.textContent = l.running ? `PACS listening: ${s.ae_title} on port ${s.port}` : "PACS not reporting";
  h.className = `pill ${l.running ? "ok" : "bad"}`;
}

async function saveScp(ev) {
  ev.preventDefault();
  clearErrors("scp");
  const body = {
    ae_title: $("#scp-ae_title").value,
    port: numberOrText($("#scp-port").value),
    verbose: $("#scp-verbose").checked,
    tls_enabled: $("#scp-tls_enabled").checked,
    tls_port: numberOrText($("#scp-tls_port").value),
    refusal_mode: $("#scp-refusal_mode").value,
    fault_delay_ms: numberOrText($("#scp-fault_delay_ms").value),
    fault_abort_after: numberOrText($("#scp-fault_abort_after").value),
    fault_status: statusOrText($("#scp-fault_status").value),
    fault_stall: $("#scp-fault_stall").checked,
    ...(window.qrBody ? window.qrBody() : {}),
  };
  const r = await api("PATCH", "/api/scp", body);
  if (!r.ok) { showErrors("scp", r); return; }
  scpEdited = false;
  await loadScp();
}

// --------------------------------------------------------------------- nodes
let editing = null; // AE title of the node in the form, or null when adding

function nodeFormBody() {
  const body = {
    ae_title: $("#node-ae_title").value,
    host: $("#node-host").value,
    description: $("#node-description").value,
    services: [...document.querySelectorAll('#node-form input[name=services]:checked')].map((i) => i.value),
    enabled: $("#node-enabled").checked,
    tls: $("#node-tls").value,
    client_certificate: $("#node-client_certificate").value,
  };
  const port = $("#node-port").value;
  if (port.trim() !== "") body.port = numberOrText(port);
  return body;
}

function resetNodeForm() {
  editing = null;
  $("#node-form").reset();
  clearErrors("node");
  $("#node-form-title").textContent = "Authorized SCU Node";
  $("#node-submit").textContent = "Add node";
  $("#node-cancel").hidden = true;
}

function editNode(node) {
  resetNodeForm();
  editing = node.ae_title;
  $("#node-ae_title").value = node.ae_title;
  $("#node-host").value = node.host;
  $("#node-port").value = node.port;
  $("#node-description").value = node.description || "";
  for (const box of document.querySelectorAll("#node-form input[name=services]")) {
    box.checked = node.services.includes(box.value);
  }
  $("#node-tls").value = node.tls || "off";
  $("#node-client_certificate").value = node.client_certificate || "none";
  $("#node-enabled").checked = node.enabled;
  $("#node-form-title").textContent = `Edit node ${node.ae_title}`;
  $("#node-submit").textContent = "Save changes";
  $("#node-cancel").hidden = false;
  $("#node-ae_title").focus();
}

async function submitNode(ev) {
  ev.preventDefault();
  clearErrors("node");
  const body = nodeFormBody();
  const r = editing === null
    ? await api("POST", "/api/nodes", body)
    : await api("PUT", `/api/nodes/${encodeURIComponent(editing)}`, body);
  if (!r.ok) {
    if (r.status === 409) {
      $('[data-err="node.ae_title"]').textContent = r.data.error;
      $("#node-ae_title").setAttribute("aria-invalid", "true");
    } else {
      showErrors("node", r);
    }
    return;
  }
  resetNodeForm();
  await loadNodes();
}

const echoResults = new Map(); // AE title -> {ok, text}

function renderNode(node) {
  const li = el("li");
  li.dataset.ae = node.ae_title;
  const st = node.status || { state: "NEVER SEEN", why: "" };
  const summary = el("div", "node-summary");
  summary.append(`${node.ae_title} (${node.host} : ${node.port}) `);
  summary.append(el("span", `state ${st.state.replace(" ", "-")}`, st.state));
  const er = echoResults.get(node.ae_title);
  const why = er && !er.ok && er.text.endsWith(st.why) ? null : st.why; // said once, below
  const meta = el("div", "node-meta",
    [node.services.join(" + ") || "no services", node.enabled ? null : "DISABLED",
     typeof tlsNodeText === "function" ? tlsNodeText(node) : null, node.description || null, why]
      .filter(Boolean).join(" · "));
  const actions = el("div", "node-actions");
  const echo = el("button", "secondary small", "Echo");
  echo.addEventListener("click", () => echoNode(node.ae_title, echo));
  const edit = el("button", "secondary small", "Edit");
  edit.addEventListener("click", () => editNode(node));
  const remove = el("button", "danger small", "Remove");
  remove.addEventListener("click", () => removeNode(node.ae_title));
  actions.append(echo, edit, remove);
  if (st.last_assoc_id) actions.prepend(ladderButton(st.last_assoc_id, null, "Last association")); // ladder.js
  if (typeof tlsNodeButton === "function") actions.insertBefore(tlsNodeButton(node, li), remove); // tls.js
  li.append(summary, actions, meta);
  if (window.qrNodeNote) meta.append(` · ${window.qrNodeNote(node)}`); // qr.js
  if (er) li.append(el("div", `echo-result ${er.ok ? "ok" : "bad"}`, er.text));
  return li;
}

async function loadNodes() {
  const r = await api("GET", "/api/nodes");
  if (!r.ok) return;
  const list = $("#node-list");
  list.replaceChildren(...r.data.map(renderNode));
  $("#nodes-empty").hidden = r.data.length > 0;
}

async function echoNode(ae, button) {
  button.disabled = true;
  button.textContent = "Echoing…";
  const r = await api("POST", `/api/nodes/${encodeURIComponent(ae)}/echo`);
  button.disabled = false;
  button.textContent = "Echo";
  if (r.ok) {
    echoResults.set(ae, r.data.ok
      ? { ok: true, text: `Echo answered: Success in ${Math.round(r.data.elapsed_ms)} ms` }
      : { ok: false, text: `Echo failed: ${r.data.error}` });
  } else {
    echoResults.set(ae, { ok: false, text: (r.data && r.data.error) || `Echo failed (HTTP ${r.status})` });
  }
  await loadNodes();
}

async function removeNode(ae) {
  if (!window.confirm(`Remove ${ae}? The PACS will refuse its associations from now on.`)) return;
  const r = await api("DELETE", `/api/nodes/${encodeURIComponent(ae)}`);
  if (r.ok || r.status === 404) {
    echoResults.delete(ae);
    if (editing === ae) resetNodeForm();
  }
  await loadNodes();
}

// ------------------------------------------------------------------- studies
async function loadStudies() {
  const r = await api("GET", "/api/studies?limit=50");
  if (!r.ok) return;
  const rows = r.data.map((s) => {
    const tr = el("tr");
    const when = s.last_received ? new Date(s.last_received * 1000).toLocaleString() : "";
    for (const v of [s.patient_name, s.patient_id, s.study_date, s.study_description, s.calling_aet, s.series, s.instances, when,
                     commitmentText(s.commitment)]) {
      tr.append(el("td", null, v === undefined || v === null ? "" : String(v)));
    }
    tr.title = s.study_uid;
    tr.dataset.study = s.study_uid; // viewer.js opens the study's series and slices
    tr.tabIndex = 0;
    return tr;
  });
  $("#study-rows").replaceChildren(...rows);
  $("#studies-empty").hidden = r.data.length > 0;
}

// ----------------------------------------------------------------- simulator
async function sendStudy(ev) {
  ev.preventDefault();
  clearErrors("sim");
  const body = {};
  const aet = $("#sim-calling_aet").value;
  if (aet.trim()) body.calling_aet = aet;
  const slices = $("#sim-slices").value;
  if (slices.trim()) body.slices = numberOrText(slices);
  const button = $("#sim-send");
  button.disabled = true;
  const r = await api("POST", "/api/simulator/send", body);
  button.disabled = false;
  if (!r.ok) {
    const fields = (r.data && r.data.detail && r.data.detail.fields) || {};
    const msgs = Object.entries(fields).map(([k, v]) => `${k}: ${v.join(" ")}`);
    $('[data-err="sim._form"]').textContent = msgs.join(" ") || (r.data && r.data.error) || `HTTP ${r.status}`;
    return;
  }
  const req = r.data.request;
  $("#sim-result").textContent =
    `Job ${r.data.job_id} queued: ${req.calling_aet || "the CT simulator"} → ${req.called_aet} at ${req.host} : ${req.port}. Follow it in the log.`;
}

// ------------------------------------------------------------------ live log
const MAX_LINES = 500;
let lastEventId = null;
let streamAbort = null;
let refreshTimer = null;

function fmtTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function addLogLine(e) {
  const list = $("#log-lines");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 30;
  const li = el("li", `${e.level || "info"}${e.type === "pdu" ? " pdu" : ""}`);
  li.dataset.type = e.type;
  li.hidden = e.type === "pdu" && !$("#log-pdu").checked;
  li.append(el("span", "t", fmtTime(e.time)), " ", el("span", "src", e.source), " ",
    el("span", "type", e.type), " ", el("span", "msg", e.message));
  if (e.assoc_id) li.append(" ", ladderButton(e.assoc_id, e.id)); // ladder.js
  list.append(li);
  while (list.children.length > MAX_LINES) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// Refresh what an event touches, once for a burst of events (pending parts add up).
const pending = new Set();
function onEvent(e) {
  addLogLine(e);
  const t = e.type || "";
  if (t.startsWith("node-") || t.startsWith("association-") || t === "echo-sent") pending.add("nodes");
  if (t.startsWith("store-")) pending.add("studies");
  if (t.startsWith("commitment-")) { pending.add("commitments"); pending.add("studies"); }  // commitment.js
  if (t === "settings-changed" || t.startsWith("listener-")) pending.add("scp");
  if (!pending.size || refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    if (pending.has("nodes")) loadNodes();
    if (pending.has("studies")) loadStudies();
    if (pending.has("scp")) loadScp();
    if (pending.has("commitments")) loadCommitments();
    pending.clear();
  }, 250);
}

function setStreamState(text, ok) {
  const s = $("#stream-state");
  s.textContent = text;
  s.className = `pill ${ok ? "ok" : "bad"}`;
}

function stopStream() {
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
}

async function loadRecentEvents() {
  const r = await api("GET", "/api/events?limit=200");
  if (!r.ok) return;
  $("#log-lines").replaceChildren();
  r.data.forEach(addLogLine);
  if (r.data.length) lastEventId = r.data[r.data.length - 1].id;
}

// Parse "id: / event: / data:" blocks separated by a blank line (the SSE format).
function parseBlock(block) {
  let id = null, data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "data") data += (data ? "\n" : "") + value;
  }
  return { id, data };
}

async function runStream() {
  let delay = 1000;
  while (token()) {
    const ctrl = new AbortController();
    streamAbort = ctrl;
    const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    try {
      const resp = await fetch("/api/events/stream", { headers, signal: ctrl.signal, cache: "no-store" });
      if (resp.status === 401) { api("GET", "/api/scp"); return; }
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      setStreamState("live", true);
      delay = 1000;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const { id, data } = parseBlock(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
          if (!data) continue;
          if (id) lastEventId = id;
          try { onEvent(JSON.parse(data)); } catch (e) { /* not an event record */ }
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    setStreamState("reconnecting…", false);
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// ------------------------------------------------------------------- startup
async function health() {
  try {
    const r = await fetch("/api/health");
    if (!r.ok) { $("#health").textContent = "registry down"; $("#health").className = "pill bad"; }
  } catch (e) { $("#health").textContent = "admin API down"; $("#health").className = "pill bad"; }
}

async function start() {
  $("#token-overlay").hidden = true;
  const r = await api("GET", "/api/scp");
  if (!r.ok) {
    if (r.status !== 401) { health(); }
    return;
  }
  await Promise.all([loadScp(), loadNodes(), loadStudies(), loadCommitments(), loadRecentEvents()]);
  stopStream();
  runStream();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("#token-input").value.trim();
    if (!t) { $("#token-error").textContent = "Give the token."; return; }
    sessionStorage.setItem(TOKEN_KEY, t);
    $("#token-input").value = "";
    start();
  });
  $("#logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); stopStream(); askToken(); });
  $("#scp-form").addEventListener("submit", saveScp);
  $("#scp-form").addEventListener("input", () => { scpEdited = true; });
  $("#node-form").addEventListener("submit", submitNode);
  $("#node-cancel").addEventListener("click", resetNodeForm);
  $("#sim-form").addEventListener("submit", sendStudy);
  $("#log-clear").addEventListener("click", () => $("#log-lines").replaceChildren());
  $("#log-pdu").addEventListener("change", (ev) => {
    document.querySelectorAll('#log-lines li[data-type="pdu"]').forEach((li) => { li.hidden = !ev.target.checked; });
  });
  if (token()) start(); else askToken();
});
