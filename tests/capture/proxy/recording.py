"""A sink that keeps every event, for the proxy's tests (faults, policy, ...)."""

from __future__ import annotations

from analyzer.msnp import Anomaly


class Recording:
    """Every event the analysis emits, with the id of its connection."""

    def __init__(self):
        self.events = []

    def event(self, conn, event):
        self.events.append((conn.id if conn else None, event))

    def stream(self, conn):
        pass

    def close(self):
        pass

    def anomalies(self, name):
        return [e for _, e in self.events if type(e) is Anomaly and e.name == name]

    def records(self, kind):
        return [e for _, e in self.events if isinstance(e, dict) and e.get("kind") == kind]
