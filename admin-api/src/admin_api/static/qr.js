// Query/Retrieve on the page (listener.js and nodes.js call these when present): the listener's Q/R limits in
// the settings form, and on each node whether the PACS would send C-MOVE sub-operations to it.
"use strict";

window.qrFill = function qrFill(s) {
  document.getElementById("scp-qr_max_matches").value = s.qr_max_matches ?? "";
  document.getElementById("scp-qr_max_suboperations").value = s.qr_max_suboperations ?? "";
};

window.qrBody = function qrBody() {
  const body = {};
  for (const name of ["qr_max_matches", "qr_max_suboperations"]) {
    const v = document.getElementById(`scp-${name}`).value.trim();
    body[name] = /^\d+$/.test(v) ? Number(v) : v; // text goes back as text: the API says what is wrong
  }
  return body;
};

// One line for the node list: a C-MOVE goes to an enabled node, at its registered host and port.
window.qrNodeNote = function qrNodeNote(node) {
  if (!node.enabled) return "not a C-MOVE destination while disabled";
  return `C-MOVE destination: the PACS sends to ${node.ae_title} at ${node.host} : ${node.port}`;
};
