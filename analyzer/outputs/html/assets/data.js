// The data the page reads: meta, the row chunks (parsed lazily), times, and what the views
// derive from the data when the exporter did not embed it (referrals, density, chats, merged
// order: see /work/tools/html-contract.md).
// Shared scope: the asset files are concatenated, in ASSET_SCRIPTS order, inside one function.
const ROWH = 22, OVERSCAN = 12;
const $ = (id) => document.getElementById(id);
const meta = JSON.parse($("meta").textContent);
const lanes = meta.lanes;
const N = meta.rows, CH = meta.chunk;
const chunks = new Array(meta.chunks);
let ready = false;
document.title = meta.title;

function chunk(k) {
  let c = chunks[k];
  if (c === undefined) {
    const node = $("c" + k);
    if (!node) return null;               // not parsed by the browser yet
    c = chunks[k] = JSON.parse(node.textContent);
  }
  return c;
}
// row: [lane, ts, dir, cmd, trid, params, payload, anomalies, txn]
function row(i) { const c = chunk(Math.floor(i / CH)); return c ? c[i % CH] : null; }

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function sev(name) { const c = meta.catalogue[name]; return c ? c[0] : "warning"; }
function summary(name) { const c = meta.catalogue[name]; return c ? c[1] : ""; }
const DIRS = [">>>", "<<<", "  !"];
const DIRCLS = ["c2s", "s2c", "none"];

// ---- provenance and time -----------------------------------------------------
// The exporter's provenance when present; otherwise what older pages hold (sources, lane times).
const provenance = (function () {
  const p = meta.provenance || {};
  let first = p.first_ts, last = p.last_ts;
  if (first === undefined || first === null) {
    first = null; last = null;
    for (const l of lanes) {
      if (l.start !== null && (first === null || l.start < first)) first = l.start;
      if (l.end !== null && (last === null || l.end > last)) last = l.end;
    }
    if (first === null && meta.start !== null && meta.start !== undefined) first = last = meta.start;
  }
  if (last === null || last === undefined) last = first;
  return {sources: p.sources || meta.sources || [], first: first, last: last,
    clock: p.clock || null, clocks: p.clocks || {},
    version: p.version || null, implementation: p.implementation || null,
    redacted: p.redacted !== undefined ? p.redacted : !!meta.redacted};
})();
const T0 = provenance.first !== null ? provenance.first : 0;
// A capture mixing clocks (a transcript's seconds from 0 beside a pcap's wall-clock times) gives
// each clock its own start: relative times never mix the two, and the axis shows the main clock.
const WALL_CLOCK = 1e8;   // the exporter's rule: at or past it, epoch seconds
function clockOf(ts) { return ts >= WALL_CLOCK ? "wall" : "relative"; }
function clockStart(ts) {
  const c = provenance.clocks[clockOf(ts)];
  return c ? c.first_ts : T0;
}
function onMainClock(ts) { return !provenance.clock || clockOf(ts) === provenance.clock; }
let localTime = false;  // the header's switch: absolute times in UTC (default) or this browser's zone

function fmtTime(ts) {
  if (ts === null || ts === undefined) return "-";
  const rel = ts - clockStart(ts);
  return (rel < 0 ? "-" : "+") + Math.abs(rel).toFixed(3);
}
function pad(n, w) { return String(n).padStart(w || 2, "0"); }
// Absolute time of day; epoch seconds below 1e8 are not wall-clock times (a transcript's offsets).
function fmtAbs(ts, short) {
  if (ts === null || ts === undefined) return "-";
  if (ts < 1e8) return ts.toFixed(6) + " s";
  const d = new Date(ts * 1000);
  const ms = pad(Math.floor((ts * 1000) % 1000), 3);
  if (localTime) {
    const off = -d.getTimezoneOffset(), sign = off >= 0 ? "+" : "-";
    const zone = "UTC" + sign + pad(Math.floor(Math.abs(off) / 60)) + ":" + pad(Math.abs(off) % 60);
    const date = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
    const time = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + ms;
    return (short ? time : date + " " + time) + " " + zone;
  }
  const iso = d.toISOString();
  return (short ? iso.slice(11, 23) : iso.slice(0, 10) + " " + iso.slice(11, 23)) + " UTC";
}
// A duration in seconds, at a precision that suits its size (axis labels, spans).
function fmtSpan(s) {
  if (s < 1e-3) return (s * 1e6).toFixed(0) + " \u00b5s";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
  if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// ---- lanes: labels, groups, time search -----------------------------------------
function laneLabel(l) {
  let s = "[" + l.id + "] " + (l.role || "?");
  if (l.version) s += " " + l.version;
  if (l.handle) s += " " + l.handle;
  if (l.client || l.server) s += "  " + (l.client || "?") + " \u2192 " + (l.server || "?");
  return s;
}
const laneIndex = new Map(lanes.map((l, i) => [l.id, i]));

// The first row of lane li at or after time t (binary search: a lane's rows are in time order).
function laneRowAt(li, t) {
  const l = lanes[li];
  let lo = l.first, hi = l.first + l.count;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const r = row(mid);
    if (r === null || r[1] === null || r[1] < t) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// ---- referrals: which XFR/RNG line opened a connection -----------------------------
// lanes[i].referral from the exporter, else found here: the parent's (lane.link.from) server
// line XFR/RNG that names this connection's server address, else its cookie, else the last
// one before this connection started.
let referralsDone = false;
function referrals() {
  if (referralsDone) return;
  referralsDone = true;
  lanes.forEach((l) => {
    if (l.referral !== undefined) return;
    l.referral = null;
    if (!l.link || !laneIndex.has(l.link.from)) return;
    const pi = laneIndex.get(l.link.from), p = lanes[pi];
    let byAddr = -1, byCookie = -1, before = -1;
    for (let i = p.first; i < p.first + p.count; i++) {
      const r = row(i);
      if (!r || r[2] !== 1 || (r[3] !== "XFR" && r[3] !== "RNG")) continue;
      const words = r[5].split(" ");
      if (r[3] === "XFR" && words[0] === "NS" && l.role !== "NS") continue;
      if (r[3] === "XFR" && words[0] === "SB" && l.role === "NS") continue;
      if (l.server && words.indexOf(l.server) >= 0 && byAddr < 0) byAddr = i;
      if (l.link.cookie && words.indexOf(l.link.cookie) >= 0 && byCookie < 0) byCookie = i;
      if (l.start === null || r[1] <= l.start) before = i;
    }
    const at = byCookie >= 0 ? byCookie : byAddr >= 0 ? byAddr : before;
    if (at >= 0) l.referral = {lane: pi, row: at};
  });
}
// Row index -> the lanes it opened (the jump from a referral row to its connection).
let openedBy = null;
function openedFrom(i) {
  if (openedBy === null) {
    referrals();
    openedBy = new Map();
    lanes.forEach((l, li) => {
      if (l.referral) {
        const list = openedBy.get(l.referral.row) || [];
        list.push(li);
        openedBy.set(l.referral.row, list);
      }
    });
  }
  return openedBy.get(i) || [];
}

// ---- density: commands and anomalies per time bin and lane -------------------------
// meta.bins and lanes[i].density from the exporter, else counted here from the rows.
let densityInfo = null;
function density() {
  if (densityInfo) return densityInfo;
  const first = provenance.first, last = provenance.last;
  const span = last > first ? last - first : 1;   // the exporter's rule: a span of 0 counts as 1 s
  let bins = meta.bins;
  if (!(bins > 0) || !lanes.every((l) => Array.isArray(l.density))) {
    bins = 240;
    const width = span / bins;
    lanes.forEach((l) => {
      const counts = new Map();
      for (let i = l.first; i < l.first + l.count; i++) {
        const r = row(i);
        if (!r || r[1] === null) continue;
        const b = Math.min(bins - 1, Math.max(0, Math.floor((r[1] - first) / width)));
        const c = counts.get(b) || [b, 0, 0];
        if (r[3] !== "!" && r[3] !== "~") c[1]++;
        if (r[7]) c[2] += r[7].length;
        counts.set(b, c);
      }
      l.density = [...counts.values()].sort((a, b) => a[0] - b[0]);
    });
  }
  densityInfo = {bins: bins, first: first, width: span / bins};
  return densityInfo;
}

// ---- lane details: what the first screen does not need ---------------------------------
// The exporter writes each lane's links, participants, density bins and anomaly counts, and the
// chats, after the rows (elements d0.., dc), so the browser reads a bounded meta before this script
// runs. They are merged into meta.lanes once the document has been read (older pages hold them in meta).
let detailsRead = false;
function readDetails() {
  if (detailsRead) return;
  detailsRead = true;
  let li = 0;
  for (let k = 0; ; k++) {
    const node = $("d" + k);
    if (!node) break;
    for (const d of JSON.parse(node.textContent)) Object.assign(lanes[li++], d);
  }
  const dc = $("dc");
  if (dc) meta.chats = JSON.parse(dc.textContent);
  for (const l of lanes) {
    if (l.unlinked === undefined) l.unlinked = [];
    if (l.participants === undefined) l.participants = [];
    if (l.anomalies === undefined) l.anomalies = {};
  }
}

// ---- chats: switchboard spans with their participants ------------------------------
function chats() {
  if (Array.isArray(meta.chats)) return meta.chats;
  if (!detailsRead) return [];   // the chats and participants come with the lane details
  const out = [];
  lanes.forEach((l, li) => {
    if (!l.participants || !l.participants.length) return;
    let start = null, end = null;
    for (const p of l.participants) {
      if (p.joined !== null && (start === null || p.joined < start)) start = p.joined;
      const e = p.left !== null ? p.left : l.end;
      if (e !== null && (end === null || e > end)) end = e;
    }
    out.push({lane: li, start: start === null ? l.start : start, end: end === null ? l.end : end,
      participants: l.participants.map((p) => p.handle)});
  });
  meta.chats = out;
  return out;
}

// ---- the merged chronological order across connections ------------------------------
// meta.merged chunks m{k} from the exporter (global rows in time order, ties in lane order),
// else a stable sort here (lane order is row order, so sorting by (time, index) is the rule).
let mergedOrder = null;
function merged() {
  if (mergedOrder) return mergedOrder;
  const out = new Int32Array(N);
  if (meta.merged > 0 && $("m0")) {
    let p = 0;
    for (let k = 0; k < meta.merged; k++) {
      const node = $("m" + k);
      if (!node) break;
      for (const i of JSON.parse(node.textContent)) out[p++] = i;
    }
    if (p === N) return (mergedOrder = out);
  }
  const ts = new Float64Array(N);
  for (let i = 0; i < N; i++) { const r = row(i); ts[i] = r && r[1] !== null ? r[1] : -Infinity; out[i] = i; }
  out.sort((a, b) => (ts[a] - ts[b]) || (a - b));
  return (mergedOrder = out);
}

// ---- rewrites (proxy/mitm): upstream address and what the client was given ---------------
function rewritesFor(i, li) {
  const out = [];
  for (const w of meta.rewrites || []) {
    if ((i !== null && w.row === i) || (i === null && w.lane === li)) out.push(w);
  }
  return out;
}
