// The overview: a time axis and one lane per connection (grouped by session: DS, NS, SBs), each
// a bar from open to close, commands as ticks, anomalies as marks, XFR/RNG referrals as arrows
// to the connection they opened, chats as spans with their participants. Drawn on a canvas, only
// the lanes on screen (so 10,000 lanes cost what 40 do); ticks come from lanes[i].density when a
// lane holds more commands than the width can show, from the rows themselves when zoomed in.

const OV = {LH: 18, AXIS: 24, LABELW: 190, MARGIN: 10};
const ROLE_COLOR = {DS: "#8391ad", NS: "#3f78c4", SB: "#2e9e6b"};
const ovCanvas = $("ov-canvas"), ovScroll = $("ov-scroll"), ovSpace = $("ov-space");
const ovCtx = ovCanvas.getContext("2d");
let ovView = null;            // [t0, t1]: the time range across the plot's width
let ovDrawn = false, ovQueued = false;
// The session group of each lane (alternating backgrounds, the group's name on its first lane).
const laneGroup = (function () {
  const g = new Int32Array(lanes.length);
  let k = 0;
  lanes.forEach((l, li) => { if (li > 0 && l.session !== lanes[li - 1].session) k++; g[li] = k; });
  return g;
})();

function ovFit() {
  const a = provenance.first, b = provenance.last;
  if (a === null) { ovView = [0, 1]; return; }
  const pad = b > a ? (b - a) * 0.03 : 0.05;   // a sliver of room either side (a fixed pad would swamp a 30 ms capture)
  ovView = [a - pad, b + pad];
}
function ovPlotWidth() { return Math.max(50, ovCanvas.clientWidth - OV.LABELW - OV.MARGIN); }
function ovX(t) { return OV.LABELW + (t - ovView[0]) / (ovView[1] - ovView[0]) * ovPlotWidth(); }
function ovT(x) { return ovView[0] + (x - OV.LABELW) / ovPlotWidth() * (ovView[1] - ovView[0]); }
function ovLaneY(li) { return OV.AXIS + li * OV.LH - ovScroll.scrollTop; }

// Height of the overview pane: all lanes when few, at most about 40% of the timeline view.
function ovLayout() {
  const view = $("v-timeline");
  const want = OV.AXIS + lanes.length * OV.LH + 4 + $("ov-bar").offsetHeight;
  const box = $("overview");
  box.style.height = Math.round(Math.min(want, Math.max(120, view.clientHeight * 0.4))) + "px";
  ovSpace.style.height = Math.max(0, OV.AXIS + lanes.length * OV.LH + 4 - ovScroll.clientHeight) + "px";
  const dpr = window.devicePixelRatio || 1;
  const w = ovScroll.clientWidth, h = ovScroll.clientHeight;
  ovCanvas.style.width = w + "px"; ovCanvas.style.height = h + "px";
  ovCanvas.width = Math.round(w * dpr); ovCanvas.height = Math.round(h * dpr);
  ovCtx.setTransform(dpr, 0, 0, dpr, 0, 0);
}

// "Nice" axis steps (1, 2, 5 x 10^n) so that about `n` ticks cover [a, b].
function niceStep(span, n) {
  const raw = span / Math.max(1, n), p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

function ovQueue() {
  if (ovQueued) return;
  ovQueued = true;
  requestAnimationFrame(() => { ovQueued = false; drawOverview(); });
}

function drawOverview() {
  if (currentView !== "timeline" || $("overview").hidden) return;
  if (!ovView) ovFit();
  const began = performance.now();
  const ctx = ovCtx, W = ovCanvas.clientWidth, H = ovCanvas.clientHeight;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  const top = ovScroll.scrollTop;
  const firstLane = Math.max(0, Math.floor(top / OV.LH));
  const lastLane = Math.min(lanes.length - 1, Math.floor((top + H - OV.AXIS) / OV.LH));
  const plotW = ovPlotWidth(), span = ovView[1] - ovView[0];
  let fromDensity = 0;
  for (let li = firstLane; li <= lastLane; li++) if (drawLane(ctx, li, plotW, span, W) === "density") fromDensity++;
  drawChats(ctx, firstLane, lastLane);
  const arrows = drawReferrals(ctx, top, H);
  drawSelected(ctx);
  drawAxis(ctx, W);
  ovCanvas.dataset.lanes = lanes.length ? firstLane + "-" + lastLane : "";
  ovCanvas.dataset.view = ovView[0] + "," + ovView[1];
  ovCanvas.dataset.density = String(fromDensity);   // lanes whose ticks came from density bins
  $("ov-range").textContent = fmtSpan(span) + " across, from " + fmtTime(ovView[0]) + " s";
  listArrows(arrows);
  ovDrawn = true;
  // How long this frame took (bench/html_views.py reads it: drawing must not grow with the lanes).
  ovCanvas.dataset.drawMs = (performance.now() - began).toFixed(3);
}

function drawLane(ctx, li, plotW, span, W) {
  const l = lanes[li], y = ovLaneY(li), mid = y + OV.LH / 2;
  ctx.fillStyle = laneGroup[li] % 2 ? "#eef1f7" : "#f8f9fc";
  ctx.fillRect(0, y, W, OV.LH);
  const firstOfGroup = li === 0 || laneGroup[li] !== laneGroup[li - 1];
  if (firstOfGroup) { ctx.fillStyle = "#b8c3dc"; ctx.fillRect(0, y, W, 1); }
  // Label: the session's name on its first lane, then role, id and handle.
  ctx.save();
  ctx.beginPath(); ctx.rect(0, y, OV.LABELW - 6, OV.LH); ctx.clip();
  ctx.fillStyle = "#1d2330";
  let label = (l.role || "?") + " [" + l.id + "]";
  if (l.role !== "SB" && l.handle) label += " " + l.handle;
  if (l.role === "SB" && l.participants && l.participants.length) label += " " + l.participants.map((p) => p.handle.split("@")[0]).join(", ");
  if (firstOfGroup && l.session) { ctx.font = "bold 11px system-ui, sans-serif"; ctx.fillText(l.session, 4, mid); ctx.font = "11px system-ui, sans-serif"; }
  ctx.fillText(label, firstOfGroup && l.session ? 34 : 14, mid);
  ctx.restore();
  ctx.save();
  ctx.beginPath(); ctx.rect(OV.LABELW, y, plotW, OV.LH); ctx.clip();
  // A lane on another clock than the axis (a transcript beside a pcap) cannot be placed on it.
  if (l.start !== null && !onMainClock(l.start)) {
    ctx.fillStyle = "#77809a";
    ctx.font = "italic 11px system-ui, sans-serif";
    ctx.fillText("own clock (" + clockOf(l.start) + " times): not on this axis; its rows are in the list",
      OV.LABELW + 6, mid);
    ctx.restore();
    return "clock";
  }
  // The connection's bar, open to close.
  if (l.start !== null) {
    const x0 = ovX(l.start), x1 = Math.max(ovX(l.end === null ? l.start : l.end), x0 + 2);
    ctx.fillStyle = ROLE_COLOR[l.role] || "#9aa3b5";
    ctx.globalAlpha = 0.35;
    ctx.fillRect(x0, y + 4, x1 - x0, OV.LH - 8);
    ctx.globalAlpha = 1;
  }
  // Ticks: single rows when they fit (about one per 3 px), else the lane's density bins.
  const overlap = l.start === null ? 0 : Math.max(0, Math.min(ovView[1], l.end) - Math.max(ovView[0], l.start));
  const duration = l.start === null ? 0 : Math.max(l.end - l.start, 1e-9);
  const estimate = l.count * Math.min(1, overlap / duration);
  const mode = ready && estimate < plotW / 3 ? "rows" : "density";
  if (mode === "rows") drawRows(ctx, li, y);
  else drawDensity(ctx, l, y);
  ctx.restore();
  return mode;
}

function drawRows(ctx, li, y) {
  const l = lanes[li], end = l.first + l.count;
  for (let i = laneRowAt(li, ovView[0]); i < end; i++) {
    const r = row(i);
    if (!r || r[1] === null) continue;
    if (r[1] > ovView[1]) break;
    const x = Math.round(ovX(r[1])) + 0.5;
    if (r[3] !== "!" && r[3] !== "~") {
      ctx.fillStyle = r[2] === 0 ? "#1f5fbf" : "#a0329b";
      // Client lines above the middle, server lines below: the direction reads at a glance.
      if (r[2] === 0) ctx.fillRect(x - 0.5, y + 3, 1.5, OV.LH / 2 - 3);
      else ctx.fillRect(x - 0.5, y + OV.LH / 2, 1.5, OV.LH / 2 - 3);
    }
    if (r[7] || r[3] === "!") anomalyMark(ctx, x, y, r[7] ? sev(r[7][0][0]) : "warning");
  }
}

function drawDensity(ctx, l, y) {
  if (!densityInfo && !Array.isArray(l.density)) return;   // before the document is read
  const d = density();
  let peak = 1;
  for (const b of l.density) if (b[1] > peak) peak = b[1];
  for (const b of l.density) {
    const x0 = ovX(d.first + b[0] * d.width), x1 = Math.max(ovX(d.first + (b[0] + 1) * d.width), x0 + 1);
    if (x1 < OV.LABELW || x0 > OV.LABELW + ovPlotWidth()) continue;
    if (b[1] > 0) {
      const h = Math.max(2, (OV.LH - 6) * Math.sqrt(b[1] / peak));
      ctx.fillStyle = "#33415e";
      ctx.fillRect(x0, y + OV.LH / 2 - h / 2, x1 - x0, h);
    }
    if (b[2] > 0) anomalyMark(ctx, (x0 + x1) / 2, y, "warning");
  }
}

function anomalyMark(ctx, x, y, severity) {
  ctx.fillStyle = severity === "error" ? "#d0312d" : severity === "info" ? "#2b8fd6" : "#e67e22";
  ctx.beginPath();
  ctx.moveTo(x, y + 1); ctx.lineTo(x + 4, y + 7); ctx.lineTo(x - 4, y + 7); ctx.closePath();
  ctx.fill();
}

// Chats: a band along the top of the switchboard's lane, with its participants.
function drawChats(ctx, firstLane, lastLane) {
  for (const c of chats()) {
    if (c.lane < firstLane || c.lane > lastLane || c.start === null) continue;
    const y = ovLaneY(c.lane);
    const x0 = Math.max(OV.LABELW, ovX(c.start)), x1 = Math.min(OV.LABELW + ovPlotWidth(), ovX(c.end));
    if (x1 <= x0) continue;
    ctx.fillStyle = "rgba(46,158,107,0.55)";
    ctx.fillRect(x0, y + OV.LH - 4, x1 - x0, 3);
    ctx.save();
    ctx.beginPath(); ctx.rect(x0, y, x1 - x0, OV.LH); ctx.clip();
    // The participants on a pale backing: readable over the lane's ticks.
    ctx.font = "10px system-ui, sans-serif";
    const text = c.participants.join(", ");
    ctx.fillStyle = "rgba(255,255,255,0.85)";
    ctx.fillRect(x0 + 1, y + 1, Math.min(ctx.measureText(text).width + 4, x1 - x0 - 2), 10);
    ctx.fillStyle = "#17583b";
    ctx.fillText(text, x0 + 3, y + 6);
    ctx.restore();
  }
}

// Referral arrows: from the XFR/RNG line (its time, in the parent's lane) to the start of the
// connection it opened. Only those that cross the visible lanes are drawn.
// The lanes with a referral, ordered by the upper of their two lanes; with the widest gap
// between parent and child, the arrows that can cross the visible lanes are a short range of it.
let referralIndex = null;
function referralRange(firstLane, lastLane) {
  if (referralIndex === null) {
    referrals();
    const list = [];
    let gap = 0;
    lanes.forEach((l, li) => {
      if (!l.referral || l.start === null || !onMainClock(l.start)) return;
      const lo = Math.min(li, l.referral.lane), hi = Math.max(li, l.referral.lane);
      list.push([lo, hi, li]);
      gap = Math.max(gap, hi - lo);
    });
    list.sort((a, b) => a[0] - b[0]);
    referralIndex = {list: list, gap: gap};
  }
  const {list, gap} = referralIndex;
  // First entry whose upper lane could still reach firstLane.
  let lo = 0, hi = list.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (list[mid][0] < firstLane - gap) lo = mid + 1; else hi = mid; }
  const out = [];
  for (let k = lo; k < list.length && list[k][0] <= lastLane; k++) if (list[k][1] >= firstLane) out.push(list[k][2]);
  return out;
}

function drawReferrals(ctx, top, H) {
  if (!ready) return [];
  const out = [];
  const yMin = OV.AXIS, yMax = H;
  const firstLane = Math.max(0, Math.floor(top / OV.LH)), lastLane = Math.floor((top + H - OV.AXIS) / OV.LH);
  ctx.save();
  ctx.beginPath(); ctx.rect(OV.LABELW, OV.AXIS, ovPlotWidth(), H - OV.AXIS); ctx.clip();
  referralRange(firstLane, lastLane).forEach((li) => {
    const l = lanes[li], ref = l.referral;
    const r = row(ref.row);
    if (!r) return;
    const y1 = ovLaneY(ref.lane) + OV.LH / 2, y2 = ovLaneY(li) + OV.LH / 2;
    if (Math.max(y1, y2) < yMin || Math.min(y1, y2) > yMax) return;
    const x1 = ovX(r[1]), x2 = ovX(l.start);
    ctx.strokeStyle = "#c25e00"; ctx.fillStyle = "#c25e00"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
    const a = Math.atan2(y2 - y1, x2 - x1);
    ctx.beginPath();
    ctx.moveTo(x2, y2);
    ctx.lineTo(x2 - 7 * Math.cos(a - 0.45), y2 - 7 * Math.sin(a - 0.45));
    ctx.lineTo(x2 - 7 * Math.cos(a + 0.45), y2 - 7 * Math.sin(a + 0.45));
    ctx.closePath(); ctx.fill();
    ctx.beginPath(); ctx.arc(x1, y1, 3, 0, 2 * Math.PI); ctx.fill();
    out.push({from: lanes[ref.lane].id, to: l.id, row: ref.row, cmd: r[3], x1: x1, y1: y1, x2: x2, y2: y2});
  });
  ctx.restore();
  return out;
}

function drawSelected(ctx) {
  if (selected < 0) return;
  const r = row(selected);
  if (!r || r[1] === null) return;
  const x = ovX(r[1]);
  if (x < OV.LABELW || x > OV.LABELW + ovPlotWidth()) return;
  ctx.strokeStyle = "rgba(243,156,18,0.9)"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(x, OV.AXIS); ctx.lineTo(x, ovCanvas.clientHeight); ctx.stroke();
  const y = ovLaneY(r[0]);
  ctx.strokeStyle = "#f39c12"; ctx.lineWidth = 2;
  ctx.strokeRect(x - 4, y + 1, 8, OV.LH - 2);
}

// The axis: time since the capture's start, the absolute time of the first tick.
function drawAxis(ctx, W) {
  ctx.fillStyle = "#1f2a44";
  ctx.fillRect(0, 0, W, OV.AXIS);
  ctx.fillStyle = "#eef1f7";
  // The absolute time of day at the left edge (wall-clock captures only; transcripts count from 0).
  if (ovView[0] > 1e8) ctx.fillText(fmtAbs(ovView[0], true), 6, OV.AXIS / 2);
  const step = niceStep(ovView[1] - ovView[0], ovPlotWidth() / 110);
  const startT = Math.ceil((ovView[0] - T0) / step) * step + T0;
  for (let t = startT; t <= ovView[1]; t += step) {
    const x = ovX(t);
    if (x < OV.LABELW) continue;
    ctx.fillRect(x, OV.AXIS - 5, 1, 5);
    const rel = Math.abs(t - T0) < step / 1e6 ? 0 : t - T0;
    const text = (rel < 0 ? "−" : "+") + Math.abs(rel).toFixed(Math.max(0, -Math.floor(Math.log10(step)))) + " s";
    ctx.fillText(text, x + 3, OV.AXIS / 2);
  }
}

// The drawn arrows as a list (screen readers; tests read where they were drawn).
function listArrows(arrows) {
  const ul = $("ov-arrows");
  const nodes = arrows.slice(0, 200).map((a) => {
    const li = el("li", null, a.cmd + " #" + a.row + " in [" + a.from + "] opened [" + a.to + "]");
    li.dataset.from = a.from; li.dataset.to = a.to; li.dataset.row = String(a.row);
    li.dataset.x1 = a.x1.toFixed(1); li.dataset.y1 = a.y1.toFixed(1);
    li.dataset.x2 = a.x2.toFixed(1); li.dataset.y2 = a.y2.toFixed(1);
    return li;
  });
  ul.replaceChildren(...nodes);
}

// ---- interaction: click selects, ctrl+wheel zooms, shift+wheel or drag pans ----------------
function ovZoom(factor, atX) {
  const t = ovT(atX === undefined ? OV.LABELW + ovPlotWidth() / 2 : atX);
  let span = (ovView[1] - ovView[0]) * factor;
  span = Math.min(Math.max(span, 1e-5), Math.max(1, (provenance.last - provenance.first) * 4));
  const frac = (t - ovView[0]) / (ovView[1] - ovView[0]);
  ovView = [t - frac * span, t - frac * span + span];
  ovQueue();
}
function ovPan(dx) {
  const dt = dx / ovPlotWidth() * (ovView[1] - ovView[0]);
  ovView = [ovView[0] - dt, ovView[1] - dt];
  ovQueue();
}
// The row drawn nearest to (x, y), within a few pixels; else null.
function ovHit(x, y) {
  const li = Math.floor((y - OV.AXIS + ovScroll.scrollTop) / OV.LH);
  if (y < OV.AXIS || li < 0 || li >= lanes.length || x < OV.LABELW) return {lane: li >= 0 && li < lanes.length ? li : -1, row: -1};
  const l = lanes[li], t = ovT(x);
  const at = laneRowAt(li, t);
  let best = -1, bestD = 7;
  for (const i of [at - 1, at, at + 1]) {
    if (i < l.first || i >= l.first + l.count) continue;
    const r = row(i);
    if (!r || r[1] === null) continue;
    const d = Math.abs(ovX(r[1]) - x);
    if (d < bestD) { bestD = d; best = i; }
  }
  return {lane: li, row: best};
}
function ovInteraction() {
  let drag = null;
  ovCanvas.addEventListener("mousedown", (ev) => {
    drag = {x: ev.clientX, y: ev.clientY, top: ovScroll.scrollTop, moved: false};
  });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    drag.moved = true;
    ovPan(dx); drag.x = ev.clientX;
    ovScroll.scrollTop = drag.top - dy;
  });
  window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
  ovCanvas.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    if (!ready) return;
    const box = ovCanvas.getBoundingClientRect();
    const hit = ovHit(ev.clientX - box.left, ev.clientY - box.top);
    if (hit.row >= 0) select(hit.row, true);
    else if (hit.lane >= 0) { showLane(hit.lane); }
  });
  ovCanvas.addEventListener("wheel", (ev) => {
    const box = ovCanvas.getBoundingClientRect();
    if (ev.ctrlKey || ev.metaKey) {
      ovZoom(Math.exp(ev.deltaY * 0.002), ev.clientX - box.left);
      ev.preventDefault();
    } else if (ev.shiftKey || Math.abs(ev.deltaX) > Math.abs(ev.deltaY)) {
      ovPan(-(ev.shiftKey ? ev.deltaY || ev.deltaX : ev.deltaX));
      ev.preventDefault();
    }
  }, {passive: false});
  ovScroll.addEventListener("scroll", ovQueue);
  $("ov-in").addEventListener("click", () => ovZoom(0.5));
  $("ov-out").addEventListener("click", () => ovZoom(2));
  $("ov-fit").addEventListener("click", () => { ovFit(); ovQueue(); });
  $("ov-hide").addEventListener("click", () => {
    const box = $("overview");
    box.hidden = !box.hidden;
    $("ov-hide").textContent = box.hidden ? "show overview" : "hide overview";
    $("ov-show").hidden = !box.hidden;
    if (!box.hidden) { ovLayout(); ovQueue(); }
    render(true);
  });
  $("ov-show").addEventListener("click", () => $("ov-hide").click());
}
// The selected row's lane scrolled into the overview, and the marker redrawn.
function ovReveal() {
  if (selected < 0 || $("overview").hidden) return;
  const r = row(selected);
  if (!r) return;
  const y = r[0] * OV.LH, h = ovScroll.clientHeight - OV.AXIS;
  if (y < ovScroll.scrollTop || y + OV.LH > ovScroll.scrollTop + h) ovScroll.scrollTop = Math.max(0, y - h / 2);
  if (r[1] !== null && (r[1] < ovView[0] || r[1] > ovView[1])) {
    const span = ovView[1] - ovView[0];
    ovView = [r[1] - span / 2, r[1] + span / 2];
  }
  ovQueue();
}
