"""`msnp-analyzer contacts CAPTURE...`: the contact lists and presence of each login.

Per login (a notification-server user), the list as the server gave it
(SYN/LST for MSNP2-12, ADL for MSNP13 and later) with groups and nicknames
where the protocol carries them, and each contact's presence over the
capture (ILN, NLN, FLN; CHG for the login itself). `--json FILE` writes the
`contact` and `presence` records (README, JSON Lines) and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "contacts", help="contact lists and presence over time, per login",
        description="List each login's contacts as the server gave them (LST blocks for MSNP2-12, "
                    "ADL for MSNP13 and later: forward, allow, block, reverse and pending lists, "
                    "groups, nicknames) and each contact's presence over the capture (ILN, NLN, FLN, CHG).",
        epilog="example: msnp-analyzer contacts capture.pcapng --json - | jq -c 'select(.kind==\"presence\")'\n"
               "exit status: 0 ok, 2 unusable input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap, pcapng or transcript file")
    p.add_argument("--json", metavar="FILE", help="write contact and presence records to FILE ('-' for stdout)")
    p.add_argument("--msnp", type=int, metavar="N", help="assume protocol version N for transcripts")
    p.set_defaults(func=cmd_contacts)


def cmd_contacts(args) -> int:
    import json
    from rich.console import Console
    from analyzer.analysis.contacts import ContactBook, contacts_sections
    from analyzer.analysis.run import Analysis
    from analyzer.capture.files import feed_capture
    from analyzer.errors import EXIT_OK, UsageError
    from analyzer.plugins import section_table
    for path in args.captures:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file")
    out = None
    if args.json:
        try:
            out = sys.stdout if args.json == "-" else open(args.json, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.json}: {exc.strerror}") from None

    from analyzer.outputs.jsonl import encode

    def write(record: dict) -> None:
        out.write(encode(record) + "\n")  # the JSON Lines rule: one line, valid UTF-8, no NaN

    book = ContactBook(on_record=write if out is not None else None, history=200)
    analysis = Analysis([book])
    try:
        many = len(args.captures) > 1
        for n, path in enumerate(args.captures, 1):
            feed_capture(analysis, path, prefix=f"{n}:" if many else "", version=args.msnp)
        analysis.finish()
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
    console = Console(stderr=args.json == "-")
    sections = contacts_sections(book)
    for sec in sections:
        console.print(section_table(sec))
    if not sections:
        console.print("no contact lists or presence in these captures (no notification-server login seen)")
    return EXIT_OK


__all__ = ["register", "cmd_contacts"]
