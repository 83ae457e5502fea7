"""The proxy's analysis in a process of its own, fed by batched records over a socket pair.

The forwarding process keeps only the relay, the XFR/RNG rewriter and the
recorder. Everything else (decoding, pairing, the JSON Lines writer, the live
view, the HTML timeline, plugins, the final report) runs in an analysis
process. `RemoteAnalysis` stands in for `analyzer.analysis.run.Analysis` in the
relay (the same `open`/`feed`/`end`/`close`/`anomaly` calls): each call
appends a small record to a list, and the list is sent every 50 ms (or once
1 MiB of data waits) as one pickled frame on a non-blocking asyncio
transport, so the cost of the pipe is shared by every chunk read meanwhile,
falls on few round trips, and a write never blocks the relay.

Back-pressure without blocking: the analysis process acknowledges the data
bytes of each frame once it has analysed them. When the bytes sent but not
yet acknowledged would pass `max_backlog` (64 MiB by default), the newest
data is not sent for analysis: its size is counted per connection and
direction, `proxy.analysis_backlog` is reported once per connection, and when
the backlog has drained below half the limit the hole is passed on as a gap
(the decoder resynchronises, exactly as after a hole in a capture). Forwarding
never waits for the analysis.

The analysis process ignores SIGINT (Ctrl-C reaches the whole process group:
the forwarding process decides when to stop), and finishes when told to or
when its socket closes; its exit status is the run's.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import select
import signal
import socket
import struct
import time
from collections import Counter
from typing import NamedTuple

from analyzer.msnp import Anomaly
from analyzer.analysis.connection import Limits

DEFAULT_BACKLOG = 64 * 1024 * 1024
_LEN = struct.Struct("!I")
_ACK = struct.Struct("!Q")
REFRESH = 0.25
FLUSH_DELAY = 0.05   # records wait at most this long: one write (and one wake-up over there) per 50 ms,
#                      so the few microseconds a flush costs fall on under 1% of round trips (not the p99)
FLUSH_BYTES = 1 << 20  # ... or until this much data is waiting


# -- the records sent to the analysis process (pickled in batches; one class per call) --

class Opened(NamedTuple):
    conn_id: str
    client: str | None
    server: str | None
    version: int | None


class Data(NamedTuple):
    conn_id: str
    direction: str
    data: bytes
    ts: float | None


class Ended(NamedTuple):
    """One direction ended (FIN)."""
    conn_id: str
    direction: str
    ts: float | None


class Gap(NamedTuple):
    """Bytes forwarded but not sent for analysis (the backlog was full)."""
    conn_id: str
    direction: str
    size: int
    ts: float | None


class Closed(NamedTuple):
    conn_id: str
    ts: float | None


class Legs(NamedTuple):
    """The relay's two TCP connections behind a stream (`Analysis.legs`)."""
    conn_id: str
    legs: list


class AnomalySeen(NamedTuple):
    """An anomaly the forwarding process found (conn_id None: not tied to a connection)."""
    conn_id: str | None
    name: str
    detail: str
    direction: str | None
    offset: int | None
    ts: float | None


class Record(NamedTuple):
    """A record of the relay's own for the sinks (`Analysis.record`)."""
    conn_id: str
    record: dict


class Notice(NamedTuple):
    text: str


class Print(NamedTuple):
    text: str
    style: str | None


class Status(NamedTuple):
    text: str


class ReportLine(NamedTuple):
    """A line for the end of the final report."""
    text: str


class Finish(NamedTuple):
    """The run is over: finish the analysis and exit."""


class RemoteConn:
    """What the relay keeps of a connection analysed elsewhere."""

    __slots__ = ("id", "failed", "closed", "anomalies", "backlogged", "dropped")

    def __init__(self, conn_id: str) -> None:
        self.id = conn_id
        self.failed = False
        self.closed = False
        self.anomalies: Counter[str] = Counter()
        self.backlogged = False   # proxy.analysis_backlog reported
        self.dropped = {}         # direction -> bytes not sent for analysis (a gap to report)


class _Link(asyncio.Protocol):
    def __init__(self, owner: "RemoteAnalysis") -> None:
        self.owner = owner
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        n = len(buf) // _ACK.size
        for i in range(n):
            self.owner._acked(_ACK.unpack_from(buf, i * _ACK.size)[0])
        self.buf = buf[n * _ACK.size:]

    def connection_lost(self, exc) -> None:
        self.owner._lost()


class RemoteAnalysis:
    """The relay's side of the analysis process (duck-types the `Analysis` calls the relay makes)."""

    def __init__(self, sock: socket.socket, limits: Limits | None = None,
                 max_backlog: int = DEFAULT_BACKLOG, on_notice=None) -> None:
        self.limits = limits or Limits()
        self.max_backlog = max_backlog
        self.on_notice = on_notice
        self._sock = sock
        self._transport = None
        self._batch: list = []
        self._batch_bytes = 0
        self._timer = None
        self._loop = None
        self._next_id = 0
        self.sent = 0          # data bytes sent for analysis
        self.acked = 0         # ... and analysed
        self.dropped = 0       # data bytes not analysed (backlog)
        self._holes: set[RemoteConn] = set()
        self._gone = asyncio.Event()
        self.alive = True

    async def start(self) -> "RemoteAnalysis":
        self._loop = asyncio.get_running_loop()
        self._transport, _ = await self._loop.create_connection(lambda: _Link(self), sock=self._sock)
        return self

    @property
    def backlog(self) -> int:
        return self.sent + self._batch_bytes - self.acked

    # -- the calls the relay makes -----------------------------------------------

    def open(self, client=None, server=None, conn_id=None, version=None) -> RemoteConn:
        self._next_id += 1
        conn = RemoteConn(conn_id or str(self._next_id))
        self._put(Opened(conn.id, client, server, version))
        return conn

    def feed(self, conn: RemoteConn, direction: str, data: bytes, ts: float | None = None) -> None:
        # The relay calls this once per chunk read: kept to a few attribute reads and one append.
        if conn.dropped:  # in a hole: resume once the backlog has drained to half the limit
            if self.backlog > self.max_backlog // 2:
                self._drop(conn, direction, len(data), ts)
                return
            self._fill(conn, ts)
        waiting = self._batch_bytes + len(data)
        if self.sent + waiting - self.acked > self.max_backlog:
            self._drop(conn, direction, len(data), ts)
            return
        self._batch_bytes = waiting
        self._batch.append(Data(conn.id, direction, data, ts))
        if waiting >= FLUSH_BYTES:
            self._flush()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(FLUSH_DELAY, self._flush)

    def end(self, conn: RemoteConn, direction: str, ts: float | None = None) -> None:
        self._fill(conn, ts)
        self._put(Ended(conn.id, direction, ts))

    def close(self, conn: RemoteConn, ts: float | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._fill(conn, ts)
        self._holes.discard(conn)
        self._put(Closed(conn.id, ts))

    def legs(self, conn: RemoteConn, legs: list[dict]) -> None:
        self._put(Legs(conn.id, legs))

    def anomaly(self, conn: RemoteConn | None, anomaly: Anomaly) -> None:
        if conn is not None:
            conn.anomalies[anomaly.name] += 1
        self._put(AnomalySeen(conn.id if conn is not None else None, anomaly.name, anomaly.detail,
                              anomaly.direction, anomaly.offset, anomaly.ts))

    def record(self, conn: RemoteConn, record: dict) -> None:
        """A record for the sinks (the relay's `rewrite` records), as `Analysis.record`."""
        self._put(Record(conn.id, record))

    def tick(self, conn, ts) -> None:
        pass  # the analysis process times out unanswered requests itself

    def notice(self, text: str) -> None:
        self._put(Notice(text))

    def print(self, text: str, style: str | None = None) -> None:
        self._put(Print(text, style))

    def status(self, text: str) -> None:
        self._put(Status(text))

    def report(self, text: str) -> None:
        """A line for the end of the final report (the proxy's policy and limits)."""
        self._put(ReportLine(text))

    # -- backlog -------------------------------------------------------------------

    def _drop(self, conn: RemoteConn, direction: str, size: int, ts) -> None:
        conn.dropped[direction] = conn.dropped.get(direction, 0) + size
        self.dropped += size
        self._holes.add(conn)
        if not conn.backlogged:
            conn.backlogged = True
            self.anomaly(conn, Anomaly("proxy.analysis_backlog",
                                       f"the analysis fell {self.backlog:,} bytes behind (limit {self.max_backlog:,}); "
                                       "newer bytes of this connection were forwarded but not analysed",
                                       direction, None, ts if ts is not None else time.time()))
            if self.on_notice is not None:
                self.on_notice(f"stream {conn.id}: analysis backlog over {self.max_backlog:,} bytes; "
                               "forwarding goes on, the analysis skips ahead")

    def _fill(self, conn: RemoteConn, ts) -> None:
        """Report the bytes that were not analysed as a gap (the decoder resynchronises after it)."""
        for direction, size in conn.dropped.items():
            self._put(Gap(conn.id, direction, size, ts))
        conn.dropped = {}
        self._holes.discard(conn)

    def _acked(self, n: int) -> None:
        self.acked += n
        if self._holes and self.backlog <= self.max_backlog // 2:
            for conn in list(self._holes):
                self._fill(conn, time.time())

    # -- batching --------------------------------------------------------------------

    def _put(self, record) -> None:
        self._batch.append(record)
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch = self._batch, []
        size, self._batch_bytes = self._batch_bytes, 0
        if not batch or not self.alive:
            return
        self.sent += size
        frame = pickle.dumps((size, batch), protocol=pickle.HIGHEST_PROTOCOL)
        self._transport.write(_LEN.pack(len(frame)) + frame)

    def _lost(self) -> None:
        self.alive = False
        self._gone.set()

    async def finish(self, timeout: float) -> bool:
        """Tell the analysis process to finish, and wait (bounded) until it has closed its end."""
        self._put(Finish())
        self._flush()
        if self._transport is not None and self.alive:
            try:
                self._transport.write_eof()
            except (OSError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(self._gone.wait(), timeout)
            except asyncio.TimeoutError:
                return False
        return True


# -- the analysis process ---------------------------------------------------------------

# What each record about one connection does to it (Closed also forgets the connection).
CONN_CALLS = {
    Data: lambda analysis, conn, r: analysis.feed(conn, r.direction, r.data, r.ts),
    Ended: lambda analysis, conn, r: analysis.end(conn, r.direction, r.ts),
    Gap: lambda analysis, conn, r: analysis.gap(conn, r.direction, r.size, r.ts),
    Closed: lambda analysis, conn, r: analysis.close(conn, r.ts),
    Legs: lambda analysis, conn, r: analysis.legs(conn, r.legs),
}


def serve(session, sock: socket.socket) -> int:
    """Run in the analysis process: apply records to `session.analysis` until told to finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # forwarding first: this process only gets the CPU time nothing else wants
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass
    session.start_plugins()
    analysis = session.analysis
    conns: dict = {}
    failed: set = set()
    sock.setblocking(True)

    def guarded(conn_id, call):
        if conn_id in failed:
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - one connection's failure stops its analysis only
            failed.add(conn_id)
            conn = conns.get(conn_id)
            session.notice(f"stream {conn_id}: analysis failed ({type(exc).__name__}: {exc}); "
                           "still relaying, no longer analysed")
            if conn is not None:
                conn.failed = True
                conn.anomalies["analyzer.internal_error"] += 1

    def apply(record) -> bool:
        kind = type(record)
        if kind is Opened:
            conns[record.conn_id] = analysis.open(client=record.client, server=record.server,
                                                  conn_id=record.conn_id, version=record.version)
        elif kind in CONN_CALLS:
            cid = record.conn_id
            conn = conns.pop(cid, None) if kind is Closed else conns.get(cid)
            if conn is not None:
                guarded(cid, lambda: CONN_CALLS[kind](analysis, conn, record))
        elif kind is AnomalySeen:
            cid = record.conn_id
            conn = conns.get(cid) if cid is not None else None
            event = Anomaly(record.name, record.detail, record.direction, record.offset, record.ts)
            if cid is not None and (conn is None or cid in failed):
                if conn is not None:
                    conn.anomalies[record.name] += 1
            else:
                guarded(cid, lambda: analysis.anomaly(conn, event))
        elif kind is Record:
            cid = record.conn_id
            conn = conns.get(cid)
            if conn is not None:
                guarded(cid, lambda: analysis.record(conn, record.record))
        elif kind is Notice:
            session.notice(record.text)
        elif kind is Print:
            session.say(record.text, record.style)
        elif kind is ReportLine:
            session.report_lines.append(record.text)
        elif kind is Status:
            session.status(record.text)
        elif kind is Finish:
            return False
        return True

    def records() -> None:
        buf = bytearray()
        running = True
        next_tick = time.monotonic() + REFRESH
        while running:
            ready, _, _ = select.select([sock], [], [], max(0.0, next_tick - time.monotonic()))
            if ready:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break  # the forwarding process is gone: report what we have
                buf += chunk
                while len(buf) >= _LEN.size:
                    (n,) = _LEN.unpack_from(buf)
                    if len(buf) < _LEN.size + n:
                        break
                    size, batch = pickle.loads(memoryview(buf)[_LEN.size:_LEN.size + n])
                    del buf[:_LEN.size + n]
                    for record in batch:
                        if not apply(record):
                            running = False
                            break
                    try:
                        sock.sendall(_ACK.pack(size))
                    except OSError:
                        pass
                    if not running:
                        break
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + REFRESH
                wall = time.time()
                for cid, conn in list(conns.items()):
                    guarded(cid, lambda conn=conn: analysis.tick(conn, wall))

    if session.model is None:
        records()
    else:
        # The console takes this process's main thread (and the terminal); the records are applied
        # on another thread, under the console model's lock. Its quit key stops the forwarding
        # process (SIGINT, as Ctrl-C would: the terminal is the console's now), which then tells
        # this one to finish; the console closes when the records end.
        import threading
        app = session.console_app(lambda: os.kill(os.getppid(), signal.SIGINT))

        def feed() -> None:
            try:
                records()
            finally:
                session.model.ended.set()
        thread = threading.Thread(target=feed, name="msnp-records", daemon=True)
        thread.start()
        app.run()
        thread.join()
    status = session.finish()
    try:
        sock.close()
    except OSError:
        pass
    return status
