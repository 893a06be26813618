"""The matrix's IPVS scheduler rows, their pure half: which behaviour each scheduler must show,
the copy of the target Service they program, and the judgement of what answered."""
from testbed import ipvs_schedulers as sched
from testbed import model
from testbed.conformance import skip_reason
from testbed.conformance_rows import TABLES


def test_every_scheduler_testbed_accepts_has_a_row_in_the_default_table_that_runs_in_ipvs_only():
    rows = {r.scheduler: r for r in TABLES["default.yaml"] if r.check == "scheduler"}
    assert set(rows) == set(model.IPVS_SCHEDULERS) == set(sched.BEHAVIOURS)
    for name, row in rows.items():
        assert skip_reason(row, "ipvs") is None
        for mode in ("iptables", "nftables", "userspace"):
            assert "IPVS mode's schedulers" in skip_reason(row, mode)
        assert row.short == f"IPVS scheduler {name}" and name in row.behaviour


def test_the_copy_carries_the_scheduler_and_parses_as_the_annotation_says():
    web = model.Service("web", "default", selector=(("app", "web"),),
                        ports=(model.ServicePortSpec(80, "TCP", "http", "http"),
                               model.ServicePortSpec(53, "UDP", "udp", 9376)))
    doc = sched.copy_of(web, web.ports[0], "sed")
    assert doc["metadata"] == {"name": "web-sed", "namespace": "default",
                               "annotations": {"testbed.dev/ipvs-scheduler": "sed"}}
    assert doc["spec"] == {"selector": {"app": "web"},
                           "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"}]}
    parsed = model.parse_documents([doc], "<copy>").services[0]
    assert parsed.ipvs_scheduler == "sed" and parsed.selector == (("app", "web"),)
    bare = sched.copy_of(web, model.ServicePortSpec(8080), "rr")["spec"]["ports"][0]
    assert bare["targetPort"] == 8080 and bare["name"] == "p"


def test_in_turn_needs_every_server_in_a_fixed_order():
    assert sched.judge("rr", list("abcdabcd"), 4) is None
    assert sched.judge("wrr", list("ba" * 4), 2) is None
    assert "not in a fixed turn of 4" in sched.judge("rr", list("abcdbacd"), 4)
    assert "3 of 4 real servers" in sched.judge("rr", list("abcabcab"), 4)
    assert sched.judge("rr", list("abcd" * 2), 4, busy="a") is None  # busy only matters to least-loaded


def test_hashing_schedulers_need_one_server_and_dh_the_other_node_to_agree():
    assert sched.judge("sh", ["a"] * 8, 4) is None
    assert sched.judge("sh", ["a"] * 7 + ["b"], 4) == "2 real servers answered: ['a', 'b']"
    # mh with kube-proxy's mh-port flag hashes the source port too: fresh ports spread
    assert sched.judge("mh", list("abacdbca"), 4) is None
    assert sched.judge("mh", ["c"] * 12, 4) == "all 12 connections from fresh source ports reached c: not hashed by port"
    assert sched.judge("dh", ["c"] * 6, 4, other_node=["c"] * 6) is None
    why = sched.judge("dh", ["c"] * 6, 4, other_node=["d"] * 6)
    assert "2 real servers answered" in why and "the other ['d'" in why
    assert sched.judge("lblc", ["b"] * 6, 4) is None


def test_least_loaded_schedulers_must_avoid_the_busy_server():
    for name in ("lc", "wlc", "sed", "nq"):
        assert sched.judge(name, list("bcdbcd"), 4, busy="a") is None
        assert sched.judge(name, list("bcabcd"), 4, busy="a") == \
            "1 of 6 new connections went to a, which held one"
        assert sched.judge(name, list("bcd"), 4) == "no connection was held open"


def test_counters_read_most_first():
    assert sched.counts_text({"web-b": 2, "web-a": 2, "web-c": 4, "web-d": 0}) == "web-c 4, web-a 2, web-b 2, web-d 0"


def test_the_node_counters_must_match_the_answers():
    want = sched.expected_counts(list("bcdbcd"), busy="a")
    assert want == {"a": 1, "b": 2, "c": 2, "d": 2}
    assert sched.counters_disagree({"a": 1, "b": 2, "c": 2, "d": 2}, want) is None
    assert sched.counters_disagree({"a": 0, "b": 0, "c": 0, "d": 0}, want) == \
        "the node's IPVS counted a 0, b 0, c 0, d 0, the answers say b 2, c 2, d 2, a 1"
    assert sched.counters_disagree({"a": 1, "b": 2, "c": 2, "d": 2, "e": 0}, want) is None  # an idle server
