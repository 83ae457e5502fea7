// Start: the first screen at once, what needs the whole document when it has been read.
// ---- start: the first screen now, the rest when the document is read -----
header();
items = allItems();
spacer.style.height = items.length * ROWH + "px";
$("shown").textContent = N + " rows";
render(true);
performance.mark("first-rows");
function whenRead() {
  ready = true;
  fillFilters();
  for (const s of [fCmd, fConn, fAnom]) { s.disabled = false; s.addEventListener("change", applyFilters); }
  fQ.disabled = false;
  let timer = 0;
  fQ.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(applyFilters, 150); });
  window.addEventListener("hashchange", fromHash);
  render(true);
  fromHash();
  document.body.dataset.ready = "1";
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", whenRead);
else whenRead();
