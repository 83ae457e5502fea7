"""The HTML exporter as it was before streaming (#19), kept as the reference the streamed
exporter's data is compared with (tests/outputs/test_html_streaming.py): it held every row
as a Python list until the end. Only its data() is used; the page it would have written is
gone. Changed on purpose since, and masked by the comparison: the payload length column
(now the length on the wire, before redaction)."""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from analyzer.anomalies import spec
from analyzer.msnp import C2S, Anomaly, Command, Skipped, Transaction
from analyzer.analysis.linking import Linker
from analyzer.analysis.redact import Redactor
from analyzer.outputs.html import split_payload

CHUNK = 1000
DIRS = {C2S: 0, "s2c": 1}
LANE, TS, DIR, CODE, TRID, TEXT, PAYLOAD, ANOMALIES, PAIR = range(9)


class LaneTransaction(NamedTuple):
    """A transaction, by the lane rows of its request and replies."""
    request: int
    replies: list[int]
    outcome: str
    latency: float | None
    error: str | None



class _Lane:
    __slots__ = ("conn", "rows", "index", "pending", "dead", "txns")

    def __init__(self, conn) -> None:
        self.conn = conn
        self.rows: list[list] = []
        self.index: dict[tuple, int] = {}      # (dir, offset) -> row of that command
        self.pending: dict[tuple, list[int]] = {}  # anomaly rows waiting for their command
        self.dead: set[int] = set()
        self.txns: list[LaneTransaction] = []


class ReferenceTimeline:
    """A sink that collects rows and writes the HTML timeline at close()."""

    def __init__(self, out, linker: Linker, redactor: Redactor | None = None,
                 sources: list[str] | None = None, title: str | None = None) -> None:
        self.out = out
        self.linker = linker
        self.redactor = redactor or Redactor()
        self.sources = list(sources or [])
        self.title = title
        self.lanes: dict[str, _Lane] = {}
        self.capture_anomalies: list[list] = []
        self.written = False
        self.plugins = None  # a PluginManager: decoded payload views and report sections
        # Callables that return more report sections (plain data, as plugins' are): the objects
        # exchanged and the contact lists (cli.run.Run), asked for when the page is written.
        self.extra_sections: list = []

    # -- sink interface -------------------------------------------------------

    def _lane(self, conn) -> _Lane:
        lane = self.lanes.get(conn.id)
        if lane is None:
            lane = self.lanes[conn.id] = _Lane(conn)
        return lane

    def event(self, conn, event) -> None:
        kind = type(event)
        if conn is None:
            if kind is Anomaly:
                self.capture_anomalies.append([event.name, self.redactor.detail(event), event.ts])
            return
        lane = self._lane(conn)
        if kind is Command:
            self._command(lane, event, conn)
        elif kind is Anomaly:
            self._anomaly(lane, event)
        elif kind is Transaction:
            self._transaction(lane, event)
        elif kind is Skipped:
            lane.rows.append([0, event.ts, DIRS.get(event.direction, 2), "~", None,
                              f"{len(event.raw)} bytes skipped (not MSNP)", 0, 0, 0])

    def stream(self, conn) -> None:
        self._lane(conn).conn = conn

    def close(self) -> None:
        if self.written:
            return
        if self.plugins is not None:
            self.plugins.close()  # let plugins finish (their last anomalies, their sections) first
        self.written = True

    # -- rows -----------------------------------------------------------------

    def _command(self, lane: _Lane, cmd: Command, conn=None) -> None:
        red = self.redactor
        params = " ".join(red.params(cmd, decoded=True))
        payload = 0
        if cmd.payload is not None:
            payload = split_payload(red.payload(cmd) or b"")
            if self.plugins is not None:
                view = self.plugins.decode_payload(cmd, conn)
                if view is not None:
                    payload.append(view.to_dict(red))
        key = (cmd.direction, cmd.offset)
        idx = len(lane.rows)
        anoms = 0
        waiting = lane.pending.pop(key, None)
        if waiting:
            anoms = []
            for r in waiting:
                lane.dead.add(r)
                anoms.extend(lane.rows[r][ANOMALIES])
        lane.rows.append([0, cmd.ts, DIRS[cmd.direction], cmd.cmd, cmd.trid, params, payload, anoms, 0])
        lane.index[key] = idx

    def _anomaly(self, lane: _Lane, anomaly: Anomaly) -> None:
        detail = self.redactor.detail(anomaly)
        entry = [anomaly.name, detail]
        key = (anomaly.direction, anomaly.offset)
        idx = lane.index.get(key)
        if idx is not None and anomaly.offset is not None:
            row = lane.rows[idx]
            if row[ANOMALIES] == 0:
                row[ANOMALIES] = []
            row[ANOMALIES].append(entry)
            return
        # Not (yet) tied to a command: its own row, where it happened; merged into the
        # command at the same position if that command comes next.
        row_idx = len(lane.rows)
        lane.rows.append([0, anomaly.ts, DIRS.get(anomaly.direction, 2), "!", anomaly.trid,
                          detail, 0, [entry], 0])
        if anomaly.offset is not None:
            lane.pending.setdefault(key, []).append(row_idx)

    def _transaction(self, lane: _Lane, txn: Transaction) -> None:
        req = lane.index.get((C2S, txn.request.offset))
        if req is None:
            return
        replies = [lane.index[k] for k in ((r.direction, r.offset) for r in txn.replies) if k in lane.index]
        latency = None if txn.latency_ms is None else round(txn.latency_ms, 3)
        lane.txns.append(LaneTransaction(req, replies, txn.outcome, latency, txn.error))

    # -- the page -------------------------------------------------------------

    def data(self) -> tuple[dict, list[list]]:
        """(meta, rows): what the page embeds. Rows are in lane order, each lane in time order."""
        links = self.linker.result()
        order: list[str] = []
        lane_session: dict[str, str | None] = {}
        for session in links["sessions"]:
            for sid in session["streams"]:
                if sid in self.lanes and sid not in lane_session:
                    order.append(sid)
                    lane_session[sid] = session["session"]
        for sid in self.lanes:
            if sid not in lane_session:
                order.append(sid)
                lane_session[sid] = None
        rows: list[list] = []
        lanes_meta = []
        totals_cmd: Counter[str] = Counter()
        totals_anom: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        parent = links["parent"]
        link_by_child = {l["to"]: l for l in links["links"]}
        unlinked_by_stream: dict[str, list[str]] = {}
        for u in links["unlinked"]:
            for end in (u.get("to"), u.get("from")):
                if end:
                    unlinked_by_stream.setdefault(end, []).append(u["reason"])
        chats = {c["stream"]: c for c in links["chats"]}
        for li, sid in enumerate(order):
            lane = self.lanes[sid]
            conn = lane.conn
            base = len(rows)
            remap: dict[int, int] = {}
            for i, row in enumerate(lane.rows):
                if i in lane.dead:
                    continue
                remap[i] = len(rows)
                row = row.copy()  # the lane's rows stay as collected: data() may be called again
                row[LANE] = li
                rows.append(row)
            for txn in lane.txns:
                if txn.request not in remap:
                    continue
                g_req = remap[txn.request]
                g_replies = [remap[r] for r in txn.replies if r in remap]
                rows[g_req][PAIR] = [0, g_replies, txn.outcome, txn.latency, txn.error]
                for r in g_replies:
                    if rows[r][PAIR] == 0:
                        rows[r][PAIR] = [1, g_req]
            commands = getattr(conn, "commands", Counter())
            anomalies = getattr(conn, "anomalies", Counter())
            totals_cmd.update(commands)
            totals_anom.update(anomalies)
            outcomes.update(getattr(conn, "outcomes", Counter()))
            if getattr(conn, "version_label", None):
                versions[conn.version_label] += 1
            link = link_by_child.get(sid)
            lanes_meta.append({
                "id": sid, "session": lane_session[sid], "role": getattr(conn, "role", None),
                "client": getattr(conn, "client", None), "server": getattr(conn, "server", None),
                "version": getattr(conn, "version_label", None), "handle": getattr(conn, "handle", None),
                "start": getattr(conn, "first_ts", None), "end": getattr(conn, "last_ts", None),
                "first": base, "count": len(rows) - base, "commands": sum(commands.values()),
                "anomalies": dict(anomalies), "parent": parent.get(sid),
                "link": None if link is None else {"by": link["by"], "evidence": link.get("evidence"),
                                                   "from": link["from"], "cookie": link.get("cookie"),
                                                   "sessid": link.get("sessid")},
                "unlinked": unlinked_by_stream.get(sid, []),
                "participants": chats.get(sid, {}).get("participants", []),
            })
        for name, _detail, _ts in self.capture_anomalies:
            totals_anom[name] += 1
        start = min((l["start"] for l in lanes_meta if l["start"] is not None), default=None)
        names = sorted(set(totals_anom) | {a[0] for r in rows if r[ANOMALIES] for a in r[ANOMALIES]})
        meta = {
            "title": self.title or ("MSNP timeline: " + ", ".join(self.sources) if self.sources else "MSNP timeline"),
            "sources": self.sources, "start": start, "rows": len(rows), "chunk": CHUNK,
            "chunks": (len(rows) + CHUNK - 1) // CHUNK, "redacted": self.redactor.enabled,
            "lanes": lanes_meta,
            "sessions": [{k: s[k] for k in ("session", "handle", "version", "start", "end", "streams",
                                             "complete")} for s in links["sessions"]],
            "unlinked": links["unlinked"],
            "totals": {"logins": sum(1 for s in links["sessions"] if s["complete"]),
                       "sessions": len(links["sessions"]), "connections": len(lanes_meta),
                       "versions": dict(versions), "commands": sum(totals_cmd.values()),
                       "by_command": dict(totals_cmd.most_common()), "transactions": dict(outcomes),
                       "anomalies": dict(sorted(totals_anom.items()))},
            "catalogue": {n: [str(spec(n).severity), spec(n).summary] for n in names},
            "capture_anomalies": self.capture_anomalies,
            "sections": (self.plugins.html_sections() if self.plugins is not None else [])
                        + [sec for provide in self.extra_sections for sec in provide()],
        }
        return meta, rows
