"""Benchmark: time to the first visible rows of the HTML timeline, 10,000 vs 100,000 commands.

    python3 bench/html.py [--small 10000] [--large 100000] [--runs 5]

Writes two transcripts (in a temporary directory) of a scripted MSNP8 login:
an NS with presence and keep-alives, and switchboard chats full of messages
and acknowledgements, with about --small and --large commands. Each is
exported with `msnp-analyzer export` (timed too), then opened --runs times in
headless Chromium (Debian's /usr/bin/chromium through Playwright, a fresh
browser context each time, file:// URL). For each run it records

- first rows: from the start of navigation until the page's own
  `performance.mark("first-rows")` (set right after the first screen of rows
  is in the DOM), and
- visible: wall-clock time from `page.goto` until Playwright sees a row
  visible (`#spacer .row`), which includes the browser's paint;

and prints the medians and the large/small ratio (target: at most 2x), with
the export times and file sizes as context. The baseline (the small capture)
is measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analyzer.msnp import C2S, S2C, encode_command  # noqa: E402
from analyzer.msnp.transcript import Chunk, format_chunks  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEXT = ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
        "X-MMS-IM-Format: FN=Arial; EF=; CO=0; CS=0; PF=22\r\n\r\n")


def scripted(commands: int) -> list[Chunk]:
    """A login with about `commands` commands: NS traffic plus chats of 2,000 commands each."""
    out: list[Chunk] = []
    ts = 0.0
    n = 0

    def add(conn, direction, data):
        nonlocal ts, n
        ts += 0.01
        n += 1
        out.append(Chunk(direction, data, round(ts, 3), conn))

    add("ds", C2S, encode_command("VER", 1, ["MSNP8", "CVR0"]))
    add("ds", S2C, encode_command("VER", 1, ["MSNP8"]))
    add("ds", C2S, encode_command("USR", 2, ["TWN", "I", "alice@example.com"]))
    add("ds", S2C, encode_command("XFR", 2, ["NS", "127.0.0.2:1863", "0", "127.0.0.1:1863"]))
    add("ns", C2S, encode_command("VER", 1, ["MSNP8", "CVR0"]))
    add("ns", S2C, encode_command("VER", 1, ["MSNP8"]))
    add("ns", C2S, encode_command("USR", 2, ["TWN", "I", "alice@example.com"]))
    add("ns", S2C, encode_command("USR", 2, ["TWN", "S", "lc=1033,id=507"]))
    add("ns", C2S, encode_command("USR", 3, ["TWN", "S", "t=secret-ticket&p=secret-profile"]))
    add("ns", S2C, encode_command("USR", 3, ["OK", "alice@example.com", "Alice", "1", "0"]))
    trid, sb = 4, 0
    while n < commands:
        sb += 1
        conn = f"sb{sb}"
        cookie = f"{sb}.{sb * 7919}.17262740"
        add("ns", C2S, encode_command("XFR", trid, ["SB"]))
        add("ns", S2C, encode_command("XFR", trid, ["SB", "127.0.0.3:1864", "CKI", cookie]))
        add("ns", S2C, encode_command("NLN", None, ["NLN", f"buddy{sb}@example.com", f"Buddy%20{sb}"]))
        add("ns", C2S, encode_command("PNG", None, []))
        add("ns", S2C, encode_command("QNG", None, ["50"]))
        trid += 1
        add(conn, C2S, encode_command("USR", 1, ["alice@example.com", cookie]))
        add(conn, S2C, encode_command("USR", 1, ["OK", "alice@example.com", "Alice"]))
        add(conn, C2S, encode_command("CAL", 2, [f"buddy{sb}@example.com"]))
        add(conn, S2C, encode_command("CAL", 2, ["RINGING", str(1000 + sb)]))
        add(conn, S2C, encode_command("JOI", None, [f"buddy{sb}@example.com", f"Buddy%20{sb}"]))
        strid = 3
        for i in range(500):
            if n >= commands:
                break
            add(conn, C2S, encode_command("MSG", strid, ["A"], (TEXT + f"message {i} to buddy {sb}").encode()))
            add(conn, S2C, encode_command("ACK", strid, []))
            add(conn, S2C, encode_command("MSG", None, [f"buddy{sb}@example.com", f"Buddy%20{sb}"],
                                          (TEXT + f"reply {i} from buddy {sb}").encode()))
            add(conn, C2S, encode_command("MSG", strid + 1, ["U"],
                                          b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\n"
                                          b"TypingUser: alice@example.com\r\n\r\n\r\n"))
            strid += 2
        add(conn, S2C, encode_command("BYE", None, [f"buddy{sb}@example.com"]))
        add(conn, C2S, encode_command("OUT", None, []))
    return out


def export(transcript: Path, html: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "analyzer", "export", str(transcript), "-o", str(html),
                           "--fail-on", "never"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"export failed: {proc.stderr.strip()}")
    return time.perf_counter() - start


def measure(browser, html: Path, runs: int) -> tuple[list[float], list[float], int]:
    marks, visible = [], []
    rows = 0
    url = html.resolve().as_uri()
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_selector("#spacer .row", state="visible", timeout=120000)
        visible.append((time.perf_counter() - start) * 1000)
        marks.append(page.evaluate("performance.getEntriesByName('first-rows')[0].startTime"))
        page.wait_for_selector("body[data-ready='1']", timeout=120000)
        rows = int(page.text_content("#shown").split()[0])
        context.close()
    return marks, visible, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    if not Path(args.chromium).exists():
        sys.exit(f"no chromium at {args.chromium}: run scripts/install-test-deps")
    from playwright.sync_api import sync_playwright
    results = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        for label, size in (("small", args.small), ("large", args.large)):
            transcript = Path(tmp) / f"{label}.msnp"
            transcript.write_text(format_chunks(scripted(size)))
            html = Path(tmp) / f"{label}.html"
            seconds = export(transcript, html)
            measure(browser, html, 1)  # warm-up: the browser's own first-use costs
            marks, visible, rows = measure(browser, html, args.runs)
            results[label] = (size, rows, html.stat().st_size, seconds,
                              statistics.median(marks), statistics.median(visible))
        browser.close()
    print(f"{'capture':>8} {'commands':>9} {'rows':>8} {'HTML MB':>8} {'export s':>9} "
          f"{'first rows ms':>14} {'visible ms':>11}")
    for label, (size, rows, nbytes, seconds, mark, vis) in results.items():
        print(f"{label:>8} {size:>9,} {rows:>8,} {nbytes / 1e6:>8.1f} {seconds:>9.2f} {mark:>14.1f} {vis:>11.1f}")
    s, l = results["small"], results["large"]
    print(f"ratio large/small: first rows {l[4] / s[4]:.2f}x, visible {l[5] / s[5]:.2f}x (target <= 2x); "
          f"median of {args.runs} runs each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
