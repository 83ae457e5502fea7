"""challenge: checks each client QRY answer against the NS's CHL challenge.

The NS sends `CHL 0 <challenge>`; the client answers `QRY trid <product-id> 32`
with 32 hex digits. MSNP6-10 answer md5(challenge + product key); MSNP11 and
later use the longer published algorithm (`answer_msnp11`). The product keys
of the publicly known product ids are below; for those the plugin computes the
expected answer and raises `plugin.challenge.wrong_answer` when the client's
differs (against the latest challenge or the one before it: servers accept
either). A product id it does not know is `plugin.challenge.unknown_product`; a
QRY with no CHL before it (a capture started mid-session) is `no_challenge`.

Without an HTML report (`analyze` without --html) only the first TERMINAL_ROWS
checks are kept as rows and the rest are counted by result, which is what the
terminal section shows in any case.
"""

from __future__ import annotations

import hashlib
import struct

from collections import Counter

from analyzer.msnp import C2S, S2C
from analyzer.plugins import TERMINAL_ROWS, Plugin, section, section_table


# Publicly documented product id -> product key pairs.
OLD_KEYS = {  # MSNP6-10: md5(challenge + key)
    "msmsgs@msnmsgr.com": "Q1P7W2E4J9R8U3S5",
    "PROD0038W!61ZTF9": "VT6PX?UQTM4WM%YR",
    "PROD0058#7IL2{QD": "QHDCY@7R1TB6W?5B",
    "PROD0061VRRZH@4F": "JXQ6J@TUOGYV@N0M",
    "PROD00504RLUG%WL": "I2EBK%PYNLZL5_J4",
    "PROD0076ENE8*@AW": "CEQJ8}OE0!WTSWII",
}
NEW_KEYS = {  # MSNP11+: answer_msnp11
    "PROD0090YUAUV{2B": "YMM8C_H7KCQ2S_KL",
    "PROD00974#MT*RC2": "LMCVO*18PQJ3H!K3",
    "PROD0101{0RM?UBW": "CFHUR$52U_{VIX5T",
    "PROD0104U6VVM{UJ": "VK67B}379XYM5}$T",
    "PROD01065C%ZFN6F": "O4BG@C7BWLYQX?5G",
    "PROD0112J1LW7%NB": "RH96F{PHI8PPX_TJ",
    "PROD0113H11T8$X_": "RG@XY*28Q5QHS%Q5",
    "PROD0114ES4Z%Q5W": "PK}_A_0N_K%O?A9S",
    "PROD0118R6%2WYOS": "YIXPX@5I2P0UT*LK",
    "PROD0119GSJUC$18": "ILTXC!4IXB5FB*PX",
    "PROD0120PW!CCV9@": "C1BX{V4W}Q3*10SM",
}

_MOD = 0x7FFFFFFF
_MAGIC = 0x0E79A9C1


def answer_md5(challenge: bytes, key: bytes) -> str:
    """MSNP6-10: the hex MD5 of the challenge followed by the product key."""
    return hashlib.md5(challenge + key).hexdigest()


def answer_msnp11(challenge: bytes, product_id: bytes, key: bytes) -> str:
    """MSNP11+ answer, written from the public description of the algorithm.

    1. MD5(challenge + product key), read as four little-endian 32-bit words;
       each masked with 0x7FFFFFFF gives h0..h3.
    2. challenge + product id, padded with ASCII '0' to a multiple of 8 bytes,
       read as little-endian 32-bit words, taken two at a time (a, b):
       t = (a * 0x0E79A9C1 mod M + high) * h0 + h1 mod M;
       high = ((b + t) mod M) * h2 + h3 mod M; low += high + t   (M = 0x7FFFFFFF)
    3. high += h1, low += h3 (both mod M); the 64-bit key is high:low.
    4. XOR the unmasked MD5 words with high, low, high, low; the answer is
       those 16 bytes (little-endian words) in hex.
    """
    words = struct.unpack("<4I", hashlib.md5(challenge + key).digest())
    h0, h1, h2, h3 = (w & _MOD for w in words)
    data = challenge + product_id
    data += b"0" * (-len(data) % 8)
    ints = struct.unpack(f"<{len(data) // 4}I", data)
    high = low = 0
    for i in range(0, len(ints), 2):
        t = ((ints[i] * _MAGIC % _MOD + high) * h0 + h1) % _MOD
        high = ((ints[i + 1] + t) % _MOD * h2 + h3) % _MOD
        low += high + t
    high = (high + h1) % _MOD
    low = (low + h3) % _MOD
    return struct.pack("<4I", words[0] ^ high, words[1] ^ low, words[2] ^ high, words[3] ^ low).hex()


def expected_answers(challenge: bytes, product_id: str, version: int | None) -> list[str] | None:
    """The answers a genuine client with this product id would give (None: unknown id)."""
    pid = product_id.encode()
    if product_id in OLD_KEYS:
        answers = [answer_md5(challenge, OLD_KEYS[product_id].encode())]
        if version is None or version >= 11:  # an old id under MSNP11+ still answers in the new way
            answers.append(answer_msnp11(challenge, pid, OLD_KEYS[product_id].encode()))
        return answers
    if product_id in NEW_KEYS:
        answers = [answer_msnp11(challenge, pid, NEW_KEYS[product_id].encode())]
        if version is not None and version <= 10:
            answers.append(answer_md5(challenge, NEW_KEYS[product_id].encode()))
        return answers
    return None


class ChallengePlugin(Plugin):
    name = "challenge"
    version = "1.0"
    description = "checks each QRY answer to a CHL challenge (MSNP6-10 MD5, MSNP11+ algorithm)"
    commands = frozenset({"CHL", "QRY"})  # CHL (the challenge) and QRY (the answer)
    anomalies = {
        "wrong_answer": ("error", "the client's QRY answer does not match the CHL challenge for its product id"),
        "unknown_product": ("info", "a QRY with a product id whose key is not publicly known; the answer was not checked"),
        "no_challenge": ("info", "a QRY with no CHL before it on the connection (capture started mid-session?)"),
    }

    def __init__(self) -> None:
        self.challenges: dict[str, list[bytes]] = {}  # per open connection: its last two CHLs
        self.results: list[list[str]] = []
        self.more: Counter[str] = Counter()  # summary mode: results past the rows kept, by result

    def on_connection_end(self, conn) -> None:
        self.challenges.pop(conn.id, None)

    def _result(self, row: list[str]) -> None:
        if self.html_report or len(self.results) < TERMINAL_ROWS:
            self.results.append(row)
        else:
            self.more[row[-1]] += 1

    def on_command(self, conn, cmd) -> None:
        code = cmd.cmd
        if code == "CHL" and cmd.direction == S2C:
            params = cmd.raw_params
            if params:
                seen = self.challenges.setdefault(conn.id, [])
                seen.append(params[-1])
                del seen[:-2]
        elif code == "QRY" and cmd.direction == C2S and cmd.payload is not None:
            self._check(conn, cmd)

    def _check(self, conn, cmd) -> None:
        params = cmd.params
        product_id = params[0] if params else "?"
        answer = cmd.payload.decode("ascii", "replace").strip().lower()
        seen = self.challenges.get(conn.id)
        stream = conn.id
        if not seen:
            self.report(conn, "no_challenge", f"QRY {cmd.trid} from {product_id} with no CHL before it", cmd)
            self._result([stream, "-", product_id, "not checked: no CHL seen"])
            return
        challenge = seen[-1]
        candidates = {c: expected_answers(c, product_id, conn.version) for c in seen}
        if candidates[challenge] is None:
            self.report(conn, "unknown_product", f"product id {product_id!r}", cmd)
            self._result([stream, challenge.decode("ascii", "replace"), product_id, "not checked: unknown product id"])
            return
        if any(answer in answers for answers in candidates.values()):
            self._result([stream, challenge.decode("ascii", "replace"), product_id, "correct"])
            return
        self.report(conn, "wrong_answer",
                    f"QRY {cmd.trid} from {product_id} does not answer CHL {challenge.decode('ascii', 'replace')}",
                    cmd)
        self._result([stream, challenge.decode("ascii", "replace"), product_id, "WRONG"])

    def html_sections(self) -> list[dict]:
        if not self.results:
            return []
        return [section("Challenges (CHL/QRY)", ["stream", "challenge", "product id", "answer"], self.results)]

    def terminal_sections(self) -> list:
        if not self.results:
            return []
        rows = self.results[:TERMINAL_ROWS]
        more = self.more + Counter(row[-1] for row in self.results[TERMINAL_ROWS:])
        if more:
            rows = rows + [["…", f"{sum(more.values())} more", "",
                            ", ".join(f"{n} {what}" for what, n in more.most_common())]]
        return [section_table(section("Challenges (CHL/QRY)", ["stream", "challenge", "product id", "answer"],
                                      rows))]
