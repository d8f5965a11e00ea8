// The live log: the recent events, then the stream, and what each event makes the page refresh.
//
// Live events: EventSource cannot send an Authorization header, so the page
// reads /api/events/stream with fetch() and parses the Server-Sent Events
// itself. The token stays in a header (never in a URL, where it would land in
// access logs and browser history), and resuming sends Last-Event-ID like
// EventSource would.
"use strict";

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
