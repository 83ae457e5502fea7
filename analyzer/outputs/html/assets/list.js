// The header (provenance, totals), the summaries panel, the filters, the virtual list of rows
// (by connection or merged in time), the selection, the detail pane and the keyboard.

// ---- header: provenance and totals --------------------------------------------------
function counts(obj) {
  const keys = Object.keys(obj);
  if (!keys.length) return "none";
  return keys.map((k) => k + " " + obj[k]).join(", ");
}
const TOTAL_HELP = {
  logins: "logins: sessions whose client reached a logged-in notification server (NS)",
  sessions: "sessions: groups of linked connections, one user's DS \u2192 NS \u2192 switchboards " +
    "(a session without a login is, e.g., a lone switchboard or a login that failed)",
  connections: "connections: TCP connections that carried MSNP (one lane each)",
  rewrites: "rewrites: addresses in XFR/RNG the proxy replaced by its own (Summaries lists them)",
};
function provenanceText() {
  const p = provenance;
  const range = p.first === null ? "no time" : fmtAbs(p.first) + " \u2013 " + fmtAbs(p.last, true) +
    " (" + fmtSpan(Math.max(0, p.last - p.first)) + ")";
  // Other clocks than the axis's (a transcript's own seconds beside a pcap): their range, apart.
  const others = Object.keys(p.clocks).filter((k) => k !== p.clock)
    .map((k) => "; own clock " + p.clocks[k].first_ts.toFixed(3) + " – " + p.clocks[k].last_ts.toFixed(3) + " s");
  return range + others.join("");
}
function header() {
  const p = provenance;
  const src = $("prov-src");
  src.textContent = p.sources.length ? p.sources.join(", ") : "(no file: a live capture)";
  src.title = src.textContent;
  $("prov-range").textContent = provenanceText();
  $("prov-version").textContent = "msnp-analyzer " + (p.version || "?") +
    (p.implementation ? " (" + p.implementation + ")" : "");
  $("prov-redacted").textContent = p.redacted ? "secrets redacted" : "NOT redacted: secrets shown";
  $("prov-redacted").className = p.redacted ? "muted" : "warn";
  const t = meta.totals, box = $("totals");
  const items = [["logins", t.logins], ["sessions", t.sessions], ["connections", t.connections],
    ["versions", counts(t.versions)], ["commands", t.commands],
    ["transactions", counts(t.transactions)], ["anomalies", counts(t.anomalies)]];
  if (t.rewrites) items.push(["rewrites", t.rewrites]);
  for (const [k, v] of items) {
    const s = el("span", "t", k + ":");
    s.dataset.total = k;
    if (TOTAL_HELP[k]) s.title = TOTAL_HELP[k];
    s.appendChild(el("b", null, v));
    box.appendChild(s);
  }
  $("tz").addEventListener("click", () => {
    localTime = !localTime;
    $("tz").textContent = localTime ? "local time" : "UTC";
    $("tz").setAttribute("aria-pressed", String(localTime));
    $("prov-range").textContent = provenanceText();
    if (selected >= 0) select(selected, false);
    redrawViews();
  });
}

// ---- the summaries panel: plugin sections, chats, rewrites, what the totals mean ----------
function table(columns, rows) {
  const tab = el("table");
  const head = el("tr");
  for (const c of columns) head.appendChild(el("th", null, c));
  tab.appendChild(head);
  for (const r of rows) {
    const tr = el("tr");
    for (const cell of r) tr.appendChild(el("td", null, cell === null || cell === undefined ? "" : String(cell)));
    tab.appendChild(tr);
  }
  return tab;
}
function summaries() {
  const secs = $("sections");
  const legend = el("details", "section");
  legend.open = true;
  legend.appendChild(el("summary", null, "What the totals count"));
  for (const k of ["logins", "sessions", "connections"]) legend.appendChild(el("p", null, TOTAL_HELP[k]));
  secs.appendChild(legend);
  // Plugins' report sections: plain data, rendered with textContent like everything else.
  for (const sec of meta.sections || []) {
    const det = el("details", "section");
    det.dataset.section = sec.title;
    det.appendChild(el("summary", null, sec.title + " (" + sec.rows.length + ")"));
    // Built when first opened: a capture with thousands of chats must not pay for them before its first rows.
    det.addEventListener("toggle", () => {
      if (det.open && !det.dataset.built) { det.dataset.built = "1"; det.appendChild(table(sec.columns, sec.rows)); }
    });
    secs.appendChild(det);
  }
  if (meta.rewrites && meta.rewrites.length) {
    const det = el("details", "section");
    det.dataset.section = "rewrites";
    det.appendChild(el("summary", null, "Rewrites by the proxy (" + meta.rewrites.length + ")"));
    det.appendChild(table(["time", "connection", "command", "server kind", "upstream address", "given to the client"],
      meta.rewrites.map((w) => [fmtTime(w.ts), w.lane === null ? "-" : lanes[w.lane].id, w.command,
        w.target || "-", w.upstream, w.given])));
    if (meta.totals.rewrites > meta.rewrites.length) {
      det.appendChild(el("p", "muted", "the first " + meta.rewrites.length + " of " + meta.totals.rewrites + " rewrites"));
    }
    secs.appendChild(det);
  }
  $("tab-summaries").textContent = "Summaries (" + (meta.sections || []).length + ")";
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

// ---- items: lane headers (negative) and rows; by connection or merged in time ------------
let items = null, filtered = false, mergedMode = false;
function allItems() {
  if (mergedMode) return merged();
  const a = new Int32Array(N + lanes.length);
  let p = 0;
  lanes.forEach((lane, li) => {
    a[p++] = -(li + 1);
    for (let i = 0; i < lane.count; i++) a[p++] = lane.first + i;
  });
  return a;
}

// ---- filters ------------------------------------------------------------------------
const fCmd = $("f-cmd"), fConn = $("f-conn"), fAnom = $("f-anom"), fQ = $("q"), fOrder = $("f-order");
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
function filtersActive() { return !!(fCmd.value || fConn.value || fAnom.value || fQ.value.trim()); }
function applyFilters() {
  if (!ready) return;
  const c = fCmd.value, ln = fConn.value, an = fAnom.value, q = fQ.value.trim().toLowerCase();
  function keep(r) {
    if (ln !== "" && Number(ln) !== r[0]) return false;
    if (c && r[3] !== c) return false;
    if (an === "*" && !r[7]) return false;
    if (an && an !== "*" && !(r[7] && r[7].some((a) => a[0] === an))) return false;
    if (q && rowText(r).indexOf(q) < 0) return false;
    return true;
  }
  if (!filtersActive()) {
    items = allItems(); filtered = mergedMode;
  } else if (mergedMode) {
    const out = [];
    for (const i of merged()) if (keep(row(i))) out.push(i);
    items = Int32Array.from(out); filtered = true;
  } else {
    const out = [];
    lanes.forEach((lane, li) => {
      if (ln !== "" && Number(ln) !== li) return;
      let head = false;
      for (let i = lane.first; i < lane.first + lane.count; i++) {
        if (!keep(row(i))) continue;
        if (!head) { out.push(-(li + 1)); head = true; }
        out.push(i);
      }
    });
    items = Int32Array.from(out); filtered = true;
  }
  const nrows = items.length - countHeads();
  $("shown").textContent = nrows + " of " + N + " rows";
  $("reset").disabled = !filtersActive();
  $("spacer").style.height = items.length * ROWH + "px";
  // A selected row the filters now hide leaves the detail pane: it would describe a row not shown.
  if (selected >= 0 && itemPos(selected) < 0) {
    selected = -1; related = new Map();
    placeholder("The selected row is hidden by the filters.");
  }
  render(true);
  if (selected >= 0) scrollToRow(selected);
}
function countHeads() { let n = 0; for (const v of items) if (v < 0) n++; return n; }
function resetFilters() {
  fCmd.value = fConn.value = fAnom.value = ""; fQ.value = "";
  applyFilters();
}
function setOrder(value) {
  mergedMode = value === "merged";
  fOrder.value = value;
  applyFilters();
}

// ---- the virtual list -------------------------------------------------------------
const list = $("list"), spacer = $("spacer");
let selected = -1, related = new Map(), pending = false;
function laneNode(li, top) {
  const l = lanes[li];
  const d = el("div", "lane");
  d.style.top = top + "px";
  d.dataset.lane = l.id;
  const prev = li > 0 ? lanes[li - 1].session : undefined;
  if (l.session !== prev || li === 0) d.classList.add("sess");
  let text = (l.session ? l.session + " \u00b7 " : "") + laneLabel(l) + "  \u00b7 " + l.count + " rows";
  if (l.link) text += "  \u00b7 from [" + l.link.from + "] by " + l.link.by;
  else if (l.unlinked && l.unlinked.length) text += "  \u00b7 unlinked";   // details not read yet: none
  d.appendChild(el("span", null, text));
  d.title = l.link ? (l.link.evidence || "") : (l.unlinked || []).join("; ");
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
  if (ready && openedFrom(i).length) {
    d.appendChild(el("span", "badge ref", "\u2192 [" + openedFrom(i).map((li) => lanes[li].id).join("], [") + "]"));
  }
  // payload[3]: the payload's length on the wire (the text shown may be shorter: redacted).
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
  if (N === 0) return;
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

// ---- selection and detail ---------------------------------------------------------
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
function jumpLane(box, label, li) {
  const b = el("button", "jump", label);
  b.dataset.lane = lanes[li].id;
  b.addEventListener("click", () => { scrollToLane(li); showLane(li); });
  box.appendChild(b);
}
function placeholder(text) {
  const box = $("detail");
  box.replaceChildren(el("p", "muted", text));
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
  selectionChanged();
}
// Position of a row in the list's items (-1: not shown).
function itemPos(i) {
  for (let p = 0; p < items.length; p++) if (items[p] === i) return p;
  return -1;
}
function scrollToPos(k) {
  const y = k * ROWH;
  if (y < list.scrollTop || y > list.scrollTop + list.clientHeight - ROWH) list.scrollTop = Math.max(0, y - list.clientHeight / 3);
}
function scrollToRow(i) {
  let k = itemPos(i);
  if (k < 0 && filtersActive()) {     // hidden by a filter: show everything again
    fCmd.value = fConn.value = fAnom.value = ""; fQ.value = "";
    applyFilters();
    k = itemPos(i);
  }
  if (k >= 0) scrollToPos(k);
}
function scrollToLane(li) {
  showView("timeline");
  if (mergedMode || filtersActive()) { resetFilters(); setOrder("lanes"); }
  const k = itemPos(-(li + 1));
  if (k >= 0) { list.scrollTop = k * ROWH; render(true); }
}
function showDetail(i, r, req) {
  const box = $("detail");
  box.replaceChildren();
  const lane = lanes[r[0]];
  box.appendChild(el("h2", null, DIRS[r[2]] + " " + r[3] + (r[4] === null ? "" : " " + r[4])));
  kv(box, [["row", "#r" + i], ["connection", laneLabel(lane)], ["session", lane.session || "-"],
    ["time", fmtAbs(r[1]) + " (" + fmtTime(r[1]) + " s)"], ["parameters", r[5] || "(none)"]]);
  const nav = el("div", "refs");
  for (const li of openedFrom(i)) jumpLane(nav, "\u2192 opened connection " + laneLabel(lanes[li]), li);
  if (lane.referral) jump(nav, "\u2190 this connection was opened by #" + lane.referral.row +
    " in [" + lanes[lane.referral.lane].id + "]", lane.referral.row);
  if (nav.childNodes.length) box.appendChild(nav);
  rewriteBox(box, rewritesFor(i, null));
  if (req >= 0) {
    const q = row(req), t = q[8];
    box.appendChild(el("h2", null, "Transaction"));
    kv(box, [["request", q[3] + " " + (q[4] === null ? "" : q[4])], ["outcome", t[2] || "-"],
      ["latency", t[3] === null ? "-" : t[3] + " ms"], ["error", t[4] || "-"], ["replies", String(t[1].length)]]);
    const tnav = el("div");
    if (req !== i) jump(tnav, "request " + q[3], req);
    for (const rep of t[1]) { const rr = row(rep); jump(tnav, "reply " + (rr ? rr[3] : rep) + " #" + rep, rep); }
    box.appendChild(tnav);
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
    const shown = r[6][2] ? "binary body as hex" : provenance.redacted ? "secrets redacted in the text below" : "";
    det.appendChild(el("summary", null, "Payload, " + r[6][3] + " bytes on the wire" + (shown ? " (" + shown + ")" : "")));
    if (r[6][0]) det.appendChild(el("pre", "headers", r[6][0]));
    det.appendChild(el("pre", r[6][2] ? "hex" : "body", r[6][1]));
    box.appendChild(det);
    if (r[6][4]) box.appendChild(decodedView(r[6][4]));
  }
}
function rewriteBox(box, found) {
  if (!found.length) return;
  box.appendChild(el("h2", null, "Rewritten by the proxy"));
  for (const w of found) {
    kv(box, [["command", w.command + (w.target ? " (" + w.target + ")" : "")], ["upstream address", w.upstream],
      ["given to the client", w.given], ["time", fmtAbs(w.ts)]]);
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
  const nav = el("div", "refs");
  if (l.referral) jump(nav, "\u2190 opened by " + (row(l.referral.row) || ["", "", "", "?"])[3] + " #" +
    l.referral.row + " in [" + lanes[l.referral.lane].id + "]", l.referral.row);
  const ladderBtn = el("button", "jump", "ladder of this " + (l.role === "SB" ? "switchboard" : "session"));
  ladderBtn.addEventListener("click", () => openLadder(l.role === "SB" ? "lane:" + li : "session:" + (l.session || "lane:" + li)));
  nav.appendChild(ladderBtn);
  box.appendChild(nav);
  rewriteBox(box, rewritesFor(null, li));
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

// ---- keyboard: j/k and arrows move, Enter opens the detail, / searches, Esc clears -------------
function moveSelection(step) {
  if (!items || !items.length || N === 0) return;
  let k = selected >= 0 ? itemPos(selected) : -1;
  if (k < 0) {
    // Nothing selected (or not shown): start at the first row on screen.
    k = Math.floor(list.scrollTop / ROWH) - (step > 0 ? 1 : 0);
    if (step < 0) k = Math.min(items.length, k + Math.ceil(list.clientHeight / ROWH));
  }
  for (let p = k + step; p >= 0 && p < items.length; p += step) {
    if (items[p] >= 0) { select(items[p], false); scrollToPos(p); render(true); return; }
  }
}
function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const tag = ev.target && ev.target.tagName;
  const typing = tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA";
  if (ev.key === "Escape") {
    if (ev.target === fQ && fQ.value) { fQ.value = ""; applyFilters(); }
    else if (typing) ev.target.blur();
    else if (selected >= 0) {
      selected = -1; related = new Map(); render(true);
      placeholder(noMsnp() ? noMsnpText() : "Nothing selected.");
      history.replaceState(null, "", location.pathname + location.search);
      selectionChanged();
    } else {
      // Nothing selected already (a filter may have hidden the row, and said so): the pane
      // says what is true now, not what a filter since cleared once did.
      placeholder(noMsnp() ? noMsnpText() : "Nothing selected.");
    }
    ev.preventDefault();
    return;
  }
  if (typing) return;
  if (ev.key === "/") { showView("timeline"); fQ.focus(); fQ.select(); ev.preventDefault(); return; }
  if (currentView !== "timeline") return;
  if (ev.key === "j" || ev.key === "ArrowDown") { moveSelection(1); ev.preventDefault(); }
  else if (ev.key === "k" || ev.key === "ArrowUp") { moveSelection(-1); ev.preventDefault(); }
  else if (ev.key === "Enter" && selected >= 0) {
    // The detail pane takes the focus (arrows then scroll it); payload sections open.
    const box = $("detail");
    for (const d of box.querySelectorAll("details")) d.open = true;
    box.focus();
    ev.preventDefault();
  }
}
function noMsnpText() {
  const where = provenance.sources.length ? " (" + provenance.sources.join(", ") + ")" : "";
  if (N === 0) return "No MSNP in this capture" + where + ": no connection carried MSNP commands.";
  return "No MSNP in this capture" + where + ": " + lanes.length + " connection(s) on MSNP ports carried no " +
    "MSNP command; what they carried is listed as skipped bytes or anomalies.";
}
// True when no line was decoded as an MSNP command (rows may still hold skipped bytes).
function noMsnp() { return !meta.totals.commands; }
