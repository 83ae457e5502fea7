"""Benchmark: the live proxy against a direct connection and Debian's socat, in one run.

    python3 bench/proxy.py [--pairs 10000] [--connections 50] [--messages 4000] [--idle 1000] [--rounds 5]

Everything is on loopback; each phase is bounded in count and time. It measures
- round-trip latency p50/p99 over N sequential request/reply pairs on one
  connection (a `CHG` line and its echo), for: direct to the echo server,
  through socat (`TCP-LISTEN,fork` -> `TCP`), and through `msnp-analyzer proxy`
  (analysis on); the *added* latency is each relay's figure minus direct's;
- messages/s over C concurrent connections, each keeping 16 requests in flight;
- the proxy's peak RSS with K idle connections open through it (the forwarding
  process plus its analysis process).
The three paths are measured in R interleaved rounds (the order rotated each
round): the N pairs are split over the rounds and pooled into one p50/p99 per
path, and each round runs the full rate test once per path (the median is
reported), so load from other jobs during the run falls on all three alike;
after each of the proxy's rounds the bench waits until its processes are idle
(the analysis process has caught up), so that work does not fall on the next
path's measurement.
Extra arguments after `--` go to `msnp-analyzer proxy` (e.g. `-- --analysis inline`).
Ratios are against socat measured in the same run. Targets: our added p99 at
most 1.5x socat's, our messages/s at least socat's, peak RSS under 150 MB.
If socat is missing, install it: apt-get update && apt-get install -y socat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ECHO = r"""
import asyncio, sys
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    srv = await asyncio.get_running_loop().create_server(Echo, '127.0.0.1', 0, backlog=4096)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port} after {timeout} s")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def latency(port: int, pairs: int) -> list[float]:
    """Round-trip times (us) of `pairs` sequential pairs on one connection, after 200 unmeasured ones."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for i in range(pairs + 200):
        line = f"CHG {i + 1} NLN 0\r\n".encode()
        t = time.perf_counter()
        sock.sendall(line)
        got = b""
        while len(got) < len(line):
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("connection closed during the latency run")
            got += chunk
        if i >= 200:  # warm-up excluded
            rtts.append((time.perf_counter() - t) * 1e6)
    sock.close()
    return rtts


async def _throughput(port: int, connections: int, messages: int, window: int = 16) -> float:
    async def one(n: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        line = f"MSG {n} N 5\r\nhello".encode()
        sent = done = 0
        pending = b""
        while sent < min(window, messages):
            writer.write(line)
            sent += 1
        while done < messages:
            chunk = await reader.read(65536)
            if not chunk:
                raise SystemExit("connection closed during the throughput run")
            pending += chunk
            got = len(pending) // len(line)
            pending = pending[got * len(line):]
            done += got
            more = min(got, messages - sent)
            if more > 0:
                writer.write(line * more)
                sent += more
        writer.close()
        return done
    t = time.perf_counter()
    total = sum(await asyncio.gather(*(one(i) for i in range(connections))))
    return total / (time.perf_counter() - t)


def throughput(port: int, connections: int, messages: int) -> float:
    return asyncio.run(asyncio.wait_for(_throughput(port, connections, messages), 300))


def _family(pid: int) -> list[int]:
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        children = []
    return [pid] + [q for c in children for q in _family(int(c))]


def settle(pid: int, timeout: float = 60.0) -> float:
    """Wait until the proxy's processes use no CPU (the analysis process has caught up), so that
    what it does after a phase does not fall on the next path's measurement. Returns the wait (s)."""
    start = time.monotonic()

    def ticks() -> int:
        total = 0
        for p in _family(pid):
            try:
                fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total
    last = ticks()
    while time.monotonic() - start < timeout:
        time.sleep(0.2)
        now = ticks()
        if now == last:
            break
        last = now
    return time.monotonic() - start


def rss_with_idle(pid: int, port: int, idle: int) -> tuple[float, float]:
    socks = []
    for i in range(idle):  # 50 per source address (127.4.x.y): within the proxy's per-address limits
        s = socket.create_connection(("127.0.0.1", port), source_address=(f"127.4.{i // 50}.{1 + i % 50}", 0))
        s.sendall(b"PNG\r\n")
        socks.append(s)
    for s in socks:  # every connection is through to the echo server and back
        s.settimeout(10)
        assert s.recv(16) == b"PNG\r\n"
    rss = hwm = 0.0
    for p in _family(pid):  # the proxy and its analysis process
        status = open(f"/proc/{p}/status").read()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields["VmRSS"].split()[0]) / 1024
        hwm += int(fields["VmHWM"].split()[0]) / 1024
    for s in socks:
        s.close()
    return rss, hwm


def load_after() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10000)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--messages", type=int, default=4000, help="replies per connection in the rate run")
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleave the three paths this many times (order rotated each round): the "
                         "latency pairs are split over the rounds and pooled, the rate is the median "
                         "of one full rate run per round (default 5)")
    ap.add_argument("proxy_args", nargs="*", help="after --: extra options for msnp-analyzer proxy")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    load_before = load_after()
    socat = shutil.which("socat")
    if socat is None:
        raise SystemExit("socat is not installed: apt-get update && apt-get install -y socat")
    procs = []
    try:
        echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
        procs.append(echo)
        echo_port = int(echo.stdout.readline())
        socat_port = free_port()
        procs.append(subprocess.Popen([socat, f"TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr,fork,backlog=4096",
                                       f"TCP:127.0.0.1:{echo_port},nodelay"], stderr=subprocess.DEVNULL))
        ours_port = free_port()
        ours = subprocess.Popen([sys.executable, "-m", "analyzer", "proxy", "--upstream", f"127.0.0.1:{echo_port}",
                                 "--listen", f"127.0.0.1:{ours_port}", "--quiet", *args.proxy_args], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(ours)
        wait_port(socat_port)
        wait_port(ours_port)
        paths = [("direct", echo_port), ("socat", socat_port), ("msnp-analyzer proxy", ours_port)]
        rtts = {name: [] for name, _ in paths}
        rates = {name: [] for name, _ in paths}
        settled = []
        rounds = max(1, args.rounds)
        for r in range(rounds):
            # Same client code for every path, one path at a time, in an order rotated every round, so
            # a change in the machine's load during the run falls on all three alike.
            for name, port in paths[r % 3:] + paths[:r % 3]:
                rtts[name] += latency(port, args.pairs // rounds + (r < args.pairs % rounds))
                rates[name].append(throughput(port, args.connections, args.messages))
                if port == ours_port:  # its analysis process catches up before the next path is measured
                    settled.append(settle(ours.pid))
        rows = {}
        for name, _ in paths:
            p50, p99, rate = percentile(rtts[name], 0.5), percentile(rtts[name], 0.99), statistics.median(rates[name])
            rows[name] = (p50, p99, rate)
            print(f"  {name}: p50 {p50:.1f} us, p99 {p99:.1f} us, {rate:,.0f} msg/s "
                  f"(rounds: {', '.join(f'{x:,.0f}' for x in rates[name])})", file=sys.stderr)
        print(f"  the proxy's processes were busy {max(settled):.1f} s at most after its rounds "
              "(waited for before the next path)", file=sys.stderr)
        rss, hwm = rss_with_idle(ours.pid, ours_port, args.idle)
    finally:
        for p in reversed(procs):
            p.send_signal(2) if p is procs[-1] else p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    d50, d99, _ = rows["direct"]
    s50, s99, srate = rows["socat"]
    o50, o99, orate = rows["msnp-analyzer proxy"]
    print(f"\nloopback, {os.cpu_count()} CPUs, load average {load_before} before, {load_after()} after; "
          f"{rounds} interleaved rounds; latency over {args.pairs:,} sequential pairs; rate (median of the "
          f"rounds) over {args.connections} connections x {args.messages:,} replies (16 in flight each)\n")
    print("| path | p50 us | p99 us | added p50 us | added p99 us | messages/s | vs socat |")
    print("|---|---|---|---|---|---|---|")
    print(f"| direct | {d50:.1f} | {d99:.1f} | - | - | {rows['direct'][2]:,.0f} | |")
    print(f"| socat | {s50:.1f} | {s99:.1f} | {s50 - d50:.1f} | {s99 - d99:.1f} | {srate:,.0f} | 1.00 |")
    if s99 <= d99:  # the machine was too busy: socat came out faster than the direct path
        print("warning: socat's p99 is not above direct's (a noisy run); the added-p99 ratio is meaningless",
              file=sys.stderr)
    add_ratio = (o99 - d99) / max(s99 - d99, 1e-9)
    mode = " ".join(args.proxy_args) or "defaults: --analysis process, --loop auto"
    print(f"| msnp-analyzer proxy ({mode}) | {o50:.1f} | {o99:.1f} | {o50 - d50:.1f} | {o99 - d99:.1f} | "
          f"{orate:,.0f} | added p99 x{add_ratio:.2f}, rate x{orate / srate:.2f} |")
    print(f"\nproxy RSS with {args.idle} idle connections open (forwarding + analysis processes): "
          f"{rss:.1f} MB (peak {hwm:.1f} MB, sum of both peaks)")
    ok = add_ratio <= 1.5 and orate >= srate and hwm < 150
    print(f"targets (added p99 <= 1.5x socat's, rate >= socat's, peak RSS < 150 MB): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
