"""kube-proxy's minor releases as testbed renders them: a version -> named switches.

Each switch is one difference between neighbouring releases, in one proxy mode (or in what
kube-proxy reads, for all modes), with the upstream change that made it and the evidence
testbed's renderers were checked against (docs/versions.md prints this table). A version's
rendering is established from that release's own unit-test expectations where they could be
read; where they could not, `notes()` says so instead of pretending.

Versions are (major, minor) tuples; what a user or a Node object writes ("1.31", "v1.31.2",
"v1.31.2-eks-a1b2") is read by `parse()`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int]

OLDEST: Version = (1, 28)
NEWEST: Version = (1, 35)  # the newest release whose rules testbed has established
DEFAULT: Version = NEWEST
# Releases after NEWEST that are known to exist (rendered as NEWEST, with a note).
RELEASED: Version = (1, 37)

# Switch names (ProxyConfig.switch(NAME)).
IPT_INVALID_DROP_UNLESS_LIBERAL = "iptables-invalid-drop-unless-liberal"
IPT_NFACCT_INVALID = "iptables-nfacct-invalid"
IPT_NFACCT_LOCALHOST = "iptables-nfacct-localhost"
NFT_MODE = "nftables-mode"
NFT_MASQ_MATCHES_PORT = "nftables-masq-matches-port"
NFT_FIREWALL_ELEMENT_COMMENT = "nftables-firewall-element-comment"
NFT_PRE_DNAT_CHAINS = "nftables-pre-dnat-chains"
SERVICE_CIDRS_WATCHED = "service-cidrs-watched"
IPVS_OUT_FILTER = "ipvs-out-filter"
LB_IP_MODE = "lb-ip-mode"
HINTS_WITHOUT_ANNOTATION = "hints-without-annotation"
TRAFFIC_DISTRIBUTION = "traffic-distribution"
PREFER_SAME_NODE = "prefer-same-node"
CONNTRACK_SKIPS_EMPTY = "conntrack-reconciler-skips-empty"


@dataclass(frozen=True)
class Switch:
    name: str
    mode: str  # iptables | nftables | ipvs | all
    since: Version  # the first minor release that behaves so
    until: Version | None  # the first that no longer does (None: still does)
    what: str
    change: str  # upstream PR or KEP
    evidence: str  # what testbed's rendering was checked against

    def on(self, version: Version) -> bool:
        return self.since <= version and (self.until is None or version < self.until)


SWITCHES: tuple[Switch, ...] = (
    Switch(IPT_INVALID_DROP_UNLESS_LIBERAL, "iptables", (1, 29), None,
           "the KUBE-FORWARD ctstate INVALID drop is left out when nf_conntrack_tcp_be_liberal is set",
           "#120412", "the PR's description (no upstream test read)"),
    Switch(IPT_NFACCT_INVALID, "iptables", (1, 30), None,
           "the INVALID drop counts packets with -m nfacct ct_state_invalid_dropped_pkts (with nfacct)",
           "#122812", "the 1.34 tree's TestOverallIPTablesRules has it (test_replay.py)"),
    Switch(IPT_NFACCT_LOCALHOST, "iptables", (1, 31), None,
           "a -d 127.0.0.0/8 NodePort rule counts localhost_nps_accepted_pkts (with nfacct)",
           "#125015", "the 1.34 tree's TestOverallIPTablesRules has it (test_replay.py)"),
    Switch(NFT_MODE, "nftables", (1, 29), None,
           "the nftables mode exists (alpha in 1.29, beta 1.31, GA 1.33)", "#121046", "KEP-3866"),
    Switch(NFT_MASQ_MATCHES_PORT, "nftables", (1, 29), (1, 34),
           "the ClusterIP masquerade rule also matches `<proto> dport <port>`",
           "#131492", "TestOverallNFTablesRules: kubernetes@803d40a5 (1.30) and aojea/kubernetes@492140ae (1.33 tree) "
           "have it, kubernetes@81810de6 (1.34) not"),
    Switch(NFT_FIREWALL_ELEMENT_COMMENT, "nftables", (1, 29), (1, 33),
           "firewall-ips elements carry the Service port's name as comment",
           "not identified (gone in the 1.33 tree, #130119's element storage)",
           "TestOverallNFTablesRules: 1.30's and ashierj/superdemo@86435b28 (a 1.31 development tree) have "
           "it, the 1.33 tree's not; 1.32 not established"),
    Switch(NFT_PRE_DNAT_CHAINS, "nftables", (1, 34), None,
           "base chains filter-prerouting-pre-dnat/filter-output-pre-dnat at -110 and filter-"
           "forward/-input/-output at 0 (before: filter-prerouting/-input/-forward/-output at -110 and "
           "filter-output-post-dnat at -90)",
           "#132456 (also in 1.33 patch releases since #133969)",
           "the same three TestOverallNFTablesRules; kubernetes@b0f823e6 proxier.go (old layout)"),
    Switch(SERVICE_CIDRS_WATCHED, "nftables", (1, 33), None,
           "kube-proxy reads ServiceCIDR objects (MultiCIDRServiceAllocator on by default): nftables "
           "drops traffic to unallocated ClusterIPs",
           "KEP-1880 (GA in 1.33)", "cmd/kube-proxy/app/server.go registers the informer behind the gate"),
    Switch(IPVS_OUT_FILTER, "ipvs", (1, 29), None,
           "KUBE-IPVS-OUT-FILTER (from OUTPUT) drops node traffic to LB IPs its source ranges exclude",
           "#119791", "the PR's diff; 1.34's rules checked (test_render_ipvs.py)"),
    Switch(LB_IP_MODE, "all", (1, 30), None,
           "a LoadBalancer ingress with ipMode: Proxy gets no rules (the node does not short-circuit it)",
           "#118895, KEP-1860 (beta, on by default, in 1.30)", "the PR's diff (the gate check in each proxier)"),
    Switch(HINTS_WITHOUT_ANNOTATION, "all", (1, 31), None,
           "topology hints are used without the topology-mode annotation (ServiceTrafficDistribution on)",
           "KEP-4444 (beta in 1.31)", "pkg/proxy/topology.go (canUseTopology)"),
    Switch(TRAFFIC_DISTRIBUTION, "all", (1, 31), None,
           "trafficDistribution: PreferClose makes the EndpointSlice controller set zone hints",
           "KEP-4444 (alpha 1.30, beta 1.31, GA 1.33)", "the KEP; the EndpointSlice controller's trafficdist"),
    Switch(PREFER_SAME_NODE, "all", (1, 34), None,
           "PreferSameZone and PreferSameNode are accepted; node hints are preferred over zone hints",
           "#130844, KEP-3015 (alpha 1.33, beta 1.34, GA 1.35)", "the PR's description; pkg/proxy/topology.go"),
    Switch(CONNTRACK_SKIPS_EMPTY, "all", (1, 32), None,
           "the stale-UDP conntrack reconciler skips Services without serving endpoints, so flows DNATed "
           "to an endpoint that went away stay while none is left (before: the event-based clean-up "
           "deleted them). Fixed upstream by #139629 (merged 2026-06) in a release after the newest "
           "testbed renders",
           "#127318 (the reconciler; regression #139628)",
           "pkg/proxy/conntrack/cleanup.go as quoted in #139628 and #139629"),
)
_BY_NAME = {s.name: s for s in SWITCHES}

# Upstream fixes older than OLDEST that a reproduction can take back out
# (spec.kubeProxy.unfixed: [NAME]): the rules then are the release's own minus that fix.
@dataclass(frozen=True)
class Fix:
    name: str
    mode: str
    release: str  # the first release with the fix
    change: str
    what: str  # what the fix does, i.e. what `unfixed` leaves out


INVALID_DROP = "invalid-drop"
LOCALNET_DROP = "localnet-drop"
FIXES: tuple[Fix, ...] = (
    Fix(INVALID_DROP, "iptables", "1.15", "#74840 (for #74839)",
        "KUBE-FORWARD drops packets conntrack marks INVALID: they are not un-DNATed, and a client that gets one "
        "from a pod's own IP answers it with a RST that resets the connection"),
    Fix(LOCALNET_DROP, "iptables", "1.18.4 (1.17.7, 1.16.11)", "#91569 (CVE-2020-8558, #92315)",
        "KUBE-FIREWALL drops packets to 127.0.0.0/8 from other sources that conntrack did not DNAT: with "
        "route_localnet=1 a neighbour on the node's network reaches services bound to the node's 127.0.0.1"),
)
FIX_NAMES = tuple(f.name for f in FIXES)


# The releases whose rules testbed was checked against, per mode: upstream's own unit-test
# expectations (or, for iptables 1.30, the side-by-side run of the v1.30.3 proxier).
CHECKED = {
    "iptables": ((1, 30), (1, 34), (1, 35)),
    "nftables": ((1, 30), (1, 33), (1, 34), (1, 35)),
    "ipvs": ((1, 34), (1, 35)),
}
# What is known to differ in releases testbed does not render exactly (said in notes()).
UNESTABLISHED = {
    ("nftables", (1, 29)): "its alpha rules changed throughout 1.30's development (#122296, "
                           "#122614, #122663): rendered with 1.30's",
    ("nftables", (1, 36)): "1.36 inlined mark-for-masquerade (#135800): rendered with 1.35's rules",
}
# Deprecation notices a user of that release sees.
DEPRECATIONS = (
    ("ipvs", (1, 35), "kube-proxy's IPVS mode is deprecated since 1.35: use nftables (GA since 1.33)"),
    ("externalIPs", (1, 36), "Service spec.externalIPs is deprecated since 1.36 (KEP-5707)"),
)

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$")


def parse(value, what: str = "version") -> Version:
    """"1.31", "v1.31.2", "v1.31.2-eks-1", 1.31 (a YAML number) or (1, 31) -> (1, 31).

    Raises ValueError with a message naming what was expected."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(x, int) for x in value):
        return value
    if isinstance(value, float) and not isinstance(value, bool):
        text = repr(value)
        if len(text.split(".")[1]) < 2:  # YAML reads 1.30 as 1.3: which was meant is unknowable
            raise ValueError(f"expected a {what} such as \"1.30\" (quoted: YAML reads 1.30 as the "
                             f"number {value}), got {value}")
        value = text
    m = _VERSION.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected a {what} such as \"1.31\" or \"v1.31.2\", got {value!r}")
    return int(m[1]), int(m[2])


def text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def on(name: str, version: Version) -> bool:
    """Whether the switch `name` is on at `version` (a version past NEWEST behaves as NEWEST)."""
    return _BY_NAME[name].on(min(version, NEWEST))


def switches(version: Version) -> dict[str, bool]:
    return {s.name: on(s.name, version) for s in SWITCHES}


def notes(version: Version, mode: str) -> list[str]:
    """What a user must know about rendering `version` in `mode`: outside the releases testbed
    knows, known to differ, or not checked against that release's own tests."""
    v, out = text(version), []
    known = UNESTABLISHED.get((mode, min(version, (1, 36))))
    if version < OLDEST:
        out.append(f"kube-proxy {v} is older than the oldest release testbed renders "
                   f"({text(OLDEST)}): rendered as {text(OLDEST)}")
    elif version > NEWEST:
        out.append(f"kube-proxy {v} is newer than the newest release whose rules testbed has "
                   f"established ({text(NEWEST)}): rendered as {text(NEWEST)}"
                   + (f"; {mode} mode differs: {known}" if known else ""))
    elif known:
        out.append(f"kube-proxy {v}'s {mode} rules are not established: {known}")
    elif mode in CHECKED and version not in CHECKED[mode]:
        checked = ", ".join(text(c) for c in CHECKED[mode])
        out.append(f"kube-proxy {v}'s {mode} rules were not checked against that release's own "
                   f"tests (testbed checked {checked}): rendered from the differences in "
                   "docs/versions.md")
    return out


def deprecations(version: Version, mode: str, external_ips: tuple[str, ...] = ()) -> list[str]:
    """The deprecation notices that apply: IPVS mode, the Services (names) with externalIPs."""
    out = []
    for what, since, message in DEPRECATIONS:
        applies = mode == "ipvs" if what == "ipvs" else bool(external_ips)
        if applies and version >= since:
            out.append(message + (f": {', '.join(external_ips)}" if what == "externalIPs" else ""))
    return out


def check_mode(version: Version, mode: str) -> str | None:
    """Why kube-proxy `version` cannot run `mode`, or None."""
    if mode == "nftables" and not on(NFT_MODE, version):
        return (f"kube-proxy {text(version)} has no nftables mode (it was added, alpha, in "
                f"{text(_BY_NAME[NFT_MODE].since)})")
    return None


def most_common(values: list[str]) -> str | None:
    """The version most of the values name (the newest on a tie), as "1.31"; None if none parse."""
    from collections import Counter

    parsed = []
    for v in values:
        try:
            parsed.append(parse(v))
        except ValueError:
            continue
    if not parsed:
        return None
    counts = Counter(parsed)
    return text(max(counts, key=lambda v: (counts[v], v)))
