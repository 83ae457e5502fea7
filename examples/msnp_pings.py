"""Counts keep-alives, flags slow ones, decodes UUX personal messages."""

from collections import Counter

from analyzer.plugins import DecodedView, Plugin, section, section_table


class PingsPlugin(Plugin):
    name = "pings"                      # anomalies are plugin.pings.<what>
    version = "1.0"
    description = "PNG/QNG keep-alive latency; UUX personal messages"
    anomalies = {"slow_qng": ("warning", "a QNG came more than 5 s after its PNG")}

    def __init__(self):
        self.latencies = Counter()

    # a payload decoder: the highest priority wins
    def decode(self, cmd, conn):
        if cmd.cmd != "UUX":
            return None
        return DecodedView("personal message", [("xml", cmd.payload.decode("utf-8", "replace"))],
                           priority=15)

    # an observer: commands, transactions, connections
    def on_transaction(self, conn, transaction):
        if transaction.cmd == "PNG" and transaction.latency_ms is not None:
            self.latencies[conn.id] += 1
            if transaction.latency_ms > 5000:
                self.report(conn, "slow_qng", f"{transaction.latency_ms:.0f} ms", transaction.request)

    def on_connection_end(self, conn):
        pass

    # report contributions: plain data for HTML, rich renderables for the terminal
    def html_sections(self):
        return [section("Keep-alives answered", ["stream", "count"],
                        [[stream, n] for stream, n in sorted(self.latencies.items())])]

    def terminal_sections(self):
        return [section_table(s) for s in self.html_sections()]
