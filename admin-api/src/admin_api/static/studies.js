// The studies table (GET /api/studies) and the simulator's "send a study" form.
// Uses page.js's $, api(), el(), clearErrors() and numberOrText(); commitment.js's commitmentText().
"use strict";

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
