// DICOM TLS on the page (README "DICOM TLS"): the PACS's certificate with its expiry
// (a warning from 30 days ahead), "Download the lab CA certificate", and "Certificate"
// on each node, which issues a PEM bundle (certificate, key, lab CA) for the modality.
// Uses token(), api(), el() and $() of page.js; downloads go through fetch with the token
// in a header, never in a URL.
"use strict";

async function loadTls() {
  const r = await api("GET", "/api/tls");
  const out = $("#tls-cert");
  if (!out) return;
  if (!r.ok) { out.textContent = (r.data && r.data.error) || "TLS certificate unknown."; out.className = "err"; return; }
  const t = r.data;
  const s = t.server;
  const live = t.live_tls_port ? `listening on TLS port ${t.live_tls_port}` : "TLS listener off";
  if (!s) { out.textContent = `${live}; no server certificate yet (the PACS makes it when it starts).`; out.className = "muted"; return; }
  const until = new Date(s.not_after * 1000).toISOString().slice(0, 10);
  out.textContent = safeText(`${live}; certificate ${s.subject}, valid until ${until} (${s.days_left} days)`
    + (s.warning ? ` — ${s.warning}` : "") + `; issued by ${t.ca.subject}.`);
  out.className = s.warning ? "err" : "muted";
}

async function downloadPem(method, path, filename) {
  let resp;
  try {
    resp = await fetch(path, { method, headers: { Authorization: `Bearer ${token() || ""}` } });
  } catch (e) { return "The admin API does not answer."; }
  if (!resp.ok) {
    const r = await resp.json().catch(() => ({}));
    if (resp.status === 401) api("GET", "/api/scp"); // asks for the token again
    return r.error || r.message || `failed (${resp.status})`;
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = el("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  return null;
}

async function downloadCa() {
  const err = await downloadPem("GET", "/api/tls/ca.pem", "dicomlab-ca.pem");
  $("#tls-ca-result").textContent = err ? safeText(err) : "Saved dicomlab-ca.pem: install it as trusted on the modality.";
}

async function issueCertificate(ae, where) {
  const name = ae.replace(/[^A-Za-z0-9_-]/g, "_") + ".pem";
  const err = await downloadPem("POST", `/api/nodes/${encodeURIComponent(ae)}/certificate`, name);
  where.textContent = err ? safeText(err)
    : `Saved ${name}: certificate (CN ${ae}), private key and lab CA for the modality. Keep it private.`;
}

// One line on a node: its TLS settings and how its last association came.
function tlsNodeText(node) {
  if (!node.tls || node.tls === "off") return null;
  const st = node.status || {};
  const last = st.last_association_tls ? `last association ${st.last_association_tls === "plain" ? "plain" : "over " + st.last_association_tls}` : null;
  return [`TLS ${node.tls}`, node.client_certificate === "required" ? "client certificate required" : null, last]
    .filter(Boolean).join(", ");
}

function tlsNodeButton(node, li) {
  const b = el("button", "secondary small", "Certificate");
  b.title = "Issue a certificate for this node (a PEM bundle for the modality)";
  b.addEventListener("click", () => {
    let out = li.querySelector(".tls-result");
    if (!out) { out = el("div", "muted tls-result"); li.append(out); }
    issueCertificate(node.ae_title, out);
  });
  return b;
}

document.addEventListener("DOMContentLoaded", () => {
  const b = $("#tls-ca-download");
  if (b) b.addEventListener("click", downloadCa);
});
