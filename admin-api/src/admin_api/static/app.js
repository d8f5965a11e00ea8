// DICOM Lab web page, the start-up: the token form, the page's buttons, the first load and the
// live stream. The rest is in page.js (token, api, text), listener.js, nodes.js, studies.js and
// events.js, loaded before this file (index.html).
"use strict";

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
  $("#scp-form").addEventListener("input", scpInput);
  $("#node-form").addEventListener("submit", submitNode);
  $("#node-cancel").addEventListener("click", resetNodeForm);
  $("#sim-form").addEventListener("submit", sendStudy);
  $("#log-clear").addEventListener("click", () => $("#log-lines").replaceChildren());
  $("#log-pdu").addEventListener("change", (ev) => {
    document.querySelectorAll('#log-lines li[data-type="pdu"]').forEach((li) => { li.hidden = !ev.target.checked; });
  });
  if (token()) start(); else askToken();
});
