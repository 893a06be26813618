"""Every reproduction of `testbed repro`, in every mode it has: the symptom with the bug's
conditions, none with the fix (or, where the catalogue says this kernel or mode cannot show it,
no symptom in either run and the reason said). IPVS cells run in the guest (test_ipvs_in_vm.py)."""
import pytest

from testbed import repro
from testbed.kernel import netns
from testbed.modes import NAMES as PROXY_MODES
from testbed.repro import catalogue as cat
from testbed.repro import runner

pytestmark = [pytest.mark.kernel, pytest.mark.repro]

CASES = [(r.name, m) for r in repro.all_repros() for m in PROXY_MODES if r.applies(m) is None]


@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_reproduction_shows_the_bug_and_not_with_the_fix(name, mode):
    r = repro.by_name(name)
    missing = runner.missing_feature(r, mode)
    if missing:
        pytest.skip(missing)
    res = runner.run_mode(r, mode)
    expected = r.expected(mode, runner.kernel_release())
    evidence = f"{res.verdict}: {res.reason} | bug: {res.bug and res.bug.summary} | fix: {res.fix and res.fix.summary}"
    assert res.verdict == expected, evidence
    assert res.bug is not None and res.fix is not None and res.bug.summary and res.fix.summary, evidence
    if expected == cat.NOT_REPRODUCED:
        assert res.reason, "a reproduction that does not show here must say why"
    prefix = runner._lab_name(mode, "")
    assert [n for n in netns.list_names() if n.startswith(prefix)] == []  # both labs torn down
