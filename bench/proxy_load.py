"""The live proxy under load with hostile clients and faulty upstreams (loopback only).

    python3 bench/proxy_load.py [--clients 200] [--commands 100] [--repeat 3] [--storm 5000]

Runs `msnp-analyzer proxy` as a subprocess (its peak RSS is read from
/proc/PID/status VmHWM) in front of an upstream of ours that echoes, except
for connections whose first line asks it to misbehave (never answer, reset
in the middle of a payload, send 10 MB in one burst). Then:

1. baseline: N clients each doing request/reply round trips (one command,
   wait for its echo), latency per round trip, digests of every byte;
2. the same with one hostile client added: garbage, slowloris, reset storm,
   and the upstream faults (silent upstream, reset mid-payload, 10 MB burst);
3. a storm: one client opens --storm connections and holds them while the
   N clients run.

Each well-behaved client connects from its own 127.2.x.y address and the
hostile one from 127.3.0.1, so the proxy's per-address limits (--max-per-address,
--max-rate) bound the hostile client as they would a real one.

Baseline and hostile runs alternate on the same proxy (--repeat times) and
medians are compared, so machine noise hits both. For each case: the other
clients' bytes all arrive (sha256 both ways), the p99 round-trip latency
with and without the hostile client and their ratio (target <= 2), the
proxy's peak RSS. The functions are shared with tests/test_proxy_robustness.py
(which runs smaller versions in the normal suite, in-process).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

LOOP = "127.0.0.1"
HOSTILE = "127.3.0.1"  # the hostile client's own address (the proxy counts connections per address)


def client_source(seed: int) -> str:
    """Each well-behaved client connects from an address of its own (127.2.x.y), as separate machines do."""
    return f"127.2.{seed // 250}.{seed % 250 + 1}"
BURST = 10 * 1024 * 1024
SILENT, RESET, BURSTY = b"SILENT", b"RESETME", b"BURST"


# -- the upstream -------------------------------------------------------------------

class Upstream:
    """Echoes every byte, except where the first line asks for a fault."""

    def __init__(self) -> None:
        self.server = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> "Upstream":
        self.server = await asyncio.start_server(self._serve, LOOP, 0, limit=1 << 20)
        return self

    @property
    def address(self):
        return self.server.sockets[0].getsockname()[:2]

    async def _serve(self, reader, writer) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            first = await reader.readline()
            if first.startswith(SILENT):
                while await reader.read(65536):
                    pass  # accepts, reads, never answers
                return
            if first.startswith(RESET):
                writer.write(b"MSG hotmail Hotmail 100000\r\n" + b"x" * 5000)
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if first.startswith(BURSTY):
                writer.write(burst_bytes())
                await writer.drain()
                writer.close()
                return
            writer.write(first)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def burst_bytes() -> bytes:
    return (b"MSG hotmail Hotmail 1000\r\n" + bytes(range(256)) * 3 + b"x" * 232) * (BURST // 1026)


# -- the well-behaved clients ---------------------------------------------------------

def script(seed: int, commands: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for trid in range(1, commands + 1):
        if rng.random() < 0.6:
            out.append(f"CHG {trid} NLN {rng.randint(0, 1 << 30)}\r\n".encode())
        else:
            body = os.urandom(rng.randint(0, 300))
            out.append(f"MSG {trid} N {len(body)}\r\n".encode() + body)
    return out


async def client(address, seed: int, commands: int):
    """Request/reply round trips; returns (sent digest, received digest, latencies in ms)."""
    reader, writer = await asyncio.open_connection(*address, local_addr=(client_source(seed), 0))
    sent, got = hashlib.sha256(), hashlib.sha256()
    latencies = []
    for line in script(seed, commands):
        t = time.perf_counter()
        writer.write(line)
        sent.update(line)
        got.update(await reader.readexactly(len(line)))
        latencies.append((time.perf_counter() - t) * 1000)
    writer.write_eof()
    got.update(await reader.read())
    writer.close()
    return sent.hexdigest(), got.hexdigest(), latencies


# -- the hostile ones (each runs until `stop` is set, bounded by its own deadline) ----------

async def _open(address):
    return await asyncio.open_connection(*address, local_addr=(HOSTILE, 0))


async def garbage(address, stop: asyncio.Event, deadline: float):
    rng = random.Random(1863)
    while not stop.is_set() and time.monotonic() < deadline:
        reader, writer = await _open(address)
        for _ in range(16):
            writer.write(rng.randbytes(4096) + b"\r\n")
            await writer.drain()
            await reader.read(65536)
        writer.close()


async def slowloris(address, stop: asyncio.Event, deadline: float, connections: int = 50):
    socks = []
    for _ in range(connections):
        socks.append(await _open(address))
    n = 0
    while not stop.is_set() and time.monotonic() < deadline:
        for _, writer in socks:
            writer.write(b"CAL 1 bob@exa"[n % 13:n % 13 + 1])
        n += 1
        await asyncio.sleep(0.02)  # the trickle is the attack, not a race dodge
    for _, writer in socks:
        writer.close()


async def reset_storm(address, stop: asyncio.Event, deadline: float):
    while not stop.is_set() and time.monotonic() < deadline:
        sock = socket.socket()
        sock.bind((HOSTILE, 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, b"MSG 1 N 100000\r\n" + b"y" * 3000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        await asyncio.sleep(0)


def upstream_fault(kind: bytes):
    """One connection that makes the upstream misbehave (RESETME: one after another, a storm)."""
    async def fault(address, stop: asyncio.Event, deadline: float):
        first = True
        while first or (kind == RESET and not stop.is_set() and time.monotonic() < deadline):
            first = False
            reader, writer = await _open(address)
            writer.write(kind + b" 1\r\n")
            await writer.drain()
            if kind == SILENT:
                await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=max(0, deadline - time.monotonic()))
            else:
                try:
                    while await reader.read(1 << 20):
                        pass
                except ConnectionError:
                    pass
            writer.close()
    return fault


async def storm(address, stop: asyncio.Event, deadline: float, connections: int = 5000):
    held = []
    for _ in range(connections):
        try:
            held.append(await _open(address))
        except OSError:
            break
    await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=max(0, deadline - time.monotonic()))
    for _, writer in held:
        writer.close()
    return len(held)


def _hostile_child(hostile, address, mp_stop, seconds: float) -> None:
    async def go():
        stop = asyncio.Event()

        async def watch():
            while not mp_stop.is_set():
                await asyncio.sleep(0.02)
            stop.set()
        watcher = asyncio.ensure_future(watch())
        try:
            await hostile(address, stop, time.monotonic() + seconds)
        except (ConnectionError, OSError):
            pass
        await watcher
    asyncio.run(go())


def separate(hostile):
    """The hostile client in a process of its own (forked), so its CPU is not the measuring clients'."""
    async def run(address, stop, deadline):
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        mp_stop = ctx.Event()
        child = ctx.Process(target=_hostile_child, args=(hostile, address, mp_stop, deadline - time.monotonic()))
        child.start()
        await stop.wait()
        mp_stop.set()
        await asyncio.get_running_loop().run_in_executor(None, child.join, 30)
        if child.is_alive():
            child.kill()
    return run


async def load(address, clients: int, commands: int, hostile=None, limit: float = 120.0) -> dict:
    """N clients (one hostile task beside them, if given); returns digests, latencies, elapsed."""
    stop = asyncio.Event()
    deadline = time.monotonic() + limit
    bad = asyncio.ensure_future(hostile(address, stop, deadline)) if hostile else None
    if bad is not None:
        await asyncio.sleep(0.2)  # let the hostile client get going first (it is the point)
    started = time.perf_counter()
    results = await asyncio.wait_for(
        asyncio.gather(*(client(address, seed, commands) for seed in range(clients))), limit)
    elapsed = time.perf_counter() - started
    stop.set()
    if bad is not None:
        try:
            await asyncio.wait_for(bad, 30)
        except (ConnectionError, OSError):
            pass
    latencies = sorted(x for _, _, lat in results for x in lat)
    return {"ok": sum(s == g for s, g, _ in results), "clients": clients, "elapsed": elapsed,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "latencies": latencies}


def percentile(sorted_values, p) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


# -- the bench: the proxy as a subprocess ------------------------------------------------

def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


async def run_case(name, hostile, clients, commands, repeat, extra=()):
    """One proxy process; baseline and hostile runs alternate `repeat` times (medians compared)."""
    upstream = await Upstream().start()
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "proxy", "--upstream", "%s:%d" % upstream.address,
                             "--listen", f"{LOOP}:{port}", "--quiet", "--duration", "900", *extra],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, bad = [], []
    try:
        for _ in range(200):  # wait (with a deadline) until it listens
            try:
                r, w = await asyncio.open_connection(LOOP, port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        await load((LOOP, port), clients, 5)  # warm-up (imports, first allocations), not measured
        for _ in range(repeat):
            base.append(await load((LOOP, port), clients, commands))
            bad.append(await load((LOOP, port), clients - 1, commands, hostile))
        rss_mb = vm_hwm_kb(proc.pid) / 1024
    finally:
        proc.terminate()
        try:  # it waits for its analysis process's report (which runs at idle priority: slow on a busy machine)
            proc.wait(240)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        await upstream.stop()
    return {"name": name, "ok": min(r["ok"] for r in bad), "clients": clients - 1,
            "base_ok": min(r["ok"] == r["clients"] for r in base),
            "base_p99": statistics.median(r["p99"] for r in base), "p99": statistics.median(r["p99"] for r in bad),
            "p50": statistics.median(r["p50"] for r in bad), "elapsed": statistics.median(r["elapsed"] for r in bad),
            "rss_mb": rss_mb}


async def bench(args) -> list[dict]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the storm holds thousands of sockets here
    cases = [("garbage", garbage), ("slowloris (50 connections)", slowloris), ("reset storm", reset_storm),
             ("silent upstream", upstream_fault(SILENT)),
             ("upstream reset mid-payload (storm)", upstream_fault(RESET)),
             ("upstream 10 MB burst", upstream_fault(BURSTY))]
    if args.storm:
        async def held(address, stop, deadline):
            return await storm(address, stop, deadline, args.storm)
        cases.append((f"{args.storm} connections from one client", held))
    rows = []
    for name, hostile in cases:
        if args.only and args.only not in name:
            continue
        if args.separate:
            hostile = separate(hostile)
        extra = ["--max-connections", str(args.storm + args.clients + 16)] if "connections from" in name else []
        rows.append(await run_case(name, hostile, args.clients, args.commands, args.repeat, extra))
        r = rows[-1]  # as it comes: a long run shows its progress
        print(f"  {r['name']}: {r['ok']}/{r['clients']} whole, p99 {r['base_p99']:.1f} -> {r['p99']:.1f} ms, "
              f"peak RSS {r['rss_mb']:.0f} MB", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=200, help="clients in the baseline (one fewer beside a hostile one)")
    p.add_argument("--commands", type=int, default=100, help="round trips per client")
    p.add_argument("--repeat", type=int, default=3, help="alternating baseline/hostile runs per case (medians)")
    p.add_argument("--storm", type=int, default=5000, help="connections the storm client holds (0: skip)")
    p.add_argument("--separate", action="store_true",
                   help="run the hostile client in a process of its own (default: in the clients' process)")
    p.add_argument("--only", metavar="TEXT", help="only the cases whose name contains TEXT")
    args = p.parse_args()
    rows = asyncio.run(bench(args))
    print(f"{args.clients} clients x {args.commands} round trips; medians of {args.repeat} alternating runs; "
          f"hostile client {'in its own process' if args.separate else 'in the clients process'}")
    print(f"{'hostile client / fault':36} {'others whole':>12} {'p99 base':>9} {'p99 with':>9} {'ratio':>6} "
          f"{'p50 with':>9} {'proxy peak RSS':>15}")
    for r in rows:
        print(f"{r['name']:36} {r['ok']:>6}/{r['clients']:<5} {r['base_p99']:7.1f}ms {r['p99']:7.1f}ms "
              f"{r['p99'] / r['base_p99']:6.2f} {r['p50']:7.1f}ms {r['rss_mb']:12.0f} MB")
    return 0 if all(r["ok"] == r["clients"] and r["base_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
