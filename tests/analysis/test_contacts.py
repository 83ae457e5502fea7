"""analysis/contacts.py: contact lists as the server gave them and presence over time, per login."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyzer.analysis.contacts import ContactBook, contacts_sections, presence_strip
from analyzer.analysis.run import Analysis
from analyzer.capture.files import feed_capture
from analyzer.cli.main import main
from plugin_helpers import REAL

CAPTURES = Path(__file__).resolve().parents[2] / "captures"


def book_of(path, history=10):
    records = []
    book = ContactBook(on_record=records.append, history=history)
    analysis = Analysis([book])
    feed_capture(analysis, str(path))
    analysis.finish()
    return book, records


def contacts(records):
    return {(r["login"], r["contact"]): r for r in records if r["kind"] == "contact"}


@pytest.mark.parametrize("capture,bob_groups,source", [
    ("msnp2_login_chat.pcap", [], "LST"),          # LST trid LIST ver index count handle nick
    ("msnp12_login_chat.pcap", ["Friends"], "LST"),  # LST N= F= C= lists groups, LSG name id
    ("msnp15_login_chat.pcap", [], "ADL (client)"),  # the ADL <ml> document
])
def test_lists_of_each_generation(capture, bob_groups, source):
    _, records = book_of(CAPTURES / capture)
    bob = contacts(records)[("alice@example.com", "bob@example.com")]
    assert {"forward", "allow"} <= set(bob["lists"]) and bob["groups"] == bob_groups and bob["source"] == source
    assert bob["nickname"] == "Bob"


@pytest.mark.skipif(not (REAL / "msnftp8.pcapng").exists(), reason="../shared/captures-real not beside the clone")
def test_real_msnp8_lst_block_and_presence():
    book, records = book_of(REAL / "msnftp8.pcapng")
    table = contacts(records)
    assert sorted(c for (login, c) in table if login == "alice@example.com") == \
        ["bob@example.com", "carol@example.com", "dave@example.com"]
    bob = table[("alice@example.com", "bob@example.com")]
    assert bob["lists"] == ["forward", "allow", "reverse"] and bob["groups"] == ["Other Contacts"]
    presence = [(r["login"], r["contact"], r["cmd"], r["status"]) for r in records if r["kind"] == "presence"]
    assert ("bob@example.com", "alice@example.com", "ILN", "NLN") in presence
    assert ("alice@example.com", "bob@example.com", "NLN", "NLN") in presence
    assert ("alice@example.com", "alice@example.com", "CHG", "NLN") in presence


def test_presence_over_time_and_the_strip():
    book, records = book_of(CAPTURES / "msnp18_login_chat.pcapng")
    carol = [(r["cmd"], r["status"]) for r in records if r["kind"] == "presence" and r["contact"] == "carol@example.com"]
    assert carol == [("NLN", "NLN"), ("FLN", "FLN")]
    strip = presence_strip([(10.0, "NLN"), (15.0, "FLN")], 0.0, 20.0, cells=20)
    assert strip == " " * 9 + "█" * 5 + "·" * 6
    (section,) = contacts_sections(book)
    row = next(r for r in section["rows"] if r[0] == "carol@example.com")
    assert "█" in row[-1] and row[-1].rstrip().endswith("·")


def test_contacts_command_json(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert main(["contacts", str(CAPTURES / "msnp12_login_chat.pcap"), "--json", str(out)]) == 0
    kinds = {json.loads(line)["kind"] for line in out.read_text().splitlines()}
    assert kinds == {"contact", "presence"}
    assert "Contacts of alice@example.com" in capsys.readouterr().out


def test_analyze_json_carries_contact_and_presence_records(tmp_path):
    out = tmp_path / "a.jsonl"
    assert main(["analyze", str(CAPTURES / "msnp2_login_chat.pcap"), "--json", str(out)]) == 0
    kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
    assert kinds.count("contact") == 2 and kinds.count("presence") >= 4
