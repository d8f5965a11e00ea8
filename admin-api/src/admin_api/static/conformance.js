// The conformance section: GET /api/conformance/check renders the check (what would fail, in
// words), the contexts side by side, and both statements. Uses page.js's api(), el() and $().
// Text from the API is set as textContent only (el() escapes control characters).
"use strict";

const tsNames = (list) => (list || []).map((t) => t.name).join(", ") || "none";

function confDl(rows) {
  const dl = el("dl");
  for (const [k, v] of rows) { dl.append(el("dt", "", k), el("dd", "", v)); }
  return dl;
}

function confSopList(sops) {
  const ul = el("ul");
  for (const s of sops) {
    const li = el("li", "", `${s.name} — ${s.role} (${s.service}) `);
    li.append(el("span", "ts", `: ${tsNames(s.transfer_syntaxes)}`));
    ul.append(li);
  }
  return ul;
}

function renderPacsStatement(st) {
  const box = $("#conf-pacs");
  const ae = st.application_entity;
  const pub = ae.public || {};
  box.replaceChildren(el("h3", "", st.title));
  box.append(confDl([
    ["AE title", ae.ae_title],
    ["Port", ae.live_port === ae.port ? `${ae.port}` : `${ae.port} (listening on ${ae.live_port})`],
    ["Listening", ae.running ? "yes" : "not reporting"],
    ["A modality calls", pub.text || "?"],
    ["TLS", st.tls.words],
    ["Refusal mode", `${st.refusal_mode.value}: ${st.refusal_mode.meaning}`],
    ["Max PDU received", `${st.pdu.max_pdu_receive} bytes`],
  ]));
  box.append(el("strong", "", "SOP classes (SCP)"), confSopList(st.sop_classes));
  box.append(el("strong", "", "Association policy"));
  const ul = el("ul", "policy");
  for (const r of st.association_policy) ul.append(el("li", "", `${r.order}. ${r.condition} → ${r.answer} [${r.reason}]`));
  box.append(ul, el("strong", "", "Limits"));
  box.append(confDl(Object.entries(st.limits).map(([k, v]) => [k, `${v.value} — ${v.meaning}`])));
}

function renderSimStatement(st) {
  const box = $("#conf-sim");
  box.replaceChildren(el("h3", "", st.title));
  box.append(confDl([
    ["AE title", st.application_entity.ae_title],
    ["C-ECHO answered on", `port ${st.application_entity.echo_port} (worker)`],
    ["Proposal", st.proposal],
    ["Can encode", tsNames(st.encodable)],
    ["Proposes, cannot encode", tsNames(st.proposable_not_encodable)],
  ]));
  box.append(el("strong", "", "SOP classes"), confSopList(st.sop_classes));
  box.append(el("strong", "", "On request"));
  const ul = el("ul");
  for (const o of st.on_request.transfer_syntaxes) {
    ul.append(el("li", "", `${o.option}: ${o.name}${o.encodable ? "" : " (proposed, not encodable)"}`));
  }
  box.append(ul);
}

function renderCheck(c) {
  const sum = $("#conf-summary");
  sum.textContent = safeText(c.summary);
  sum.className = `conf-summary ${c.ok ? "ok" : "bad"}`;
  const body = $("#conf-contexts tbody");
  body.replaceChildren();
  const node = el("tr");
  node.append(el("td", "", `Node ${c.simulator.ae_title}`), el("td", "", "calling AE title"),
    el("td", "", c.node.registered ? "authorized node" : "no such node"), el("td", "", "—"),
    el("td", c.node.ok ? "ok" : "bad", c.node.words));
  body.append(node);
  for (const r of c.contexts) {
    const tr = el("tr");
    tr.dataset.sop = r.sop_class.uid;
    tr.append(el("td", "", `${r.sop_class.name} (${r.service})`), el("td", "", tsNames(r.proposed)),
      el("td", "", r.pacs_accepts_sop_class ? tsNames(r.pacs_transfer_syntaxes) : "not this SOP class"),
      el("td", "", tsNames(r.overlap)), el("td", r.ok ? "ok" : "bad", r.words));
    body.append(tr);
  }
  renderPacsStatement(c.pacs);
  renderSimStatement(c.simulator_statement);
  $("#conf-result").hidden = false;
}

async function runConformance(ev) {
  if (ev) ev.preventDefault();
  clearErrors("conf");
  const q = new URLSearchParams({ sop_class: $("#conf-sop_class").value });
  if ($("#conf-transfer_syntax").value) q.set("transfer_syntax", $("#conf-transfer_syntax").value);
  const r = await api("GET", `/api/conformance/check?${q}`);
  if (!r.ok) { showErrors("conf", r); return; }
  renderCheck(r.data);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#conf-form").addEventListener("submit", runConformance);
});
