// Plots, drawn in the page as inline SVG: latency over time per command (keep-alives PNG/QNG in
// a plot of their own: their latency is the idle path's, not the server's work), commands per
// second per connection, anomalies over time. Built when the Plots tab is first opened.

const PLOT = {W: 900, H: 230, L: 58, R: 230, T: 26, B: 30, MAXPOINTS: 6000};
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
let plotsDrawn = false;

// The density bins regrouped for a plot: about a second each on short captures (so the rate
// reads as commands per second), at most ~150 points across on long ones.
function plotBins() {
  const d = density(), span = d.width * d.bins;
  const want = Math.max(d.width, span / 150, Math.min(1, span / 20));
  const group = Math.max(1, Math.round(want / d.width));
  const regroup = (bins) => {
    const m = new Map();
    for (const b of bins) {
      const k = Math.floor(b[0] / group), c = m.get(k) || [k, 0, 0];
      c[1] += b[1]; c[2] += b[2]; m.set(k, c);
    }
    return [...m.values()].sort((a, b) => a[0] - b[0]);
  };
  return {first: d.first, width: d.width * group, bins: Math.ceil(d.bins / group), regroup: regroup};
}

function plotFrame(title, xr, yr, ylabel) {
  const w = Math.max(600, $("plots-box").clientWidth - 24);
  const svg = svgEl("svg", {xmlns: SVGNS, width: w, height: PLOT.H, viewBox: "0 0 " + w + " " + PLOT.H,
    "font-family": "system-ui, sans-serif", "font-size": 11, class: "plot"});
  svg.appendChild(svgEl("rect", {x: 0, y: 0, width: w, height: PLOT.H, fill: "#ffffff"}));
  svg.appendChild(svgEl("text", {x: 8, y: 16, "font-weight": "bold", fill: "#1d2330", "font-size": 13}, title));
  const pw = w - PLOT.L - PLOT.R, ph = PLOT.H - PLOT.T - PLOT.B;
  const fx = (t) => PLOT.L + (t - xr[0]) / Math.max(xr[1] - xr[0], 1e-9) * pw;
  const fy = (v) => PLOT.T + ph - (v - yr[0]) / Math.max(yr[1] - yr[0], 1e-9) * ph;
  svg.appendChild(svgEl("rect", {x: PLOT.L, y: PLOT.T, width: pw, height: ph, fill: "#f8f9fc", stroke: "#c9cfdb"}));
  const xs = niceStep(xr[1] - xr[0], pw / 100);
  for (let t = Math.ceil((xr[0] - T0) / xs) * xs + T0; t <= xr[1] + 1e-9; t += xs) {
    svg.appendChild(svgEl("line", {x1: fx(t), y1: PLOT.T, x2: fx(t), y2: PLOT.T + ph, stroke: "#e3e7ef"}));
    svg.appendChild(svgEl("text", {x: fx(t), y: PLOT.T + ph + 14, "text-anchor": "middle", fill: "#5a6378"},
      "+" + +(t - T0).toFixed(Math.max(0, -Math.floor(Math.log10(xs)))) + " s"));
  }
  const ys = niceStep(yr[1] - yr[0], 4);
  for (let v = Math.ceil(yr[0] / ys) * ys; v <= yr[1] + 1e-9; v += ys) {
    svg.appendChild(svgEl("line", {x1: PLOT.L, y1: fy(v), x2: PLOT.L + pw, y2: fy(v), stroke: "#e3e7ef"}));
    svg.appendChild(svgEl("text", {x: PLOT.L - 4, y: fy(v) + 4, "text-anchor": "end", fill: "#5a6378"}, +v.toPrecision(4)));
  }
  svg.appendChild(svgEl("text", {x: 12, y: PLOT.T + ph / 2, fill: "#5a6378",
    transform: "rotate(-90 12 " + (PLOT.T + ph / 2) + ")", "text-anchor": "middle"}, ylabel));
  return {svg: svg, fx: fx, fy: fy, right: PLOT.L + pw + 10};
}
function legend(frame, entries) {
  entries.slice(0, 11).forEach(([label, color], k) => {
    const y = PLOT.T + 6 + k * 15;
    frame.svg.appendChild(svgEl("rect", {x: frame.right, y: y - 5, width: 10, height: 10, fill: color}));
    frame.svg.appendChild(svgEl("text", {x: frame.right + 14, y: y + 4, fill: "#1d2330"}, clip(label, 32)));
  });
}
// A lane on another clock than the axis (a transcript beside a pcap) is left out of every plot.
function onAxis(l) { return l.start === null || onMainClock(l.start); }
function timeRange() {
  const a = provenance.first, b = provenance.last;
  return a === null ? [0, 1] : [a, b > a ? b : a + 1];
}

// Latency of every answered request: [time, ms, command, row], keep-alives apart.
function latencyPoints() {
  const main = [], keep = [];
  for (let i = 0; i < N; i++) {
    const r = row(i);
    if (!r || !r[8] || r[8][0] !== 0 || r[8][3] === null || r[1] === null || !onMainClock(r[1])) continue;
    (r[3] === "PNG" ? keep : main).push([r[1], r[8][3], r[3], i]);
  }
  return [main, keep];
}
function latencyPlot(title, points, note) {
  const box = el("div", "plot-box");
  let peak = 1;
  for (const p of points) if (p[1] > peak) peak = p[1];
  const frame = plotFrame(title, timeRange(), [0, peak * 1.1], "latency ms");
  // Colours for the busiest commands; the rest share grey.
  const byCmd = new Map();
  for (const p of points) byCmd.set(p[2], (byCmd.get(p[2]) || 0) + 1);
  const order = [...byCmd.entries()].sort((a, b) => b[1] - a[1]);
  const color = new Map(order.slice(0, 9).map(([c], k) => [c, PALETTE[k]]));
  // Past MAXPOINTS a regular stride keeps the picture's shape at a bounded cost (said below it).
  const stride = Math.max(1, Math.ceil(points.length / PLOT.MAXPOINTS));
  for (let k = 0; k < points.length; k += stride) {
    const p = points[k];
    const c = svgEl("circle", {cx: frame.fx(p[0]).toFixed(1), cy: frame.fy(p[1]).toFixed(1), r: 2.6,
      fill: color.get(p[2]) || "#9aa3b5", "fill-opacity": 0.8, "data-row": p[3]});
    c.appendChild(svgEl("title", {}, p[2] + " " + p[1] + " ms at " + fmtTime(p[0])));
    frame.svg.appendChild(c);
  }
  legend(frame, order.slice(0, 9).map(([c, n]) => [c + " (" + n + ")", color.get(c)])
    .concat(order.length > 9 ? [["others", "#9aa3b5"]] : []));
  frame.svg.addEventListener("click", (ev) => {
    const i = ev.target.getAttribute && ev.target.getAttribute("data-row");
    if (i !== null && i !== undefined) select(Number(i), false);
  });
  box.appendChild(frame.svg);
  let text = points.length ? points.length + " answered requests" : "no answered requests";
  if (stride > 1) text += ", every " + stride + "th drawn";
  if (note) text += "; " + note;
  box.appendChild(el("p", "muted", text));
  return box;
}

// Commands per second per connection, from the density bins: the busiest connections each a
// line, all others summed into one.
function ratePlot() {
  const d = plotBins(), box = el("div", "plot-box");
  const ranked = lanes.map((l, li) => [li, l.commands]).filter(([li]) => onAxis(lanes[li]))
    .sort((a, b) => b[1] - a[1]);
  const top = ranked.slice(0, 8).filter((x) => x[1] > 0).map((x) => x[0]);
  const series = top.map((li) => [(lanes[li].role || "?") + " [" + lanes[li].id + "]", d.regroup(lanes[li].density)]);
  if (ranked.length > top.length) {
    const sum = new Map();
    for (const [li] of ranked.slice(top.length)) for (const b of d.regroup(lanes[li].density)) sum.set(b[0], (sum.get(b[0]) || 0) + b[1]);
    if (sum.size) series.push([(ranked.length - top.length) + " others", [...sum.entries()].sort((a, b) => a[0] - b[0]).map(([b, n]) => [b, n, 0])]);
  }
  let peak = 0.1;
  for (const [, bins] of series) for (const b of bins) peak = Math.max(peak, b[1] / d.width);
  const frame = plotFrame("Commands per second per connection", timeRange(), [0, peak * 1.1], "commands/s");
  series.forEach(([label, bins], k) => {
    const m = new Map(bins.map((b) => [b[0], b[1]]));
    let path = "";
    for (let b = 0; b < d.bins; b++) {
      const x = frame.fx(d.first + (b + 0.5) * d.width).toFixed(1), y = frame.fy((m.get(b) || 0) / d.width).toFixed(1);
      path += (b ? " L" : "M") + x + "," + y;
    }
    frame.svg.appendChild(svgEl("path", {d: path, fill: "none", stroke: PALETTE[k % PALETTE.length], "stroke-width": 1.3}));
  });
  legend(frame, series.map(([label], k) => [label, PALETTE[k % PALETTE.length]]));
  box.appendChild(frame.svg);
  box.appendChild(el("p", "muted", "bins of " + fmtSpan(d.width) + "; the " + top.length + " busiest connections" +
    (series.length > top.length ? ", the others summed" : "")));
  return box;
}

// Anomalies over time: per bin, summed over connections (plus those tied to no connection).
function anomalyPlot() {
  const d = plotBins(), box = el("div", "plot-box");
  const sum = new Float64Array(d.bins);
  for (const l of lanes) if (onAxis(l)) for (const b of d.regroup(l.density)) sum[b[0]] += b[2];
  for (const a of meta.capture_anomalies || []) {
    if (a[2] === null || a[2] === undefined || !onMainClock(a[2])) continue;
    sum[Math.min(d.bins - 1, Math.max(0, Math.floor((a[2] - d.first) / d.width)))]++;
  }
  let peak = 1, total = 0;
  for (const v of sum) { if (v > peak) peak = v; total += v; }
  const frame = plotFrame("Anomalies over time", timeRange(), [0, peak * 1.1], "anomalies per bin");
  for (let b = 0; b < d.bins; b++) {
    if (!sum[b]) continue;
    const x0 = frame.fx(d.first + b * d.width), x1 = frame.fx(d.first + (b + 1) * d.width);
    frame.svg.appendChild(svgEl("rect", {x: x0.toFixed(1), y: frame.fy(sum[b]).toFixed(1), width: Math.max(1.5, x1 - x0).toFixed(1),
      height: (frame.fy(0) - frame.fy(sum[b])).toFixed(1), fill: "#e67e22"}));
  }
  const names = Object.entries(meta.totals.anomalies).sort((a, b) => b[1] - a[1]);
  legend(frame, names.slice(0, 10).map(([n, c]) => [c + " " + n, "#e67e22"]));
  box.appendChild(frame.svg);
  box.appendChild(el("p", "muted", total + " anomalies, bins of " + fmtSpan(d.width)));
  return box;
}

function drawPlots() {
  if (!ready) return;
  const box = $("plots-box");
  if (N === 0) { box.replaceChildren(el("p", "muted", noMsnpText())); plotsDrawn = true; return; }
  const [main, keep] = latencyPoints();
  const apart = lanes.filter((l) => !onAxis(l)).length;
  box.replaceChildren(
    ...(apart ? [el("p", "muted clock-note", apart + " connection" + (apart === 1 ? "" : "s") +
      " on another clock (a transcript's own times beside wall-clock times) are not plotted: their rows are in the list")] : []),
    latencyPlot("Latency over time, per command", main, "keep-alives (PNG \u2192 QNG) in the plot below"),
    latencyPlot("Keep-alive latency (PNG \u2192 QNG)", keep, null),
    ratePlot(), anomalyPlot());
  plotsDrawn = true;
}
