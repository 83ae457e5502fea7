#!/usr/bin/env python3
"""Make the README's pictures of the HTML timeline: docs/html-overview.png, docs/html-ladder.png,
docs/html-plots.png.

    python3 scripts/html_screenshots.py [--out-dir docs] [--chromium /usr/bin/chromium]

Exports the bundled captures (captures/msnp8_login_chat.pcap and msnp8_anomalies.pcap: two
logins, their switchboards, a few anomalies) with `msnp-analyzer export`, opens the page in
Debian's chromium through Playwright (no browser download, no network: the page's own CSP
forbids it), and photographs the Timeline tab with a line selected, the ladder of the first
login, and the plots.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analyzer.cli.main import main as cli  # noqa: E402

CAPTURES = ["captures/msnp8_login_chat.pcap", "captures/msnp8_anomalies.pcap"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def export(page: Path) -> None:
    status = cli(["export", "-q", *(str(ROOT / c) for c in CAPTURES), "-o", str(page)])
    if status != 0:
        raise SystemExit(f"export failed with status {status}")


def shoot(page_path: Path, out_dir: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import sync_playwright
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 820})
        page.goto(page_path.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        # The overview with an XFR line selected: its referral arrow and its row in the list.
        xfr = page.evaluate("+document.querySelector('#ov-arrows li').dataset.row")
        page.evaluate(f"location.hash = '#r{xfr}'")
        page.wait_for_selector(f"#spacer .row.selected[data-row='{xfr}']")
        written.append(out_dir / "html-overview.png")
        page.screenshot(path=str(written[-1]))
        page.click("#tabs button[data-view='ladder']")
        page.wait_for_selector("#ladder g.arrow")
        written.append(out_dir / "html-ladder.png")
        page.screenshot(path=str(written[-1]))
        page.set_viewport_size({"width": 1400, "height": 1100})  # room for all four plots
        page.click("#tabs button[data-view='plots']")
        page.wait_for_selector("#plots-box svg.plot")
        written.append(out_dir / "html-plots.png")
        page.screenshot(path=str(written[-1]))
        browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "timeline.html"
        export(page)
        for path in shoot(page, Path(args.out_dir), args.chromium):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
