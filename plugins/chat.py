"""chat: a readable transcript per switchboard (time, sender handle, text).

Every text MSG (`text/plain`) on a switchboard becomes a line. The sender:
- a server MSG names it (`MSG sender nick length`);
- the client's own MSGs are sent by the switchboard connection's user, known
  from its `USR trid handle cookie` / `ANS trid handle cookie sessid` line (or
  the server's `USR trid OK handle`);
- for captures that start mid-session: from the `TypingUser` header of the
  client's typing notifications on that connection, or else from the user
  handle of the notification server connection(s) in the same capture, when
  they name one user;
- "unknown" only when nothing tells.
Senders are settled when the connection ends (a typing notification may come
after the first message), so transcripts are complete only after the run.

When the run will not ask for HTML sections (`analyze` without --html), only
each board's counts and times are kept, not the text, and once a board has
ended and is not among the TERMINAL_ROWS earliest, it is folded into the
totals of the "more chats" row: the terminal section needs no more, and
memory stays flat however many switchboards the capture holds.

For the HTML report the text is kept, but at most `BOARD_LINES` lines per
board and `REPORT_LINES` over all boards (`line_limit`), in sections for the
first `HTML_BOARDS` chats: the timeline's rows hold every message already, and
the sections say how many more there were
(`msnp-analyzer chat` keeps every line: it builds the plugin with
`line_limit=None`).
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field

from analyzer.msnp import C2S
from analyzer.clock import UTC, Clock
from analyzer.msnp.facts import arrival, handle_of, nick_text
from analyzer.msnp.facts import sender as message_sender
from analyzer.plugins import TERMINAL_ROWS, Plugin, section

from msnp_analyzer_plugins.mime import parse_mime

UNKNOWN = "unknown"
MAX_OTHERS = 10_000   # participants other than the user named per board; later ones are counted
MAX_SENDERS = 4096    # server MSG senders remembered as parsed (see ChatPlugin._sender)
OTHERS_SCANNED = 16   # a board's others looked through in their list; past that, a set is kept too


@dataclass(slots=True)
class ChatLine:
    ts: float | None
    direction: str
    sender: str | None
    text: str
    nick: str | None = None


@dataclass(slots=True)  # one per switchboard seen, thousands open at once on a busy server
class Switchboard:
    stream: str
    client: str | None
    server: str | None
    user: str | None = None                 # the SB connection's own handle (USR/ANS)
    typing_user: str | None = None          # from the client's TypingUser headers
    others: list[str] = field(default_factory=list)  # IRO/JOI/server MSG senders (at most MAX_OTHERS)
    more_others: int = 0                    # distinct ones past MAX_OTHERS, counted
    # The lines kept, a list from the first one on; () (shared) while none is: the plugin keeps
    # no text without an HTML report, and thousands of boards are open at once on a busy server.
    lines: list[ChatLine] | tuple = ()
    first_ts: float | None = None
    how: str = ""                           # how the user was identified
    messages: int = 0                       # text messages (kept as lines or not)
    more_lines: int = 0                     # text messages past the line limits, not kept
    client_messages: int = 0                # of which the client sent
    first_message: float | None = None      # times of the first and last text message
    last_message: float | None = None

    @property
    def participants(self) -> list[str]:
        # dict.fromkeys: first-seen order, one hash per handle (a JOI flood stays linear)
        return [h for h in dict.fromkeys(([self.user] if self.user else []) + self.others) if h]


def _add_line(sb: Switchboard, line: ChatLine) -> None:
    if not sb.lines:
        sb.lines = []
    sb.lines.append(line)


def _first_message(sb: Switchboard):
    """Boards in order of their first text message (those without a time last)."""
    return (sb.first_message is None, sb.first_message or 0, sb.stream)


def _listed(handles: list[str], limit: int = 10, more: int = 0) -> str:
    """At most `limit` handles in a terminal cell, the rest (and `more` not kept) counted (a JOI
    flood is one line)."""
    text = ", ".join(handles[:limit])
    rest = max(0, len(handles) - limit) + more
    return text + f", +{rest} more" if rest else text


def format_ts(ts: float | None, zone: Clock = UTC) -> str:
    """Date and time, labelled (`Z`: UTC, the default; `+HH:MM` with --local-time); relative times `+1.250s`."""
    return zone.datetime(ts)




BOARD_LINES = 200      # chat lines per board kept for the HTML report
REPORT_LINES = 5_000   # chat lines over all boards kept for the HTML report
HTML_BOARDS = 200      # chats with a section of their own in the HTML report
ALL_LINES = (float("inf"), float("inf"))  # `line_limit` of the chat command: every line


class ChatPlugin(Plugin):
    name = "chat"
    version = "1.0"
    description = "a readable transcript per switchboard: time, sender handle, text"
    # Messages, who is in the board, and the logins that name the user.
    commands = frozenset({"MSG", "IRO", "JOI", "USR"})
    anomalies = {
        "unknown_sender": ("info", "a client text message whose sender nothing in the capture names"),
        "participant_limit": ("warning", "more than 10,000 participants named on one switchboard; the rest "
                                         "are counted, not named (once per switchboard)"),
    }

    def __init__(self, line_limit: tuple[int, int] | None = None) -> None:
        # (lines per board, lines over all boards) kept for the HTML report; None: all.
        self.line_limit = (BOARD_LINES, REPORT_LINES) if line_limit is None else line_limit
        self.lines_kept = 0
        self.switchboards: dict[str, Switchboard] = {}
        # The user handles of NS/DS connections: only whether there is exactly one matters,
        # so at most two are kept (a capture of thousands of logins holds two strings).
        self.ns_handles: set[str] = set()
        self._conns: dict[str, object] = {}
        # Summary mode (no HTML report): ended boards past the earliest TERMINAL_ROWS,
        # folded into [chats, messages, first message, last message].
        self._shown: list[Switchboard] = []
        # stream -> the handles in Switchboard.others, for a board with more than OTHERS_SCANNED
        # of them (a JOI flood stays linear); a chat of a few people is looked up in its list
        # (a set per board cost 200 bytes on each of thousands of boards open at once)
        self._others_seen: dict[str, set[str]] = {}
        self.folded = [0, 0, None, None]
        # A server MSG's first parameter -> (sender handle, service notice), as facts.sender
        # reads them from it: one chat's messages name the same few senders over and over.
        self._senders: dict[bytes, tuple[str, bool]] = {}

    def _board(self, conn) -> Switchboard:
        sb = self.switchboards.get(conn.id)
        if sb is None:
            sb = self.switchboards[conn.id] = Switchboard(conn.id, conn.client, conn.server)
            self._conns[conn.id] = conn
        return sb

    def on_command(self, conn, cmd) -> None:
        code = cmd.cmd
        if conn is None:
            return
        if conn.role in ("NS", "DS") and conn.handle and len(self.ns_handles) < 2:
            self.ns_handles.add(conn.handle)
        if code == "MSG":
            self._msg(conn, cmd)
        elif code in ("IRO", "JOI"):
            found = arrival(cmd)
            if found is not None:
                self._add_other(self._board(conn), found.endpoint.handle, conn, cmd)

    def _add_other(self, sb: Switchboard, handle: str, conn, cmd) -> None:
        others = sb.others
        known = None
        if len(others) < OTHERS_SCANNED:
            if handle in others:
                return
        else:
            known = self._others_seen.get(sb.stream)
            if known is None:
                known = self._others_seen[sb.stream] = set(others)
            if handle in known:
                return
        if len(others) < MAX_OTHERS:
            if known is not None:
                known.add(handle)
            others.append(handle)
            return
        sb.more_others += 1   # not remembered: a handle seen twice past the limit counts twice
        if sb.more_others == 1:
            self.report(conn, "participant_limit",
                        f"more than {MAX_OTHERS} participants named on switchboard {sb.stream}: later ones are "
                        f"counted, not named", cmd)

    def _msg(self, conn, cmd) -> None:
        if cmd.payload is None:
            return
        msg = parse_mime(cmd.payload)   # parsed and classified once for the mime, chat and p2p plugins
        kind = msg.kind
        if kind != "text" and kind != "typing":
            return
        sb = self._board(conn)
        if sb.first_ts is None:
            sb.first_ts = cmd.ts
        if cmd.direction == C2S:
            if kind == "typing":
                if sb.typing_user is None:
                    typing = msg.typing_user
                    if typing:
                        sb.typing_user = handle_of(typing.encode())
                return
            sb.client_messages += 1
            self._count(sb, cmd.ts)
            if self.html_report and self._keep(sb):
                _add_line(sb, ChatLine(cmd.ts, C2S, None, msg.text()))
        else:
            sender, service = self._sender(cmd)
            if sender is not None and not service:
                self._add_other(sb, sender, conn, cmd)
            if kind == "text":
                self._count(sb, cmd.ts)
                if self.html_report and self._keep(sb):
                    found = message_sender(cmd)
                    nick = nick_text(found.nick) if found is not None and found.nick is not None else None
                    _add_line(sb, ChatLine(cmd.ts, cmd.direction, sender, msg.text(), nick))

    def _sender(self, cmd) -> tuple[str | None, bool]:
        """The handle a server MSG names as its sender and whether it is the service's own
        notice (`facts.sender`, which reads both from the first parameter: remembered by it)."""
        params = cmd.raw_params
        if not params:
            return None, False
        token = params[0]
        known = self._senders.get(token)
        if known is None:
            found = message_sender(cmd)
            known = (found.endpoint.handle, found.service)
            if len(self._senders) >= MAX_SENDERS:   # handles off the wire: bounded
                self._senders.clear()
            self._senders[token] = known
        return known

    def _keep(self, sb: Switchboard) -> bool:
        """Whether one more line of `sb` is kept (see `line_limit`); else it is counted."""
        per_board, overall = self.line_limit
        if len(sb.lines) < per_board and self.lines_kept < overall:
            self.lines_kept += 1
            return True
        sb.more_lines += 1
        return False

    @staticmethod
    def _count(sb: Switchboard, ts: float | None) -> None:
        sb.messages += 1
        if sb.messages == 1:
            sb.first_message = ts
        sb.last_message = ts

    def on_connection_end(self, conn) -> None:
        if conn.role in ("NS", "DS") and conn.handle and len(self.ns_handles) < 2:
            self.ns_handles.add(conn.handle)
        if conn.id in self.switchboards:
            sb = self.switchboards[conn.id]
            self._settle(sb, conn)
            if sb.user is not None:
                # Every line is named: the final pass has nothing to do for this
                # board, so the ended connection need not be kept until then.
                self._conns.pop(conn.id, None)
                if not self.html_report:
                    self._fold(sb)

    def _fold(self, sb: Switchboard) -> None:
        """Summary mode: keep an ended board only while it is among the earliest shown."""
        del self.switchboards[sb.stream]
        self._others_seen.pop(sb.stream, None)
        if sb.messages:
            insort(self._shown, sb, key=_first_message)   # as append and a stable sort: in order
            if len(self._shown) <= TERMINAL_ROWS:
                return
            sb = self._shown.pop()
            f = self.folded
            f[0] += 1
            f[1] += sb.messages
            if sb.first_message is not None:
                f[2] = sb.first_message if f[2] is None else min(f[2], sb.first_message)
            if sb.last_message is not None:
                f[3] = sb.last_message if f[3] is None else max(f[3], sb.last_message)

    def on_finish(self) -> None:
        for stream, sb in self.switchboards.items():
            conn = self._conns.get(stream)
            if conn is not None:
                self._settle(sb, conn, final=True)

    def _settle(self, sb: Switchboard, conn, final: bool = False) -> None:
        """Name the sender of the client's own messages."""
        if sb.user is None:
            if conn.role == "SB" and conn.handle:
                sb.user, sb.how = conn.handle, "USR/ANS line"
            elif sb.typing_user:
                sb.user, sb.how = sb.typing_user, "TypingUser header"
            elif len(self.ns_handles) == 1:
                sb.user, sb.how = next(iter(self.ns_handles)), "notification server login"
        if sb.user:
            for line in sb.lines:
                if line.direction == C2S and line.sender is None:
                    line.sender = sb.user
        unnamed = 0 if sb.user else sb.client_messages
        if unnamed and final:
            self.report(conn, "unknown_sender",
                        f"{unnamed} message(s) sent by the client of stream {sb.stream}: no USR/ANS line, "
                        "TypingUser header or NS login names the user", None)

    # -- views ---------------------------------------------------------------

    def transcripts(self) -> list[Switchboard]:
        """Switchboards with at least one text message, in order of their first message.

        Their `lines` are empty when the plugin was told no HTML report will be asked
        for; then boards folded into `folded` are not listed either.
        """
        boards = [sb for sb in self.switchboards.values() if sb.messages] + self._shown
        return sorted(boards, key=_first_message)

    def html_sections(self) -> list[dict]:
        """One section per chat, for the first HTML_BOARDS chats with lines kept; the others
        (and what the line limits left out) are counted in one last section."""
        out = []
        rest = [0, 0]  # chats, messages not listed
        for sb in self.transcripts():
            if len(out) >= HTML_BOARDS or not sb.lines:
                rest[0] += 1
                rest[1] += sb.messages
                continue
            title = (f"Chat on switchboard {sb.stream} ({sb.client or '?'} - {sb.server or '?'}): "
                     f"{', '.join(sb.participants) or UNKNOWN}")
            rows = [[format_ts(ln.ts), ln.sender or UNKNOWN, ln.text] for ln in sb.lines]
            if sb.more_lines:
                rows.append(["…", "", f"{sb.more_lines} more messages not listed here (they are rows of the "
                                      "timeline; msnp-analyzer chat CAPTURE prints the whole transcript)"])
            out.append(section(title, ["time", "sender", "text"], rows))
        if rest[0]:
            out.append(section(f"{rest[0]} more chats", ["chats", "messages", "note"],
                               [[str(rest[0]), str(rest[1]), "not listed here (they are rows of the timeline; "
                                 "msnp-analyzer chat CAPTURE prints every transcript)"]]))
        return out

    def terminal_sections(self) -> list:
        boards = self.transcripts()
        folded_chats, folded_messages, folded_first, folded_last = self.folded
        if not boards:
            return []
        from rich.table import Table
        table = Table(title="Chats (msnp-analyzer chat CAPTURE for the transcripts)")
        for col in ("stream", "participants", "messages", "first", "last"):
            table.add_column(col, overflow="fold")
        # As the connection table: a capture with thousands of chats lists the first
        # ones and counts the rest (the transcripts are all in `msnp-analyzer chat`).
        for sb in boards[:TERMINAL_ROWS]:
            table.add_row(sb.stream, _listed(sb.participants, more=sb.more_others) or UNKNOWN, str(sb.messages),
                          format_ts(sb.first_message), format_ts(sb.last_message))
        if len(boards) > TERMINAL_ROWS or folded_chats:
            rest = boards[TERMINAL_ROWS:]
            firsts = [sb.first_message for sb in rest if sb.first_message is not None] + [folded_first]
            lasts = [sb.last_message for sb in rest if sb.last_message is not None] + [folded_last]
            firsts = [t for t in firsts if t is not None]
            lasts = [t for t in lasts if t is not None]
            table.add_row("…", f"{len(rest) + folded_chats} more chats",
                          str(sum(sb.messages for sb in rest) + folded_messages),
                          format_ts(min(firsts, default=None)), format_ts(max(lasts, default=None)),
                          style="dim")
        return [table]
