// The listener settings form (GET/PATCH /api/scp) and the status lines above it.
// Uses page.js's $, api(), clearErrors(), showErrors(), numberOrText() and statusOrText().
"use strict";

// ------------------------------------------------------------------ listener
// A refresh (an event about the listener) never overwrites what the administrator is typing:
// while the form has unsaved edits, only the status lines are refreshed. An edit made while a
// save is on its way (scpEdits counts them) is not one the save sent, so it stays unsaved.
let scpEdited = false;
let scpEdits = 0;

function scpInput() {
  scpEdited = true;
  scpEdits += 1;
}

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
  // One save at a time: the button is disabled until the saved settings are read back.
  const button = $("#scp-form button[type=submit]");
  button.disabled = true;
  try {
    await saveScpNow();
  } finally {
    button.disabled = false;
  }
}

async function saveScpNow() {
  clearErrors("scp");
  const sent = scpEdits;
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
  if (scpEdits === sent) scpEdited = false;
  await loadScp();
}
