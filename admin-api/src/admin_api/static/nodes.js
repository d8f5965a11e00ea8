// The authorized SCU nodes: the list (with each node's state, Echo, Edit and Remove) and the
// add / edit form. Uses page.js's $, api(), el(), clearErrors(), showErrors() and numberOrText().
"use strict";

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
