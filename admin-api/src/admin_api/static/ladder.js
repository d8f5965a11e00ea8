// The association ladder: one association as a sequence diagram (SVG), two lanes,
// the modality and the PACS, from GET /api/associations/<id> (dicomlab.ladder).
//
// Built with DOM APIs only (createElementNS + textContent): nothing from the network
// is ever parsed as markup, and every text goes through safeText (page.js), which
// shows control characters as escapes. Uses page.js's globals: api, el, safeText.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const LADDER = { width: 980, left: 230, right: 850, top: 74, line: 16, label: 20, gap: 14, chars: 92 };

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = safeText(text);
  return e;
}

// Long lines are cut to fit between the lanes; the whole line is the tooltip.
function svgText(attrs, text) {
  const t = safeText(text);
  const shown = t.length > LADDER.chars ? `${t.slice(0, LADDER.chars - 1)}…` : t;
  const node = svg("text", attrs, shown);
  if (shown !== t) node.append(svg("title", {}, t));
  return node;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "";
  return ms >= 10000 ? `+${(ms / 1000).toFixed(1)} s` : `+${Math.round(ms)} ms`;
}

function markers(defs) {
  for (const tone of ["plain", "ok", "warn", "bad"]) {
    const m = svg("marker", { id: `ladder-arrow-${tone}`, viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
    m.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: `ladder-head ${tone}` }));
    defs.append(m);
  }
}

function drawLadder(ladder) {
  const L = LADDER;
  const mid = (L.left + L.right) / 2;
  const rows = ladder.steps.map((s) => L.label + s.lines.length * L.line + L.gap);
  const height = L.top + rows.reduce((a, b) => a + b, 0) + 50;
  const root = svg("svg", { viewBox: `0 0 ${L.width} ${height}`, width: L.width, class: "ladder-svg",
    role: "img", "aria-label": `Ladder of association ${safeText(ladder.assoc_id)}` });
  const defs = svg("defs");
  markers(defs);
  root.append(defs);
  // the two lanes: heads and lifelines
  const lanes = [
    [L.left, ladder.modality.ae_title || "?", `modality ${ladder.modality.address || ""}`.trim()],
    [L.right, ladder.pacs.ae_title || "?", `PACS ${ladder.pacs.address || ""}`.trim()],
  ];
  for (const [x, title, sub] of lanes) {
    root.append(svg("rect", { x: x - 95, y: 6, width: 190, height: 46, rx: 6, class: "ladder-lane" }));
    root.append(svg("text", { x, y: 26, class: "ladder-lane-title", "text-anchor": "middle" }, title));
    root.append(svg("text", { x, y: 44, class: "ladder-lane-sub", "text-anchor": "middle" }, sub));
    root.append(svg("line", { x1: x, y1: 52, x2: x, y2: height - 16, class: "ladder-lifeline" }));
  }
  let y = L.top;
  ladder.steps.forEach((s, i) => {
    const tone = s.tone || "plain";
    const g = svg("g", { class: `ladder-step ${tone}`, "data-kind": s.kind });
    const arrowY = y + L.label - 4;
    g.append(svg("text", { x: 12, y: arrowY + 4, class: "ladder-time" }, fmtMs(s.at_ms)));
    if (s.kind === "note") {
      const h = (s.lines.length) * L.line + 8;
      g.append(svg("rect", { x: L.left + 20, y: y + 2, width: L.right - L.left - 40, height: h, rx: 4,
        class: `ladder-note ${tone}` }));
      s.lines.forEach((line, j) => g.append(svgText({ x: mid, y: y + 16 + j * L.line, "text-anchor": "middle",
        class: "ladder-line" }, line)));
    } else {
      const toPacs = s.sender !== "pacs";
      const [x1, x2] = toPacs ? [L.left, L.right - 2] : [L.right, L.left + 2];
      g.append(svg("line", { x1, y1: arrowY, x2, y2: arrowY, class: `ladder-arrow ${tone}`,
        "marker-end": `url(#ladder-arrow-${tone})` }));
      g.append(svgText({ x: mid, y: arrowY - 6, "text-anchor": "middle", class: "ladder-label" }, s.label));
      s.lines.forEach((line, j) => g.append(svgText({ x: mid, y: arrowY + 16 + j * L.line, "text-anchor": "middle",
        class: s.tone === "bad" ? "ladder-line strong" : "ladder-line" }, line)));
    }
    root.append(g);
    y += rows[i];
  });
  if (ladder.duration_ms !== null && ladder.duration_ms !== undefined) {
    root.append(svg("text", { x: mid, y: y + 14, "text-anchor": "middle", class: "ladder-duration" },
      `${(ladder.duration_ms / 1000).toFixed(3)} s from TCP connect to the end (${ladder.outcome})`));
  }
  return root;
}

function contextTable(contexts) {
  const table = el("table", "ladder-contexts");
  const head = el("tr");
  for (const h of ["ID", "Abstract syntax", "Proposed transfer syntaxes", "Result", "Accepted syntax / why"]) head.append(el("th", null, h));
  table.append(el("thead"));
  table.tHead.append(head);
  const body = el("tbody");
  for (const c of contexts) {
    const tr = el("tr", c.result === "accepted" ? "ok" : c.result ? "bad" : "");
    for (const v of [c.id, c.abstract_syntax, c.transfer_syntaxes.join(", "), c.result || "not answered",
      c.transfer_syntax || c.why || ""]) tr.append(el("td", null, String(v)));
    tr.title = c.abstract_uid || "";
    body.append(tr);
  }
  table.append(body);
  return table;
}

function renderLadder(box, ladder) {
  const parts = [];
  const head = el("div", "ladder-head");
  head.append(el("h2", null, `Association ${ladder.assoc_id}: ${ladder.modality.ae_title || "?"} → ${ladder.pacs.ae_title || "?"}`));
  head.append(el("p", "muted", `${ladder.summary}${ladder.started ? ` · started ${new Date(ladder.started).toLocaleString()}` : ""} · as seen by the ${ladder.view === "pacs" ? "PACS" : "modality"}`));
  parts.push(head);
  if (ladder.problem) {
    const p = el("div", `ladder-problem ${ladder.outcome === "rejected" || ladder.outcome === "closed" ? "bad" : "warn"}`);
    p.setAttribute("role", "alert");
    p.append(el("strong", null, ladder.problem.title));
    if (ladder.problem.why) p.append(el("p", null, ladder.problem.why));
    if (ladder.problem.fix) {
      const fix = el("p", "ladder-fix");
      fix.append(el("b", null, "Fix: "), ladder.problem.fix.charAt(0).toUpperCase() + ladder.problem.fix.slice(1));
      p.append(fix);
    }
    parts.push(p);
  }
  const scroll = el("div", "ladder-scroll");
  scroll.append(drawLadder(ladder));
  parts.push(scroll);
  if (ladder.contexts.length) {
    const d = el("details", "ladder-more");
    d.open = ladder.contexts.length <= 8;
    d.append(el("summary", null, `Presentation contexts (${ladder.contexts.length})`), contextTable(ladder.contexts));
    parts.push(d);
  }
  if (ladder.pdus.length) {
    const d = el("details", "ladder-more");
    d.append(el("summary", null, `PDU detail, verbose mode (${ladder.pdus.length})`));
    const ol = el("ol", "log");
    for (const p of ladder.pdus) ol.append(el("li", null, `${fmtMs(p.at_ms).padStart(9)}  ${p.text}`));
    d.append(ol);
    parts.push(d);
  } else {
    parts.push(el("p", "muted", "PDU detail: turn Verbose on in the listener settings to record it for the next associations."));
  }
  box.replaceChildren(...parts);
}

async function openLadder(assocId, at) {
  const dialog = document.getElementById("ladder-dialog");
  const box = document.getElementById("ladder-body");
  box.replaceChildren(el("p", "muted", `Loading association ${assocId}…`));
  if (!dialog.open) dialog.showModal();
  const q = at ? `?at=${encodeURIComponent(at)}` : "";
  const r = await api("GET", `/api/associations/${encodeURIComponent(assocId)}${q}`);
  if (!r.ok) {
    box.replaceChildren(el("p", "err", (r.data && r.data.error) || `The ladder could not be loaded (HTTP ${r.status}).`));
    return;
  }
  renderLadder(box, r.data);
}

// A small button that opens the ladder of an event's association (the log, a node's status).
function ladderButton(assocId, at, text) {
  const b = el("button", "secondary small ladder-open", text || "ladder");
  b.type = "button";
  b.title = `Show association ${safeText(assocId)} as a ladder diagram`;
  b.addEventListener("click", () => openLadder(assocId, at));
  return b;
}

document.addEventListener("DOMContentLoaded", () => {
  const dialog = document.getElementById("ladder-dialog");
  document.getElementById("ladder-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (ev) => { if (ev.target === dialog) dialog.close(); });
});
