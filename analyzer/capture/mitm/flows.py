"""mitmproxy flows into an Analysis: flow files (`mitmdump -w`), and the converters the addon shares.

- `is_flow_file(path)`: True when the file is a mitmproxy flow file (a stream of
  tnetstrings that `mitmproxy.io.FlowReader` reads). Never raises.
- `read_flow_file(path, analysis)`: decodes every TCP flow (raw MSNP, one
  `Connection` each, fed message by message with mitmproxy's timestamps) and
  every HTTP flow (gateway sessions, Passport/RST logins). A file damaged after
  its first flow gives `mitm.flowfile.corrupt` and keeps what was read; one
  that is unreadable from the start raises `FlowFileError` (exit status 2).
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


def tcp_endpoints(flow) -> tuple[str | None, str | None]:
    client = address(flow.client_conn.peername) if flow.client_conn else None
    server = None
    if flow.server_conn:
        server = address(flow.server_conn.address) or address(flow.server_conn.peername)
    return client, server


def is_flow_file(path) -> bool:
    """A mitmproxy flow file starts with a tnetstring: digits, ':', then a dict ending in '}'."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            digits = head.split(b":", 1)[0]
            if not digits.isdigit() or len(digits) > 10 or b":" not in head:
                return False
            from mitmproxy import io as mio
            f.seek(0)
            next(iter(mio.FlowReader(f).stream()))
            return True
    except Exception:  # noqa: BLE001 - any failure means "not a flow file"
        return False


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
            ts = message.timestamp
            analysis.feed(conn, C2S if message.from_client else S2C, message.content, ts)
        if flow.error:
            analysis.anomaly(conn, Anomaly("mitm.connection.error", flow.error.msg, None, None, flow.error.timestamp))
        analysis.close(conn, ts)

    def http_flow(self, flow) -> None:
        self.http_flows += 1
        x = exchange_from_flow(flow)
        if not self.gateway.exchange(x):
            self.linker.http(x)


def read_flow_file(path, analysis, progress=None) -> FlowAnalyzer:
    """Decode every flow of a mitmproxy flow file. `progress(bytes_read)` is called per flow."""
    from mitmproxy import exceptions
    from mitmproxy import io as mio
    p = Path(path)
    reader = FlowAnalyzer(analysis)
    try:
        f = open(p, "rb")
    except OSError as exc:
        raise FlowFileError(f"{path}: {exc.strerror}") from None
    with f:
        read = 0
        try:
            for flow in mio.FlowReader(f).stream():
                read += 1
                reader.flow(flow)
                if progress is not None:
                    progress(f.tell())
        except exceptions.FlowReadException as exc:
            if not read:
                raise FlowFileError(f"{path}: not a mitmproxy flow file ({exc})") from None
            analysis.anomaly(None, Anomaly("mitm.flowfile.corrupt", f"after {read} flows: {exc}", None, None, None))
    return reader
