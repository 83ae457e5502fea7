// The ladder diagram (a VoIP-style flow graph) of one session or one switchboard: a column for
// the client and one per connection (DS, NS, SBs), each line an arrow in time order, replies
// tied to their request with the latency. Built as an SVG with presentation attributes only,
// so "Download SVG" serialises exactly what is shown into a standalone file (no network).

const SVGNS = "http://www.w3.org/2000/svg";
const LADDER = {STEP: 22, TOP: 84, LEFT: 92, COLW: 230, PAGE: 1500, LABEL: 46};
let ladderKey = null, ladderOffset = 0;

// Characters XML 1.0 cannot hold (C0 controls but tab/LF/CR, U+FFFE/U+FFFF, lone surrogates):
// XMLSerializer writes them as they are, and the downloaded SVG would open nowhere. Text
// from the wire shows them as U+FFFD in the ladder.
const NOT_XML = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|\p{Cs}/gu;

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, String(attrs[k]).replace(NOT_XML, "\ufffd"));
  if (text !== undefined && text !== null) e.textContent = String(text).replace(NOT_XML, "\ufffd");
  return e;
}

// The choices: every session with more than one connection, then every connection.
function ladderChoices() {
  const out = [];
  for (const s of meta.sessions || []) {
    const lis = s.streams.filter((id) => laneIndex.has(id)).map((id) => laneIndex.get(id));
    if (lis.length) out.push(["session:" + s.session, "session " + s.session + " " + (s.handle || "") +
      " (" + lis.map((li) => lanes[li].role || "?").join(", ") + ")"]);
  }
  lanes.forEach((l, li) => out.push(["lane:" + li, (l.role === "SB" ? "switchboard " : "connection ") + laneLabel(l)]));
  return out;
}
function ladderLanes(key) {
  if (key.startsWith("lane:")) return [Number(key.slice(5))].filter((li) => li >= 0 && li < lanes.length);
  const name = key.slice(8);
  const s = (meta.sessions || []).find((x) => x.session === name);
  if (!s) return [];
  return s.streams.filter((id) => laneIndex.has(id)).map((id) => laneIndex.get(id));
}
function openLadder(key) {
  showView("ladder");
  const pick = $("ladder-pick");
  if (key.startsWith("session:lane:")) key = key.slice(8);
  pick.value = key;
  ladderKey = pick.value ? key : null;
  ladderOffset = 0;
  drawLadder();
}
function fillLadderChoices() {
  const pick = $("ladder-pick");
  for (const [value, label] of ladderChoices()) option(pick, value, label);
  pick.addEventListener("change", () => { ladderKey = pick.value; ladderOffset = 0; drawLadder(); });
  $("ladder-prev").addEventListener("click", () => { ladderOffset = Math.max(0, ladderOffset - LADDER.PAGE); drawLadder(); });
  $("ladder-next").addEventListener("click", () => { ladderOffset += LADDER.PAGE; drawLadder(); });
  $("ladder-svg").addEventListener("click", downloadLadder);
}

// The rows of the chosen lanes in time order (ties: row order), one page of them.
function ladderRows(lis) {
  const all = [];
  for (const li of lis) for (let i = lanes[li].first; i < lanes[li].first + lanes[li].count; i++) all.push(i);
  all.sort((a, b) => ((row(a)[1] || 0) - (row(b)[1] || 0)) || (a - b));
  return all;
}

function drawLadder() {
  const box = $("ladder-box");
  if (!ladderKey) {
    const first = ladderChoices()[0];
    if (!first) { box.replaceChildren(el("p", "muted", N ? "Nothing to draw." : noMsnpText())); return; }
    ladderKey = first[0];
    $("ladder-pick").value = ladderKey;
  }
  const lis = ladderLanes(ladderKey);
  const all = ladderRows(lis);
  if (ladderOffset >= all.length) ladderOffset = Math.max(0, all.length - LADDER.PAGE);
  const shown = all.slice(ladderOffset, ladderOffset + LADDER.PAGE);
  $("ladder-prev").disabled = ladderOffset === 0;
  $("ladder-next").disabled = ladderOffset + LADDER.PAGE >= all.length;
  $("ladder-info").textContent = all.length > LADDER.PAGE
    ? "lines " + (ladderOffset + 1) + "\u2013" + (ladderOffset + shown.length) + " of " + all.length
    : all.length + " lines";
  box.replaceChildren(ladderSvg(lis, shown));
  ladderMark();
}

function ladderSvg(lis, shown) {
  // Few columns get wider ones (room for the parameters); the title needs about 700 px.
  const colW = lis.length <= 2 ? 380 : LADDER.COLW;
  const col = new Map(lis.map((li, k) => [li, LADDER.LEFT + (k + 1) * colW]));
  const clientX = LADDER.LEFT;
  const width = Math.max(700, LADDER.LEFT + (lis.length + 1) * colW);
  // One step per line; a pause of a second or more gets a little room and a note, so the
  // evenly spaced arrows do not hide where the session waited.
  // "A pause" is long for this ladder: 20 times its median step, and at least 2 s.
  const steps = [];
  for (let k = 1; k < shown.length; k++) {
    const a = row(shown[k - 1])[1], b = row(shown[k])[1];
    if (a !== null && b !== null) steps.push(b - a);
  }
  steps.sort((a, b) => a - b);
  const pauseAt = Math.max(2, 20 * (steps.length ? steps[steps.length >> 1] : 0));
  const yOf = new Map(), gaps = [];
  let y = LADDER.TOP + LADDER.STEP / 2, prevT = null;
  for (const i of shown) {
    const t = row(i)[1];
    if (prevT !== null && t !== null && t - prevT >= pauseAt) { gaps.push([y - LADDER.STEP / 2, t - prevT]); y += LADDER.STEP * 0.8; }
    yOf.set(i, y);
    y += LADDER.STEP;
    if (t !== null) prevT = t;
  }
  const height = y + LADDER.STEP / 2;
  const svg = svgEl("svg", {xmlns: SVGNS, width: width, height: height, viewBox: "0 0 " + width + " " + height,
    "font-family": "Menlo, Consolas, monospace", "font-size": 11});
  svg.id = "ladder";
  svg.appendChild(svgEl("rect", {x: 0, y: 0, width: width, height: height, fill: "#ffffff"}));
  const title = ladderChoices().find((c) => c[0] === ladderKey);
  svg.appendChild(svgEl("text", {x: 8, y: 16, "font-family": "system-ui, sans-serif", "font-size": 13,
    "font-weight": "bold", fill: "#1d2330"}, "MSNP ladder: " + (title ? title[1] : ladderKey)));
  svg.appendChild(svgEl("text", {x: 8, y: 30, fill: "#5a6378", "font-family": "system-ui, sans-serif"},
    provenance.sources.join(", ") + "  \u00b7  " + (provenance.first !== null ? fmtAbs(provenance.first) : "")));
  // Column heads and lifelines.
  const heads = [[clientX, "client", ""]];
  for (const li of lis) heads.push([col.get(li), (lanes[li].role || "?") + " [" + lanes[li].id + "]", lanes[li].server || ""]);
  for (const [x, name, addr] of heads) {
    svg.appendChild(svgEl("line", {x1: x, y1: LADDER.TOP - 8, x2: x, y2: height, stroke: "#b8c3dc", "stroke-width": 2}));
    svg.appendChild(svgEl("text", {x: x, y: LADDER.TOP - 24, "text-anchor": "middle", "font-weight": "bold", fill: "#1f2a44"}, name));
    svg.appendChild(svgEl("text", {x: x, y: LADDER.TOP - 12, "text-anchor": "middle", fill: "#77809a", "font-size": 10}, addr));
  }
  for (const [gy, pause] of gaps) {
    svg.appendChild(svgEl("line", {x1: 4, y1: gy + 6, x2: LADDER.LEFT - 6, y2: gy + 6, stroke: "#d5dae5", "stroke-dasharray": "2 3"}));
    svg.appendChild(svgEl("text", {class: "pause", x: 6, y: gy + 9, fill: "#9aa3b5", "font-size": 9,
      "font-family": "system-ui, sans-serif"}, "\u22ee " + fmtSpan(pause) + " later"));
  }
  const defs = svgEl("defs", {});
  for (const [id, color] of [["ah-c2s", "#1f5fbf"], ["ah-s2c", "#a0329b"]]) {
    const m = svgEl("marker", {id: id, markerWidth: 8, markerHeight: 8, refX: 7, refY: 4, orient: "auto"});
    m.appendChild(svgEl("path", {d: "M0,0 L8,4 L0,8 z", fill: color}));
    defs.appendChild(m);
  }
  svg.appendChild(defs);
  let ties = 0;
  shown.forEach((i) => {
    const r = row(i), y = yOf.get(i), sx = col.get(r[0]);
    const g = svgEl("g", {"data-row": i, cursor: "pointer"});
    // The whole line as the tooltip (the label beside the arrow is cut to the column's width).
    g.appendChild(svgEl("title", {}, fmtTime(r[1]) + " " + DIRS[r[2]] + " " + r[3] + (r[4] === null ? "" : " " + r[4]) +
      (r[5] ? " " + r[5] : "") + (r[7] ? "  [" + r[7].map((a) => a[0]).join(", ") + "]" : "")));
    g.appendChild(svgEl("text", {x: 6, y: y + 4, fill: "#77809a", "font-size": 10}, fmtTime(r[1])));
    if (r[3] === "!" || r[3] === "~" || r[2] === 2) {
      // An anomaly or skipped bytes with no line: a mark on the connection's lifeline.
      g.setAttribute("class", "mark");
      g.appendChild(svgEl("circle", {cx: sx, cy: y, r: 5, fill: "#e67e22"}));
      g.appendChild(svgEl("text", {x: sx + 9, y: y + 4, fill: "#c0392b"}, clip(r[3] + " " + r[5], 60)));
    } else {
      const c2s = r[2] === 0;
      const x1 = c2s ? clientX : sx, x2 = c2s ? sx : clientX;
      const color = c2s ? "#1f5fbf" : "#a0329b";
      g.setAttribute("class", "arrow " + (c2s ? "c2s" : "s2c"));
      g.appendChild(svgEl("line", {x1: x1 + (c2s ? 3 : -3), y1: y, x2: x2 + (c2s ? -3 : 3), y2: y, stroke: color,
        "stroke-width": 1.4, "marker-end": "url(#" + (c2s ? "ah-c2s" : "ah-s2c") + ")"}));
      const label = r[3] + (r[4] === null ? "" : " " + r[4]) + (r[5] ? " " + r[5] : "");
      g.appendChild(svgEl("text", {x: Math.min(x1, x2) + 8, y: y - 3, fill: r[7] ? "#c0392b" : "#1d2330"},
        clip(label, Math.floor(Math.abs(x2 - x1) / 6.6) - 2)));
      if (r[7]) g.appendChild(svgEl("circle", {cx: Math.max(x1, x2) - 10, cy: y - 6, r: 3.5, fill: "#e67e22"}));
    }
    g.addEventListener("click", () => select(i, false));
    svg.appendChild(g);
    // A reply tied to its request: a bracket beside the server's lifeline, with the latency.
    const t = r[8];
    if (t && t[0] === 1 && yOf.has(t[1])) {
      const q = row(t[1]), y0 = yOf.get(t[1]);
      const x = sx + 8 + (ties++ % 3) * 7;
      svg.appendChild(svgEl("path", {class: "tie", "data-request": t[1], "data-reply": i, fill: "none",
        stroke: "#2d7d46", "stroke-width": 1, "stroke-dasharray": "3 2",
        d: "M" + (sx + 2) + "," + y0 + " H" + x + " V" + y + " H" + (sx + 2)}));
      if (q[8] && q[8][1][0] === i && q[8][3] !== null) {
        svg.appendChild(svgEl("text", {class: "latency", x: x + 4, y: (y0 + y) / 2 + 4, fill: "#2d7d46",
          "font-size": 10}, q[8][3] + " ms"));
      }
    }
  });
  // The selected line's frame, moved by ladderMark() when the selection changes.
  svg.appendChild(svgEl("rect", {id: "ladder-sel", x: 2, y: 0, width: width - 4, height: LADDER.STEP,
    fill: "none", stroke: "#f39c12", "stroke-width": 1.5, visibility: "hidden"}));
  return svg;
}
function ladderMark() {
  const frame = $("ladder-sel");
  if (!frame) return;
  const g = selected >= 0 ? document.querySelector("#ladder g[data-row='" + selected + "']") : null;
  if (!g) { frame.setAttribute("visibility", "hidden"); return; }
  const line = g.querySelector("line, circle");
  const y = Number(line.getAttribute("y1") || line.getAttribute("cy"));
  frame.setAttribute("y", String(y - LADDER.STEP / 2));
  frame.setAttribute("visibility", "visible");
}
function clip(s, n) { s = String(s); return n > 3 && s.length > n ? s.slice(0, n - 1) + "\u2026" : s; }

// The ladder as a standalone SVG file: serialised, handed to the browser as a Blob download.
function downloadLadder() {
  const svg = $("ladder");
  if (!svg) return;
  const text = '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(svg);
  const url = URL.createObjectURL(new Blob([text], {type: "image/svg+xml"}));
  const a = el("a");
  a.href = url;
  a.download = "msnp-ladder-" + String(ladderKey).replace(/[^A-Za-z0-9_.-]+/g, "_") + ".svg";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
