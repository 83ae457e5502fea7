"""One time convention for every human-readable output: UTC by default, labelled.

Why UTC: captures travel (a revival operator in one zone reads a capture a
user took in another) and the JSON Lines and pcapng files carry epoch seconds;
a time of day that means the same thing on every machine lets a line of `-v`
be matched with a line of `chat`, the HTML timeline and a server's own log.
`--local-time` switches every terminal view to the machine's zone, and the
label says which one is shown (`Z` for UTC, `+HH:MM` for a local offset).

Times below `RELATIVE_BELOW` are not epoch times (transcripts and tests count
seconds from their start) and are shown as such, with a `+` and an `s`.
"""

from __future__ import annotations

import datetime as _dt
import math

RELATIVE_BELOW = 1e8   # seconds: anything smaller is a relative time, not 1973 or later


class Clock:
    """Formats capture times for people. `local=False` (the default) is UTC."""

    __slots__ = ("local",)

    def __init__(self, local: bool = False) -> None:
        self.local = local

    @property
    def zone(self) -> str:
        """What the times are in, for headers: 'UTC' or 'local time (UTC+01:00)'."""
        if not self.local:
            return "UTC"
        offset = _dt.datetime.now().astimezone().strftime("%z")
        return f"local time (UTC{offset[:3]}:{offset[3:]})"

    def _datetime(self, ts: float) -> _dt.datetime:
        when = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
        return when.astimezone() if self.local else when

    @staticmethod
    def _usable(ts) -> bool:
        return ts is not None and isinstance(ts, (int, float)) and math.isfinite(ts) and -1e11 < ts < 1e11

    def _label(self, when: _dt.datetime) -> str:
        if not self.local:
            return "Z"
        offset = when.strftime("%z")
        return f"{offset[:3]}:{offset[3:]}"

    def time(self, ts: float | None) -> str:
        """Time of day with milliseconds and its zone: '13:04:05.123Z'; relative times '+1.250s'."""
        if not self._usable(ts):
            return "-"
        if abs(ts) < RELATIVE_BELOW:
            return f"+{ts:.3f}s"
        when = self._datetime(ts)
        return when.strftime("%H:%M:%S") + f".{when.microsecond // 1000:03d}" + self._label(when)

    def datetime(self, ts: float | None) -> str:
        """Date and time to the second with its zone: '2007-01-02 13:04:05Z'; relative times '+1.250s'."""
        if not self._usable(ts):
            return "-"
        if abs(ts) < RELATIVE_BELOW:
            return f"+{ts:.3f}s"
        when = self._datetime(ts)
        return when.strftime("%Y-%m-%d %H:%M:%S") + self._label(when)


UTC = Clock()
