"""Golden tests for the iptables-mode renderer (testbed.render.iptables).

Every expected dump is written out in full; hashes were checked against upstream values in
test_render_names.py. Marks are 0x00004000 because kube-proxy formats them with Go's "%#08x".
"""
import random

from testbed.proxy import Endpoint, NodeView, ProxyConfig, ServicePort
from testbed.render import iptables as ipt

N = "node-a"


def V(*svcs, **cfg):
    return NodeView(N, ("192.168.0.10",), config=ProxyConfig(**cfg), services=svcs)


def chains(text):
    """{(table, chain): [rules in order]} and the set of declared (table, chain)."""
    rules, declared, table = {}, set(), None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            declared.add((table, line[1:].split()[0]))
        elif line.startswith("-A "):
            rules.setdefault((table, line.split()[1]), []).append(line)
    return rules, declared


GOLDEN_CLUSTER_IP = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-CDGGSHYLG3RE2FKL - [0:0]
:KUBE-SEP-GWQABTP5GBYXHJY5 - [0:0]
:KUBE-SEP-UIQK3OSOSTRHRPBX - [0:0]
:KUBE-SEP-2RIJ5GIYXEFH6G4D - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j KUBE-SVC-CDGGSHYLG3RE2FKL
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.1.10:8080" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-GWQABTP5GBYXHJY5
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.1.2:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UIQK3OSOSTRHRPBX
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.2.7:8080" -j KUBE-SEP-2RIJ5GIYXEFH6G4D
-A KUBE-SEP-GWQABTP5GBYXHJY5 -m comment --comment default/web:http -s 10.244.1.10 -j KUBE-MARK-MASQ
-A KUBE-SEP-GWQABTP5GBYXHJY5 -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.10:8080
-A KUBE-SEP-UIQK3OSOSTRHRPBX -m comment --comment default/web:http -s 10.244.1.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-UIQK3OSOSTRHRPBX -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080
-A KUBE-SEP-2RIJ5GIYXEFH6G4D -m comment --comment default/web:http -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-2RIJ5GIYXEFH6G4D -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"""

GOLDEN_NODE_PORT = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-EXT-LDATH6LIB7VCFHLW - [0:0]
:KUBE-SVC-LDATH6LIB7VCFHLW - [0:0]
:KUBE-SEP-AOM2KHDKO2M7BQNB - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "default/np cluster IP" -m tcp -p tcp -d 10.96.0.30 --dport 80 -j KUBE-SVC-LDATH6LIB7VCFHLW
-A KUBE-NODEPORTS -m comment --comment default/np -m tcp -p tcp --dport 30080 -j KUBE-EXT-LDATH6LIB7VCFHLW
-A KUBE-SVC-LDATH6LIB7VCFHLW -m comment --comment "default/np cluster IP" -m tcp -p tcp -d 10.96.0.30 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-EXT-LDATH6LIB7VCFHLW -m comment --comment "masquerade traffic for default/np external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-LDATH6LIB7VCFHLW -j KUBE-SVC-LDATH6LIB7VCFHLW
-A KUBE-SVC-LDATH6LIB7VCFHLW -m comment --comment "default/np -> 10.244.2.7:8080" -j KUBE-SEP-AOM2KHDKO2M7BQNB
-A KUBE-SEP-AOM2KHDKO2M7BQNB -m comment --comment default/np -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-AOM2KHDKO2M7BQNB -m comment --comment default/np -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"""

GOLDEN_NO_ENDPOINTS = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 10.96.0.40 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 203.0.113.7 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30081 -j REJECT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"""

GOLDEN_AFFINITY = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-U72AG2NTKV47436N - [0:0]
:KUBE-SEP-OIABZP46J3L2UTKU - [0:0]
:KUBE-SEP-EYGTC6QOPE2WINDD - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "default/sticky cluster IP" -m udp -p udp -d 10.96.0.50 --dport 53 -j KUBE-SVC-U72AG2NTKV47436N
-A KUBE-SVC-U72AG2NTKV47436N -m comment --comment "default/sticky cluster IP" -m udp -p udp -d 10.96.0.50 --dport 53 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-U72AG2NTKV47436N -m comment --comment "default/sticky -> 10.244.1.2:5353" -m recent --name KUBE-SEP-OIABZP46J3L2UTKU --rcheck --seconds 300 --reap -j KUBE-SEP-OIABZP46J3L2UTKU
-A KUBE-SVC-U72AG2NTKV47436N -m comment --comment "default/sticky -> 10.244.2.7:5353" -m recent --name KUBE-SEP-EYGTC6QOPE2WINDD --rcheck --seconds 300 --reap -j KUBE-SEP-EYGTC6QOPE2WINDD
-A KUBE-SVC-U72AG2NTKV47436N -m comment --comment "default/sticky -> 10.244.1.2:5353" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-OIABZP46J3L2UTKU
-A KUBE-SVC-U72AG2NTKV47436N -m comment --comment "default/sticky -> 10.244.2.7:5353" -j KUBE-SEP-EYGTC6QOPE2WINDD
-A KUBE-SEP-OIABZP46J3L2UTKU -m comment --comment default/sticky -s 10.244.1.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-OIABZP46J3L2UTKU -m comment --comment default/sticky -m recent --name KUBE-SEP-OIABZP46J3L2UTKU --set -m udp -p udp -j DNAT --to-destination 10.244.1.2:5353
-A KUBE-SEP-EYGTC6QOPE2WINDD -m comment --comment default/sticky -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-EYGTC6QOPE2WINDD -m comment --comment default/sticky -m recent --name KUBE-SEP-EYGTC6QOPE2WINDD --set -m udp -p udp -j DNAT --to-destination 10.244.2.7:5353
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"""

GOLDEN_ETP_LOCAL = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-NODEPORTS -m comment --comment "default/lb health check node port" -m tcp -p tcp --dport 31000 -j ACCEPT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-EXT-7TVXROIT6UXCX2AG - [0:0]
:KUBE-SVC-7TVXROIT6UXCX2AG - [0:0]
:KUBE-SVL-7TVXROIT6UXCX2AG - [0:0]
:KUBE-SEP-Q2VZDSL2MVCLTZ5I - [0:0]
:KUBE-SEP-IMLKMCEXLAC4EMN6 - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "default/lb cluster IP" -m tcp -p tcp -d 10.96.0.60 --dport 80 -j KUBE-SVC-7TVXROIT6UXCX2AG
-A KUBE-SERVICES -m comment --comment "default/lb loadbalancer IP" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j KUBE-EXT-7TVXROIT6UXCX2AG
-A KUBE-NODEPORTS -m comment --comment default/lb -m tcp -p tcp --dport 30090 -j KUBE-EXT-7TVXROIT6UXCX2AG
-A KUBE-SVC-7TVXROIT6UXCX2AG -m comment --comment "default/lb cluster IP" -m tcp -p tcp -d 10.96.0.60 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-EXT-7TVXROIT6UXCX2AG -m comment --comment "pod traffic for default/lb external destinations" -s 10.244.0.0/16 -j KUBE-SVC-7TVXROIT6UXCX2AG
-A KUBE-EXT-7TVXROIT6UXCX2AG -m comment --comment "masquerade LOCAL traffic for default/lb external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-7TVXROIT6UXCX2AG -m comment --comment "route LOCAL traffic for default/lb external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-7TVXROIT6UXCX2AG
-A KUBE-EXT-7TVXROIT6UXCX2AG -j KUBE-SVL-7TVXROIT6UXCX2AG
-A KUBE-SVC-7TVXROIT6UXCX2AG -m comment --comment "default/lb -> 10.244.1.2:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-Q2VZDSL2MVCLTZ5I
-A KUBE-SVC-7TVXROIT6UXCX2AG -m comment --comment "default/lb -> 10.244.2.7:8080" -j KUBE-SEP-IMLKMCEXLAC4EMN6
-A KUBE-SVL-7TVXROIT6UXCX2AG -m comment --comment "default/lb -> 10.244.1.2:8080" -j KUBE-SEP-Q2VZDSL2MVCLTZ5I
-A KUBE-SEP-Q2VZDSL2MVCLTZ5I -m comment --comment default/lb -s 10.244.1.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-Q2VZDSL2MVCLTZ5I -m comment --comment default/lb -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080
-A KUBE-SEP-IMLKMCEXLAC4EMN6 -m comment --comment default/lb -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-IMLKMCEXLAC4EMN6 -m comment --comment default/lb -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS
COMMIT
"""

GOLDEN_ETP_LOCAL_NO_LOCAL = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/lb has no local endpoints" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/lb has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30090 -j DROP
-A KUBE-NODEPORTS -m comment --comment "default/lb health check node port" -m tcp -p tcp --dport 31000 -j ACCEPT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-EXT-7TVXROIT6UXCX2AG - [0:0]
:KUBE-SVC-7TVXROIT6UXCX2AG - [0:0]
:KUBE-SEP-IMLKMCEXLAC4EMN6 - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "default/lb cluster IP" -m tcp -p tcp -d 10.96.0.60 --dport 80 -j KUBE-SVC-7TVXROIT6UXCX2AG
-A KUBE-SERVICES -m comment --comment "default/lb loadbalancer IP" -m tcp -p tcp -d 203.0.113.10 --dport 80 -j KUBE-EXT-7TVXROIT6UXCX2AG
-A KUBE-NODEPORTS -m comment --comment default/lb -m tcp -p tcp --dport 30090 -j KUBE-EXT-7TVXROIT6UXCX2AG
-A KUBE-SVC-7TVXROIT6UXCX2AG -m comment --comment "default/lb cluster IP" -m tcp -p tcp -d 10.96.0.60 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-EXT-7TVXROIT6UXCX2AG -m comment --comment "pod traffic for default/lb external destinations" -s 10.244.0.0/16 -j KUBE-SVC-7TVXROIT6UXCX2AG
-A KUBE-EXT-7TVXROIT6UXCX2AG -m comment --comment "masquerade LOCAL traffic for default/lb external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-7TVXROIT6UXCX2AG -m comment --comment "route LOCAL traffic for default/lb external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-7TVXROIT6UXCX2AG
-A KUBE-SVC-7TVXROIT6UXCX2AG -m comment --comment "default/lb -> 10.244.2.7:8080" -j KUBE-SEP-IMLKMCEXLAC4EMN6
-A KUBE-SEP-IMLKMCEXLAC4EMN6 -m comment --comment default/lb -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-IMLKMCEXLAC4EMN6 -m comment --comment default/lb -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS
COMMIT
"""

GOLDEN_LB_SOURCE_RANGES = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 203.0.113.20 --dport 80 -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SEP-UYUYTIUTK3VMEAQR - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 10.96.0.70 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 203.0.113.20 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 30100 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 10.96.0.70 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 198.51.100.0/24 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 192.168.0.0/24 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.20 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.244.2.7:8080" -j KUBE-SEP-UYUYTIUTK3VMEAQR
-A KUBE-SEP-UYUYTIUTK3VMEAQR -m comment --comment ns5/svc5:p80 -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-UYUYTIUTK3VMEAQR -m comment --comment ns5/svc5:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS
COMMIT
"""


def test_cluster_ip_three_endpoints():
    view = V(ServicePort("default", "web", "http", "TCP", 80, "10.96.0.20", endpoints=(
        Endpoint("10.244.1.2", 8080, node=N), Endpoint("10.244.2.7", 8080, node="node-b"),
        Endpoint("10.244.1.10", 8080, node=N))))
    out = ipt.render(view)
    assert out == GOLDEN_CLUSTER_IP
    # "ip:port" string order: 10.244.1.10 sorts before 10.244.1.2.
    svc = [line for line in out.splitlines() if line.startswith("-A KUBE-SVC-") and "->" in line]
    assert [line.split('"')[1] for line in svc] == [
        "default/web:http -> 10.244.1.10:8080", "default/web:http -> 10.244.1.2:8080", "default/web:http -> 10.244.2.7:8080"]
    assert "--probability 0.3333333333 " in svc[0]
    assert "--probability 0.5000000000 " in svc[1]
    assert "statistic" not in svc[2]


def test_node_port():
    view = V(ServicePort("default", "np", "", "TCP", 80, "10.96.0.30", node_port=30080,
                         endpoints=(Endpoint("10.244.2.7", 8080, node="node-b"),)))
    assert ipt.render(view) == GOLDEN_NODE_PORT


def test_no_endpoints_rejects_in_filter_and_writes_no_nat_chains():
    view = V(ServicePort("ns6", "svc6", "p80", "TCP", 80, "10.96.0.40", node_port=30081,
                         external_ips=("192.168.99.33",), load_balancer_ips=("203.0.113.7",)))
    assert ipt.render(view) == GOLDEN_NO_ENDPOINTS


def test_session_affinity():
    view = V(ServicePort("default", "sticky", "", "UDP", 53, "10.96.0.50", session_affinity_timeout=300,
                         endpoints=(Endpoint("10.244.2.7", 5353, node="node-b"), Endpoint("10.244.1.2", 5353, node=N))),
             random_fully=False)
    assert ipt.render(view) == GOLDEN_AFFINITY


def test_external_traffic_policy_local_with_local_endpoint():
    view = V(ServicePort("default", "lb", "", "TCP", 80, "10.96.0.60", node_port=30090,
                         load_balancer_ips=("203.0.113.10",), external_policy_local=True, health_check_node_port=31000,
                         endpoints=(Endpoint("10.244.1.2", 8080, node=N), Endpoint("10.244.2.7", 8080, node="node-b"))),
             localhost_nodeports=False)
    assert ipt.render(view) == GOLDEN_ETP_LOCAL


def test_external_traffic_policy_local_without_local_endpoint():
    view = V(ServicePort("default", "lb", "", "TCP", 80, "10.96.0.60", node_port=30090,
                         load_balancer_ips=("203.0.113.10",), external_policy_local=True, health_check_node_port=31000,
                         endpoints=(Endpoint("10.244.2.7", 8080, node="node-b"),)),
             localhost_nodeports=False)
    assert ipt.render(view) == GOLDEN_ETP_LOCAL_NO_LOCAL


def test_load_balancer_source_ranges():
    # The node IP 192.168.0.10 is inside a range, so the LB IP itself is allowed as a source too.
    view = V(ServicePort("ns5", "svc5", "p80", "TCP", 80, "10.96.0.70", node_port=30100,
                         load_balancer_ips=("203.0.113.20",), load_balancer_source_ranges=(" 198.51.100.0/24", "192.168.0.0/24"),
                         endpoints=(Endpoint("10.244.2.7", 8080, node="node-b"),)),
             localhost_nodeports=False, conntrack_tcp_be_liberal=True)
    assert ipt.render(view) == GOLDEN_LB_SOURCE_RANGES


def test_large_cluster_mode_drops_per_endpoint_comments():
    big = tuple(Endpoint(f"10.245.{i // 250}.{i % 250 + 1}", 80) for i in range(1000))
    small = ServicePort("default", "small", "", "TCP", 80, "10.96.0.80",
                        endpoints=(Endpoint("10.244.1.2", 8080), Endpoint("10.244.2.7", 8080)))
    expected_small = [
        ":KUBE-SVC-KQJSH76ZASTSJR45 - [0:0]",
        ":KUBE-SEP-V5YJXPGWF5TRVS45 - [0:0]",
        ":KUBE-SEP-YIYSCHTY73D6CTLX - [0:0]",
        '-A KUBE-SERVICES -m comment --comment "default/small cluster IP" -m tcp -p tcp -d 10.96.0.80 --dport 80 -j KUBE-SVC-KQJSH76ZASTSJR45',
        # The cluster-IP masquerade rule keeps its comment; only per-endpoint comments go.
        '-A KUBE-SVC-KQJSH76ZASTSJR45 -m comment --comment "default/small cluster IP" -m tcp -p tcp -d 10.96.0.80 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
        "-A KUBE-SVC-KQJSH76ZASTSJR45 -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-V5YJXPGWF5TRVS45",
        "-A KUBE-SVC-KQJSH76ZASTSJR45 -j KUBE-SEP-YIYSCHTY73D6CTLX",
        "-A KUBE-SEP-V5YJXPGWF5TRVS45 -s 10.244.1.2 -j KUBE-MARK-MASQ",
        "-A KUBE-SEP-V5YJXPGWF5TRVS45 -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080",
        "-A KUBE-SEP-YIYSCHTY73D6CTLX -s 10.244.2.7 -j KUBE-MARK-MASQ",
        "-A KUBE-SEP-YIYSCHTY73D6CTLX -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080",
    ]
    mine = ("KUBE-SVC-KQJSH76ZASTSJR45", "KUBE-SEP-V5YJXPGWF5TRVS45", "KUBE-SEP-YIYSCHTY73D6CTLX")

    def small_lines(out):
        return [line for line in out.splitlines() if line.split(" ")[0].lstrip(":") in mine or (
            line.startswith("-A KUBE-SERVICES") and line.endswith("KUBE-SVC-KQJSH76ZASTSJR45")) or (
            line.startswith("-A ") and line.split(" ")[1] in mine)]

    # 1002 endpoints in total: over the 1000 threshold.
    out = ipt.render(V(ServicePort("default", "big", "", "TCP", 80, "10.96.0.81", endpoints=big), small))
    assert small_lines(out) == expected_small
    assert not any(line.startswith("-A KUBE-SEP-") and "comment" in line for line in out.splitlines())
    assert " -> " not in out
    # At exactly 1000 endpoints the comments stay.
    out = ipt.render(V(ServicePort("default", "big", "", "TCP", 80, "10.96.0.81", endpoints=big[:998]), small))
    assert ('-A KUBE-SVC-KQJSH76ZASTSJR45 -m comment --comment "default/small -> 10.244.2.7:8080" -j KUBE-SEP-YIYSCHTY73D6CTLX'
            in out)
    assert "-A KUBE-SEP-YIYSCHTY73D6CTLX -m comment --comment default/small -s 10.244.2.7 -j KUBE-MARK-MASQ" in out


def test_render_is_deterministic():
    svcs = [
        ServicePort("ns1", "a", "p", "TCP", 80, "10.96.1.1", endpoints=(Endpoint("10.244.1.1", 80), Endpoint("10.244.1.10", 80))),
        ServicePort("ns1", "a", "p", "UDP", 80, "10.96.1.1", endpoints=(Endpoint("10.244.1.1", 80),)),
        ServicePort("ns0", "b", "", "TCP", 81, "10.96.1.2", node_port=30001, endpoints=(Endpoint("10.244.1.3", 80),)),
        ServicePort("ns2", "c", "", "TCP", 82, "10.96.1.3"),
    ]
    first = ipt.render(V(*svcs))
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(svcs)
        for i, s in enumerate(svcs):
            eps = list(s.endpoints)
            rng.shuffle(eps)
            svcs[i] = ServicePort(**{**s.__dict__, "endpoints": tuple(eps)})
        assert ipt.render(V(*svcs)) == first
    # Sorted by (svcPortName, protocol): ns0/b, ns1/a:p tcp, ns1/a:p udp, ns2/c.
    order = [line.split('"')[1] for line in first.splitlines()
             if line.startswith("-A KUBE-SERVICES") and "has no" not in line][:3]
    assert order == ["ns0/b cluster IP", "ns1/a:p cluster IP", "ns1/a:p cluster IP"]
    assert "-m tcp -p tcp -d 10.96.1.1" in next(line for line in first.splitlines() if '"ns1/a:p cluster IP"' in line)


def test_headless_service_is_skipped():
    view = V(ServicePort("ns", "headless", "", "TCP", 80, None, endpoints=(Endpoint("10.244.1.2", 80),)))
    assert ipt.render(view) == ipt.render(V())


def test_unready_endpoints_count_as_none_and_terminating_fallback():
    unready = ServicePort("ns", "s", "", "TCP", 80, "10.96.0.9",
                          endpoints=(Endpoint("10.244.1.2", 80, ready=False, serving=False),))
    out = ipt.render(V(unready))
    assert '-A KUBE-SERVICES -m comment --comment "ns/s has no endpoints" -m tcp -p tcp -d 10.96.0.9 --dport 80 -j REJECT' in out
    assert "KUBE-SVC-" not in out
    terminating = ServicePort("ns", "s", "", "TCP", 80, "10.96.0.9", endpoints=(
        Endpoint("10.244.1.2", 80, ready=False, serving=True, terminating=True),
        Endpoint("10.244.1.3", 80, ready=False, serving=False, terminating=True)))
    out = ipt.render(V(terminating))
    assert "--to-destination 10.244.1.2:80" in out and "10.244.1.3" not in out


def test_internal_traffic_policy_local():
    base = {"namespace": "ns", "name": "s", "port_name": "", "protocol": "TCP", "port": 80, "cluster_ip": "10.96.0.9",
            "internal_policy_local": True}
    out = ipt.render(V(ServicePort(**base, endpoints=(Endpoint("10.244.2.7", 80, node="node-b"),))))
    assert ('-A KUBE-SERVICES -m comment --comment "ns/s has no local endpoints" -m tcp -p tcp -d 10.96.0.9 --dport 80 -j DROP'
            in out)
    assert "KUBE-SVC-" not in out and "KUBE-SVL-" not in out and "KUBE-SEP-" not in out
    out = ipt.render(V(ServicePort(**base, endpoints=(Endpoint("10.244.1.2", 80, node=N),
                                                      Endpoint("10.244.2.7", 80, node="node-b")))))
    svl = [line for line in out.splitlines() if line.startswith("-A KUBE-SVL-")]
    assert svl[0].endswith("! -s 10.244.0.0/16 -j KUBE-MARK-MASQ")
    assert len(svl) == 2 and "10.244.1.2:80" in svl[1] and "KUBE-SVC-" not in out
    assert "10.244.2.7" not in out


def test_masquerade_all_and_no_local_detector():
    sp = ServicePort("ns", "s", "", "TCP", 80, "10.96.0.9", node_port=30000, external_policy_local=True,
                     endpoints=(Endpoint("10.244.1.2", 80, node=N),))
    out = ipt.render(V(sp, masquerade_all=True))
    assert any(line.endswith('--dport 80 -j KUBE-MARK-MASQ') and "! -s" not in line for line in out.splitlines())
    out = ipt.render(V(sp, cluster_cidr=None))
    assert "cluster IP\" -m tcp -p tcp -d 10.96.0.9 --dport 80 ! -s" not in out
    assert not [line for line in out.splitlines() if line.startswith("-A KUBE-SVC-") and "KUBE-MARK-MASQ" in line]
    assert "pod traffic for" not in out
    assert "masquerade LOCAL traffic for ns/s external destinations" in out


def test_node_port_dispatch_variants():
    sp = ServicePort("ns", "s", "", "TCP", 80, "10.96.0.9", node_port=30000, endpoints=(Endpoint("10.244.1.2", 80),))
    last = '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
    out = ipt.render(V(sp, localhost_nodeports=False))
    assert out.splitlines()[-2] == last + " -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"
    assert "KUBE-FIREWALL" not in out
    view = NodeView(N, ("192.168.0.10", "10.0.0.5"),
                    config=ProxyConfig(nodeport_addresses=("192.168.0.0/16", "10.0.0.5/32", "127.0.0.0/8")), services=(sp,))
    lines = ipt.render(view).splitlines()
    assert lines[-4:-1] == [last + " -d 192.168.0.10 -j KUBE-NODEPORTS", last + " -d 10.0.0.5 -j KUBE-NODEPORTS",
                            last + " -d 127.0.0.1 -j KUBE-NODEPORTS"]
    for everything in (("0.0.0.0/0",), ("fd00::/64",)):  # no IPv4 CIDR at all also means every address
        view = NodeView(N, ("192.168.0.10",), config=ProxyConfig(nodeport_addresses=everything), services=(sp,))
        assert ipt.render(view).splitlines()[-2] == last + " -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    view = NodeView(N, ("192.168.0.10", "10.0.0.5"), config=ProxyConfig(nodeport_addresses=("primary",)), services=(sp,))
    assert [line for line in ipt.render(view).splitlines() if line.startswith(last)] == \
        [last + " -d 192.168.0.10 -j KUBE-NODEPORTS"]


def test_nfacct_variant():
    sp = ServicePort("ns", "s", "", "TCP", 80, "10.96.0.9", node_port=30000, endpoints=(Endpoint("10.244.1.2", 80),))
    out = ipt.render(V(sp), nfacct=True)
    assert "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP" in out
    assert ("-A KUBE-NODEPORTS -m comment --comment ns/s -m tcp -p tcp -d 127.0.0.0/8 --dport 30000 "
            "-m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-") in out
    assert "nfacct" not in ipt.render(V(sp))
    assert "127.0.0.0/8 --dport" not in ipt.render(V(sp, localhost_nodeports=False), nfacct=True)


def test_stale_chains_are_flushed_and_deleted():
    sp = ServicePort("ns", "s", "", "TCP", 80, "10.96.0.9", endpoints=(Endpoint("10.244.1.2", 80),))
    view = V(sp)
    prev = {"KUBE-SERVICES", "KUBE-SVC-OLDOLDOLDOLDOLD1", "KUBE-SEP-OLDOLDOLDOLDOLD2", "DOCKER",
            *ipt.active_chains(view)}
    lines = ipt.render(view, previous_chains=prev).splitlines()
    nat = lines[lines.index("*nat"):]
    assert nat[-4:-1] == ["-X KUBE-SEP-OLDOLDOLDOLDOLD2", "-X KUBE-SVC-OLDOLDOLDOLDOLD1", nat[-2]]
    assert nat[-2].startswith("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports;")
    assert ":KUBE-SEP-OLDOLDOLDOLDOLD2 - [0:0]" in nat and ":KUBE-SVC-OLDOLDOLDOLDOLD1 - [0:0]" in nat
    assert "DOCKER" not in "\n".join(lines)
    assert sum(line.startswith("-X") for line in lines) == 2
    assert ipt.active_chains(view) == {"KUBE-SVC-IFZG2GHEQVVUVAVZ", "KUBE-SEP-PZW6UU3OXOG3G5SE"}


def test_jump_rules_and_bootstrap():
    assert ipt.jump_rules() == {
        "filter": [
            "-A INPUT -j KUBE-FIREWALL",
            '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
            '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
            '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
            '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
            '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
            '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
            "-A OUTPUT -j KUBE-FIREWALL",
            '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
            '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        ],
        "nat": [
            '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        ],
    }
    view = V(localhost_nodeports=False)
    boot = ipt.bootstrap(view).splitlines()
    plain = ipt.render(view).splitlines()
    # Same restore input plus the -I lines (and KUBE-FIREWALL, which EnsureChain would create).
    assert [line for line in boot if not line.startswith("-I ") and line != ":KUBE-FIREWALL - [0:0]"] == plain
    filt = boot[:boot.index("COMMIT")]
    assert filt.index(":KUBE-FIREWALL - [0:0]") < filt.index("-I INPUT 1 -j KUBE-FIREWALL")
    assert [line for line in filt if line.startswith("-I INPUT")] == [
        "-I INPUT 1 -j KUBE-FIREWALL",
        '-I INPUT 2 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-I INPUT 3 -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-I INPUT 4 -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    ]
    nat = boot[boot.index("*nat"):]
    assert "-I POSTROUTING 1 -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING" in nat
    assert max(i for i, line in enumerate(nat) if line.startswith(":")) < \
        min(i for i, line in enumerate(nat) if line.startswith("-I"))


# What iptables-save (v1.8.9, nf_tables) printed for rules restored from render() output.
SAVED_SAMPLE = '''\
# Generated by iptables-save v1.8.9 (nf_tables) on Wed Nov 25 18:22:03 2026
*filter
:INPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
[3:180] -A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-SERVICES -d 172.30.0.43/32 -p udp -m comment --comment "ns3/svc3:p80 has no endpoints" -m udp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
*nat
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-SEP-L3TFUSK6OKE6VLNJ -p tcp -m comment --comment "ns1/svc1:p80" -m recent --set --name KUBE-SEP-L3TFUSK6OKE6VLNJ --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.2:80
-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s 10.244.0.0/16 -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.10:80" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-LGEAPF3P4SGKXWPQ --mask 255.255.255.255 --rsource -j KUBE-SEP-LGEAPF3P4SGKXWPQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.10:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-LGEAPF3P4SGKXWPQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.2:80" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-L3TFUSK6OKE6VLNJ
COMMIT
'''

RENDERED_SAMPLE = '''\
*filter
:KUBE-FORWARD - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 has no endpoints" -m udp -p udp -d 172.30.0.43 --dport 80 -j REJECT
COMMIT
*nat
:KUBE-SVC-STALE - [0:0]
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-SEP-L3TFUSK6OKE6VLNJ -m comment --comment ns1/svc1:p80 -m recent --name KUBE-SEP-L3TFUSK6OKE6VLNJ --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:80
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.10:80" -m recent --name KUBE-SEP-LGEAPF3P4SGKXWPQ --rcheck --seconds 10800 --reap -j KUBE-SEP-LGEAPF3P4SGKXWPQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.10:80" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-LGEAPF3P4SGKXWPQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.2:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-L3TFUSK6OKE6VLNJ
-X KUBE-SVC-STALE
COMMIT
'''


def test_normalize_saved_matches_normalize_rendered():
    saved = ipt.normalize_saved(SAVED_SAMPLE)
    rendered = ipt.normalize_rendered(RENDERED_SAMPLE)
    assert "filter :INPUT" in saved and "filter :KUBE-FORWARD" in rendered
    assert [line for line in saved if " -A " in line] == [line for line in rendered if " -A " in line]
    assert not any("STALE" in line for line in rendered)  # declared only to be deleted: not state
    assert any("--probability 0.3333333333 " in line for line in saved)
    assert any("--probability 0.5000000000 " in line for line in saved)


def test_normalize_keeps_real_differences():
    a = ipt.normalize_rendered("*nat\n-A X -m statistic --mode random --probability 0.3333333333 -j Y\n")
    b = ipt.normalize_rendered("*nat\n-A X -m statistic --mode random --probability 0.2500000000 -j Y\n")
    c = ipt.normalize_rendered("*filter\n-A X -m statistic --mode random --probability 0.3333333333 -j Y\n")
    d = ipt.normalize_rendered("*nat\n-A X ! -s 10.0.0.0/8 -j Y\n")
    e = ipt.normalize_rendered("*nat\n-A X -s 10.0.0.0/8 -j Y\n")
    assert a != b and a != c and d != e


def test_nat_chains_helper():
    assert ipt.nat_chains(SAVED_SAMPLE) == set()
    saved = "*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-A - [0:0]\nCOMMIT\n"
    assert ipt.nat_chains(saved) == {"PREROUTING", "KUBE-SVC-A"}


# --- upstream TestOverallIPTablesRules (pkg/proxy/iptables/proxier_test.go @ 531be812) ----------

# Upstream's expected dump, verbatim except the fake proxier's masquerade mark: the fake sets the
# literal "0x4000" where real kube-proxy (and this renderer) print Go's "%#08x", 0x00004000.
UPSTREAM_OVERALL = '''\
*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-4SW47YFZTEDKD3PK - [0:0]
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
:KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
:KUBE-SEP-I77PXRDZVX7PMWMN - [0:0]
:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3003 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3002 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-EXT-4SW47YFZTEDKD3PK -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-4SW47YFZTEDKD3PK -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
COMMIT
'''


def _upstream_overall_view():
    tcp80 = {"port_name": "p80", "protocol": "TCP", "port": 80}
    return NodeView(
        "test-node", ("192.168.0.2",),
        config=ProxyConfig(cluster_cidr="10.0.0.0/8", random_fully=False),
        services=(
            ServicePort("ns1", "svc1", cluster_ip="172.30.0.41", endpoints=(Endpoint("10.180.0.1", 80),), **tcp80),
            # LoadBalancer, eTP=Local; its endpoint has no nodeName, so it is not local.
            ServicePort("ns2", "svc2", cluster_ip="172.30.0.42", node_port=3001, load_balancer_ips=("1.2.3.4",),
                        external_ips=("192.168.99.22",), health_check_node_port=30000, external_policy_local=True,
                        endpoints=(Endpoint("10.180.0.2", 80),), **tcp80),
            ServicePort("ns3", "svc3", cluster_ip="172.30.0.43", node_port=3003, endpoints=(Endpoint("10.180.0.3", 80),),
                        **tcp80),
            ServicePort("ns4", "svc4", cluster_ip="172.30.0.44", external_ips=("192.168.99.33",),
                        endpoints=(Endpoint("10.180.0.4", 80), Endpoint("10.180.0.5", 80, node="test-node")), **tcp80),
            # LoadBalancer, eTP=Cluster (so the health check node port is ignored), source range, affinity.
            ServicePort("ns5", "svc5", cluster_ip="172.30.0.45", node_port=3002, load_balancer_ips=("5.6.7.8",),
                        health_check_node_port=30000, load_balancer_source_ranges=(" 203.0.113.0/25",),
                        session_affinity_timeout=10800, endpoints=(Endpoint("10.180.0.3", 80),), **tcp80),
            ServicePort("ns6", "svc6", cluster_ip="172.30.0.46", **tcp80),
        ),
    )


def test_upstream_overall_iptables_rules():
    ours = ipt.render(_upstream_overall_view(), nfacct=True).replace("0x00004000", "0x4000")
    want_rules, want_declared = chains(UPSTREAM_OVERALL)
    got_rules, got_declared = chains(ours)
    assert got_declared == want_declared
    # Upstream's test helper sorts chains and, in the shared chains, services; rule order within
    # each chain is otherwise the write order, and our service order equals that sort here.
    assert got_rules == want_rules
    # Nothing upstream writes is missing or extra (e.g. no -X lines, same table split).
    assert sorted(line for line in ours.splitlines() if line.startswith("-")) == sorted(
        line for line in UPSTREAM_OVERALL.splitlines() if line.startswith("-"))


def test_both_policies_local_still_writes_cluster_chain_for_short_circuit():
    # UsesClusterEndpoints() is true for any externally accessible port, so the EXT chain's
    # pod/host short-circuit target KUBE-SVC exists even with iTP=Local and eTP=Local.
    sp = ServicePort("ns", "s", "", "TCP", 80, "10.96.0.9", node_port=30000, internal_policy_local=True,
                     external_policy_local=True,
                     endpoints=(Endpoint("10.244.1.2", 80, node=N), Endpoint("10.244.2.7", 80, node="node-b")))
    rules, declared = chains(ipt.render(V(sp)))
    svc, svl, ext = "KUBE-SVC-IFZG2GHEQVVUVAVZ", "KUBE-SVL-IFZG2GHEQVVUVAVZ", "KUBE-EXT-IFZG2GHEQVVUVAVZ"
    assert {("nat", svc), ("nat", svl), ("nat", ext)} <= declared
    assert rules[("nat", "KUBE-SERVICES")][0].endswith(f"-j {svl}")
    assert rules[("nat", ext)][0].endswith(f"-s 10.244.0.0/16 -j {svc}")
    assert rules[("nat", ext)][-1] == f"-A {ext} -j {svl}"
    assert len(rules[("nat", svc)]) == 2 and len(rules[("nat", svl)]) == 2  # SVL: masquerade + 1 endpoint


# ----------------------------------------------------------------------------- partial syncs


def restore_noflush(kernel: dict, text: str) -> dict:
    """iptables-restore --noflush on a model {(table, chain): [rules]}: a declared chain is
    created or flushed, -A appends, -X deletes; chains not named are left alone."""
    kernel = {k: list(v) for k, v in kernel.items()}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            kernel[(table, line[1:].split()[0])] = []
        elif line.startswith("-A "):
            kernel[(table, line.split()[1])].append(line)
        elif line.startswith("-X "):
            del kernel[(table, line.split()[1])]
    return kernel


def _svc(i, eps=2, **kw):
    return ServicePort("ns", f"s{i}", "", "TCP", 80, f"10.96.1.{i}", node_port=30100 + i if i % 3 == 0 else None,
                       session_affinity_timeout=10800 if i % 4 == 0 else None,
                       endpoints=tuple(Endpoint(f"10.244.{i % 2}.{10 + k}", 8080, node=N if k % 2 else "node-b")
                                       for k in range(eps)), **kw)


def test_partial_sync_leaves_unchanged_services_alone_and_ends_like_a_full_sync():
    """Random changes (endpoints, Services added and removed): full(v1) then partial(v2) in the
    --noflush model gives exactly full(v2); unchanged Services' chains are not in the input."""
    rng = random.Random(7)
    view = V(*[_svc(i, eps=rng.randint(0, 3)) for i in range(12)])
    kernel = restore_noflush({}, ipt.render(view))
    prints, chains_now = ipt.service_fingerprints(view), ipt.active_chains(view)
    for step in range(30):
        svcs = [s for s in view.services if rng.random() > 0.1]
        svcs = [_svc(int(s.name[1:]), eps=rng.randint(0, 3)) if rng.random() < 0.2 else s for s in svcs]
        svcs += [_svc(rng.randint(12, 40), eps=rng.randint(0, 3))] if rng.random() < 0.3 else []
        new = V(*{s.name: s for s in svcs}.values())
        new_prints = ipt.service_fingerprints(new)
        unchanged = {k for k, v in new_prints.items() if prints.get(k) == v}
        active: set[str] = set()
        text = ipt.render_partial(new, chains_now, unchanged, active_out=active)
        before, kernel = kernel, restore_noflush(kernel, text)
        assert kernel == restore_noflush(before, ipt.render(new, chains_now)), f"step {step}"  # = a full sync
        for key in unchanged:
            for c in ipt.active_chains(V(*[s for s in new.services if s.namespaced_name == key])):
                assert f":{c} " not in text, (step, key, c)
        assert active == ipt.active_chains(new)
        prints, chains_now = new_prints, active


def test_partial_sync_with_nothing_changed_rewrites_only_the_top_level_chains():
    view = V(_svc(1), _svc(3), _svc(4))
    text = ipt.render_partial(view, ipt.active_chains(view), ipt.service_fingerprints(view))
    declared = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
    assert declared and not any(c.startswith(("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-")) for c in declared)
    full_rules, _ = chains(ipt.render(view))
    part_rules, _ = chains(text)
    assert part_rules[("nat", "KUBE-SERVICES")] == full_rules[("nat", "KUBE-SERVICES")]
    assert part_rules[("nat", "KUBE-NODEPORTS")] == full_rules[("nat", "KUBE-NODEPORTS")]


def test_fingerprints_change_with_the_service_and_the_node_context():
    a = ipt.service_fingerprints(V(_svc(1), _svc(2)))
    b = ipt.service_fingerprints(V(_svc(1), _svc(2, eps=3)))
    assert a["ns/s1"] == b["ns/s1"] and a["ns/s2"] != b["ns/s2"]
    c = ipt.service_fingerprints(V(_svc(1), _svc(2), masquerade_all=True))
    assert c["ns/s1"] != a["ns/s1"]
