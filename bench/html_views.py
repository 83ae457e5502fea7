"""Benchmark: the HTML timeline's overview does not slow down with the number of connections.

    python3 bench/html_views.py [--small 1200] [--large 10000] [--frames 40]

Builds two pages from the scripted msnp8 sample (a DS, an NS and two switchboards per login,
so --small and --large connections; about 17 rows each), opens each in headless Chromium
(Debian's /usr/bin/chromium through Playwright, file:// URL), then scrolls the overview's
lanes through --frames positions from top to bottom and reads the time the page's
drawOverview took for each frame (`#ov-canvas[data-draw-ms]`, measured inside the page with
performance.now()). Prints the medians and p90s, the large/small ratio (target: at most 2x:
only the lanes on screen are drawn, and referral arrows come from an index by lane), and
the time until the page says it is ready (`body[data-ready]`) as context. Both pages are
measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analyzer.analysis.linking import Linker  # noqa: E402
from analyzer.analysis.redact import Redactor  # noqa: E402
from analyzer.analysis.run import Analysis  # noqa: E402
from analyzer.outputs.html import HtmlTimeline  # noqa: E402
from captures.sessions import SESSIONS  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def build(path: Path, connections: int) -> None:
    """A page of connections // 4 logins of the msnp8 sample."""
    redactor = Redactor(enabled=True, key=b"b" * 16)
    linker = Linker(redactor)
    timeline = HtmlTimeline(path, linker, redactor, sources=["bench"])
    analysis = Analysis([linker, timeline])
    for n in range(connections // 4):
        conns = {}
        for chunk in SESSIONS["msnp8"]:
            conn = conns.get(chunk.conn)
            if conn is None:
                conn = conns[chunk.conn] = analysis.open(None, None, conn_id=f"s{n}:{chunk.conn}")
            analysis.feed(conn, chunk.direction, chunk.data, chunk.ts)
    analysis.finish()
    timeline.close()


def measure(browser, page_path: Path, frames: int) -> tuple[list[float], float, int]:
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    began = time.perf_counter()
    page.goto(page_path.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
    ready = time.perf_counter() - began
    lanes = page.evaluate("() => JSON.parse(document.getElementById('meta').textContent).lanes.length")
    draws = []
    for k in range(frames):
        page.eval_on_selector("#ov-scroll", f"el => {{ el.scrollTop = {k / max(1, frames - 1)} * el.scrollHeight; }}")
        page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        draws.append(float(page.get_attribute("#ov-canvas", "data-draw-ms")))
    page.close()
    return draws, ready, lanes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1200)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    results = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        for label, n in (("small", args.small), ("large", args.large)):
            path = Path(tmp) / f"{label}.html"
            build(path, n)
            draws, ready, lanes = measure(browser, path, args.frames)
            draws.sort()
            results[label] = (lanes, statistics.median(draws), draws[int(len(draws) * 0.9)], ready,
                              path.stat().st_size)
            print(f"{lanes:>6} connections: overview frame median {results[label][1]:.2f} ms,"
                  f" p90 {results[label][2]:.2f} ms; ready after {ready:.2f} s; {results[label][4] / 1e6:.1f} MB")
        browser.close()
    ratio = results["large"][1] / max(results["small"][1], 1e-6)
    print(f"large/small overview frame: x{ratio:.2f} (target at most 2x)")
    return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
