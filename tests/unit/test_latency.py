"""Network programming latency: when traffic shows a change (probes.programming), summaries (testbed.latency)."""
from probes.programming import Sample, gone, reached
from testbed import latency


def answered(at, backend):
    return Sample(at, "answered", backend)


def test_gone_is_the_first_connection_after_the_victims_last_answer():
    samples = [answered(-0.01, "a"), answered(0.0, "b"), answered(0.01, "a"), answered(0.02, "b")]
    samples += [answered(0.03 + i * 0.002, "b" if i % 2 else "c") for i in range(200)]
    assert gone("a", quiet=0.3, min_answers=20)(samples) == 0.02


def test_gone_waits_for_enough_quiet_answers():
    samples = [answered(0.0, "a")] + [answered(0.002 * i, "b") for i in range(1, 50)]
    assert gone("a", quiet=0.3)(samples) is None  # only 0.1 s of quiet so far
    failing = [answered(0.0, "a")] + [Sample(0.01 * i, "refused") for i in range(1, 60)]
    assert gone("a", quiet=0.3)(failing) is None  # nothing answered: not evidence that "a" is gone


def test_gone_before_the_change_counts_from_the_change():
    samples = [answered(-0.05, "a")] + [answered(0.002 * i, "b") for i in range(200)]
    assert gone("a")(samples) == 0.0


def test_reached_is_the_first_answer_after_the_change():
    samples = [answered(-0.01, "x"), Sample(0.0, "timeout"), Sample(0.002, "refused"), answered(0.004, "y"),
               answered(0.006, "x")]
    assert reached()(samples) == 0.004
    assert reached("x")(samples) == 0.006
    assert reached("z")(samples) is None


def entry(mode, change, observed, rules):
    return {"mode": mode, "change": change, "service": "default/web", "rules_ms": rules, "observed_ms": observed,
            "resolution_ms": 2.0, "connections": 100, "detail": "", "at": 0.0}


def test_summary_per_mode_and_change():
    rows = latency.summary([entry("iptables", "pod-ready", 30.0, 100.0), entry("iptables", "pod-ready", 50.0, 120.0),
                            entry("iptables", "pod-ready", None, 110.0), entry("nftables", "pod-ready", 10.0, 90.0)])
    assert rows[0] == {"mode": "iptables", "change": "pod-ready", "n": 3, "missed": 1, "observed_p50_ms": 40.0,
                       "observed_max_ms": 50.0, "rules_p50_ms": 110.0, "resolution_ms": 2.0}
    assert [r["mode"] for r in rows] == ["iptables", "nftables"]


def test_sync_summary_groups_by_kind_of_trigger():
    syncs = [{"mode": "iptables", "change": "delete pod", "trigger": "delete pod: default/web-1", "to_rules_ms": 100.0},
             {"mode": "iptables", "change": "delete pod", "trigger": "delete pod: default/web-2", "to_rules_ms": 140.0},
             {"mode": "iptables", "change": "readiness", "trigger": "readiness: default/web-3 ready=false", "to_rules_ms": 90.0},
             {"mode": "iptables", "change": "grace period ended", "trigger": "grace period ended: default/web-1",
              "to_rules_ms": 80.0},
             {"to_rules_ms": 70.0}]  # a log written before changes were recorded
    rows = {(r["mode"], r["trigger"]): r for r in latency.sync_summary(syncs)}
    assert rows[("iptables", "delete pod")]["p50_ms"] == 120.0 and rows[("iptables", "delete pod")]["n"] == 2
    assert rows[("iptables", "readiness")]["max_ms"] == 90.0
    assert ("iptables", "grace period ended") in rows and ("?", "other") in rows
