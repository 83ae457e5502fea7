"""plugins/challenge.py: CHL/QRY answers."""

from analyzer.cli.main import main
from plugin_helpers import run, transcript
from msnp_analyzer_plugins.challenge import ChallengePlugin, answer_md5, answer_msnp11, expected_answers


def test_msnp11_algorithm_matches_the_published_example():
    # The worked example of the public MSNP11 challenge description.
    assert answer_msnp11(b"22210219642164014968", b"PROD0090YUAUV{2B", b"YMM8C_H7KCQ2S_KL") == \
        "85ecb0db8f32113df79ce0892b9a102c"


def test_msnp8_md5():
    import hashlib
    assert answer_md5(b"15570131571988941333", b"Q1P7W2E4J9R8U3S5") == \
        hashlib.md5(b"15570131571988941333Q1P7W2E4J9R8U3S5").hexdigest()
    assert expected_answers(b"1", "nobody", 8) is None


def session(version: str, pid: str, answer: str, challenge="29409134351025259292") -> str:
    return (f">>> VER 1 {version} CVR0\\r\\n\n<<< VER 1 {version} CVR0\\r\\n\n"
            f"<<< CHL 0 {challenge}\\r\\n\n>>> QRY 7 {pid} 32\\r\\n{answer}\n<<< QRY 7\\r\\n\n")


def test_accepts_correct_and_flags_tampered(tmp_path):
    chl = b"29409134351025259292"
    good8 = answer_md5(chl, b"Q1P7W2E4J9R8U3S5")
    good11 = answer_msnp11(chl, b"PROD0090YUAUV{2B", b"YMM8C_H7KCQ2S_KL")
    for version, pid, good in [("MSNP8", "msmsgs@msnmsgr.com", good8), ("MSNP11", "PROD0090YUAUV{2B", good11)]:
        analysis, manager = run(transcript(tmp_path, session(version, pid, good)), ChallengePlugin())
        assert analysis.connections["1"].anomalies["plugin.challenge.wrong_answer"] == 0
        assert manager.get("challenge").results[0][3] == "correct"
        tampered = ("0" if good[0] != "0" else "1") + good[1:]
        analysis, manager = run(transcript(tmp_path, session(version, pid, tampered)), ChallengePlugin())
        assert analysis.connections["1"].anomalies["plugin.challenge.wrong_answer"] == 1
        assert manager.get("challenge").results[0][3] == "WRONG"
    # the MSNP8 answer under MSNP11 with a new product id is wrong
    analysis, _ = run(transcript(tmp_path, session("MSNP11", "PROD0090YUAUV{2B",
                                                   answer_md5(chl, b"YMM8C_H7KCQ2S_KL"))), ChallengePlugin())
    assert analysis.connections["1"].anomalies["plugin.challenge.wrong_answer"] == 1


def test_unknown_product_and_no_challenge(tmp_path):
    analysis, _ = run(transcript(tmp_path, session("MSNP11", "PROD9999XXXXXXXX", "a" * 32)), ChallengePlugin())
    assert analysis.connections["1"].anomalies["plugin.challenge.unknown_product"] == 1
    f = transcript(tmp_path, ">>> QRY 7 PROD0090YUAUV{2B 32\\r\\n" + "a" * 32 + "\n")
    analysis, _ = run(f, ChallengePlugin())
    assert analysis.connections["1"].anomalies["plugin.challenge.no_challenge"] == 1


def test_tampered_answer_fails_the_decode_run(tmp_path, capsys):
    chl = b"29409134351025259292"
    good = answer_md5(chl, b"Q1P7W2E4J9R8U3S5")
    ok = transcript(tmp_path, session("MSNP8", "msmsgs@msnmsgr.com", good), "ok.msnp")
    bad = transcript(tmp_path, session("MSNP8", "msmsgs@msnmsgr.com", good[::-1]), "bad.msnp")
    assert main(["decode", str(ok)]) == 0
    assert main(["decode", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "plugin.challenge.wrong_answer" in out and "Challenges (CHL/QRY)" in out
    assert main(["decode", str(bad), "--no-plugins"]) == 0


def test_many_checks_list_the_first_and_count_the_rest_without_keeping_them(tmp_path):
    import io
    from rich.console import Console
    from msnp_analyzer_plugins import challenge as challenge_module
    chl = b"29409134351025259292"
    good = answer_md5(chl, b"Q1P7W2E4J9R8U3S5")
    n = challenge_module.TERMINAL_ROWS + 3
    text = "".join(session("MSNP8", "msmsgs@msnmsgr.com", good if i % 2 else good[::-1])
                   .replace(">>>", f"@c{i} >>>").replace("<<<", f"@c{i} <<<") for i in range(n))
    tables = []
    for html_report in (True, False):
        plugin = ChallengePlugin()
        plugin.html_report = html_report
        run(transcript(tmp_path, text), plugin)
        out = io.StringIO()
        Console(file=out, width=200).print(*plugin.terminal_sections())
        tables.append(out.getvalue())
    assert tables[0] == tables[1]
    assert "3 more" in tables[1] and "2 WRONG, 1 correct" in tables[1]
    assert len(plugin.results) == challenge_module.TERMINAL_ROWS and sum(plugin.more.values()) == 3
    assert plugin.challenges == {}  # dropped as each connection ended
