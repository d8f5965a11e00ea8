// DICOM Lab images: a received study opens to its series, a series to a viewer of its
// slices. Everything comes through the lab's DICOMweb routes (/api/dicomweb), with the
// tab's admin token in the Authorization header, as page.js's api() does for the JSON API:
//   QIDO-RS  .../studies/{study}/series, .../series/{series}/instances (Instance Number order)
//   WADO-RS  .../instances/{sop}/rendered?window=center,width   (image/png, windowed on the server)
//            .../instances/{sop}/frames/1                      (the stored values, for the value under
//                                                                the cursor: value x slope + intercept)
// Images are drawn on a canvas from createImageBitmap(blob): no blob: or data: URL, so the page's
// Content-Security-Policy (default-src 'self') stays as it is.
// Uses page.js's $, el, token, askToken and api (classic scripts share their top-level names).
"use strict";

const DICOMWEB = "/api/dicomweb";
// Window presets (level = center, width), in Hounsfield units.
const PRESETS = [
  { id: "soft", label: "Soft tissue", center: 40, width: 400 },
  { id: "lung", label: "Lung", center: -600, width: 1500 },
  { id: "bone", label: "Bone", center: 500, width: 2000 },
];
const VALUES_KEPT = 64; // slices whose values stay in memory (for the value under the cursor)

const viewer = {
  study: null, series: null, instances: [], index: 0, preset: PRESETS[0],
  seq: 0, values: new Map(), shown: null, // shown: {sop, width, height}
};

const tagValue = (item, tag) => {
  const v = item && item[tag] && item[tag].Value;
  if (!v || !v.length) return undefined;
  return typeof v[0] === "object" && v[0] !== null ? v[0].Alphabetic : v[0];
};

async function dicomweb(path, accept) {
  const resp = await fetch(DICOMWEB + path, { headers: { Authorization: `Bearer ${token() || ""}`, Accept: accept } });
  if (resp.status === 401) { sessionStorage.removeItem(TOKEN_KEY); askToken("That token is not right: give the ADMIN_TOKEN of this lab."); }
  if (!resp.ok) {
    let msg = `HTTP ${resp.status}`;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp;
}

function say(text, bad) {
  const p = $("#img-status");
  p.textContent = safeText(text || "");
  p.className = bad ? "err" : "muted";
}

// ------------------------------------------------------------------- study -> series
async function openStudy(uid) {
  const section = $("#images");
  section.hidden = false;
  viewer.study = uid;
  viewer.series = null;
  $("#img-viewer").hidden = true;
  $("#img-series").replaceChildren();
  say("Loading the series…");
  try {
    const [studies, series] = await Promise.all([
      (await dicomweb(`/studies?StudyInstanceUID=${encodeURIComponent(uid)}`, "application/dicom+json")).json(),
      (await dicomweb(`/studies/${encodeURIComponent(uid)}/series`, "application/dicom+json")).json(),
    ]);
    const s = studies[0] || {};
    $("#img-title").textContent = safeText(
      [tagValue(s, "00100010"), tagValue(s, "00100020"), tagValue(s, "00081030"), tagValue(s, "00080020")]
        .filter((v) => v).join(" · ") || uid);
    const items = series.map((se) => {
      const li = el("li");
      const b = el("button", "secondary series-open",
        `Series ${tagValue(se, "00200011") ?? "?"} · ${tagValue(se, "00080060") || "?"} · ` +
        `${tagValue(se, "0008103E") || "(no description)"} · ${tagValue(se, "00201209") ?? 0} images`);
      b.type = "button";
      b.dataset.series = tagValue(se, "0020000E");
      b.addEventListener("click", () => openSeries(b.dataset.series));
      li.append(b);
      return li;
    });
    $("#img-series").replaceChildren(...items);
    say(series.length ? "Open a series to see its slices." : "This study has no series.");
    section.scrollIntoView({ block: "start" });
  } catch (e) {
    say(`The study could not be opened: ${e.message}`, true);
  }
}

// ------------------------------------------------------------------- series -> slices
async function openSeries(seriesUid) {
  viewer.series = seriesUid;
  viewer.values.clear();
  viewer.instances = [];
  document.querySelectorAll("#img-series button").forEach((b) => b.classList.toggle("current", b.dataset.series === seriesUid));
  say("Loading the slices…");
  try {
    const fields = "includefield=00281052,00281053,00280103,00280100,00080060,00281054";
    const path = `/studies/${encodeURIComponent(viewer.study)}/series/${encodeURIComponent(seriesUid)}/instances?${fields}`;
    const list = await (await dicomweb(path, "application/dicom+json")).json();
    viewer.instances = list.map((i) => ({
      sop: tagValue(i, "00080018"),
      number: tagValue(i, "00200013"),
      rows: tagValue(i, "00280010"), cols: tagValue(i, "00280011"),
      slope: Number(tagValue(i, "00281053") ?? 1), intercept: Number(tagValue(i, "00281052") ?? 0),
      signed: tagValue(i, "00280103") === 1, bits: tagValue(i, "00280100") || 16,
      unit: tagValue(i, "00080060") === "CT" || tagValue(i, "00281054") === "HU" ? "HU" : "",
    }));
  } catch (e) {
    say(`The series could not be opened: ${e.message}`, true);
    return;
  }
  const slider = $("#img-slider");
  slider.min = 1;
  slider.max = Math.max(1, viewer.instances.length);
  slider.value = 1;
  $("#img-viewer").hidden = viewer.instances.length === 0;
  say(viewer.instances.length ? "" : "This series has no instances.");
  if (viewer.instances.length) show(0);
}

function sliceUrl(inst) {
  return `/studies/${encodeURIComponent(viewer.study)}/series/${encodeURIComponent(viewer.series)}/instances/${encodeURIComponent(inst.sop)}`;
}

async function show(index) {
  const n = viewer.instances.length;
  viewer.index = Math.min(Math.max(index, 0), n - 1);
  const inst = viewer.instances[viewer.index];
  const p = viewer.preset;
  const seq = ++viewer.seq;
  $("#img-slider").value = viewer.index + 1;
  $("#img-slice").textContent = `Slice ${viewer.index + 1} / ${n} (instance ${inst.number ?? "?"})`;
  $("#img-window").textContent = `${p.label}: W ${p.width} / L ${p.center}`;
  const canvas = $("#img-canvas");
  try {
    const resp = await dicomweb(`${sliceUrl(inst)}/rendered?window=${p.center},${p.width}`, "image/png");
    const bitmap = await createImageBitmap(await resp.blob());
    if (seq !== viewer.seq) return; // a newer slice or window was asked for meanwhile
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    viewer.shown = { sop: inst.sop, width: bitmap.width, height: bitmap.height };
    canvas.dataset.sop = inst.sop;
    canvas.dataset.window = `${p.center},${p.width}`;
    say("");
  } catch (e) {
    if (seq === viewer.seq) say(`Slice ${viewer.index + 1} could not be rendered: ${e.message}`, true);
  }
  loadValues(inst);
}

// The stored values of a slice (WADO-RS frames: multipart/related, one application/octet-stream part).
async function loadValues(inst) {
  if (viewer.values.has(inst.sop)) return viewer.values.get(inst.sop);
  const promise = (async () => {
    const resp = await dicomweb(`${sliceUrl(inst)}/frames/1`,
      'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1');
    const m = /boundary="?([^";]+)"?/.exec(resp.headers.get("Content-Type") || "");
    const buf = await resp.arrayBuffer();
    if (!m) return null;
    const text = new TextDecoder("latin1").decode(new Uint8Array(buf)); // one char per byte: offsets match
    const start = text.indexOf("\r\n\r\n") + 4;
    const end = text.indexOf(`\r\n--${m[1]}`, start);
    const body = buf.slice(start, end);
    const Kind = inst.bits === 8 ? (inst.signed ? Int8Array : Uint8Array) : (inst.signed ? Int16Array : Uint16Array);
    return new Kind(body);
  })().catch(() => null);
  viewer.values.set(inst.sop, promise);
  while (viewer.values.size > VALUES_KEPT) viewer.values.delete(viewer.values.keys().next().value);
  return promise;
}

async function pointAt(ev) {
  const canvas = $("#img-canvas");
  const inst = viewer.instances[viewer.index];
  if (!inst || !viewer.shown || viewer.shown.sop !== inst.sop) return;
  const r = canvas.getBoundingClientRect();
  const x = Math.floor((ev.clientX - r.left) * inst.cols / r.width);
  const y = Math.floor((ev.clientY - r.top) * inst.rows / r.height);
  if (x < 0 || y < 0 || x >= inst.cols || y >= inst.rows) { $("#img-value").textContent = ""; return; }
  const values = await loadValues(inst);
  if (!values || viewer.instances[viewer.index] !== inst) return;
  const v = values[y * inst.cols + x] * inst.slope + inst.intercept;
  const text = `x ${x}, y ${y}: ${Math.round(v * 10) / 10}${inst.unit ? " " + inst.unit : ""}`;
  $("#img-value").textContent = text;
  $("#img-value").dataset.value = String(v);
}

function setPreset(id) {
  viewer.preset = PRESETS.find((p) => p.id === id) || PRESETS[0];
  document.querySelectorAll("#img-presets button").forEach((b) => b.classList.toggle("current", b.dataset.preset === id));
  if (viewer.instances.length) show(viewer.index);
}

function buildImages() {
  const section = $("#images");
  const head = el("div", "row spread");
  const title = el("h2", null, "Images");
  const close = el("button", "secondary small", "Close");
  close.type = "button";
  close.addEventListener("click", () => { section.hidden = true; viewer.seq++; });
  head.append(title, close);
  const study = el("p", "hint");
  study.id = "img-title";
  const series = el("ul", "series-list");
  series.id = "img-series";
  const status = el("p", "muted");
  status.id = "img-status";

  const wrap = el("div", "img-viewer");
  wrap.id = "img-viewer";
  wrap.hidden = true;
  const presets = el("div", "row");
  presets.id = "img-presets";
  for (const p of PRESETS) {
    const b = el("button", "secondary small", `${p.label} (W ${p.width} / L ${p.center})`);
    b.type = "button";
    b.dataset.preset = p.id;
    b.addEventListener("click", () => setPreset(p.id));
    presets.append(b);
  }
  const canvas = el("canvas", "slice");
  canvas.id = "img-canvas";
  canvas.tabIndex = 0;
  canvas.setAttribute("aria-label", "CT slice: scroll or use the arrow keys to move through the stack");
  const slider = el("input");
  slider.type = "range";
  slider.id = "img-slider";
  slider.setAttribute("aria-label", "Slice");
  slider.addEventListener("input", () => show(Number(slider.value) - 1));
  canvas.addEventListener("wheel", (ev) => { ev.preventDefault(); show(viewer.index + (ev.deltaY > 0 ? 1 : -1)); }, { passive: false });
  canvas.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown" || ev.key === "ArrowRight") { ev.preventDefault(); show(viewer.index + 1); }
    if (ev.key === "ArrowUp" || ev.key === "ArrowLeft") { ev.preventDefault(); show(viewer.index - 1); }
  });
  canvas.addEventListener("mousemove", pointAt);
  canvas.addEventListener("mouseleave", () => { $("#img-value").textContent = ""; });
  const info = el("div", "row");
  const slice = el("span", "muted");
  slice.id = "img-slice";
  const win = el("span", "muted");
  win.id = "img-window";
  const value = el("span", "img-value");
  value.id = "img-value";
  value.setAttribute("aria-live", "polite");
  info.append(slice, win, value);
  wrap.append(presets, canvas, slider, info);
  section.replaceChildren(head, study, series, status, wrap);
  setPreset(PRESETS[0].id);
}

document.addEventListener("DOMContentLoaded", () => {
  if (!$("#images")) return;
  buildImages();
  const rows = $("#study-rows");
  const open = (ev) => {
    const tr = ev.target.closest("tr[data-study]");
    if (tr && (ev.type === "click" || ev.key === "Enter")) openStudy(tr.dataset.study);
  };
  rows.addEventListener("click", open);
  rows.addEventListener("keydown", open);
});
