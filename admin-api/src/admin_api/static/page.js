// DICOM Lab web page, the shared part: the admin token of this tab, api() for the JSON API,
// el() and safeText() for text from the network, and the inline field errors of the forms.
// Plain scripts (no build step, no modules): index.html loads page.js first, then listener.js,
// nodes.js, studies.js, events.js and app.js (the start-up), all deferred, in that order; they
// share these top-level names, as ladder.js, commitment.js, qr.js, viewer.js and tls.js do.
"use strict";

const TOKEN_KEY = "dicomlab.token";
const $ = (sel) => document.querySelector(sel);
// Text from the network (patient names, AE titles, descriptions) is only ever set as
// textContent, never parsed as HTML; control characters are shown as escapes, as
// dicomlab.text.safe_text does for the event stream and the terminal.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const NAMED = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };
const safeText = (value) => String(value).replace(UNSAFE, (c) => NAMED[c]
  || (c.charCodeAt(0) < 0x100 ? "\\x" : "\\u") + c.charCodeAt(0).toString(16).padStart(c.charCodeAt(0) < 0x100 ? 2 : 4, "0"));
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = safeText(text);
  return e;
};

// ---------------------------------------------------------------- token + API
function token() { return sessionStorage.getItem(TOKEN_KEY); }

function askToken(message) {
  $("#token-error").textContent = message || "";
  $("#token-overlay").hidden = false;
  $("#token-input").focus();
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { ok: false, status: 0, data: { error: "The admin API does not answer (is the lab running?)." } };
  }
  let data = null;
  const text = await resp.text();
  if (text) { try { data = JSON.parse(text); } catch (e) { data = { error: text }; } }
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopStream();
    askToken("That token is not right: give the ADMIN_TOKEN of this lab.");
  }
  return { ok: resp.ok, status: resp.status, data };
}

// --------------------------------------------------------- inline field errors
function clearErrors(form) {
  document.querySelectorAll(`[data-err^="${form}."]`).forEach((p) => { p.textContent = ""; });
  document.querySelectorAll(`#${form}-form [aria-invalid]`).forEach((i) => i.removeAttribute("aria-invalid"));
}

function showErrors(form, result) {
  const fields = (result.data && result.data.detail && result.data.detail.fields) || null;
  let shown = false;
  if (fields && result.status === 422) {
    for (const [name, msgs] of Object.entries(fields)) {
      const base = name.split(".")[0];
      const slot = document.querySelector(`[data-err="${form}.${base}"]`);
      if (slot) {
        slot.textContent = msgs.join(" ");
        const input = document.getElementById(`${form}-${base}`);
        if (input) input.setAttribute("aria-invalid", "true");
        shown = true;
      }
    }
  }
  if (!shown) {
    const slot = document.querySelector(`[data-err="${form}._form"]`);
    if (slot) slot.textContent = (result.data && result.data.error) || `The request failed (HTTP ${result.status}).`;
  }
}

// A number when the text is one; otherwise the text itself, so the server
// answers in plain words ("A port is a whole number from 1 to 65535.").
function numberOrText(v) {
  const t = v.trim();
  return /^\d+$/.test(t) ? Number(t) : t;
}

// A DIMSE status as typed: "0xA700", "A700h" or decimal; otherwise the text, for the server to refuse.
function statusOrText(v) {
  const t = v.trim();
  const hex = /^(?:0x)?([0-9a-f]{1,4})h?$/i.exec(t);
  if (/^0x/i.test(t) || /h$/i.test(t) || /[a-f]/i.test(t)) return hex ? parseInt(hex[1], 16) : t;
  return /^\d+$/.test(t) ? Number(t) : t;
}
