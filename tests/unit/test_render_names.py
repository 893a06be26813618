"""Chain/object names against the values upstream and the reference (§1.2, §3.3) list."""
import pytest

from testbed.proxy import Endpoint, ServicePort
from testbed.render import names


def _sp(ns, name, port_name, proto="TCP"):
    return ServicePort(ns, name, port_name, proto, 80, "10.96.0.1")


@pytest.mark.parametrize(
    "svc_port_name, proto, expected",
    [
        ("default/kubernetes:https", "tcp", "NPX46M4PTMTKRN6Y"),
        ("kube-system/kube-dns:dns", "udp", "TCOU7JCQXEZGVUNU"),
        ("kube-system/kube-dns:dns-tcp", "tcp", "ERIFXISQEP7F7OF4"),
        ("kube-system/kube-dns:metrics", "tcp", "JD5MR3NA4I4DYORP"),
        ("default/nginx", "tcp", "2CMXP7HKUVJN7L6M"),
    ],
)
def test_port_proto_hash_reference_table(svc_port_name, proto, expected):
    assert names.port_proto_hash(svc_port_name, proto) == expected


@pytest.mark.parametrize(
    "sp, expected",
    [
        (_sp("default", "kubernetes", "https"), "KUBE-SVC-NPX46M4PTMTKRN6Y"),
        (_sp("kube-system", "kube-dns", "dns", "UDP"), "KUBE-SVC-TCOU7JCQXEZGVUNU"),
        (_sp("kube-system", "kube-dns", "dns-tcp"), "KUBE-SVC-ERIFXISQEP7F7OF4"),
        (_sp("kube-system", "kube-dns", "metrics"), "KUBE-SVC-JD5MR3NA4I4DYORP"),
        (_sp("default", "nginx", ""), "KUBE-SVC-2CMXP7HKUVJN7L6M"),
        # From upstream's TestOverallIPTablesRules.
        (_sp("ns1", "svc1", "p80"), "KUBE-SVC-XPGD46QRK7WJZT7O"),
        (_sp("ns2", "svc2", "p80"), "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
        (_sp("ns4", "svc4", "p80"), "KUBE-SVC-4SW47YFZTEDKD3PK"),
    ],
)
def test_service_chain(sp, expected):
    assert names.service_chain(sp) == expected


def test_policy_chains_share_the_hash():
    sp = _sp("ns5", "svc5", "p80")
    assert names.service_chain(sp) == "KUBE-SVC-NUKIZ6OKUXPJNT4C"
    assert names.local_chain(sp) == "KUBE-SVL-NUKIZ6OKUXPJNT4C"
    assert names.external_chain(sp) == "KUBE-EXT-NUKIZ6OKUXPJNT4C"
    assert names.firewall_chain(sp) == "KUBE-FW-NUKIZ6OKUXPJNT4C"


def test_protocol_is_part_of_the_hash():
    assert names.service_chain(_sp("default", "kubernetes", "https", "UDP")) != "KUBE-SVC-NPX46M4PTMTKRN6Y"


@pytest.mark.parametrize(
    "sp, ep, expected",
    [
        (_sp("ns1", "svc1", "p80"), Endpoint("10.180.0.1", 80), "KUBE-SEP-SXIVWICOYRO3J4NJ"),
        # From upstream's TestOverallIPTablesRules.
        (_sp("ns2", "svc2", "p80"), Endpoint("10.180.0.2", 80), "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
        (_sp("ns3", "svc3", "p80"), Endpoint("10.180.0.3", 80), "KUBE-SEP-OYPFS5VJICHGATKP"),
        (_sp("ns4", "svc4", "p80"), Endpoint("10.180.0.4", 80), "KUBE-SEP-UKSFD7AGPMPPLUHC"),
        (_sp("ns4", "svc4", "p80"), Endpoint("10.180.0.5", 80), "KUBE-SEP-C6EBXVWJJZMIWKLZ"),
        (_sp("ns5", "svc5", "p80"), Endpoint("10.180.0.3", 80), "KUBE-SEP-I77PXRDZVX7PMWMN"),
    ],
)
def test_endpoint_chain(sp, ep, expected):
    assert names.endpoint_chain(sp, ep) == expected


def test_is_service_chain_name():
    for n in ("KUBE-SVC-X", "KUBE-SVL-X", "KUBE-EXT-X", "KUBE-FW-X", "KUBE-SEP-X"):
        assert names.is_service_chain_name(n)
    for n in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", "KUBE-FIREWALL", "DOCKER"):
        assert not names.is_service_chain_name(n)


def test_nft_names_reference_examples():
    sp = _sp("ns1", "svc1", "p80")
    assert "service-" + names.nft_service_base(sp) == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    ep = Endpoint("10.180.0.1", 80)
    assert "endpoint-" + names.nft_endpoint_base(sp, ep) == "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"


def test_nft_unnamed_port_and_ipv6_endpoint():
    sp = _sp("ns", "svc", "")
    assert names.nft_service_base(sp).endswith("-ns/svc/tcp/")
    base = names.nft_endpoint_base(sp, Endpoint("fd00::1", 8080))
    assert base.endswith("-ns/svc/tcp/__fd00..1/8080")
    assert ":" not in base


def test_nft_hash_and_truncate():
    assert names.nft_hash_and_truncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    long = "x" * 300
    out = names.nft_hash_and_truncate(long)
    assert len(out) == 240 and out.endswith("...")
    assert names.nft_hash_and_truncate("y" * 231) == names.nft_hash_and_truncate("y" * 231)
    assert len(names.nft_hash_and_truncate("y" * 231)) == 240  # exactly at the limit: not cut
    assert not names.nft_hash_and_truncate("y" * 231).endswith("...")
