"""Benchmark: `msnp-analyzer analyze` against tshark on a large MSNP capture.

    python3 bench/pcap.py [--replicas N] [--double] [--no-tshark]

Builds (once, cached in bench/.cache/, which git ignores) a capture of about
150 MB / 910,000 packets by replicating the real ndpi_msnms.pcap 2,500 times,
each copy with its own loopback addresses (127.x.y.z), its own sequence
numbers and later timestamps, so every copy is a distinct set of TCP
connections and only a handful are open at any time, as in a long real
capture. Then, in the same run, it times

    tshark -r FILE -Y msnms -T fields -e frame.number > /dev/null
    msnp-analyzer analyze FILE --json /dev/null

and prints the packets/s of each, their ratio, and our peak RSS. `--double`
also runs ours on a capture twice the size, to show that peak RSS does not
grow with the file. tshark is Debian's; the set-up installs it when missing:
`apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y tshark`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
SOURCE = ROOT.parent / "shared" / "captures-real" / "ndpi_msnms.pcap"


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build(path: Path, replicas: int) -> None:
    """Write `replicas` shifted copies of the source capture to `path`."""
    from scapy.utils import RawPcapReader
    records = [(bytes(d), m.sec, m.usec) for d, m in RawPcapReader(str(SOURCE))]
    # Switchboard cookies (XFR/RNG ... CKI cookie, then USR/ANS): unique per copy, as in a
    # real capture, so linking by cookie does the work it would do on real traffic.
    cookies = sorted({m.group(1) for d, _, _ in records for m in re.finditer(rb"CKI (\d{4}[\d.]+)", d)})
    t0 = records[0][1]
    span = records[-1][1] - t0 + 5
    # Each original address gets a fixed slot; each replica a distinct 127.x.y block.
    slots: dict[bytes, int] = {}
    for data, _, _ in records:
        for a in (data[26:30], data[30:34]):
            slots.setdefault(a, len(slots))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for r in range(replicas):
            block = bytes([127, 1 + (r >> 8) % 250, r & 0xFF])
            addr = {a: block + bytes([1 + s]) for a, s in slots.items()}
            shift = (r * 7919) & 0xFFFFFFFF
            renamed = [(c, b"%04d" % (r % 10000) + c[4:]) for c in cookies]
            dt = r * span
            buf = bytearray()
            for data, sec, usec in records:
                for old, new in renamed:
                    if old in data:
                        data = data.replace(old, new)  # same length: nothing else moves
                pkt = bytearray(data)
                pkt[26:30] = addr[data[26:30]]
                pkt[30:34] = addr[data[30:34]]
                pkt[24:26] = b"\0\0"
                ihl = (pkt[14] & 15) * 4
                pkt[24:26] = struct.pack(">H", _checksum(bytes(pkt[14:14 + ihl])))
                t = 14 + ihl
                seq, ack = struct.unpack_from(">II", pkt, t + 4)
                struct.pack_into(">II", pkt, t + 4, (seq + shift) & 0xFFFFFFFF, (ack + shift) & 0xFFFFFFFF)
                pkt[t + 16:t + 18] = b"\0\0"  # TCP checksum not recomputed: zero means "not computed"
                buf += struct.pack("<IIII", sec + dt, usec, len(pkt), len(pkt)) + pkt
            out.write(buf)
    tmp.replace(path)


def ensure(replicas: int) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"msnp_v2_x{replicas}.pcap"
    if not path.exists():
        print(f"building {path.relative_to(ROOT)} ({replicas} copies of {SOURCE.name}) ...", flush=True)
        build(path, replicas)
    return path


def ensure_tshark() -> str | None:
    found = shutil.which("tshark")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing tshark (apt-get) ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL, env=env)
        subprocess.run(["apt-get", "install", "-y", "tshark"], check=False, stdout=subprocess.DEVNULL, env=env)
    return shutil.which("tshark")


def packets_in(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        f.seek(24)
        while True:
            hdr = f.read(16)
            if len(hdr) < 16:
                return n
            caplen = struct.unpack("<IIII", hdr)[2]
            f.seek(caplen, 1)
            n += 1


def timed(argv: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in KiB (of this child), exit status."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace").strip()
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        print(f"  {argv[0]} failed ({code}): {err[-300:]}", file=sys.stderr)
    return elapsed, usage.ru_maxrss, code


def ours(path: Path, *extra: str, json: bool = True) -> list[str]:
    exe = shutil.which("msnp-analyzer")
    base = [exe] if exe else [sys.executable, "-m", "analyzer"]
    return base + ["analyze", str(path), *(["--json", "/dev/null"] if json else []), *extra]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=2500, help="copies of the source capture (2500: ~150 MB)")
    ap.add_argument("--double", action="store_true", help="also run ours on twice the replicas (RSS growth check)")
    ap.add_argument("--no-tshark", action="store_true", help="skip the tshark baseline")
    args = ap.parse_args()
    if not SOURCE.exists():
        print(f"missing {SOURCE}", file=sys.stderr)
        return 2
    path = ensure(args.replicas)
    packets = packets_in(path)
    size_mb = path.stat().st_size / 1e6
    rows = []
    tshark = None if args.no_tshark else ensure_tshark()
    if tshark:
        t, rss, _ = timed([tshark, "-r", str(path), "-Y", "msnms", "-T", "fields", "-e", "frame.number"])
        rows.append(("tshark -Y msnms", size_mb, packets, t, rss))
    t, rss, _ = timed(ours(path))
    rows.append(("msnp-analyzer analyze FILE --json /dev/null", size_mb, packets, t, rss))
    t, rss, _ = timed(ours(path, "--no-plugins"))
    rows.append(("the same with --no-plugins", size_mb, packets, t, rss))
    t, rss, _ = timed(ours(path, "--no-plugins", json=False))
    rows.append(("msnp-analyzer analyze FILE --no-plugins (no --json)", size_mb, packets, t, rss))
    if args.double:
        path2 = ensure(args.replicas * 2)
        packets2 = packets_in(path2)
        mb2 = path2.stat().st_size / 1e6
        t2, rss2, _ = timed(ours(path2))
        rows.append(("msnp-analyzer analyze FILE --json /dev/null, file x2", mb2, packets2, t2, rss2))
        t2, rss2, _ = timed(ours(path2, "--no-plugins"))
        rows.append(("the same with --no-plugins, file x2", mb2, packets2, t2, rss2))
        t2, rss2, _ = timed(ours(path2, "--no-plugins", json=False))
        rows.append(("msnp-analyzer analyze FILE --no-plugins (no --json), file x2", mb2, packets2, t2, rss2))
    print()
    print("| run | file MB | packets | seconds | packets/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, mb, n, secs, kib in rows:
        print(f"| {name} | {mb:.0f} | {n:,} | {secs:.1f} | {n / secs:,.0f} | {kib / 1024:.0f} |")
    if tshark:
        base = rows[0][2] / rows[0][3]
        for name, mb, n, secs, kib in rows[1:]:
            print(f"{name}: {n / secs / base:.2f}x tshark's packets/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
