// Storage Commitment on the page: the requests the PACS answered and the fate of their
// reports (GET /api/commitments), and a study's latest state in the studies table.
// Uses page.js's api(), el() and $ (loaded after this file; called only once both are).
"use strict";

const COMMITMENT_STATES = {
  requested: "requested: the report is on its way",
  retrying: "retrying: the report could not be delivered yet",
  reported: "reported: the modality has the report",
  failed: "failed: the report was never delivered",
};

// One cell's text for a study's latest request (null: none asked).
function commitmentText(c) {
  if (!c) return "";
  if (c.state === "reported") return `reported: ${c.committed} of ${c.requested} committed`;
  return c.state;
}

async function loadCommitments() {
  const r = await api("GET", "/api/commitments?limit=20");
  if (!r.ok) return;
  const rows = r.data.map((c) => {
    const tr = el("tr");
    tr.dataset.state = c.state;
    const counts = c.state === "reported" ? `${c.committed} committed, ${c.failed} failed` : `${c.requested} asked`;
    const when = c.updated ? new Date(c.updated * 1000).toLocaleString() : "";
    for (const v of [c.calling_aet, c.state, counts, `${c.attempts} of ${c.max_attempts}`, when, c.last_error || ""]) {
      tr.append(el("td", null, v));
    }
    tr.title = `${c.transaction_uid}: ${COMMITMENT_STATES[c.state] || c.state}`;
    return tr;
  });
  $("#commitment-rows").replaceChildren(...rows);
  $("#commitments-empty").hidden = r.data.length > 0;
}
