// The data the page reads: meta, the row chunks (parsed lazily), and small helpers.
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
    const el = $("c" + k);
    if (!el) return null;               // not parsed by the browser yet
    c = chunks[k] = JSON.parse(el.textContent);
  }
  return c;
}
function row(i) { const c = chunk(Math.floor(i / CH)); return c ? c[i % CH] : null; }
// row: [lane, ts, dir, cmd, trid, params, payload, anomalies, txn]

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function fmtTime(ts) {
  if (ts === null || ts === undefined) return "-";
  if (meta.start === null) return ts.toFixed(3);
  return "+" + (ts - meta.start).toFixed(3);
}
function fmtAbs(ts) {
  if (ts === null || ts === undefined) return "-";
  if (ts > 1e8) return new Date(ts * 1000).toISOString().replace("T", " ").replace("Z", " UTC");
  return ts.toFixed(6) + " s";
}
function sev(name) { const c = meta.catalogue[name]; return c ? c[0] : "warning"; }
function summary(name) { const c = meta.catalogue[name]; return c ? c[1] : ""; }
const DIRS = [">>>", "<<<", "  !"];
const DIRCLS = ["c2s", "s2c", "none"];
