"""Golden tests for the IPVS-mode renderer (testbed.render.ipvs) and the pure parts of its appliers.

Every expected `render_text` is written out in full: sysctls, kube-ipvs0 addresses, the
`ipvsadm-save -n` section, all 17 ipsets (kube-proxy creates them even when empty) and the
iptables glue exactly as upstream's writeIptablesRules orders it (pkg/proxy/ipvs/proxier.go, the
layout with KUBE-IPVS-FILTER / KUBE-IPVS-OUT-FILTER / KUBE-IPVS-IPS). Marks are 0x00004000 because
kube-proxy formats them with Go's "%#08x".
"""
import dataclasses
import socket
import struct

import pytest

from testbed.errors import TopologyError
from testbed.kernel import ipset as kipset
from testbed.kernel import ipvs as kipvs
from testbed.proxy import Endpoint as E
from testbed.proxy import NodeView, ProxyConfig
from testbed.proxy import ServicePort as SP
from testbed.render import ipvs

N = "node-a"


def V(*svcs, ips=("192.168.0.10",), **cfg):
    return NodeView(N, ips, config=ProxyConfig(**cfg), services=svcs)


WEB = SP("default", "web", "http", "TCP", 80, "10.96.0.10", endpoints=(
    E("10.244.1.3", 9376, node=N), E("10.244.2.4", 9376, node="node-b"), E("10.244.1.10", 9376, node=N)))
NP = SP("default", "np", "", "UDP", 53, "10.96.0.30", node_port=30053,
        endpoints=(E("10.244.2.7", 5353, node="node-b"), E("10.244.1.2", 5353, node=N)))
STICKY = SP("ns5", "sticky", "p80", "TCP", 80, "10.96.0.45", session_affinity_timeout=10800,
            endpoints=(E("10.244.1.3", 80, node=N), E("10.244.2.3", 80, node="node-b")))
SH = SP("ns7", "hash", "", "TCP", 443, "10.96.0.47", scheduler="sh",
        endpoints=(E("10.244.1.4", 8443, node=N), E("10.244.2.4", 8443, node="node-b")))
EMPTY = SP("ns6", "empty", "p80", "TCP", 80, "10.96.0.60", node_port=30082)
LOCAL = SP("ns2", "lb", "p80", "TCP", 80, "10.96.0.40", node_port=30080, external_ips=("192.168.99.22",),
           load_balancer_ips=("203.0.113.10",), external_policy_local=True, health_check_node_port=31000,
           endpoints=(E("10.244.1.2", 8080, node=N), E("10.244.2.7", 8080, node="node-b")))


# --- golden whole-text renders -------------------------------------------------------------------

CLUSTER_IP = """\
# sysctls (kube-proxy start-up)
net.ipv4.vs.conntrack = 1
net.ipv4.vs.expire_nodest_conn = 1
net.ipv4.vs.expire_quiescent_template = 1
net.ipv4.ip_forward = 1
# kube-ipvs0 (dummy; kube-proxy leaves it down)
ip link add kube-ipvs0 type dummy
ip addr add 10.96.0.10/32 dev kube-ipvs0
# ipvsadm-save -n
-A -t 10.96.0.10:80 -s rr
-a -t 10.96.0.10:80 -r 10.244.1.10:9376 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.1.3:9376 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.2.4:9376 -m -w 1
# ipsets (ipset -exist create; entries synced by difference)
# KUBE-LOOP-BACK: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
ipset create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-LOOP-BACK 10.244.1.10,tcp:9376,10.244.1.10
ipset add KUBE-LOOP-BACK 10.244.1.3,tcp:9376,10.244.1.3
# KUBE-CLUSTER-IP: "Kubernetes service cluster ip + port for masquerade purpose"
ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-CLUSTER-IP 10.96.0.10,tcp:80
# KUBE-EXTERNAL-IP: "Kubernetes service external ip + port for masquerade and filter purpose"
ipset create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-EXTERNAL-IP-LOCAL: "Kubernetes service external ip + port with externalTrafficPolicy=local"
ipset create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER: "Kubernetes service lb portal"
ipset create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-FW: "Kubernetes service load balancer ip + port for load balancer with sourceRange"
ipset create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-LOCAL: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
ipset create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-IP: "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-CIDR: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-TCP: "Kubernetes nodeport TCP port for masquerade purpose"
ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-TCP: "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-UDP: "Kubernetes nodeport UDP port for masquerade purpose"
ipset create KUBE-NODE-PORT-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-UDP: "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-SCTP-HASH: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-LOCAL-SCTP-HASH: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-HEALTH-CHECK-NODE-PORT: "Kubernetes health check node port"
ipset create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
# KUBE-IPVS-IPS: "Addresses on the ipvs interface"
ipset create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-IPVS-IPS 10.96.0.10
# jumps from built-in chains (EnsureRule Prepend, in this order)
iptables -t nat -I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
iptables -t filter -I FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
iptables -t filter -I INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
iptables -t filter -I INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
iptables -t filter -I OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
# iptables-restore --noflush
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"""

NODEPORT = """\
# sysctls (kube-proxy start-up)
net.ipv4.vs.conntrack = 1
net.ipv4.vs.expire_nodest_conn = 1
net.ipv4.vs.expire_quiescent_template = 1
net.ipv4.ip_forward = 1
# kube-ipvs0 (dummy; kube-proxy leaves it down)
ip link add kube-ipvs0 type dummy
ip addr add 10.96.0.30/32 dev kube-ipvs0
# ipvsadm-save -n
-A -u 10.96.0.30:53 -s rr
-a -u 10.96.0.30:53 -r 10.244.1.2:5353 -m -w 1
-a -u 10.96.0.30:53 -r 10.244.2.7:5353 -m -w 1
-A -u 192.168.0.10:30053 -s rr
-a -u 192.168.0.10:30053 -r 10.244.1.2:5353 -m -w 1
-a -u 192.168.0.10:30053 -r 10.244.2.7:5353 -m -w 1
-A -u 172.18.0.2:30053 -s rr
-a -u 172.18.0.2:30053 -r 10.244.1.2:5353 -m -w 1
-a -u 172.18.0.2:30053 -r 10.244.2.7:5353 -m -w 1
# ipsets (ipset -exist create; entries synced by difference)
# KUBE-LOOP-BACK: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
ipset create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-LOOP-BACK 10.244.1.2,udp:5353,10.244.1.2
# KUBE-CLUSTER-IP: "Kubernetes service cluster ip + port for masquerade purpose"
ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-CLUSTER-IP 10.96.0.30,udp:53
# KUBE-EXTERNAL-IP: "Kubernetes service external ip + port for masquerade and filter purpose"
ipset create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-EXTERNAL-IP-LOCAL: "Kubernetes service external ip + port with externalTrafficPolicy=local"
ipset create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER: "Kubernetes service lb portal"
ipset create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-FW: "Kubernetes service load balancer ip + port for load balancer with sourceRange"
ipset create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-LOCAL: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
ipset create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-IP: "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-CIDR: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-TCP: "Kubernetes nodeport TCP port for masquerade purpose"
ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-TCP: "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-UDP: "Kubernetes nodeport UDP port for masquerade purpose"
ipset create KUBE-NODE-PORT-UDP bitmap:port range 0-65535
ipset add KUBE-NODE-PORT-UDP 30053
# KUBE-NODE-PORT-LOCAL-UDP: "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-SCTP-HASH: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-LOCAL-SCTP-HASH: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-HEALTH-CHECK-NODE-PORT: "Kubernetes health check node port"
ipset create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
# KUBE-IPVS-IPS: "Addresses on the ipvs interface"
ipset create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-IPVS-IPS 10.96.0.30
# jumps from built-in chains (EnsureRule Prepend, in this order)
iptables -t nat -I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
iptables -t filter -I FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
iptables -t filter -I INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
iptables -t filter -I INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
iptables -t filter -I OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
# iptables-restore --noflush
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-NODE-PORT -p udp -m comment --comment "Kubernetes nodeport UDP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"""

AFFINITY = """\
# sysctls (kube-proxy start-up)
net.ipv4.vs.conntrack = 1
net.ipv4.vs.expire_nodest_conn = 1
net.ipv4.vs.expire_quiescent_template = 1
net.ipv4.ip_forward = 1
# kube-ipvs0 (dummy; kube-proxy leaves it down)
ip link add kube-ipvs0 type dummy
ip addr add 10.96.0.45/32 dev kube-ipvs0
# ipvsadm-save -n
-A -t 10.96.0.45:80 -s rr -p 10800
-a -t 10.96.0.45:80 -r 10.244.1.3:80 -m -w 1
-a -t 10.96.0.45:80 -r 10.244.2.3:80 -m -w 1
# ipsets (ipset -exist create; entries synced by difference)
# KUBE-LOOP-BACK: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
ipset create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-LOOP-BACK 10.244.1.3,tcp:80,10.244.1.3
# KUBE-CLUSTER-IP: "Kubernetes service cluster ip + port for masquerade purpose"
ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-CLUSTER-IP 10.96.0.45,tcp:80
# KUBE-EXTERNAL-IP: "Kubernetes service external ip + port for masquerade and filter purpose"
ipset create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-EXTERNAL-IP-LOCAL: "Kubernetes service external ip + port with externalTrafficPolicy=local"
ipset create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER: "Kubernetes service lb portal"
ipset create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-FW: "Kubernetes service load balancer ip + port for load balancer with sourceRange"
ipset create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-LOCAL: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
ipset create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-IP: "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-CIDR: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-TCP: "Kubernetes nodeport TCP port for masquerade purpose"
ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-TCP: "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-UDP: "Kubernetes nodeport UDP port for masquerade purpose"
ipset create KUBE-NODE-PORT-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-UDP: "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-SCTP-HASH: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-LOCAL-SCTP-HASH: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-HEALTH-CHECK-NODE-PORT: "Kubernetes health check node port"
ipset create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
# KUBE-IPVS-IPS: "Addresses on the ipvs interface"
ipset create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-IPVS-IPS 10.96.0.45
# jumps from built-in chains (EnsureRule Prepend, in this order)
iptables -t nat -I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
iptables -t filter -I FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
iptables -t filter -I INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
iptables -t filter -I INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
iptables -t filter -I OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
# iptables-restore --noflush
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"""

SCHED_SH = """\
# sysctls (kube-proxy start-up)
net.ipv4.vs.conntrack = 1
net.ipv4.vs.expire_nodest_conn = 1
net.ipv4.vs.expire_quiescent_template = 1
net.ipv4.ip_forward = 1
# kube-ipvs0 (dummy; kube-proxy leaves it down)
ip link add kube-ipvs0 type dummy
ip addr add 10.96.0.47/32 dev kube-ipvs0
# ipvsadm-save -n
-A -t 10.96.0.47:443 -s sh
-a -t 10.96.0.47:443 -r 10.244.1.4:8443 -m -w 1
-a -t 10.96.0.47:443 -r 10.244.2.4:8443 -m -w 1
# ipsets (ipset -exist create; entries synced by difference)
# KUBE-LOOP-BACK: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
ipset create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-LOOP-BACK 10.244.1.4,tcp:8443,10.244.1.4
# KUBE-CLUSTER-IP: "Kubernetes service cluster ip + port for masquerade purpose"
ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-CLUSTER-IP 10.96.0.47,tcp:443
# KUBE-EXTERNAL-IP: "Kubernetes service external ip + port for masquerade and filter purpose"
ipset create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-EXTERNAL-IP-LOCAL: "Kubernetes service external ip + port with externalTrafficPolicy=local"
ipset create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER: "Kubernetes service lb portal"
ipset create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-FW: "Kubernetes service load balancer ip + port for load balancer with sourceRange"
ipset create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-LOCAL: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
ipset create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-IP: "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-CIDR: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-TCP: "Kubernetes nodeport TCP port for masquerade purpose"
ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-TCP: "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-UDP: "Kubernetes nodeport UDP port for masquerade purpose"
ipset create KUBE-NODE-PORT-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-UDP: "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-SCTP-HASH: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-LOCAL-SCTP-HASH: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-HEALTH-CHECK-NODE-PORT: "Kubernetes health check node port"
ipset create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
# KUBE-IPVS-IPS: "Addresses on the ipvs interface"
ipset create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-IPVS-IPS 10.96.0.47
# jumps from built-in chains (EnsureRule Prepend, in this order)
iptables -t nat -I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
iptables -t filter -I FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
iptables -t filter -I INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
iptables -t filter -I INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
iptables -t filter -I OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
# iptables-restore --noflush
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"""

NO_ENDPOINTS = """\
# sysctls (kube-proxy start-up)
net.ipv4.vs.conntrack = 1
net.ipv4.vs.expire_nodest_conn = 1
net.ipv4.vs.expire_quiescent_template = 1
net.ipv4.ip_forward = 1
# kube-ipvs0 (dummy; kube-proxy leaves it down)
ip link add kube-ipvs0 type dummy
ip addr add 10.96.0.60/32 dev kube-ipvs0
# ipvsadm-save -n
-A -t 10.96.0.60:80 -s rr
-A -t 192.168.0.10:30082 -s rr
# ipsets (ipset -exist create; entries synced by difference)
# KUBE-LOOP-BACK: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
ipset create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
# KUBE-CLUSTER-IP: "Kubernetes service cluster ip + port for masquerade purpose"
ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-CLUSTER-IP 10.96.0.60,tcp:80
# KUBE-EXTERNAL-IP: "Kubernetes service external ip + port for masquerade and filter purpose"
ipset create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-EXTERNAL-IP-LOCAL: "Kubernetes service external ip + port with externalTrafficPolicy=local"
ipset create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER: "Kubernetes service lb portal"
ipset create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-FW: "Kubernetes service load balancer ip + port for load balancer with sourceRange"
ipset create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-LOCAL: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
ipset create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-IP: "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-CIDR: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-TCP: "Kubernetes nodeport TCP port for masquerade purpose"
ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
ipset add KUBE-NODE-PORT-TCP 30082
# KUBE-NODE-PORT-LOCAL-TCP: "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
# KUBE-NODE-PORT-UDP: "Kubernetes nodeport UDP port for masquerade purpose"
ipset create KUBE-NODE-PORT-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-UDP: "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-SCTP-HASH: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-LOCAL-SCTP-HASH: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-HEALTH-CHECK-NODE-PORT: "Kubernetes health check node port"
ipset create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
# KUBE-IPVS-IPS: "Addresses on the ipvs interface"
ipset create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-IPVS-IPS 10.96.0.60
# jumps from built-in chains (EnsureRule Prepend, in this order)
iptables -t nat -I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
iptables -t filter -I FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
iptables -t filter -I INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
iptables -t filter -I INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
iptables -t filter -I OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
# iptables-restore --noflush
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"""

ETP_LOCAL = """\
# sysctls (kube-proxy start-up)
net.ipv4.vs.conntrack = 1
net.ipv4.vs.expire_nodest_conn = 1
net.ipv4.vs.expire_quiescent_template = 1
net.ipv4.ip_forward = 1
# kube-ipvs0 (dummy; kube-proxy leaves it down)
ip link add kube-ipvs0 type dummy
ip addr add 10.96.0.40/32 dev kube-ipvs0
ip addr add 192.168.99.22/32 dev kube-ipvs0
ip addr add 203.0.113.10/32 dev kube-ipvs0
# ipvsadm-save -n
-A -t 10.96.0.40:80 -s rr
-a -t 10.96.0.40:80 -r 10.244.1.2:8080 -m -w 1
-a -t 10.96.0.40:80 -r 10.244.2.7:8080 -m -w 1
-A -t 192.168.99.22:80 -s rr
-a -t 192.168.99.22:80 -r 10.244.1.2:8080 -m -w 1
-A -t 203.0.113.10:80 -s rr
-a -t 203.0.113.10:80 -r 10.244.1.2:8080 -m -w 1
-A -t 192.168.0.10:30080 -s rr
-a -t 192.168.0.10:30080 -r 10.244.1.2:8080 -m -w 1
# ipsets (ipset -exist create; entries synced by difference)
# KUBE-LOOP-BACK: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
ipset create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-LOOP-BACK 10.244.1.2,tcp:8080,10.244.1.2
# KUBE-CLUSTER-IP: "Kubernetes service cluster ip + port for masquerade purpose"
ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-CLUSTER-IP 10.96.0.40,tcp:80
# KUBE-EXTERNAL-IP: "Kubernetes service external ip + port for masquerade and filter purpose"
ipset create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-EXTERNAL-IP-LOCAL: "Kubernetes service external ip + port with externalTrafficPolicy=local"
ipset create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-EXTERNAL-IP-LOCAL 192.168.99.22,tcp:80
# KUBE-LOAD-BALANCER: "Kubernetes service lb portal"
ipset create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-LOAD-BALANCER 203.0.113.10,tcp:80
# KUBE-LOAD-BALANCER-FW: "Kubernetes service load balancer ip + port for load balancer with sourceRange"
ipset create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-LOCAL: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
ipset create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
ipset add KUBE-LOAD-BALANCER-LOCAL 203.0.113.10,tcp:80
# KUBE-LOAD-BALANCER-SOURCE-IP: "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
# KUBE-LOAD-BALANCER-SOURCE-CIDR: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-TCP: "Kubernetes nodeport TCP port for masquerade purpose"
ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
ipset add KUBE-NODE-PORT-TCP 30080
# KUBE-NODE-PORT-LOCAL-TCP: "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
ipset add KUBE-NODE-PORT-LOCAL-TCP 30080
# KUBE-NODE-PORT-UDP: "Kubernetes nodeport UDP port for masquerade purpose"
ipset create KUBE-NODE-PORT-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-LOCAL-UDP: "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
ipset create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
# KUBE-NODE-PORT-SCTP-HASH: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-NODE-PORT-LOCAL-SCTP-HASH: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
ipset create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
# KUBE-HEALTH-CHECK-NODE-PORT: "Kubernetes health check node port"
ipset create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
ipset add KUBE-HEALTH-CHECK-NODE-PORT 31000
# KUBE-IPVS-IPS: "Addresses on the ipvs interface"
ipset create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
ipset add KUBE-IPVS-IPS 10.96.0.40
ipset add KUBE-IPVS-IPS 192.168.99.22
ipset add KUBE-IPVS-IPS 203.0.113.10
# jumps from built-in chains (EnsureRule Prepend, in this order)
iptables -t nat -I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
iptables -t nat -I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
iptables -t filter -I FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
iptables -t filter -I INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
iptables -t filter -I INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
iptables -t filter -I INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
iptables -t filter -I OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
# iptables-restore --noflush
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-LOAD-BALANCER -m comment --comment "Kubernetes service load balancer ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port with externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port with externalTrafficPolicy=local" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -m addrtype --dst-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
COMMIT
"""


def test_cluster_ip_three_endpoints_rr():
    assert ipvs.render_text(ipvs.plan(V(WEB))) == CLUSTER_IP


def test_nodeport_one_virtual_server_per_node_ip():
    assert ipvs.render_text(ipvs.plan(V(NP, ips=("192.168.0.10", "172.18.0.2")))) == NODEPORT


def test_client_ip_affinity_is_persistence():
    assert ipvs.render_text(ipvs.plan(V(STICKY))) == AFFINITY


def test_per_service_scheduler_overrides_config():
    assert ipvs.render_text(ipvs.plan(V(SH, ipvs_scheduler="wlc"))) == SCHED_SH


def test_no_endpoints_keeps_an_empty_virtual_server_and_no_reject():
    text = ipvs.render_text(ipvs.plan(V(EMPTY)))
    assert text == NO_ENDPOINTS
    assert "has no endpoints" not in text and "-j REJECT" not in text.replace(
        "-m set --match-set KUBE-IPVS-IPS dst -j REJECT", "")


def test_external_traffic_policy_local():
    assert ipvs.render_text(ipvs.plan(V(LOCAL))) == ETP_LOCAL


# --- ipsets --------------------------------------------------------------------------------------

# The table of /work/shared/reference/kube-proxy.md §4 (checked against ipset.go), plus the
# KUBE-IPVS-IPS set of the KUBE-IPVS-FILTER layout; in upstream's ipsetInfo order.
REFERENCE_IPSETS = [
    ("KUBE-LOOP-BACK", "hash:ip,port,ip", "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    ("KUBE-CLUSTER-IP", "hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose"),
    ("KUBE-EXTERNAL-IP", "hash:ip,port", "Kubernetes service external ip + port for masquerade and filter purpose"),
    ("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port", "Kubernetes service external ip + port with externalTrafficPolicy=local"),
    ("KUBE-LOAD-BALANCER", "hash:ip,port", "Kubernetes service lb portal"),
    ("KUBE-LOAD-BALANCER-FW", "hash:ip,port",
     "Kubernetes service load balancer ip + port for load balancer with sourceRange"),
    ("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port",
     "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"),
    ("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip",
     "Kubernetes service load balancer ip + port + source IP for packet filter purpose"),
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net",
     "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"),
    ("KUBE-NODE-PORT-TCP", "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"),
    ("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    ("KUBE-NODE-PORT-UDP", "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    ("KUBE-NODE-PORT-SCTP-HASH", "hash:ip,port",
     "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port",
     "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"),
    ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port", "Kubernetes health check node port"),
    ("KUBE-IPVS-IPS", "hash:ip", "Addresses on the ipvs interface"),
]


def test_ipset_names_types_comments_exactly_as_upstream():
    plan = ipvs.plan(V())
    assert [(s.name, s.type, s.comment) for s in plan.ipsets] == REFERENCE_IPSETS
    assert all(len(s.name) <= 31 for s in plan.ipsets)  # IPSET_MAXNAMELEN - 1
    assert {s.name: s.create_options for s in plan.ipsets}["KUBE-NODE-PORT-TCP"] == "range 0-65535"
    assert {s.name: s.create_options for s in plan.ipsets}["KUBE-CLUSTER-IP"] == "family inet hashsize 1024 maxelem 65536"


def test_ipset_entries_and_glue_for_every_kind_of_service():
    sctp = SP("ns4", "sc", "", "SCTP", 9, "10.96.0.70", node_port=30090, external_policy_local=True,
              external_ips=("192.168.99.23",), endpoints=(E("10.244.1.6", 9, node=N),))
    fw = SP("ns8", "fw", "https", "TCP", 443, "10.96.0.80", load_balancer_ips=("203.0.113.20",),
            load_balancer_source_ranges=(" 198.51.100.0/24",), endpoints=(E("10.244.2.8", 443, node="node-b"),))
    plan = ipvs.plan(V(WEB, NP, sctp, fw, ips=("192.168.0.10", "127.0.0.1")))
    sets = {s.name: s.entries for s in plan.ipsets}
    assert sets["KUBE-NODE-PORT-SCTP-HASH"] == ("192.168.0.10,sctp:30090",)  # loopback gets no NodePort
    assert sets["KUBE-NODE-PORT-LOCAL-SCTP-HASH"] == ("192.168.0.10,sctp:30090",)
    assert sets["KUBE-EXTERNAL-IP-LOCAL"] == ("192.168.99.23,sctp:9",)
    assert sets["KUBE-EXTERNAL-IP"] == ()
    assert sets["KUBE-LOAD-BALANCER-FW"] == ("203.0.113.20,tcp:443",)
    assert sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == ("203.0.113.20,tcp:443,198.51.100.0/24",)
    assert sets["KUBE-LOAD-BALANCER-SOURCE-IP"] == ()  # the node IP is not in the source ranges...
    # ... so node -> LB VIP is dropped by KUBE-IPVS-OUT-FILTER (issue #119656).
    assert ("-A KUBE-IPVS-OUT-FILTER -s 203.0.113.20 -m ipvs --vaddr 203.0.113.20 --vproto tcp --vport 443 -j DROP"
            in plan.iptables.splitlines())
    assert ("-A KUBE-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load "
            "balancer with sourceRange\" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL"
            in plan.iptables.splitlines())
    assert ("-A KUBE-NODE-PORT -p sctp -m comment --comment \"Kubernetes nodeport SCTP port with externalTrafficPolicy="
            "local with type 'hash ip:port'\" -m set --match-set KUBE-NODE-PORT-LOCAL-SCTP-HASH dst,dst -j RETURN"
            in plan.iptables.splitlines())
    assert sets["KUBE-IPVS-IPS"] == tuple(sorted(plan.addresses))

    allowed = dataclasses.replace(fw, load_balancer_source_ranges=("192.168.0.0/16",))
    plan = ipvs.plan(V(allowed))
    sets = {s.name: s.entries for s in plan.ipsets}
    assert sets["KUBE-LOAD-BALANCER-SOURCE-IP"] == ("203.0.113.20,tcp:443,203.0.113.20",)
    assert "KUBE-IPVS-OUT-FILTER -s" not in plan.iptables


def test_external_ip_that_is_a_node_address_is_not_bound():
    svc = dataclasses.replace(WEB, external_ips=("192.168.0.10", "192.168.99.22"))
    plan = ipvs.plan(V(svc))
    assert plan.addresses == ("10.96.0.10", "192.168.99.22")
    assert plan.virtual_server("192.168.0.10:80/TCP") is not None
    assert {s.name: s.entries for s in plan.ipsets}["KUBE-EXTERNAL-IP"] == ("192.168.0.10,tcp:80", "192.168.99.22,tcp:80")


def test_nodeport_addresses_limit_the_node_ips():
    ips = ("192.168.0.10", "172.18.0.2", "127.0.0.1")
    keys = [vs.key for vs in ipvs.plan(V(EMPTY, ips=ips)).virtual_servers]
    assert keys == ["10.96.0.60:80/TCP", "192.168.0.10:30082/TCP", "172.18.0.2:30082/TCP"]
    keys = [vs.key for vs in ipvs.plan(V(EMPTY, ips=ips, nodeport_addresses=("172.18.0.0/16",))).virtual_servers]
    assert keys == ["10.96.0.60:80/TCP", "172.18.0.2:30082/TCP"]
    keys = [vs.key for vs in ipvs.plan(V(EMPTY, ips=ips, nodeport_addresses=("primary",))).virtual_servers]
    assert keys == ["10.96.0.60:80/TCP", "192.168.0.10:30082/TCP"]
    # No node IP matches: upstream skips the NodePort part (the set entry included).
    plan = ipvs.plan(V(EMPTY, ips=ips, nodeport_addresses=("10.0.0.0/8",)))
    assert [vs.key for vs in plan.virtual_servers] == ["10.96.0.60:80/TCP"]
    assert {s.name: s.entries for s in plan.ipsets}["KUBE-NODE-PORT-TCP"] == ()


_CIP = '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" '


@pytest.mark.parametrize("cfg, rule", [
    ({}, _CIP + "-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"),
    ({"masquerade_all": True}, _CIP + "-m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"),
    ({"cluster_cidr": None}, _CIP + "-m set --match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"),
])
def test_cluster_ip_masquerade_rule_variants(cfg, rule):
    assert rule in ipvs.plan(V(WEB, **cfg)).iptables.splitlines()


def test_external_ip_cluster_policy_glue():
    svc = dataclasses.replace(WEB, external_ips=("192.168.99.22",))
    lines = ipvs.plan(V(svc, random_fully=False)).iptables.splitlines()
    c = '-m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose"'
    i = lines.index(f"-A KUBE-SERVICES {c} -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ")
    assert lines[i + 1:i + 3] == [
        (f"-A KUBE-SERVICES {c} -m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in "
         "-m addrtype ! --src-type LOCAL -j ACCEPT"),
        f"-A KUBE-SERVICES {c} -m set --match-set KUBE-EXTERNAL-IP dst,dst -m addrtype --dst-type LOCAL -j ACCEPT",
    ]
    assert ('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
            in lines)


# --- schedulers, persistence, endpoints ----------------------------------------------------------

@pytest.mark.parametrize("sched", ipvs.SCHEDULERS)
def test_every_scheduler(sched):
    vs = ipvs.plan(V(WEB, ipvs_scheduler=sched)).virtual_servers[0]
    assert vs.scheduler == sched
    assert vs.flags == (0x10 if sched == "mh" else 0)
    line = ipvs.ipvsadm_service_line(vs)
    assert line == f"-A -t 10.96.0.10:80 -s {sched}" + (" -b mh-port" if sched == "mh" else "")


def test_mh_with_affinity_and_per_service_override():
    svc = dataclasses.replace(STICKY, scheduler="mh", node_port=30045)
    plan = ipvs.plan(V(svc, ipvs_scheduler="lc"))
    assert {vs.scheduler for vs in plan.virtual_servers} == {"mh"}
    assert {vs.flags for vs in plan.virtual_servers} == {0x11}
    assert {vs.persistence for vs in plan.virtual_servers} == {10800}
    assert ipvs.ipvsadm_service_line(plan.virtual_servers[1]) == "-A -t 192.168.0.10:30045 -s mh -p 10800 -b mh-port"


def test_unknown_scheduler_is_a_user_error():
    with pytest.raises(TopologyError, match="unknown IPVS scheduler 'fifo'"):
        ipvs.plan(V(dataclasses.replace(WEB, scheduler="fifo")))
    with pytest.raises(TopologyError, match="ipvsScheduler"):
        ipvs.plan(V(WEB, ipvs_scheduler="xx"))


def test_terminating_endpoints_follow_upstream():
    """syncEndpoint writes Weight 1 for every endpoint CategorizeEndpoints selects: ready ones, else
    the serving+terminating fallback. Weight 0 is only the graceful drain of a removed one."""
    eps = (E("10.244.1.5", 80, node=N, ready=False, serving=True, terminating=True),
           E("10.244.2.5", 80, node="node-b", ready=False, serving=False, terminating=True),
           E("10.244.2.6", 80, node="node-b", ready=False))
    svc = SP("ns9", "term", "", "TCP", 80, "10.96.0.90", endpoints=eps)
    plan = ipvs.plan(V(svc))
    assert plan.virtual_servers[0].real_servers == (ipvs.RealServer("10.244.1.5", 80, 1),)
    # Hairpin entries cover every local endpoint, usable or not (upstream loops over endpointsMap).
    assert {s.name: s.entries for s in plan.ipsets}["KUBE-LOOP-BACK"] == ("10.244.1.5,tcp:80,10.244.1.5",)
    ready = dataclasses.replace(svc, endpoints=eps + (E("10.244.2.9", 80, node="node-b"),))
    assert ipvs.plan(V(ready)).virtual_servers[0].real_servers == (ipvs.RealServer("10.244.2.9", 80, 1),)
    gone = dataclasses.replace(svc, endpoints=eps[1:])
    assert ipvs.plan(V(gone)).virtual_servers[0].real_servers == ()


def test_etp_local_without_local_endpoints_falls_back_to_cluster():
    """PR #97081: with no local endpoint the external virtual servers get the cluster endpoints
    (so local pods still reach the service)."""
    svc = dataclasses.replace(LOCAL, endpoints=(E("10.244.2.7", 8080, node="node-b"),))
    for vs in ipvs.plan(V(svc)).virtual_servers:
        assert vs.real_servers == (ipvs.RealServer("10.244.2.7", 8080),), vs.key


def test_internal_traffic_policy_local():
    svc = dataclasses.replace(WEB, internal_policy_local=True)
    (vs,) = ipvs.plan(V(svc)).virtual_servers
    assert [rs.address for rs in vs.real_servers] == ["10.244.1.10:9376", "10.244.1.3:9376"]
    remote = dataclasses.replace(svc, endpoints=(E("10.244.2.4", 9376, node="node-b"),))
    assert ipvs.plan(V(remote)).virtual_servers[0].real_servers == ()


def test_ipv6_is_skipped():
    v6 = SP("default", "v6", "", "TCP", 80, "fd00::10", endpoints=(E("fd00:244::3", 80, node=N),))
    mixed = dataclasses.replace(WEB, external_ips=("2001:db8::1",), endpoints=WEB.endpoints + (E("fd00:244::4", 80),))
    plan = ipvs.plan(V(v6, mixed))
    assert [vs.key for vs in plan.virtual_servers] == ["10.96.0.10:80/TCP"]
    assert len(plan.virtual_servers[0].real_servers) == 3


# --- JSON ----------------------------------------------------------------------------------------

def test_plan_json_round_trip():
    fw = SP("ns8", "fw", "https", "TCP", 443, "10.96.0.80", load_balancer_ips=("203.0.113.20",),
            load_balancer_source_ranges=("198.51.100.0/24",), endpoints=(E("10.244.2.8", 443, node="node-b"),))
    plan = ipvs.plan(V(WEB, NP, STICKY, SH, EMPTY, LOCAL, fw, ips=("192.168.0.10", "172.18.0.2")))
    text = plan.to_json()
    back = ipvs.IpvsPlan.from_json(text)
    assert back == plan
    assert back.to_json() == text
    assert ipvs.IpvsPlan.from_json(json_loads(text)) == plan
    with pytest.raises(ValueError, match="version"):
        ipvs.IpvsPlan.from_json('{"version": 9}')


def json_loads(text):
    import json
    return json.loads(text)


# --- diff ----------------------------------------------------------------------------------------

def test_diff_of_identical_plans_is_empty():
    plan = ipvs.plan(V(WEB, NP, LOCAL))
    d = ipvs.diff(plan, ipvs.plan(V(WEB, NP, LOCAL)))
    assert d.empty and ipvs.describe(d) == ""


def test_diff_from_nothing_creates_everything():
    plan = ipvs.plan(V(WEB))
    d = ipvs.diff(None, plan)
    assert d.add_services == plan.virtual_servers and d.bind == plan.addresses
    assert d.iptables and d.jumps and d.sysctls
    assert all(ch.create for ch in d.ipsets) and len(d.ipsets) == 17


DIFF_TEXT = """\
ipset del KUBE-LOOP-BACK 10.244.1.3,tcp:80,10.244.1.3
ipset del KUBE-LOOP-BACK 10.244.1.3,tcp:9376,10.244.1.3
ipset add KUBE-LOOP-BACK 10.244.1.11,tcp:9376,10.244.1.11
ipset add KUBE-LOOP-BACK 10.244.1.4,tcp:8443,10.244.1.4
ipset del KUBE-CLUSTER-IP 10.96.0.45,tcp:80
ipset add KUBE-CLUSTER-IP 10.96.0.47,tcp:443
ipset del KUBE-IPVS-IPS 10.96.0.45
ipset add KUBE-IPVS-IPS 10.96.0.47
ipvsadm -A -t 10.96.0.47:443 -s sh
ip addr add 10.96.0.47/32 dev kube-ipvs0
ipvsadm -a -t 10.96.0.47:443 -r 10.244.1.4:8443 -m -w 1
ipvsadm -a -t 10.96.0.47:443 -r 10.244.2.4:8443 -m -w 1
ipvsadm -E -u 10.96.0.30:53 -s lc
ipvsadm -E -u 192.168.0.10:30053 -s lc
ipvsadm -E -u 172.18.0.2:30053 -s lc
ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.11:9376 -m -w 1
ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.3:9376
ip addr del 10.96.0.45/32 dev kube-ipvs0
ipvsadm -D -t 10.96.0.45:80
"""


def test_diff_touches_only_what_changed():
    old = ipvs.plan(V(WEB, NP, STICKY, ips=("192.168.0.10", "172.18.0.2")))
    web2 = dataclasses.replace(WEB, endpoints=WEB.endpoints[1:] + (E("10.244.1.11", 9376, node=N),))
    np2 = dataclasses.replace(NP, scheduler="lc")
    new = ipvs.plan(V(web2, np2, SH, ips=("192.168.0.10", "172.18.0.2")))
    d = ipvs.diff(old, new)
    assert [vs.key for vs in d.add_services] == ["10.96.0.47:443/TCP"]
    assert [vs.key for vs in d.edit_services] == ["10.96.0.30:53/UDP", "192.168.0.10:30053/UDP", "172.18.0.2:30053/UDP"]
    assert [vs.key for vs in d.delete_services] == ["10.96.0.45:80/TCP"]
    assert [(ch.vs.key, [r.address for r in ch.add], [r.address for r in ch.delete]) for ch in d.destinations] == [
        ("10.96.0.10:80/TCP", ["10.244.1.11:9376"], ["10.244.1.3:9376"])]
    assert (d.bind, d.unbind) == (("10.96.0.47",), ("10.96.0.45",))
    assert not d.iptables and not d.jumps and not d.sysctls and not d.destroy_ipsets
    assert ipvs.describe(d) == DIFF_TEXT


def test_diff_weight_change_is_an_edit_of_the_destination():
    plan = ipvs.plan(V(WEB))
    vs = plan.virtual_servers[0]
    drained = dataclasses.replace(vs, real_servers=(dataclasses.replace(vs.real_servers[0], weight=0),) + vs.real_servers[1:])
    d = ipvs.diff(dataclasses.replace(plan, virtual_servers=(drained,)), plan)
    assert [(ch.vs.key, ch.update) for ch in d.destinations] == [("10.96.0.10:80/TCP", (vs.real_servers[0],))]
    assert ipvs.describe(d) == "ipvsadm -e -t 10.96.0.10:80 -r 10.244.1.10:9376 -m -w 1\n"


def test_ipset_changes_and_restore_text():
    old = ipvs.plan(V(WEB)).ipsets
    new = ipvs.plan(V(dataclasses.replace(WEB, cluster_ip="10.96.0.11"))).ipsets
    changes, destroy = ipvs.ipset_changes(old, new + (ipvs.IpsetSpec("KUBE-X", "hash:ip", "x", ("1.2.3.4",)),))
    assert kipset.restore_text(changes, ("KUBE-OLD",)) == (
        "del KUBE-CLUSTER-IP 10.96.0.10,tcp:80 -exist\n"
        "add KUBE-CLUSTER-IP 10.96.0.11,tcp:80 -exist\n"
        "del KUBE-IPVS-IPS 10.96.0.10 -exist\n"
        "add KUBE-IPVS-IPS 10.96.0.11 -exist\n"
        "create KUBE-X hash:ip family inet hashsize 1024 maxelem 65536 -exist\n"
        "flush KUBE-X\n"
        "add KUBE-X 1.2.3.4 -exist\n"
        "destroy KUBE-OLD\n")
    assert destroy == ()
    assert ipvs.ipset_changes(new, new[:-1])[1] == ("KUBE-IPVS-IPS",)


# --- the appliers' pure parts (no kernel needed) -------------------------------------------------

def _nla(kind, payload):
    size = 4 + len(payload)
    return struct.pack("HH", size, kind) + payload + b"\0" * ((4 - size % 4) % 4)


def _kernel_reply(service=None, dest=None):
    """A generic-netlink IPVS reply laid out as the kernel's ip_vs_genl_fill_service/_dest write it:
    addresses as 16-byte nf_inet_addr, IPVS_DEST_ATTR_ADDR before IPVS_DEST_ATTR_ADDR_FAMILY."""
    from pyroute2.netlink.generic import ipvs as genl
    body = struct.pack("BBH", genl.IPVS_CMD_NEW_SERVICE, 1, 0)
    if service:
        body += _nla(1 | 0x8000, service)
    if dest:
        body += _nla(2 | 0x8000, dest)
    msg = genl.ipvsmsg(struct.pack("IHHII", 16 + len(body), 30, 0, 1, 0) + body)
    msg.decode()
    return msg


def _addr16(ip):
    return socket.inet_aton(ip) + b"\0" * 12


def test_parse_service_from_a_kernel_reply():
    svc = (_nla(1, struct.pack("H", 2)) + _nla(2, struct.pack("H", 6)) + _nla(3, _addr16("10.96.0.45"))
           + _nla(4, struct.pack(">H", 80)) + _nla(6, b"mh\0") + _nla(7, struct.pack("II", 0x13, 0xFFFFFFFF))
           + _nla(8, struct.pack("I", 10800)) + _nla(9, socket.inet_aton("255.255.255.255")))
    assert kipvs.parse_service(_kernel_reply(service=svc)) == {
        "protocol": "tcp", "ip": "10.96.0.45", "port": 80, "fwmark": 0, "scheduler": "mh",
        "flags": 0x11, "persistence": 10800}  # the kernel's HASHED bit (0x2) is dropped
    plain = svc.replace(struct.pack("II", 0x13, 0xFFFFFFFF), struct.pack("II", 0x2, 0xFFFFFFFF))
    assert kipvs.parse_service(_kernel_reply(service=plain))["persistence"] is None


def test_parse_dest_reads_the_real_forwarding_method():
    dest = (_nla(1, _addr16("10.244.1.3")) + _nla(11, struct.pack("H", 2)) + _nla(2, struct.pack(">H", 9376))
            + _nla(3, struct.pack("I", 0)) + _nla(4, struct.pack("I", 1)) + _nla(5, struct.pack("I", 0))
            + _nla(6, struct.pack("I", 0)) + _nla(7, struct.pack("I", 2)) + _nla(8, struct.pack("I", 5)))
    msg = _kernel_reply(dest=dest)
    assert kipvs.parse_dest(msg) == {"ip": "10.244.1.3", "port": 9376, "weight": 1, "forward": "masq",
                                     "active": 2, "inactive": 5, "conns": 0}
    with_stats = dest + _nla(10, _nla(1, struct.pack("I", 7)))  # IPVS_DEST_ATTR_STATS { CONNS 7 }
    assert kipvs.parse_dest(_kernel_reply(dest=with_stats))["conns"] == 7
    from pyroute2.ipvs import IPVSDest
    assert IPVSDest.from_message(msg)["fwd_method"] == 3  # the pyroute2 0.9.7 quirk parse_dest avoids


def test_netlink_requests_use_masquerade_and_full_service_specs():
    vs = ipvs.plan(V(STICKY)).virtual_servers[0]
    attrs = dict(kipvs._service(vs).dump_nla()["attrs"])
    assert attrs["IPVS_SVC_ATTR_SCHED_NAME"] == "rr"
    assert attrs["IPVS_SVC_ATTR_FLAGS"] == {"flags": 1, "mask": 0xFFFF}
    assert attrs["IPVS_SVC_ATTR_TIMEOUT"] == 10800
    assert attrs["IPVS_SVC_ATTR_NETMASK"] == "255.255.255.255"
    dest = dict(kipvs._dest(vs.real_servers[0]).dump_nla()["attrs"])
    assert (dest["IPVS_DEST_ATTR_FWD_METHOD"], dest["IPVS_DEST_ATTR_WEIGHT"]) == (0, 1)


def test_table_and_ipvsadm_save_of_a_plan():
    plan = ipvs.plan(V(STICKY, EMPTY))
    tbl = kipvs.table(plan)
    assert list(tbl["services"]) == ["10.96.0.45:80/TCP", "10.96.0.60:80/TCP", "192.168.0.10:30082/TCP"]
    assert tbl["services"]["10.96.0.45:80/TCP"]["destinations"]["10.244.2.3:80"] == {
        "ip": "10.244.2.3", "port": 80, "weight": 1, "forward": "masq"}
    assert tbl["addresses"] == ["10.96.0.45", "10.96.0.60"]
    assert kipvs.save_text(tbl) == (
        "-A -t 10.96.0.45:80 -s rr -p 10800\n"
        "-a -t 10.96.0.45:80 -r 10.244.1.3:80 -m -w 1\n"
        "-a -t 10.96.0.45:80 -r 10.244.2.3:80 -m -w 1\n"
        "-A -t 10.96.0.60:80 -s rr\n"
        "-A -t 192.168.0.10:30082 -s rr\n")


def test_restore_text_inserts_missing_jumps_after_the_chain_lines():
    plan = ipvs.plan(V(WEB))
    jumps = {"nat": ['-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'],
             "filter": ['-I INPUT 1 -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER']}
    lines = kipvs._restore_text(plan, jumps).splitlines()
    assert lines[:7] == ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-NODE-PORT - [0:0]",
                         ":KUBE-LOAD-BALANCER - [0:0]", ":KUBE-MARK-MASQ - [0:0]", jumps["nat"][0]]
    i = lines.index(":KUBE-IPVS-OUT-FILTER - [0:0]")
    assert lines[i + 1] == jumps["filter"][0]
    assert kipvs._restore_text(plan, {}) == plan.iptables


SAVED = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:OTHER - [0:0]
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -j OTHER
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A OTHER -j KUBE-FORWARD
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
COMMIT
"""


def test_cleanup_iptables_text():
    # KUBE-FORWARD is still used by a foreign chain: its jump from FORWARD goes, the chain stays.
    assert kipvs.cleanup_iptables_text(SAVED) == (
        "*filter\n"
        '-D INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER\n'
        '-D FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD\n'
        ":KUBE-IPVS-FILTER - [0:0]\n"
        "-X KUBE-IPVS-FILTER\n"
        "COMMIT\n"
        "*nat\n"
        '-D POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING\n'
        ":KUBE-POSTROUTING - [0:0]\n"
        ":KUBE-MARK-MASQ - [0:0]\n"
        "-X KUBE-POSTROUTING\n"
        "-X KUBE-MARK-MASQ\n"
        "COMMIT\n")
    assert kipvs.cleanup_iptables_text("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n") == ""
