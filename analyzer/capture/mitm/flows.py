"""mitmproxy flows into an Analysis: flow files (`mitmdump -w`), and the converters the addon shares.

- `is_flow_file(path)`: True when the file is a mitmproxy flow file (a stream of
  tnetstrings, the first a dict). Never raises.
- `read_flow_file(path, analysis)`: decodes every TCP flow (raw MSNP, one
  `Connection` each, fed message by message with mitmproxy's timestamps) and
  every HTTP flow (gateway sessions, Passport/RST logins). The records are
  framed here and each is parsed on its own (mitmproxy's tnetstring parser and
  `Flow.from_state`), so one damaged record (no `type`, nesting too deep, a
  state mitmproxy cannot load) is skipped and the next one read; framing that
  breaks (a cut file) stops the reading. Either gives `mitm.flowfile.corrupt`
  and keeps everything else; a file from which no flow can be read raises
  `FlowFileError` (exit status 2). Never any other exception on file contents.
- `exchange_from_flow(flow)`: an `HttpExchange` from a mitmproxy `HTTPFlow`.

TCP messages saved by a reverse-mode run hold what the client received, so
`XFR`/`RNG` addresses appear rewritten in them; the live run's `rewrite`
records say what the server had sent.
"""

from __future__ import annotations

from pathlib import Path

from analyzer.msnp import C2S, S2C, Anomaly
from analyzer.capture.mitm.gateway import GatewayFeeder, HttpExchange
from analyzer.capture.mitm.passport import LoginLinker


class FlowFileError(Exception):
    """The file is not a readable mitmproxy flow file."""


def address(addr) -> str | None:
    if not addr:
        return None
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def exchange_from_flow(flow) -> HttpExchange:
    req, resp = flow.request, flow.response
    server = address(flow.server_conn.peername) or address(flow.server_conn.address) if flow.server_conn else None
    return HttpExchange(
        method=req.method, host=req.pretty_host, path=req.path,
        request_headers=list(req.headers.items(multi=True)), request_body=req.raw_content or b"",
        status=resp.status_code if resp is not None else None,
        response_headers=list(resp.headers.items(multi=True)) if resp is not None else [],
        response_body=(resp.raw_content or b"") if resp is not None else b"",
        ts_request=req.timestamp_start,
        ts_response=(resp.timestamp_end or resp.timestamp_start) if resp is not None else None,
        client=address(flow.client_conn.peername) if flow.client_conn else None,
        server=server, scheme=req.scheme,
        error=flow.error.msg if flow.error else None)


def closed_at(flow) -> float | None:
    """When the flow's TCP connection closed (the later side), if mitmproxy recorded it: a
    stream ends there, not at its last message (a client may log out by closing the socket)."""
    ends = []
    for side in (flow.client_conn, flow.server_conn):
        t = getattr(side, "timestamp_end", None) if side is not None else None
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            ends.append(_time(t))
    ends = [t for t in ends if t is not None]
    return max(ends) if ends else None


def tcp_endpoints(flow) -> tuple[str | None, str | None]:
    client = address(flow.client_conn.peername) if flow.client_conn else None
    server = None
    if flow.server_conn:
        server = address(flow.server_conn.address) or address(flow.server_conn.peername)
    return client, server


MAX_PREFIX = 12  # digits of a tnetstring length, as mitmproxy's own reader allows


def _prefix(f) -> int | None:
    """The length of the next tnetstring (its `digits:` read), None at a clean end; ValueError if bad."""
    digits = b""
    while True:
        c = f.read(1)
        if not c:
            if digits:
                raise ValueError("the file ends inside a length prefix")
            return None
        if c == b":":
            break
        if not c.isdigit() or len(digits) >= MAX_PREFIX:
            raise ValueError(f"not a tnetstring length prefix ({(digits + c)[:16]!r})")
        digits += c
    if not digits:
        raise ValueError("an empty length prefix")
    return int(digits)


def is_flow_file(path) -> bool:
    """A mitmproxy flow file starts with a tnetstring dict: digits, ':', the data, then '}'. Never raises."""
    try:
        with open(path, "rb") as f:
            length = _prefix(f)
            if length is None:
                return False
            f.seek(length, 1)
            return f.read(1) == b"}"
    except (OSError, ValueError):
        return False


def records(f):
    """(offset, type tag, data) for every top-level tnetstring of a flow file, framing only.

    Raises ValueError where the framing itself breaks (the records after it cannot be found).
    """
    while True:
        at = f.tell()
        length = _prefix(f)
        if length is None:
            return
        data = f.read(length)
        tag = f.read(1)
        if len(data) < length or not tag:
            raise ValueError(f"the file ends inside a record of {length} bytes")
        yield at, tag[0], data


def flow_from_record(tag: int, data: bytes):
    """A mitmproxy flow from one record, or ValueError saying why it is not one.

    Anything the record holds (a missing `type`, nesting too deep for the parser,
    a state mitmproxy cannot take) is the record's fault, never an exception of ours.
    """
    from mitmproxy import flow as mflow
    from mitmproxy.io import compat, tnetstring
    try:
        state = tnetstring.parse(tag, memoryview(data))
    except RecursionError:
        raise ValueError("nested too deep") from None
    except (ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a tnetstring ({exc})") from None
    if not isinstance(state, dict):
        raise ValueError(f"a {type(state).__name__}, not a flow")
    if "type" not in state:
        raise ValueError("a record without a flow type")
    try:
        return mflow.Flow.from_state(compat.migrate_flow(state))
    except RecursionError:
        raise ValueError("nested too deep") from None
    except Exception as exc:  # noqa: BLE001 - mitmproxy raises what the state's shape makes it raise
        raise ValueError(f"not a flow mitmproxy can load ({type(exc).__name__}: {exc})"[:300]) from None


class FlowAnalyzer:
    """Feeds mitmproxy flow objects (live or read back) into an Analysis."""

    def __init__(self, analysis, linker: LoginLinker | None = None) -> None:
        self.analysis = analysis
        self.gateway = GatewayFeeder(analysis)
        if linker is None:
            linker = LoginLinker(analysis)
            analysis.sinks.append(linker)
        self.linker = linker
        self.tcp_flows = 0
        self.http_flows = 0
        self.stopped_at: int | None = None  # where broken framing stopped a flow file's reading

    def flow(self, flow) -> None:
        kind = getattr(flow, "type", None)
        if kind == "tcp":
            self.tcp_flow(flow)
        elif kind == "http":
            self.http_flow(flow)

    def tcp_flow(self, flow) -> None:
        self.tcp_flows += 1
        client, server = tcp_endpoints(flow)
        analysis = self.analysis
        conn = analysis.open(client=client, server=server)
        ts = None
        for message in flow.messages:
            content = message.content
            if not isinstance(content, (bytes, bytearray)):
                continue  # a loaded file can hold anything; only bytes are traffic
            ts = _time(message.timestamp)
            analysis.feed(conn, C2S if message.from_client else S2C, bytes(content), ts)
        if flow.error:
            analysis.anomaly(conn, Anomaly("mitm.connection.error", str(flow.error.msg), None, None,
                                           _time(flow.error.timestamp)))
        end = closed_at(flow)
        analysis.close(conn, end if end is not None and (ts is None or end >= ts) else ts)

    def http_flow(self, flow) -> None:
        self.http_flows += 1
        x = exchange_from_flow(flow)
        if not self.gateway.exchange(x):
            self.linker.http(x)


def _time(value) -> float | None:
    """A timestamp from a flow file: a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value - value == 0.0 else None


def read_flow_file(path, analysis, progress=None) -> FlowAnalyzer:
    """Decode every flow of a mitmproxy flow file. `progress(bytes_read)` is called per flow.

    A record that is not a flow is skipped (its framing is intact, so the next
    one is found); a flow whose contents our decoders cannot take is skipped the
    same way; framing that breaks stops the reading. Each gives one
    `mitm.flowfile.corrupt` per file (with the count and the first reason); what
    was read before is kept. Nothing read at all and damage: FlowFileError.
    """
    p = Path(path)
    reader = FlowAnalyzer(analysis)
    try:
        f = open(p, "rb")
    except OSError as exc:
        raise FlowFileError(f"{path}: {exc.strerror}") from None
    read = skipped = 0
    first_skip = None
    stop = None
    last_end = 0
    with f:
        try:
            for at, tag, data in records(f):
                last_end = f.tell()  # the end of the last record whose framing held
                try:
                    flow = flow_from_record(tag, data)
                except ValueError as exc:
                    skipped += 1
                    first_skip = first_skip or f"record {read + skipped} at byte {at}: {exc}"
                    continue
                try:
                    reader.flow(flow)
                except Exception as exc:  # noqa: BLE001 - a loaded flow can hold any type anywhere
                    skipped += 1
                    first_skip = first_skip or (f"record {read + skipped} at byte {at}: "
                                                f"{type(exc).__name__}: {exc}"[:300])
                    continue
                read += 1
                if progress is not None:
                    progress(f.tell())
        except (ValueError, OSError) as exc:
            reader.stopped_at = last_end
            stop = f"reading stopped at byte {last_end} after {read} flows: {exc}"
    if not read and (stop or skipped):
        raise FlowFileError(f"{path}: not a mitmproxy flow file ({stop or first_skip})")
    if skipped:
        analysis.anomaly(None, Anomaly("mitm.flowfile.corrupt",
                                       f"{skipped} record(s) skipped, not flows; the first: {first_skip}",
                                       None, None, None))
    if stop:
        analysis.anomaly(None, Anomaly("mitm.flowfile.corrupt", stop, None, None, None))
    return reader
