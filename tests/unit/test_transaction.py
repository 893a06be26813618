"""The error a refused rules transaction shows: the line the tool named, numbered, with context.

The stderr samples are what iptables-restore 1.8.9 (nf_tables and legacy) and nft 1.0.6 print.
"""
from testbed.kernel.transaction import TransactionError, excerpt, offending_lines, problems

IPT_MISSING = ("iptables-restore v1.8.9 (nf_tables): Chain 'BOGUS' does not exist\n"
               "Error occurred at line: 6\n"
               "Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n")
IPT_BAD_ARG = ("Bad argument `bogus'\nError occurred at line: 4\n"
               "Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n")
IPT_LEGACY = "iptables-restore: line 3 failed\n"
NFT_TWO = ("/dev/stdin:3:26-30: Error: No symbol type information\n"
           "add rule ip kube-proxy c bogus thing\n                         ^^^^^\n"
           "/dev/stdin:9:31-34: Error: Could not process rule: No such file or directory\n"
           "add rule ip kube-proxy c jump nope\n                              ^^^^\n")
RESTORE = "*nat\n:KUBE-X - [0:0]\n-A KUBE-X -j RETURN\n-A KUBE-X -j BOGUS\n-A KUBE-X -j RETURN\nCOMMIT\n"


def test_problems_name_the_line_and_what_the_tool_said():
    assert problems("iptables-restore", IPT_MISSING) == [(6, "Chain 'BOGUS' does not exist")]
    assert problems("iptables-restore", IPT_BAD_ARG) == [(4, "Bad argument `bogus'")]
    assert problems("iptables-restore", IPT_LEGACY) == [(3, "failed")]
    assert problems("nft", NFT_TWO) == [(3, "No symbol type information"),
                                        (9, "Could not process rule: No such file or directory")]
    assert problems("nft", "Error: out of memory\n") == [(None, "Error: out of memory")]


def test_a_missing_chain_reported_at_commit_points_at_the_jump_too():
    assert offending_lines("iptables-restore", RESTORE, problems("iptables-restore", IPT_MISSING)) == [4, 6]
    # Only in the table block that the COMMIT ends.
    two = "*filter\n-A F -j BOGUS\nCOMMIT\n" + RESTORE
    assert offending_lines("iptables-restore", two, [(9, "Chain 'BOGUS' does not exist")]) == [7, 9]


def test_excerpt_numbers_marks_and_fits_80_columns():
    text = "\n".join(f"line {i} " + "x" * (i * 10) for i in range(1, 21))
    out = excerpt(text, [5, 15])
    numbers = [int(line.split("|")[0].strip(" >")) for line in out if "|" in line and line.split("|")[0].strip(" >")]
    assert numbers == [3, 4, 5, 6, 7, 13, 14, 15, 16, 17]
    assert any(line.strip() == "…" for line in out)  # the gap between the two excerpts
    assert [line for line in out if line.startswith(" > ")] == [" >  5 | " + text.splitlines()[4][:72],
                                                              " > 15 | " + text.splitlines()[14][:72]]
    assert all(len(line) <= 80 for line in out)
    # A marked line is wrapped, not cut: all of it is there.
    marked = "".join(line[8:] for line in out if line.startswith(" > 15") or (line.startswith("      | ")))
    assert text.splitlines()[14] in marked


def test_excerpt_at_the_edges_of_the_input():
    assert excerpt("a\nb\nc\n", [1]) == [" > 1 | a", "   2 | b", "   3 | c"]
    assert excerpt("a\nb\nc\n", [3]) == ["   1 | a", "   2 | b", " > 3 | c"]
    assert excerpt("a\n", []) == []


def test_transaction_error_message():
    e = TransactionError("iptables-restore", "lab-node-2", IPT_MISSING, RESTORE)
    assert e.lines == [4, 6] and e.summary() == "iptables-restore failed at line 6: Chain 'BOGUS' does not exist"
    assert e.describe("on node node-2").splitlines() == [
        "iptables-restore on node node-2 failed at line 6: Chain 'BOGUS' does not exist",
        "   2 | :KUBE-X - [0:0]", "   3 | -A KUBE-X -j RETURN", " > 4 | -A KUBE-X -j BOGUS",
        "   5 | -A KUBE-X -j RETURN", " > 6 | COMMIT"]
    nft_text = "\n".join(f"add rule ip kube-proxy c counter # {i}" for i in range(1, 12)) + "\n"
    e = TransactionError("nft", "lab-node-1", NFT_TWO, nft_text)
    lines = str(e).splitlines()
    assert lines[0] == "nft in lab-node-1 failed at line 3: No symbol type information"
    assert lines[1] == "also line 9: Could not process rule: No such file or directory"
    assert " >  3 | add rule ip kube-proxy c counter # 3" in lines  # numbers aligned to "11"
    assert " >  9 | add rule ip kube-proxy c counter # 9" in lines and "   11 | add rule ip kube-proxy c counter # 11" in lines
