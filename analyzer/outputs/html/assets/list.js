// The header totals, the filters, the virtual list of rows, the selection and the detail pane.
// ---- header -------------------------------------------------------------
function counts(obj) {
  const keys = Object.keys(obj);
  if (!keys.length) return "none";
  return keys.map((k) => k + " " + obj[k]).join(", ");
}
function header() {
  const t = meta.totals, box = $("totals");
  const items = [["logins", t.logins], ["sessions", t.sessions], ["connections", t.connections],
    ["versions", counts(t.versions)], ["commands", t.commands],
    ["transactions", counts(t.transactions)], ["anomalies", counts(t.anomalies)]];
  for (const [k, v] of items) {
    const s = el("span", "t", k + ":");
    s.dataset.total = k;
    s.appendChild(el("b", null, v));
    box.appendChild(s);
  }
  if (meta.redacted) box.appendChild(el("span", "t muted", "secrets redacted"));
  // Plugins' report sections: plain data, rendered with textContent like everything else.
  const secs = $("sections");
  for (const sec of meta.sections || []) {
    const det = el("details", "section");
    det.dataset.section = sec.title;
    det.appendChild(el("summary", null, sec.title + " (" + sec.rows.length + ")"));
    const table = el("table");
    const head = el("tr");
    for (const c of sec.columns) head.appendChild(el("th", null, c));
    table.appendChild(head);
    for (const r of sec.rows) {
      const tr = el("tr");
      for (const cell of r) tr.appendChild(el("td", null, cell === null ? "" : String(cell)));
      table.appendChild(tr);
    }
    det.appendChild(table);
    secs.appendChild(det);
  }
}
function decodedView(v) {
  const det = el("details", "decoded");
  det.open = true;
  det.appendChild(el("summary", null, v.title + (v.plugin ? "  [" + v.plugin + "]" : "")));
  if (v.fields.length) kv(det, v.fields);
  if (v.body !== null && v.body !== undefined) det.appendChild(el("pre", "body", v.body));
  for (const c of v.children || []) det.appendChild(decodedView(c));
  return det;
}

// ---- items: lane headers (negative) and rows ------------------------------
let items = null, filtered = false;
function allItems() {
  const a = new Int32Array(N + lanes.length);
  let p = 0;
  lanes.forEach((lane, li) => {
    a[p++] = -(li + 1);
    for (let i = 0; i < lane.count; i++) a[p++] = lane.first + i;
  });
  return a;
}

// ---- filters ------------------------------------------------------------
const fCmd = $("f-cmd"), fConn = $("f-conn"), fAnom = $("f-anom"), fQ = $("q");
function option(sel, value, label) { const o = el("option", null, label); o.value = value; sel.appendChild(o); }
function fillFilters() {
  option(fCmd, "", "all commands");
  for (const [c, n] of Object.entries(meta.totals.by_command)) option(fCmd, c, c + " (" + n + ")");
  option(fConn, "", "all connections");
  lanes.forEach((l, li) => option(fConn, String(li), laneLabel(l)));
  option(fAnom, "", "all rows (any anomaly)");
  option(fAnom, "*", "rows with an anomaly");
  for (const [a, n] of Object.entries(meta.totals.anomalies)) option(fAnom, a, a + " (" + n + ")");
}
function rowText(r) {
  let s = r[3] + " " + (r[4] === null ? "" : r[4]) + " " + r[5];
  if (r[6]) s += " " + r[6][0] + " " + r[6][1];
  if (r[7]) for (const a of r[7]) s += " " + a[0] + " " + a[1];
  return s.toLowerCase();
}
function applyFilters() {
  if (!ready) return;
  const c = fCmd.value, ln = fConn.value, an = fAnom.value, q = fQ.value.trim().toLowerCase();
  if (!c && !ln && !an && !q) {
    items = allItems(); filtered = false;
  } else {
    const out = [];
    lanes.forEach((lane, li) => {
      if (ln !== "" && Number(ln) !== li) return;
      let head = false;
      for (let i = lane.first; i < lane.first + lane.count; i++) {
        const r = row(i);
        if (c && r[3] !== c) continue;
        if (an === "*" && !r[7]) continue;
        if (an && an !== "*" && !(r[7] && r[7].some((a) => a[0] === an))) continue;
        if (q && rowText(r).indexOf(q) < 0) continue;
        if (!head) { out.push(-(li + 1)); head = true; }
        out.push(i);
      }
    });
    items = Int32Array.from(out); filtered = true;
  }
  const nrows = items.length - countHeads();
  $("shown").textContent = nrows + " of " + N + " rows";
  $("spacer").style.height = items.length * ROWH + "px";
  render(true);
}
function countHeads() { let n = 0; for (const v of items) if (v < 0) n++; return n; }

// ---- the virtual list ---------------------------------------------------
const list = $("list"), spacer = $("spacer");
let selected = -1, related = new Map(), pending = false;
function laneLabel(l) {
  let s = "[" + l.id + "] " + (l.role || "?");
  if (l.version) s += " " + l.version;
  if (l.handle) s += " " + l.handle;
  if (l.client || l.server) s += "  " + (l.client || "?") + " \u2192 " + (l.server || "?");
  return s;
}
function laneNode(li, top) {
  const l = lanes[li];
  const d = el("div", "lane");
  d.style.top = top + "px";
  d.dataset.lane = l.id;
  const prev = li > 0 ? lanes[li - 1].session : undefined;
  if (l.session !== prev || li === 0) d.classList.add("sess");
  let text = (l.session ? l.session + " \u00b7 " : "") + laneLabel(l) + "  \u00b7 " + l.count + " rows";
  if (l.link) text += "  \u00b7 from [" + l.link.from + "] by " + l.link.by;
  else if (l.unlinked.length) text += "  \u00b7 unlinked";
  d.appendChild(el("span", null, text));
  d.title = l.link ? (l.link.evidence || "") : l.unlinked.join("; ");
  d.addEventListener("click", () => showLane(li));
  return d;
}
function rowNode(i, top) {
  const r = row(i);
  const d = el("div", "row");
  d.style.top = top + "px";
  d.dataset.row = String(i);
  if (!r) { d.appendChild(el("span", "params muted", "loading\u2026")); return d; }
  d.classList.add(DIRCLS[r[2]]);
  if (r[3] === "!") d.classList.add("anomaly-row");
  if (i === selected) d.classList.add("selected");
  const rel = related.get(i);
  if (rel) d.classList.add(rel);
  const a = el("a", "pos", fmtTime(r[1]));
  a.href = "#r" + i;
  a.title = "link to this row";
  d.appendChild(a);
  if (filtered) d.appendChild(el("span", "lane-tag", lanes[r[0]].id));
  d.appendChild(el("span", "dir", DIRS[r[2]]));
  d.appendChild(el("span", "cmd", r[3]));
  d.appendChild(el("span", "trid", r[4] === null ? "" : r[4]));
  d.appendChild(el("span", "params", r[5]));
  if (r[6]) d.appendChild(el("span", "badge pl", "payload " + r[6][3] + " B"));
  if (r[8] && r[8][0] === 0 && r[8][3] !== null) d.appendChild(el("span", "badge", r[8][3] + " ms"));
  if (r[7]) for (const an of r[7]) {
    const b = el("span", "badge sev-" + sev(an[0]), an[0]);
    b.title = summary(an[0]) + " \u2014 " + an[1];
    d.appendChild(b);
  }
  d.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") select(i, false); });
  return d;
}
function render(force) {
  if (pending && !force) return;
  pending = false;
  const top = list.scrollTop, h = list.clientHeight || 600;
  const first = Math.max(0, Math.floor(top / ROWH) - OVERSCAN);
  const last = Math.min(items.length, Math.ceil((top + h) / ROWH) + OVERSCAN);
  const frag = document.createDocumentFragment();
  for (let k = first; k < last; k++) {
    const v = items[k];
    frag.appendChild(v < 0 ? laneNode(-v - 1, k * ROWH) : rowNode(v, k * ROWH));
  }
  spacer.replaceChildren(frag);
}
list.addEventListener("scroll", () => {
  if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(true); }); }
});
window.addEventListener("resize", () => render(true));

// ---- selection and detail ------------------------------------------------
function kv(box, pairs) {
  const g = el("div", "kv");
  for (const [k, v] of pairs) { g.appendChild(el("span", null, k)); g.appendChild(el("span", null, v)); }
  box.appendChild(g);
}
function jump(box, label, i) {
  const b = el("button", "jump", label);
  b.addEventListener("click", () => select(i, true));
  box.appendChild(b);
}
function select(i, scroll) {
  const r = row(i);
  if (!r) return;
  selected = i;
  related = new Map();
  const t = r[8];
  let req = -1;
  if (t && t[0] === 0) req = i;
  else if (t && t[0] === 1) req = t[1];
  if (req >= 0) {
    const q = row(req);
    if (q && q[8] && q[8][0] === 0) {
      if (req !== i) related.set(req, "request");
      for (const rep of q[8][1]) if (rep !== i) related.set(rep, "reply");
    }
  }
  if (location.hash !== "#r" + i) history.replaceState(null, "", "#r" + i);
  if (scroll) scrollToRow(i);
  render(true);
  showDetail(i, r, req);
}
function scrollToRow(i) {
  let k = -1;
  for (let p = 0; p < items.length; p++) if (items[p] === i) { k = p; break; }
  if (k < 0) {                       // hidden by a filter: show everything again
    fCmd.value = fConn.value = fAnom.value = ""; fQ.value = "";
    applyFilters();
    for (let p = 0; p < items.length; p++) if (items[p] === i) { k = p; break; }
  }
  if (k >= 0) {
    const y = k * ROWH;
    if (y < list.scrollTop || y > list.scrollTop + list.clientHeight - ROWH) list.scrollTop = Math.max(0, y - list.clientHeight / 3);
  }
}
function showDetail(i, r, req) {
  const box = $("detail");
  box.replaceChildren();
  const lane = lanes[r[0]];
  box.appendChild(el("h2", null, DIRS[r[2]] + " " + r[3] + (r[4] === null ? "" : " " + r[4])));
  kv(box, [["row", "#r" + i], ["connection", laneLabel(lane)], ["session", lane.session || "-"],
    ["time", fmtAbs(r[1]) + " (" + fmtTime(r[1]) + " s)"], ["parameters", r[5] || "(none)"]]);
  if (req >= 0) {
    const q = row(req), t = q[8];
    box.appendChild(el("h2", null, "Transaction"));
    kv(box, [["request", q[3] + " " + (q[4] === null ? "" : q[4])], ["outcome", t[2] || "-"],
      ["latency", t[3] === null ? "-" : t[3] + " ms"], ["error", t[4] || "-"], ["replies", String(t[1].length)]]);
    const nav = el("div");
    if (req !== i) jump(nav, "request " + q[3], req);
    for (const rep of t[1]) { const rr = row(rep); jump(nav, "reply " + (rr ? rr[3] : rep) + " #" + rep, rep); }
    box.appendChild(nav);
  }
  if (r[7]) {
    box.appendChild(el("h2", null, "Anomalies"));
    for (const an of r[7]) {
      const d = el("div", "an");
      d.appendChild(el("b", null, an[0]));
      d.appendChild(el("span", "muted", " (" + sev(an[0]) + ") "));
      d.appendChild(el("div", null, summary(an[0])));
      d.appendChild(el("div", "muted", an[1]));
      box.appendChild(d);
    }
  }
  if (r[6]) {
    const det = el("details");
    det.open = true;
    det.appendChild(el("summary", null, "Payload, " + r[6][3] + " bytes" + (r[6][2] ? " (binary body as hex)" : "")));
    if (r[6][0]) det.appendChild(el("pre", "headers", r[6][0]));
    det.appendChild(el("pre", r[6][2] ? "hex" : "body", r[6][1]));
    box.appendChild(det);
    if (r[6][4]) box.appendChild(decodedView(r[6][4]));
  }
}
function showLane(li) {
  const l = lanes[li], box = $("detail");
  box.replaceChildren();
  box.appendChild(el("h2", null, laneLabel(l)));
  kv(box, [["session", l.session || "-"], ["start", fmtAbs(l.start)], ["end", fmtAbs(l.end)],
    ["commands", String(l.commands)], ["anomalies", counts(l.anomalies)],
    ["linked", l.link ? "from [" + l.link.from + "] by " + l.link.by + ": " + (l.link.evidence || "") : "-"],
    ["not linked", l.unlinked.join("; ") || "-"]]);
  if (l.participants.length) {
    box.appendChild(el("h2", null, "Participants"));
    for (const p of l.participants) {
      box.appendChild(el("div", null, p.handle + (p.nick ? " (" + p.nick + ")" : "") + ": " + p.via +
        " " + fmtTime(p.joined) + (p.left !== null ? ", left by " + p.left_via + " " + fmtTime(p.left) : "")));
    }
  }
}

function fromHash() {
  const m = /^#r(\d+)$/.exec(location.hash);
  if (m && Number(m[1]) < N) select(Number(m[1]), true);
}
