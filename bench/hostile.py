"""The hostile capture corpus, heavy cases included, through `msnp-analyzer analyze`.

    python3 bench/hostile.py [--light-only] [--keep DIR]

Generates every case of captures/make_hostile.py (plus the 50,000 tiny
connections and the 100 MB line without a newline) into a temporary
directory, runs `python3 -m analyzer analyze FILE --json OUT --no-plugins` on
each in its own process, and prints: exit status, commands decoded, the
anomalies named (the first few by count), wall time and the process's peak
RSS (from wait4, so each figure is that one run's), with the clean session
as the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from captures import make_hostile as hostile  # noqa: E402


def measure(path: Path, out: Path, extra=()) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "analyze", str(path), "--json", str(out),
                             "--no-plugins", *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    commands, anomalies = 0, Counter()
    if out.exists():
        with out.open(encoding="utf-8") as f:
            for line in f:
                if '"kind":"command"' in line:
                    commands += 1
                elif '"kind":"anomaly"' in line:
                    anomalies[json.loads(line)["name"]] += 1
        out.unlink()
    return {"rc": proc.returncode, "commands": commands, "anomalies": anomalies, "time": elapsed,
            "rss_mb": usage.ru_maxrss / 1024, "traceback": "Traceback" in err,
            "error": err.strip().splitlines()[-1] if proc.returncode == 2 and err.strip() else "",
            "size_mb": path.stat().st_size / 1e6}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--light-only", action="store_true", help="skip the 50,000 connections and the 100 MB line")
    p.add_argument("--keep", type=Path, help="write the corpus here and keep it")
    args = p.parse_args()
    tmp = None if args.keep else tempfile.TemporaryDirectory()
    outdir = args.keep or Path(tmp.name)
    outdir.mkdir(parents=True, exist_ok=True)
    files = []
    (outdir / "clean_session.pcap").write_bytes(hostile.clean_pcap())
    files.append(("clean_session (baseline)", outdir / "clean_session.pcap"))
    for case in hostile.cases(heavy=not args.light_only):
        path = outdir / f"{case.name}.pcap"
        path.write_bytes(case.build())
        files.append((case.name, path))
    if not args.light_only:
        hostile.write_long_line(outdir / "line_100mb.pcap")
        files.append(("line_100mb", outdir / "line_100mb.pcap"))
    if not args.light_only:  # the same 50,000 connections with reassembly capped at 10,000 open flows
        files.append(("tiny_connections_50000 --max-flows 10000", outdir / "tiny_connections_50000.pcap",
                      ["--max-flows", "10000"]))
    rows = []
    for name, path, *extra in files:
        r = measure(path, outdir / "out.jsonl", *extra)
        r["name"] = name
        rows.append(r)
        print(f"  {name}: {r['time']:.1f} s", file=sys.stderr, flush=True)
    base = rows[0]
    print(f"{'case':32} {'MB':>7} {'exit':>4} {'cmds':>7} {'time s':>7} {'RSS MB':>7} {'RSS/base':>8}  named")
    for r in rows:
        named = r["error"] or ", ".join(f"{n} x{c}" for n, c in r["anomalies"].most_common(3)) or "-"
        print(f"{r['name']:32} {r['size_mb']:7.2f} {r['rc']:>4} {r['commands']:>7} {r['time']:7.2f} "
              f"{r['rss_mb']:7.0f} {r['rss_mb'] / base['rss_mb']:8.2f}  {named}"
              + ("  TRACEBACK" if r["traceback"] else ""))
    if tmp is not None:
        tmp.cleanup()
    return 1 if any(r["traceback"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
