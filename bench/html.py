"""Benchmark of the HTML timeline (#19): exporter time and memory, page size, first paint.

    python3 bench/html.py [--sizes 10000,100000,1000000] [--connections 10000] [--runs 3]
                          [--no-browser] [--keep DIR]

Captures (pcap, loopback addresses, written by a process of its own so that its
memory never counts in a measured one): a scripted MSNP8 login (DS, NS with
presence and keep-alives) whose switchboards carry chats of 2,000 commands
(messages, acknowledgements, replies, typing), with about each of --sizes
commands; and one login with --connections switchboards of about 8 commands
each (with the NS's XFR, NLN and keep-alives, about 13 commands per switchboard).

For each capture, in this run:
- the exporter, `msnp-analyzer export CAPTURE -o PAGE`, and the baseline
  measured on the same capture, `msnp-analyzer analyze CAPTURE --json FILE -q`:
  CPU seconds and peak RSS of each (from wait4), and their ratios;
- the page's size;
- first paint in headless Chromium (Debian's /usr/bin/chromium through
  Playwright, a fresh context per run, file:// URL): from the start of
  navigation to the page's own `performance.mark("first-rows")` (the first
  screen of rows is in the DOM), median of --runs after one warm-up, and
  the wall-clock time until Playwright sees a row visible.

Printed ratios: first rows of each capture over the smallest one (#19's
target: the largest at most 2x the 10,000-command one), and peak RSS of the
exporter above the baseline per row (the documented bound: ROW_BYTES per
row spooled, see analyzer/outputs/html/__init__.py), with peak RSS at 100k
against 1M commands.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: this file's name would shadow the standard library's html

from captures.make_hostile import ethernet, pcap_header, pcap_record, tcp_segment  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEXT = (b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
        b"X-MMS-IM-Format: FN=Arial; EF=; CO=0; CS=0; PF=22\r\n\r\n")
TYPING = b"MIME-Version: 1.0\r\nContent-Type: text/x-msmsgscontrol\r\nTypingUser: alice@example.com\r\n\r\n\r\n"
T0 = 1_200_000_000.0
DS, NS, SB = ("127.0.0.1", 1863), ("127.0.0.2", 1863), ("127.0.0.3", 1864)


# -- captures -----------------------------------------------------------------------------

class PcapOut:
    """pcap records written to a file as they are made (one TCP segment per MSNP command)."""

    def __init__(self, f) -> None:
        self.f = f
        self.ts = T0
        self.commands = 0
        f.write(pcap_header())

    def packet(self, src, dst, seq, ack, flags, payload=b"") -> None:
        self.ts += 0.01
        self.f.write(pcap_record(ethernet(tcp_segment(src[0], src[1], dst[0], dst[1], seq, ack, flags, payload)),
                                 self.ts))


class Flow:
    """One TCP connection: handshake, one segment per command, FIN."""

    def __init__(self, out: PcapOut, client, server) -> None:
        self.out, self.client, self.server = out, client, server
        self.seq = {"c": 1000, "s": 50000}
        self._add("c", "S")
        self.seq["c"] += 1
        self._add("s", "SA")
        self.seq["s"] += 1
        self._add("c", "A")

    def _add(self, side, flags, payload=b"") -> None:
        src, dst = (self.client, self.server) if side == "c" else (self.server, self.client)
        self.out.packet(src, dst, self.seq[side], self.seq["s" if side == "c" else "c"], flags, payload)

    def send(self, side: str, line: bytes, payload: bytes = b"") -> "Flow":
        data = line + b"\r\n" + payload
        self._add(side, "PA", data)
        self.seq[side] += len(data)
        self.out.commands += 1
        return self

    def close(self) -> None:
        self._add("c", "FA")
        self.seq["c"] += 1
        self._add("s", "FA")
        self.seq["s"] += 1
        self._add("c", "A")


def client(i: int):
    return (f"127.1.{i // 250 % 250}.{i % 250 + 1}", 20000 + i % 40000)


def login(out: PcapOut) -> Flow:
    ds = Flow(out, client(0), DS)
    ds.send("c", b"VER 1 MSNP8 CVR0").send("s", b"VER 1 MSNP8 CVR0")
    ds.send("c", b"USR 2 TWN I alice@example.com").send("s", b"XFR 2 NS 127.0.0.2:1863 0 127.0.0.1:1863")
    ds.close()
    ns = Flow(out, client(1), NS)
    ns.send("c", b"VER 1 MSNP8 CVR0").send("s", b"VER 1 MSNP8 CVR0")
    ns.send("c", b"USR 2 TWN I alice@example.com").send("s", b"USR 2 TWN S lc=1033,id=507")
    ns.send("c", b"USR 3 TWN S t=secret-ticket&p=secret-profile")
    ns.send("s", b"USR 3 OK alice@example.com Alice 1 0")
    return ns


def build(path: Path, commands: int, per_sb: int, boards: int = 0) -> int:
    """A login whose switchboards carry about `per_sb` commands each, `commands` in all (or,
    with `boards`, that many switchboards)."""
    with open(path, "wb") as f:
        out = PcapOut(f)
        ns = login(out)
        trid, sb = 4, 0
        while (sb < boards) if boards else (out.commands < commands):
            sb += 1
            cookie = b"%d.%d.17262740" % (sb, sb * 7919)
            buddy = b"buddy%d@example.com" % sb
            ns.send("c", b"XFR %d SB" % trid).send("s", b"XFR %d SB 127.0.0.3:1864 CKI %s" % (trid, cookie))
            ns.send("s", b"NLN NLN %s Buddy%%20%d" % (buddy, sb))
            if sb % 4 == 0:
                ns.send("c", b"PNG").send("s", b"QNG 50")
            trid += 1
            board = Flow(out, client(sb + 1), SB)
            start = out.commands
            board.send("c", b"USR 1 alice@example.com %s" % cookie).send("s", b"USR 1 OK alice@example.com Alice")
            board.send("c", b"CAL 2 %s" % buddy).send("s", b"CAL 2 RINGING %d" % (1000 + sb))
            board.send("s", b"JOI %s Buddy%%20%d" % (buddy, sb))
            strid = 3
            while out.commands - start < per_sb - 2 and (boards or out.commands < commands):
                body = TEXT + b"message %d to buddy %d" % (strid, sb)
                board.send("c", b"MSG %d A %d" % (strid, len(body)), body)
                board.send("s", b"ACK %d" % strid)
                reply = TEXT + b"reply %d from buddy %d" % (strid, sb)
                board.send("s", b"MSG %s Buddy%%20%d %d" % (buddy, sb, len(reply)), reply)
                board.send("c", b"MSG %d U %d" % (strid + 1, len(TYPING)), TYPING)
                strid += 2
            board.send("s", b"BYE %s" % buddy).send("c", b"OUT")
            board.close()
        ns.send("c", b"OUT")
        ns.close()
        return out.commands


# -- measuring ------------------------------------------------------------------------------

def run(args: list[str], timeout: float) -> dict:
    """`python3 -m analyzer ARGS` in its own process: CPU seconds, peak RSS (MB), wall seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", *args, "--fail-on", "never"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            sys.exit(f"over {timeout:g} s: {' '.join(args)}")
        time.sleep(0.05)
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1) or "Traceback" in err:
        sys.exit(f"{' '.join(args)} failed: {err.strip()[-400:]}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024,
            "wall": time.perf_counter() - started}


def read_meta(page: Path) -> dict:
    """The page's meta, read piece by piece: this process must stay small, since the peak RSS
    of a child it forks starts from its own (Linux keeps the high-water mark across exec)."""
    text = ""
    with open(page, encoding="utf-8") as f:
        while "</script>" not in text.partition('id="meta">')[2]:
            piece = f.read(1 << 20)
            if not piece:
                break
            text += piece
    return json.loads(text.partition('id="meta">')[2].partition("</script>")[0])


def first_paint(browser, html: Path, runs: int) -> tuple[float, float, int]:
    """Medians of (first-rows mark ms, visible ms) over `runs` after one warm-up; rows shown."""
    marks, visible = [], []
    rows = 0
    url = html.resolve().as_uri()
    for n in range(runs + 1):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=600000)
        page.wait_for_selector("#spacer .row", state="visible", timeout=600000)
        seen = (time.perf_counter() - start) * 1000
        mark = page.evaluate("performance.getEntriesByName('first-rows')[0].startTime")
        rows = page.evaluate("JSON.parse(document.getElementById('meta').textContent).rows")
        context.close()
        if n:  # the first is a warm-up: the browser's own first-use costs
            marks.append(mark)
            visible.append(seen)
    return statistics.median(marks), statistics.median(visible), rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="commands per capture (comma-separated)")
    ap.add_argument("--connections", type=int, default=10000, help="switchboards of the many-connections capture")
    ap.add_argument("--runs", type=int, default=3, help="browser runs per page (after one warm-up)")
    ap.add_argument("--no-browser", action="store_true", help="exporter figures only")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per exporter run")
    ap.add_argument("--keep", type=Path, help="write captures and pages here (default: a temporary directory)")
    ap.add_argument("--build", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        path, commands, per_sb, out, *boards = args.build
        Path(out).write_text(json.dumps(build(Path(path), int(commands), int(per_sb), int(boards[0]) if boards else 0)))
        return 0
    if not args.no_browser and not Path(args.chromium).exists():
        sys.exit(f"no chromium at {args.chromium}: run scripts/install-test-deps (or --no-browser)")
    cases = [(f"{int(s):,} commands", int(s), 2000, 0) for s in args.sizes.split(",") if s]
    if args.connections:
        cases.append((f"{args.connections:,} connections", 0, 8, args.connections))
    tmp = None
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep
    else:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    results = []
    for label, commands, per_sb, boards in cases:
        stem = work / (f"html_{commands}_{per_sb}" if not boards else f"html_{boards}_switchboards")
        capture, page, jsonl, count = (stem.with_suffix(".pcap"), stem.with_suffix(".html"),
                                       stem.with_suffix(".jsonl"), stem.with_suffix(".count"))
        subprocess.run([sys.executable, __file__, "--build", str(capture), str(commands), str(per_sb), str(count),
                        str(boards)], check=True)
        built = json.loads(count.read_text())
        base = run(["analyze", str(capture), "--json", str(jsonl), "-q"], args.timeout)
        export = run(["export", str(capture), "-o", str(page)], args.timeout)
        meta = read_meta(page)
        results.append({"label": label, "commands": built, "base": base, "export": export,
                        "bytes": page.stat().st_size, "page": page, "lanes": len(meta["lanes"]),
                        "rows": meta["rows"]})
        print(f"{label}: export {export['cpu']:.1f} s CPU, {export['rss']:.0f} MB; --json {base['cpu']:.1f} s, "
              f"{base['rss']:.0f} MB; page {page.stat().st_size / 1e6:.1f} MB", flush=True)
        capture.unlink()
        jsonl.unlink(missing_ok=True)
    if not args.no_browser:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            for r in results:
                r["mark"], r["visible"], r["rows"] = first_paint(browser, r["page"], args.runs)
                print(f"{r['label']}: first rows {r['mark']:.0f} ms, visible {r['visible']:.0f} ms", flush=True)
            browser.close()
    print()
    print(f"{'capture':>22} {'commands':>10} {'page MB':>8} {'export s':>8} {'x json':>6} {'RSS MB':>7} "
          f"{'json MB':>7} {'x json':>6} {'first rows ms':>13} {'visible ms':>10}")
    for r in results:
        e, b = r["export"], r["base"]
        paint = f"{r['mark']:>13.0f} {r['visible']:>10.0f}" if "mark" in r else f"{'-':>13} {'-':>10}"
        print(f"{r['label']:>22} {r['commands']:>10,} {r['bytes'] / 1e6:>8.1f} {e['cpu']:>8.1f} "
              f"{e['cpu'] / b['cpu']:>6.2f} {e['rss']:>7.0f} {b['rss']:>7.0f} {e['rss'] / b['rss']:>6.2f} {paint}")
    sized = [r for r in results if "connections" not in r["label"]]
    print()
    for r in results:
        extra = (r["export"]["rss"] - r["base"]["rss"]) * 1024 * 1024 / r["commands"]
        print(f"{r['label']}: exporter above --json: {r['export']['rss'] - r['base']['rss']:.0f} MB, "
              f"{extra:.0f} bytes per command")
    if len(sized) >= 2:
        small, large = sized[0], sized[-1]
        print(f"peak RSS {sized[-2]['label']} -> {large['label']}: {sized[-2]['export']['rss']:.0f} -> "
              f"{large['export']['rss']:.0f} MB (x{large['export']['rss'] / sized[-2]['export']['rss']:.2f} for "
              f"x{large['commands'] / sized[-2]['commands']:.0f} commands)")
        if "mark" in large:
            print(f"first rows {large['label']} / {small['label']}: {large['mark'] / small['mark']:.2f}x "
                  f"(target <= 2x); visible {large['visible'] / small['visible']:.2f}x")
        conn = next((r for r in results if "connections" in r["label"]), None)
        if conn is not None and "mark" in conn:
            print(f"first rows {conn['label']} / {small['label']}: {conn['mark'] / small['mark']:.2f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
