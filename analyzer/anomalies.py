"""The anomaly catalogue: every oddity the analyzer can report, by stable name.

Names are dotted and never change once published (scripts grep for them, as
Zeek users grep for weirds). Each has a severity and a one-line summary; the
position where an anomaly was seen travels with the `Anomaly` event itself.
Plugins add their own names under `plugin.<name>.` at run time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (choose info, warning or error)") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    name: str
    severity: Severity
    summary: str


_I, _W, _E = Severity.INFO, Severity.WARNING, Severity.ERROR

CATALOGUE: dict[str, AnomalySpec] = {}


def register(name: str, severity: Severity, summary: str) -> AnomalySpec:
    """Add a name to the catalogue (plugins call this for their own names)."""
    spec = AnomalySpec(name, severity, summary)
    CATALOGUE[name] = spec
    return spec


for _name, _sev, _summary in [
    # white space and line ends
    ("msnp.whitespace.multiple_spaces", _W, "parameters separated by more than one space (servers always send one)"),
    ("msnp.whitespace.tab", _W, "a tab used as a parameter separator"),
    ("msnp.whitespace.trailing", _W, "white space at the end of a command line"),
    ("msnp.whitespace.leading", _W, "white space before the command code"),
    ("msnp.newline.bare_lf", _I, "line ended with a bare \\n instead of \\r\\n (servers accept it)"),
    ("msnp.newline.bare_cr", _W, "a bare \\r inside a line (it is not a line end)"),
    # the line as a whole
    ("msnp.line.too_long", _E, "a line longer than the configured maximum; skipped up to the next line end"),
    ("msnp.line.garbage", _E, "bytes that are not an MSNP command line; skipped until the next plausible command"),
    ("msnp.line.empty", _W, "an empty line where a command was expected"),
    ("msnp.line.truncated", _W, "the stream ended in the middle of a command line"),
    # command codes
    ("msnp.command.unknown", _W, "a well-formed three-letter command code this analyzer does not know"),
    ("msnp.command.lowercase", _W, "a command code with lower-case letters (codes are case-sensitive upper case)"),
    ("msnp.command.non_ascii", _E, "a command code with non-ASCII bytes"),
    # transaction ids
    ("msnp.trid.missing", _E, "a command that needs a TrID has none"),
    ("msnp.trid.not_integer", _E, "the TrID is not a non-negative decimal integer (servers disconnect)"),
    ("msnp.trid.out_of_range", _E, "the TrID is above 4294967295 (server behaviour undefined)"),
    ("msnp.trid.zero_from_client", _I, "the client used TrID 0, which servers also use for asynchronous pushes"),
    ("msnp.trid.duplicate_pending", _W, "a TrID reused while an earlier request with it still awaits its reply"),
    ("msnp.command.code_limit", _W, "more than 256 distinct command codes on one connection; codes not seen before are counted together as 'other' (once per connection)"),
    ("msnp.trid.pending_limit", _W, "more requests awaiting replies than --max-pending; the oldest were given up as unanswered (once per connection, with the count)"),
    # replies
    ("msnp.reply.out_of_order", _I, "a reply came before the replies to earlier requests (one per such reply, saying how many it overtook)"),
    ("msnp.reply.list_limit", _I, "a transaction got more replies than are listed (10,000); the rest are counted in its record's more_replies"),
    ("msnp.reply.orphan", _W, "a reply whose TrID matches no request seen (or the capture started mid-session)"),
    ("msnp.reply.unanswered", _W, "a request that expects a reply got none (timeout or end of connection)"),
    ("msnp.reply.unexpected_command", _W, "a reply with the request's TrID but a command that does not answer it"),
    ("msnp.async.interleaved", _I, "an asynchronous line arrived inside a block of related replies (between two ILNs, inside a SYN or LST list, between IRO lines)"),
    ("msnp.syn.block_incomplete", _W, "a SYN answer block ended with fewer LST/LSG lines than the SYN line announced"),
    # payloads
    ("msnp.payload.too_large", _E, "a payload length above the configured cap (--max-payload); its bytes are skipped, not kept (framing follows the length, as the client does)"),
    ("msnp.payload.bad_length", _E, "a payload command whose length field is not a non-negative integer"),
    ("msnp.payload.truncated", _W, "the stream ended before the announced payload was complete"),
    # errors and versions
    ("msnp.error.with_params", _I, "a numeric error reply carries parameters beyond its TrID"),
    ("msnp.error.unknown_code", _W, "a numeric error code not in the known error list"),
    ("msnp.error.from_client", _E, "the client sent a numeric error code (only servers send errors)"),
    ("msnp.version.rejected", _W, "the server answered VER with 0: none of the client's versions is supported"),
    ("msnp.version.not_offered", _W, "the server chose a protocol version the client did not offer"),
    # mitmproxy: HTTP gateway, HTTPS logins, flow files (analyzer/capture/mitm.py, gateway.py, passport.py, flows.py)
    ("gateway.request.malformed", _E, "a gateway.dll request without Action=open&Server=..&IP=.. or SessionID=.., or not a POST"),
    ("gateway.content_type", _I, "a gateway request body not sent as application/x-msn-messenger"),
    ("gateway.session.unknown", _W, "a gateway SessionID never opened in this capture (it started mid-session); decoded as a new connection"),
    ("gateway.session.after_close", _W, "a gateway SessionID used after the gateway closed that session"),
    ("gateway.poll.body", _W, "a gateway Action=poll request carried data (polls are empty)"),
    ("gateway.http.error", _W, "a gateway round trip failed (no response or not HTTP 200): server data may be lost"),
    ("gateway.header.missing", _W, "a gateway response without the X-MSN-Messenger SessionID header"),
    ("linking.participant_limit", _W, "more than 10,000 participants on one switchboard; later arrivals are counted in its chat record's more_participants, not listed (once per switchboard)"),
    ("linking.referral_limit", _W, "more than 10,000 XFR/RNG lines on one connection; later ones are not linked to the connections they refer to (once per connection)"),
    ("contacts.limit", _W, "more than 100,000 contacts or users in the capture; the contact lines past them were counted, not kept (once per run, with the count)"),
    ("passport.ticket_limit", _W, "more than 10,000 login tickets held at once; the oldest are forgotten and not linked (once per run)"),
    ("passport.login.failed", _W, "a Passport (login2.srf) or RST/SSO (RST.srf) login was refused or its token answer is missing"),
    ("mitm.connection.error", _W, "mitmproxy reported an error on a connection (reset, refused, TLS failure)"),
    ("mitm.rewrite.skipped", _W, "reverse mode: an XFR/RNG address was not rewritten, so the client's next connection escapes observation"),
    ("mitm.flowfile.corrupt", _E, "a mitmproxy flow file is damaged: records that are not flows were skipped, or it is cut short and the flows after the cut are lost"),
    # TCP reassembly and capture files (analyzer/capture/tcp.py, pcap.py)
    ("tcp.gap", _W, "bytes of a TCP stream are missing from the capture (a hole that never filled); decoding resynchronised after it"),
    ("tcp.overlap_mismatch", _W, "two copies of the same TCP sequence range carry different bytes; the first copy was kept"),
    ("tcp.retransmission", _I, "a TCP segment whose bytes were already delivered was seen again and dropped"),
    ("capture.one_sided", _I, "the input holds one direction of a connection only: its requests are not paired with replies"),
    ("capture.truncated", _E, "the capture file ends in the middle of a record; everything before that point was analysed"),
    ("input.truncated", _E, "a gzip'd transcript, byte stream or flow file ends before its end-of-stream marker; everything unpacked before the cut was analysed"),
    ("capture.damaged", _E, "the capture file holds a record that cannot be a packet; reading stopped there"),
    ("capture.unknown_linktype", _W, "a link type neither the fast decoder nor scapy knows; its packets were skipped"),
    ("capture.fallback_dissection", _I, "a link type the fast decoder does not know; its packets were dissected by scapy (slow)"),
    ("capture.pcapng.no_timestamp", _I, "pcapng Simple Packet Blocks carry no time: each was given the time of the packet before it (once per file, with the count)"),
    ("capture.bad_record", _W, "pcap records that are empty or longer than the file's snapshot length (reported once per file, with the count); still decoded"),
    ("capture.ip_fragment", _W, "fragments of TCP datagrams (reported once per file, with the count); not reassembled, their bytes are missing"),
    ("capture.inflate_limit", _W, "a gzip'd capture inflates to more than 100 times its size (at least 64 MiB); reading stopped at that cap (once per file)"),
    ("capture.start_window_limit", _W, "more TCP flows in their start window at once than are held (4,096); the oldest windows closed early (once per file, with the count)"),
    ("capture.endpoint_limit", _W, "more than 10,000 server addresses named by XFR/RNG lines; later ones were not learned as MSNP servers (once per file, with the count)"),
    ("capture.flow_limit", _W, "more TCP flows open at once than --max-flows; the least recently active were closed early (once per file, with the count)"),
    # the analysis itself
    ("analyzer.internal_error", _E, "the analysis of this connection failed; the rest of it was not decoded"),
    # the live proxy (analyzer/capture/proxy.py)
    ("proxy.upstream_unreachable", _E, "the proxy could not connect to the upstream server; the client's connection was closed"),
    ("proxy.rewrite_failed", _W, "an XFR/RNG address could not be rewritten; the client's next connection will bypass the proxy"),
    ("proxy.reset", _I, "one side reset the connection (or failed); the proxy reset the other side too"),
    ("proxy.analysis_backlog", _W, "the analysis process fell more than --analysis-backlog behind; newer bytes of the connection were forwarded but not analysed (a gap)"),
    ("proxy.connection_limit", _W, "--max-connections relays were open: new clients were closed at once (reported once per run; the count is in the notice)"),
    ("proxy.target_refused", _W, "a server's XFR/RNG named a target the target policy does not follow (outside the upstream's network and --allow-target, this machine's own address, or one of the proxy's own listeners): the line was forwarded as sent, so the client's next connection bypasses the proxy"),
    ("proxy.listener_limit", _W, "--max-listeners listeners were open and none idle: an XFR/RNG was forwarded as sent (the client's next connection bypasses the proxy)"),
    ("proxy.address_limit", _W, "--max-per-address connections were open from one client address: its new clients were closed at once (reported once per run; the count is in the notice)"),
    ("proxy.rate_limit", _W, "a client address opened more than --max-rate connections per second: the excess were closed at once (reported once per run; the count is in the notice)"),
    ("proxy.idle_timeout", _I, "the proxy closed a connection: no byte from the client within --first-byte-timeout of connecting, or none either way for --idle-timeout"),
    # MSNFTP connections (analyzer/msnp/msnftp.py)
    ("msnftp.line.too_long", _W, "an MSNFTP connection sent more than 1,024 bytes without a line end outside a data block; they were skipped"),
    # extracted objects (analyzer/analysis/objects.py)
    ("objects.too_large", _W, "an object (or all objects together) passed the extraction size limit; the rest of its bytes were not kept and it is listed as partial"),
    ("objects.bad_range", _W, "P2P or ink data whose offset, size or chunk numbers contradict the object's announced size (cut or dropped)"),
    ("objects.overlap_mismatch", _W, "bytes of an object arrived twice with different content; the first copy was kept"),
    ("objects.sha1d_mismatch", _E, "a display picture, emoticon or other MSNObject whose data does not hash to its SHA1D: the receiving client would reject it"),
    ("objects.limit", _W, "more transfers, calls or invitations open at once than the extraction follows; the least recently active were finished as they stood (once per run)"),
    # plugins (analyzer/plugins.py); a plugin's own names are plugin.<name>.<what>
    ("analyzer.plugin.failed", _W, "a plugin raised an exception; it was disabled for the rest of the run (the analysis carried on)"),
    ("analyzer.plugin.too_slow", _W, "a plugin call took longer than --plugin-budget; the plugin was disabled for the rest of the run"),
    ("analyzer.plugin.backlog", _W, "plugin observers fell behind the live traffic; events were dropped for plugins, never for forwarding"),
]:
    register(_name, _sev, _summary)


def spec(name: str) -> AnomalySpec:
    """The catalogue entry for name (unknown names get a generic warning entry)."""
    found = CATALOGUE.get(name)
    if found is None:
        found = AnomalySpec(name, Severity.WARNING, "(not in the catalogue)")
    return found
