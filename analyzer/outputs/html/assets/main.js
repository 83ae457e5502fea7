// Start: the views (tabs), the first screen at once, what needs the whole document when it has
// been read (filters, search, far rows, referrals, the overview's ticks, ladder and plots).

// ---- views: Timeline (overview + list), Ladder, Plots, Summaries; the detail pane stays --------
let currentView = "timeline";
function showView(name) {
  if (currentView === name) return;
  currentView = name;
  for (const b of document.querySelectorAll("#tabs button[data-view]")) {
    const on = b.dataset.view === name;
    b.classList.toggle("on", on);
    b.setAttribute("aria-selected", String(on));
  }
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "v-" + name;
  redrawViews();
}
function redrawViews() {
  if (currentView === "timeline") { ovLayout(); drawOverview(); render(true); }
  else if (currentView === "ladder" && ready) drawLadder();
  else if (currentView === "plots" && ready) drawPlots();
}
// Called by select(): the overview (or the ladder) shows the selected row.
function selectionChanged() {
  if (currentView === "timeline") ovReveal();
  else if (currentView === "ladder") ladderMark();
}

header();
summaries();
for (const b of document.querySelectorAll("#tabs button[data-view]")) {
  b.addEventListener("click", () => showView(b.dataset.view));
}
items = allItems();
spacer.style.height = items.length * ROWH + "px";
$("shown").textContent = N + " rows";
if (N === 0) {
  // Nothing to list: say so plainly (not "select a row").
  $("list").replaceChildren(el("p", "empty", noMsnpText()));
  placeholder(noMsnpText());
} else if (noMsnp()) {
  placeholder(noMsnpText());   // the skipped bytes stay listed
}
ovLayout();
ovFit();
render(true);
drawOverview();
performance.mark("first-rows");
function whenRead() {
  readDetails();
  ready = true;
  referrals();
  fillFilters();
  fillLadderChoices();
  for (const s of [fCmd, fConn, fAnom]) { s.disabled = false; s.addEventListener("change", applyFilters); }
  fQ.disabled = false; fOrder.disabled = false;
  let timer = 0;
  fQ.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(applyFilters, 150); });
  fOrder.addEventListener("change", () => setOrder(fOrder.value));
  $("reset").addEventListener("click", resetFilters);
  window.addEventListener("hashchange", fromHash);
  document.addEventListener("keydown", onKey);
  ovInteraction();
  window.addEventListener("resize", () => redrawViews());
  render(true);
  drawOverview();
  fromHash();
  document.body.dataset.ready = "1";
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", whenRead);
else whenRead();
