"""Golden tests for the nftables-mode renderer (testbed.render.nftables).

Every expected transaction is written out in full, in the text sigs.k8s.io/knftables hands to
`nft -f`. Chain-name hashes are pinned against upstream's TestOverallNFTablesRules (proxier_test.go
@ 81810de6), whose per-service lines are checked verbatim in test_upstream_overall_lines. Marks are
0x00004000 because kube-proxy formats them with Go's "%#08x" (upstream's fake proxier uses 0x4000).
"""
import dataclasses
import json

import pytest

from testbed.proxy import Endpoint as E
from testbed.proxy import NodeView, ProxyConfig
from testbed.proxy import ServicePort as SP
from testbed.render import names
from testbed.render import nftables as nft

N = "node-a"


def V(*svcs, **cfg):
    return NodeView(N, ("192.168.0.10",), config=ProxyConfig(**cfg), services=svcs)


WEB = SP("default", "web", "http", "TCP", 80, "10.96.0.20", endpoints=(
    E("10.244.2.7", 8080, node="node-b"), E("10.244.1.2", 8080, node=N), E("10.244.1.10", 8080, node=N)))
NODEPORT = SP("default", "np", "", "UDP", 53, "10.96.0.30", node_port=30053,
              endpoints=(E("10.244.2.7", 5353, node="node-b"),))
EMPTY = SP("ns6", "empty", "p80", "TCP", 80, "10.96.0.60", node_port=30082)
REMOTE_ONLY = SP("ns3", "remote-only", "p80", "TCP", 80, "10.96.0.50", node_port=30081, external_ips=("192.168.99.22",),
                 load_balancer_ips=("203.0.113.11",), external_policy_local=True, health_check_node_port=31001,
                 endpoints=(E("10.244.2.9", 80, node="node-b"),))
STICKY = SP("ns5", "sticky", "p80", "TCP", 80, "10.96.0.45", session_affinity_timeout=10800,
            endpoints=(E("10.244.1.3", 80, node=N), E("10.244.2.3", 80, node="node-b")))
LB = SP("ns2", "lb", "p80", "TCP", 80, "10.96.0.40", node_port=30080, load_balancer_ips=("203.0.113.10",),
        load_balancer_source_ranges=(" 198.51.100.0/24", "192.168.0.0/24"),
        endpoints=(E("10.244.1.2", 8080, node=N), E("10.244.2.7", 8080, node="node-b")))


BASE = """\
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy filter-prerouting-pre-dnat
delete chain ip kube-proxy filter-prerouting-pre-dnat
add chain ip kube-proxy filter-output-pre-dnat
delete chain ip kube-proxy filter-output-pre-dnat
add chain ip kube-proxy filter-forward
delete chain ip kube-proxy filter-forward
add chain ip kube-proxy filter-input
delete chain ip kube-proxy filter-input
add chain ip kube-proxy filter-output
delete chain ip kube-proxy filter-output
add chain ip kube-proxy nat-prerouting
delete chain ip kube-proxy nat-prerouting
add chain ip kube-proxy nat-output
delete chain ip kube-proxy nat-output
add chain ip kube-proxy nat-postrouting
delete chain ip kube-proxy nat-postrouting
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
flush chain ip kube-proxy filter-prerouting-pre-dnat
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
flush chain ip kube-proxy filter-output-pre-dnat
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
flush chain ip kube-proxy filter-forward
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
flush chain ip kube-proxy filter-input
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
flush chain ip kube-proxy filter-output
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
flush chain ip kube-proxy nat-prerouting
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
flush chain ip kube-proxy nat-output
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
flush chain ip kube-proxy nat-postrouting
add chain ip kube-proxy nodeport-endpoints-check
flush chain ip kube-proxy nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add chain ip kube-proxy service-endpoints-check
flush chain ip kube-proxy service-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add chain ip kube-proxy firewall-check
flush chain ip kube-proxy firewall-check
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add chain ip kube-proxy services
flush chain ip kube-proxy services
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-prerouting jump services
add chain ip kube-proxy masquerading
flush chain ip kube-proxy masquerading
add rule ip kube-proxy nat-postrouting jump masquerading
add chain ip kube-proxy cluster-ips-check
flush chain ip kube-proxy cluster-ips-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add chain ip kube-proxy mark-for-masquerade
flush chain ip kube-proxy mark-for-masquerade
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x00004000
add rule ip kube-proxy masquerading mark and 0x00004000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x00004000
add rule ip kube-proxy masquerading masquerade fully-random
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 10.96.0.0/12 } drop comment "Drop traffic to unallocated ClusterIPs"
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
flush set ip kube-proxy nodeport-ips
add element ip kube-proxy nodeport-ips { 192.168.0.10 }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
flush chain ip kube-proxy reject-chain
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
flush set ip kube-proxy cluster-ips
flush map ip kube-proxy service-ips
flush map ip kube-proxy firewall-ips
flush map ip kube-proxy no-endpoint-services
flush map ip kube-proxy no-endpoint-nodeports
flush map ip kube-proxy service-nodeports
"""

GOLDEN_CLUSTER_IP_3_ENDPOINTS = BASE + """\
add chain ip kube-proxy endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080
flush chain ip kube-proxy endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080
add chain ip kube-proxy endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080
flush chain ip kube-proxy endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080
add chain ip kube-proxy endpoint-BZGFZVVG-default/web/tcp/http__10.244.2.7/8080
flush chain ip kube-proxy endpoint-BZGFZVVG-default/web/tcp/http__10.244.2.7/8080
add chain ip kube-proxy service-SUSTUHLJ-default/web/tcp/http
flush chain ip kube-proxy service-SUSTUHLJ-default/web/tcp/http
add element ip kube-proxy cluster-ips { 10.96.0.20 }
add element ip kube-proxy service-ips { 10.96.0.20 . tcp . 80 : goto service-SUSTUHLJ-default/web/tcp/http }
add rule ip kube-proxy service-SUSTUHLJ-default/web/tcp/http ip daddr 10.96.0.20 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy service-SUSTUHLJ-default/web/tcp/http numgen random mod 3 vmap { 0 : goto endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080 , 1 : goto endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080 , 2 : goto endpoint-BZGFZVVG-default/web/tcp/http__10.244.2.7/8080 }
add rule ip kube-proxy endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080 ip saddr 10.244.1.10 jump mark-for-masquerade
add rule ip kube-proxy endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080 meta l4proto tcp dnat to 10.244.1.10:8080
add rule ip kube-proxy endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080 ip saddr 10.244.1.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080 meta l4proto tcp dnat to 10.244.1.2:8080
add rule ip kube-proxy endpoint-BZGFZVVG-default/web/tcp/http__10.244.2.7/8080 ip saddr 10.244.2.7 jump mark-for-masquerade
add rule ip kube-proxy endpoint-BZGFZVVG-default/web/tcp/http__10.244.2.7/8080 meta l4proto tcp dnat to 10.244.2.7:8080
"""

GOLDEN_NODEPORT = BASE + """\
add chain ip kube-proxy endpoint-ND6X6NZL-default/np/udp/__10.244.2.7/5353
flush chain ip kube-proxy endpoint-ND6X6NZL-default/np/udp/__10.244.2.7/5353
add chain ip kube-proxy service-22UURK5A-default/np/udp/
flush chain ip kube-proxy service-22UURK5A-default/np/udp/
add chain ip kube-proxy external-22UURK5A-default/np/udp/
flush chain ip kube-proxy external-22UURK5A-default/np/udp/
add element ip kube-proxy cluster-ips { 10.96.0.30 }
add element ip kube-proxy service-ips { 10.96.0.30 . udp . 53 : goto service-22UURK5A-default/np/udp/ }
add element ip kube-proxy service-nodeports { udp . 30053 : goto external-22UURK5A-default/np/udp/ }
add rule ip kube-proxy service-22UURK5A-default/np/udp/ ip daddr 10.96.0.30 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy external-22UURK5A-default/np/udp/ jump mark-for-masquerade
add rule ip kube-proxy external-22UURK5A-default/np/udp/ goto service-22UURK5A-default/np/udp/
add rule ip kube-proxy service-22UURK5A-default/np/udp/ numgen random mod 1 vmap { 0 : goto endpoint-ND6X6NZL-default/np/udp/__10.244.2.7/5353 }
add rule ip kube-proxy endpoint-ND6X6NZL-default/np/udp/__10.244.2.7/5353 ip saddr 10.244.2.7 jump mark-for-masquerade
add rule ip kube-proxy endpoint-ND6X6NZL-default/np/udp/__10.244.2.7/5353 meta l4proto udp dnat to 10.244.2.7:5353
"""

GOLDEN_NO_ENDPOINTS = BASE + """\
add element ip kube-proxy cluster-ips { 10.96.0.60 }
add element ip kube-proxy no-endpoint-services { 10.96.0.60 . tcp . 80 comment "ns6/empty:p80" : goto reject-chain }
add element ip kube-proxy no-endpoint-nodeports { tcp . 30082 comment "ns6/empty:p80" : goto reject-chain }
"""

GOLDEN_LOCAL_NO_LOCAL_ENDPOINTS = BASE + """\
add chain ip kube-proxy endpoint-FRCXSVBL-ns3/remote-only/tcp/p80__10.244.2.9/80
flush chain ip kube-proxy endpoint-FRCXSVBL-ns3/remote-only/tcp/p80__10.244.2.9/80
add chain ip kube-proxy service-ZREBO3AX-ns3/remote-only/tcp/p80
flush chain ip kube-proxy service-ZREBO3AX-ns3/remote-only/tcp/p80
add chain ip kube-proxy external-ZREBO3AX-ns3/remote-only/tcp/p80
flush chain ip kube-proxy external-ZREBO3AX-ns3/remote-only/tcp/p80
add element ip kube-proxy cluster-ips { 10.96.0.50 }
add element ip kube-proxy service-ips { 10.96.0.50 . tcp . 80 : goto service-ZREBO3AX-ns3/remote-only/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-ZREBO3AX-ns3/remote-only/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns3/remote-only:p80" : drop }
add element ip kube-proxy service-ips { 203.0.113.11 . tcp . 80 : goto external-ZREBO3AX-ns3/remote-only/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 203.0.113.11 . tcp . 80 comment "ns3/remote-only:p80" : drop }
add element ip kube-proxy service-nodeports { tcp . 30081 : goto external-ZREBO3AX-ns3/remote-only/tcp/p80 }
add element ip kube-proxy no-endpoint-nodeports { tcp . 30081 comment "ns3/remote-only:p80" : drop }
add rule ip kube-proxy service-ZREBO3AX-ns3/remote-only/tcp/p80 ip daddr 10.96.0.50 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy external-ZREBO3AX-ns3/remote-only/tcp/p80 ip saddr 10.244.0.0/16 goto service-ZREBO3AX-ns3/remote-only/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-ZREBO3AX-ns3/remote-only/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-ZREBO3AX-ns3/remote-only/tcp/p80 fib saddr type local goto service-ZREBO3AX-ns3/remote-only/tcp/p80 comment "short-circuit local traffic"
add rule ip kube-proxy service-ZREBO3AX-ns3/remote-only/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-FRCXSVBL-ns3/remote-only/tcp/p80__10.244.2.9/80 }
add rule ip kube-proxy endpoint-FRCXSVBL-ns3/remote-only/tcp/p80__10.244.2.9/80 ip saddr 10.244.2.9 jump mark-for-masquerade
add rule ip kube-proxy endpoint-FRCXSVBL-ns3/remote-only/tcp/p80__10.244.2.9/80 meta l4proto tcp dnat to 10.244.2.9:80
"""

GOLDEN_AFFINITY = BASE + """\
add chain ip kube-proxy endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80
flush chain ip kube-proxy endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80
add chain ip kube-proxy endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80
flush chain ip kube-proxy endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80
add chain ip kube-proxy service-7UK5BW2U-ns5/sticky/tcp/p80
flush chain ip kube-proxy service-7UK5BW2U-ns5/sticky/tcp/p80
add element ip kube-proxy cluster-ips { 10.96.0.45 }
add element ip kube-proxy service-ips { 10.96.0.45 . tcp . 80 : goto service-7UK5BW2U-ns5/sticky/tcp/p80 }
add rule ip kube-proxy service-7UK5BW2U-ns5/sticky/tcp/p80 ip daddr 10.96.0.45 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add set ip kube-proxy affinity-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add set ip kube-proxy affinity-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip kube-proxy service-7UK5BW2U-ns5/sticky/tcp/p80 ip saddr @affinity-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 goto endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80
add rule ip kube-proxy service-7UK5BW2U-ns5/sticky/tcp/p80 ip saddr @affinity-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 goto endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80
add rule ip kube-proxy service-7UK5BW2U-ns5/sticky/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 , 1 : goto endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 }
add rule ip kube-proxy endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 ip saddr 10.244.1.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 update @affinity-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 { ip saddr }
add rule ip kube-proxy endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 meta l4proto tcp dnat to 10.244.1.3:80
add rule ip kube-proxy endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 ip saddr 10.244.2.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 update @affinity-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 { ip saddr }
add rule ip kube-proxy endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 meta l4proto tcp dnat to 10.244.2.3:80
"""

GOLDEN_LB_SOURCE_RANGES = BASE + """\
add chain ip kube-proxy endpoint-KM45QQGS-ns2/lb/tcp/p80__10.244.1.2/8080
flush chain ip kube-proxy endpoint-KM45QQGS-ns2/lb/tcp/p80__10.244.1.2/8080
add chain ip kube-proxy endpoint-OA2VLCYJ-ns2/lb/tcp/p80__10.244.2.7/8080
flush chain ip kube-proxy endpoint-OA2VLCYJ-ns2/lb/tcp/p80__10.244.2.7/8080
add chain ip kube-proxy service-QUENYE7E-ns2/lb/tcp/p80
flush chain ip kube-proxy service-QUENYE7E-ns2/lb/tcp/p80
add chain ip kube-proxy external-QUENYE7E-ns2/lb/tcp/p80
flush chain ip kube-proxy external-QUENYE7E-ns2/lb/tcp/p80
add element ip kube-proxy cluster-ips { 10.96.0.40 }
add element ip kube-proxy service-ips { 10.96.0.40 . tcp . 80 : goto service-QUENYE7E-ns2/lb/tcp/p80 }
add chain ip kube-proxy firewall-QUENYE7E-ns2/lb/tcp/p80
flush chain ip kube-proxy firewall-QUENYE7E-ns2/lb/tcp/p80
add element ip kube-proxy service-ips { 203.0.113.10 . tcp . 80 : goto external-QUENYE7E-ns2/lb/tcp/p80 }
add element ip kube-proxy firewall-ips { 203.0.113.10 . tcp . 80 : goto firewall-QUENYE7E-ns2/lb/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-QUENYE7E-ns2/lb/tcp/p80 }
add rule ip kube-proxy service-QUENYE7E-ns2/lb/tcp/p80 ip daddr 10.96.0.40 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy external-QUENYE7E-ns2/lb/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-QUENYE7E-ns2/lb/tcp/p80 goto service-QUENYE7E-ns2/lb/tcp/p80
add rule ip kube-proxy firewall-QUENYE7E-ns2/lb/tcp/p80 ip saddr != { 198.51.100.0/24 , 192.168.0.0/24 , 203.0.113.10 } drop
add rule ip kube-proxy service-QUENYE7E-ns2/lb/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-KM45QQGS-ns2/lb/tcp/p80__10.244.1.2/8080 , 1 : goto endpoint-OA2VLCYJ-ns2/lb/tcp/p80__10.244.2.7/8080 }
add rule ip kube-proxy endpoint-KM45QQGS-ns2/lb/tcp/p80__10.244.1.2/8080 ip saddr 10.244.1.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-KM45QQGS-ns2/lb/tcp/p80__10.244.1.2/8080 meta l4proto tcp dnat to 10.244.1.2:8080
add rule ip kube-proxy endpoint-OA2VLCYJ-ns2/lb/tcp/p80__10.244.2.7/8080 ip saddr 10.244.2.7 jump mark-for-masquerade
add rule ip kube-proxy endpoint-OA2VLCYJ-ns2/lb/tcp/p80__10.244.2.7/8080 meta l4proto tcp dnat to 10.244.2.7:8080
"""

SYNC_ENDPOINT_REMOVED = """\
add chain ip kube-proxy endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080
flush chain ip kube-proxy endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080
add chain ip kube-proxy endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080
flush chain ip kube-proxy endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080
add chain ip kube-proxy service-SUSTUHLJ-default/web/tcp/http
flush chain ip kube-proxy service-SUSTUHLJ-default/web/tcp/http
add rule ip kube-proxy service-SUSTUHLJ-default/web/tcp/http ip daddr 10.96.0.20 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy service-SUSTUHLJ-default/web/tcp/http numgen random mod 2 vmap { 0 : goto endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080 , 1 : goto endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080 }
add rule ip kube-proxy endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080 ip saddr 10.244.1.10 jump mark-for-masquerade
add rule ip kube-proxy endpoint-FLXOMXXM-default/web/tcp/http__10.244.1.10/8080 meta l4proto tcp dnat to 10.244.1.10:8080
add rule ip kube-proxy endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080 ip saddr 10.244.1.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080 meta l4proto tcp dnat to 10.244.1.2:8080
flush chain ip kube-proxy endpoint-BZGFZVVG-default/web/tcp/http__10.244.2.7/8080
delete chain ip kube-proxy endpoint-BZGFZVVG-default/web/tcp/http__10.244.2.7/8080
"""

SYNC_SERVICE_REMOVED = """\
flush chain ip kube-proxy endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80
flush chain ip kube-proxy endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80
flush chain ip kube-proxy service-7UK5BW2U-ns5/sticky/tcp/p80
delete set ip kube-proxy affinity-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80
delete set ip kube-proxy affinity-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80
delete element ip kube-proxy cluster-ips { 10.96.0.45 }
delete element ip kube-proxy service-ips { 10.96.0.45 . tcp . 80 }
delete chain ip kube-proxy endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80
delete chain ip kube-proxy endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80
delete chain ip kube-proxy service-7UK5BW2U-ns5/sticky/tcp/p80
"""

SYNC_FIRST_ENDPOINT = """\
add chain ip kube-proxy endpoint-DUE2QJYN-ns6/empty/tcp/p80__10.244.1.7/80
flush chain ip kube-proxy endpoint-DUE2QJYN-ns6/empty/tcp/p80__10.244.1.7/80
add chain ip kube-proxy service-ISIRLXLE-ns6/empty/tcp/p80
flush chain ip kube-proxy service-ISIRLXLE-ns6/empty/tcp/p80
add chain ip kube-proxy external-ISIRLXLE-ns6/empty/tcp/p80
flush chain ip kube-proxy external-ISIRLXLE-ns6/empty/tcp/p80
add element ip kube-proxy service-ips { 10.96.0.60 . tcp . 80 : goto service-ISIRLXLE-ns6/empty/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 30082 : goto external-ISIRLXLE-ns6/empty/tcp/p80 }
add rule ip kube-proxy service-ISIRLXLE-ns6/empty/tcp/p80 ip daddr 10.96.0.60 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy external-ISIRLXLE-ns6/empty/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-ISIRLXLE-ns6/empty/tcp/p80 goto service-ISIRLXLE-ns6/empty/tcp/p80
add rule ip kube-proxy service-ISIRLXLE-ns6/empty/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-DUE2QJYN-ns6/empty/tcp/p80__10.244.1.7/80 }
add rule ip kube-proxy endpoint-DUE2QJYN-ns6/empty/tcp/p80__10.244.1.7/80 ip saddr 10.244.1.7 jump mark-for-masquerade
add rule ip kube-proxy endpoint-DUE2QJYN-ns6/empty/tcp/p80__10.244.1.7/80 meta l4proto tcp dnat to 10.244.1.7:80
delete element ip kube-proxy no-endpoint-services { 10.96.0.60 . tcp . 80 }
delete element ip kube-proxy no-endpoint-nodeports { tcp . 30082 }
"""


# --- full syncs -----------------------------------------------------------------------------------

def test_base_only():
    assert nft.render(V()) == BASE


@pytest.mark.parametrize("svc, golden", [
    (WEB, GOLDEN_CLUSTER_IP_3_ENDPOINTS),
    (NODEPORT, GOLDEN_NODEPORT),
    (EMPTY, GOLDEN_NO_ENDPOINTS),
    (REMOTE_ONLY, GOLDEN_LOCAL_NO_LOCAL_ENDPOINTS),
    (STICKY, GOLDEN_AFFINITY),
    (LB, GOLDEN_LB_SOURCE_RANGES),
], ids=["clusterip-3-endpoints", "nodeport", "no-endpoints", "etp-local-no-local", "affinity", "lb-source-ranges"])
def test_golden(svc, golden):
    assert nft.render(V(svc)) == golden


def test_vmap_follows_ip_port_string_order():
    """10.244.1.10:8080 < 10.244.1.2:8080 < 10.244.2.7:8080 as strings: index 0 is .1.10."""
    rule = next(line for line in nft.render(V(WEB)).splitlines() if "numgen" in line)
    assert rule.index("__10.244.1.10/8080") < rule.index("__10.244.1.2/8080") < rule.index("__10.244.2.7/8080")
    assert "numgen random mod 3 vmap { 0 : goto " in rule


# Upstream's TestOverallNFTablesRules (proxier_test.go @ 81810de6): its conventions and services.
UP_NODE = "test-node"
UPSTREAM_VIEW = NodeView(UP_NODE, ("192.168.0.2", "192.168.1.2", "192.168.99.11"), config=ProxyConfig(
    cluster_cidr="10.0.0.0/8", service_cidrs=("172.30.0.0/16",), nodeport_addresses=("192.168.0.2/32",)), services=(
    SP("ns1", "svc1", "p80", "TCP", 80, "172.30.0.41", endpoints=(E("10.180.0.1", 80),)),
    SP("ns2", "svc2", "p80", "TCP", 80, "172.30.0.42", node_port=3001, external_ips=("192.168.99.22",),
       load_balancer_ips=("1.2.3.4",), external_policy_local=True, health_check_node_port=30000,
       endpoints=(E("10.180.0.2", 80),)),
    SP("ns3", "svc3", "p80", "TCP", 80, "172.30.0.43", node_port=3003, endpoints=(E("10.180.0.3", 80),)),
    SP("ns4", "svc4", "p80", "TCP", 80, "172.30.0.44", external_ips=("192.168.99.33",),
       endpoints=(E("10.180.0.4", 80), E("10.180.0.5", 80, node=UP_NODE))),
    SP("ns5", "svc5", "p80", "TCP", 80, "172.30.0.45", node_port=3002, load_balancer_ips=("5.6.7.8",),
       load_balancer_source_ranges=(" 203.0.113.0/25",), session_affinity_timeout=10800, health_check_node_port=30000,
       endpoints=(E("10.180.0.3", 80),)),
    SP("ns6", "svc6", "p80", "TCP", 80, "172.30.0.46"),
))

# Copied verbatim from upstream's expected dump (the per-service part, "# svc1" .. "# svc6").
UPSTREAM_SERVICE_LINES = """\
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add chain ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80
add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80
add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add element ip kube-proxy cluster-ips { 172.30.0.45 }
add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"""

# Upstream's baseRules (dump form), verbatim; its fake proxier's mark is the literal "0x4000".
UPSTREAM_BASE_LINES = """\
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy firewall-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"""


def _per_chain(lines):
    """Rules grouped by chain (order within a chain matters, across chains it does not)."""
    out = {}
    for line in lines:
        if line.startswith("add rule "):
            chain = line.split()[4]
            out.setdefault(chain, []).append(line)
    return out


def test_upstream_overall_lines():
    """Every line of upstream's expected dump is in our transaction, with the same per-chain order;
    what we add besides is only `flush`/`delete` operations and the base chains' first-sync re-add."""
    ours = [line.replace("0x00004000", "0x4000") for line in nft.render(UPSTREAM_VIEW).splitlines()]
    theirs = (UPSTREAM_BASE_LINES + UPSTREAM_SERVICE_LINES).splitlines()
    assert set(theirs) - set(ours) == set()
    extra = [line for line in set(ours) - set(theirs) if not line.startswith(("flush ", "delete "))]
    assert sorted(extra) == sorted([
        "add chain ip kube-proxy filter-prerouting-pre-dnat", "add chain ip kube-proxy filter-output-pre-dnat",
        "add chain ip kube-proxy filter-forward", "add chain ip kube-proxy filter-input",
        "add chain ip kube-proxy filter-output", "add chain ip kube-proxy nat-prerouting",
        "add chain ip kube-proxy nat-output", "add chain ip kube-proxy nat-postrouting",
    ])
    mine, up = _per_chain(ours), _per_chain(theirs)
    for chain, rules in up.items():
        assert mine[chain] == rules, chain


@pytest.mark.parametrize("sp, prefix, expected", [
    # The reference's verified examples (§3.3) and upstream's dump.
    (SP("ns1", "svc1", "p80", "TCP", 80, "172.30.0.41"), "service-", "service-ULMVA6XW-ns1/svc1/tcp/p80"),
    (SP("ns2", "svc2", "p80", "TCP", 80, "172.30.0.42"), "external-", "external-42NFTM6N-ns2/svc2/tcp/p80"),
    (SP("ns5", "svc5", "p80", "TCP", 80, "172.30.0.45"), "firewall-", "firewall-HVFWP5L3-ns5/svc5/tcp/p80"),
    (SP("ns2", "svc2", "p80", "TCP", 80, "172.30.0.42"), "local-", "local-42NFTM6N-ns2/svc2/tcp/p80"),
])
def test_service_chain_names(sp, prefix, expected):
    assert prefix + names.nft_service_base(sp) == expected


@pytest.mark.parametrize("ep, expected", [
    (E("10.180.0.1", 80), "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"),
    (E("10.0.1.1", 80), "endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80"),
])
def test_endpoint_chain_names(ep, expected):
    sp = SP("ns1", "svc1", "p80", "TCP", 80, "172.30.0.41", endpoints=(ep,))
    assert "endpoint-" + names.nft_endpoint_base(sp, ep) == expected
    assert f"add chain ip kube-proxy {expected}" in nft.render(V(sp)).splitlines()


# --- configuration variants -------------------------------------------------------------------------

def _lines(view):
    return nft.render(view).splitlines()


def test_masquerade_all():
    lines = _lines(V(WEB, masquerade_all=True))
    assert "add rule ip kube-proxy service-SUSTUHLJ-default/web/tcp/http ip daddr 10.96.0.20 jump mark-for-masquerade" in lines
    assert not any("ip saddr != 10.244.0.0/16" in line for line in lines)


def test_no_cluster_cidr_means_no_local_detector():
    lines = _lines(V(WEB, REMOTE_ONLY, cluster_cidr=None))
    assert not any("jump mark-for-masquerade" in line and "ip daddr 10.96.0.20" in line for line in lines)
    assert not any("short-circuit pod traffic" in line for line in lines)
    assert any("short-circuit local traffic" in line for line in lines)


def test_masquerade_bit():
    lines = _lines(V(masquerade_bit=5))
    assert "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x00000020" in lines
    assert "add rule ip kube-proxy masquerading mark and 0x00000020 == 0 return" in lines


def test_nodeport_addresses_default_is_primary_ip():
    view = NodeView(N, ("192.168.0.10", "10.1.0.10", "fd00::10"), services=(NODEPORT,))
    text = nft.render(view)
    assert "add element ip kube-proxy nodeport-ips { 192.168.0.10 }" in text
    assert "10.1.0.10" not in text
    assert nft.desired(view).elements["nodeport-ips"] == {"192.168.0.10"}


def test_nodeport_addresses_cidrs_skip_loopback():
    view = NodeView(N, ("192.168.0.10", "10.1.0.10", "127.0.0.1"), services=(NODEPORT,),
                    config=ProxyConfig(nodeport_addresses=("10.0.0.0/8", "127.0.0.0/8", "192.168.0.0/16", "fd00::/64")))
    assert nft.desired(view).elements["nodeport-ips"] == {"192.168.0.10", "10.1.0.10"}


@pytest.mark.parametrize("addrs", [("0.0.0.0/0",), ("fd00::/64",)])
def test_nodeport_addresses_match_all(addrs):
    view = V(NODEPORT, nodeport_addresses=addrs)
    lines = _lines(view)
    assert "delete set ip kube-proxy nodeport-ips" in lines
    assert ("add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 "
            "meta l4proto . th dport vmap @service-nodeports") in lines
    assert ("add rule ip kube-proxy nodeport-endpoints-check ip daddr != 127.0.0.0/8 "
            "meta l4proto . th dport vmap @no-endpoint-nodeports") in lines
    assert "nodeport-ips" not in nft.desired(view).elements
    assert "nodeport-ips" not in nft.desired(view).sets


def test_several_service_cidrs_and_none():
    assert ("add rule ip kube-proxy cluster-ips-check ip daddr { 10.96.0.0/12,10.200.0.0/16 } drop "
            'comment "Drop traffic to unallocated ClusterIPs"') in \
        _lines(V(service_cidrs=("10.96.0.0/12", "fd00::/108", "10.200.0.0/16")))
    assert not any("unallocated" in line for line in _lines(V(service_cidrs=())))


def test_itp_local():
    sp = SP("ns7", "itp", "p80", "TCP", 80, "10.96.0.70", internal_policy_local=True,
            endpoints=(E("10.244.1.5", 80, node=N), E("10.244.2.5", 80, node="node-b")))
    lines = _lines(V(sp))
    chain = "local-" + names.nft_service_base(sp)
    assert f"add element ip kube-proxy service-ips {{ 10.96.0.70 . tcp . 80 : goto {chain} }}" in lines
    assert f"add rule ip kube-proxy {chain} ip daddr 10.96.0.70 ip saddr != 10.244.0.0/16 jump mark-for-masquerade" in lines
    assert not any("service-" + names.nft_service_base(sp) in line for line in lines)
    assert not any("10.244.2.5" in line for line in lines)
    none_here = dataclasses.replace(sp, endpoints=(E("10.244.2.5", 80, node="node-b"),))
    assert ('add element ip kube-proxy no-endpoint-services { 10.96.0.70 . tcp . 80 comment "ns7/itp:p80" : drop }'
            in _lines(V(none_here)))


def test_etp_local_with_local_endpoint():
    sp = dataclasses.replace(REMOTE_ONLY, endpoints=(E("10.244.1.9", 80, node=N), E("10.244.2.9", 80, node="node-b")))
    base = names.nft_service_base(sp)
    lines = _lines(V(sp))
    assert f"add rule ip kube-proxy external-{base} goto local-{base}" in lines
    assert any(line.startswith(f"add rule ip kube-proxy local-{base} numgen random mod 1 vmap") for line in lines)
    assert not any("no-endpoint" in line and "add element" in line for line in lines)


def test_unready_endpoints_count_as_none():
    sp = dataclasses.replace(WEB, endpoints=(E("10.244.1.2", 8080, node=N, ready=False, serving=False),))
    assert ('add element ip kube-proxy no-endpoint-services { 10.96.0.20 . tcp . 80 comment "default/web:http" '
            ": goto reject-chain }") in _lines(V(sp))


def test_ipv6_is_skipped():
    sp = SP("ns8", "v6", "p80", "TCP", 80, "fd00:10:96::1", endpoints=(E("fd00:10::1", 80),))
    mixed = dataclasses.replace(WEB, endpoints=WEB.endpoints + (E("fd00:10::2", 8080),), external_ips=("fd00::99",))
    assert nft.render(V(sp)) == BASE
    assert nft.render(V(mixed)) == GOLDEN_CLUSTER_IP_3_ENDPOINTS


def test_render_is_deterministic():
    assert nft.render(V(LB, WEB, STICKY)) == nft.render(V(STICKY, LB, WEB))


# --- state ------------------------------------------------------------------------------------------

def test_desired_state():
    st = nft.desired(V(STICKY, EMPTY))
    svc = "service-7UK5BW2U-ns5/sticky/tcp/p80"
    assert st.chains[svc] == (
        "ip daddr 10.96.0.45 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
        "ip saddr @affinity-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 goto endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80",
        "ip saddr @affinity-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 goto endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80",
        ("numgen random mod 2 vmap { 0 : goto endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80 , "
         "1 : goto endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80 }"),
    )
    assert st.headers["filter-prerouting-pre-dnat"] == "{ type filter hook prerouting priority -110 ; }"
    assert st.headers["nat-postrouting"] == "{ type nat hook postrouting priority 100 ; }"
    assert st.chains["masquerading"] == ("mark and 0x00004000 == 0 return", "mark set mark xor 0x00004000",
                                         "masquerade fully-random")
    assert st.sets["affinity-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80"] == (
        "set", "{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }")
    assert st.sets["service-ips"] == (
        "map", '{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }')
    assert st.elements == {
        "cluster-ips": {"10.96.0.45", "10.96.0.60"},
        "service-ips": {"10.96.0.45 . tcp . 80 : goto service-7UK5BW2U-ns5/sticky/tcp/p80"},
        "firewall-ips": frozenset(),
        "no-endpoint-services": {'10.96.0.60 . tcp . 80 comment "ns6/empty:p80" : goto reject-chain'},
        "no-endpoint-nodeports": {'tcp . 30082 comment "ns6/empty:p80" : goto reject-chain'},
        "service-nodeports": frozenset(),
        "nodeport-ips": {"192.168.0.10"},
    }
    assert st.services == {
        "ns5/sticky": (
            "endpoint-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80", "endpoint-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80",
            svc, "affinity-55D3B4T7-ns5/sticky/tcp/p80__10.244.1.3/80", "affinity-2PULCB4S-ns5/sticky/tcp/p80__10.244.2.3/80"),
        "ns6/empty": (),
    }


def test_state_json_roundtrip():
    view = V(WEB, NODEPORT, EMPTY, REMOTE_ONLY, STICKY, LB)
    st = nft.desired(view)
    text = st.to_json()
    json.loads(text)
    back = nft.NftState.from_json(text)
    assert back == st
    assert nft.NftState.from_json(json.loads(text)) == st
    assert back.to_json() == text
    assert nft.sync(back, view) == ("", st)


def test_element_key():
    assert nft.element_key("10.96.0.20") == "10.96.0.20"
    assert nft.element_key("10.96.0.20 . tcp . 80 : goto service-X") == "10.96.0.20 . tcp . 80"
    assert nft.element_key('tcp . 30082 comment "ns6/empty:p80" : goto reject-chain') == "tcp . 30082"


# --- incremental syncs --------------------------------------------------------------------------------

ALL4 = (WEB, NODEPORT, EMPTY, STICKY)
WEB_TWO = dataclasses.replace(WEB, endpoints=WEB.endpoints[1:])  # 10.244.2.7 gone
EMPTY_ONE = dataclasses.replace(EMPTY, endpoints=(E("10.244.1.7", 80, node=N),))


def _chains_of(view, key):
    return nft.desired(view).services[key]


def test_sync_from_nothing_is_render():
    view = V(*ALL4)
    assert nft.sync(None, view) == (nft.render(view), nft.desired(view))


def test_sync_unchanged_is_empty():
    view = V(*ALL4, LB, REMOTE_ONLY)
    assert nft.sync(nft.desired(view), view) == ("", nft.desired(view))


def test_sync_one_endpoint_removed():
    before, after = V(*ALL4), V(WEB_TWO, NODEPORT, EMPTY, STICKY)
    text, st = nft.sync(nft.desired(before), after)
    assert text == SYNC_ENDPOINT_REMOVED
    assert st == nft.desired(after)
    others = _chains_of(before, "default/np") + _chains_of(before, "ns5/sticky")
    assert others and not any(name in text for name in others)
    assert "ns6/empty" not in text and "element" not in text


def test_sync_service_removed():
    before, after = V(*ALL4), V(WEB, NODEPORT, EMPTY)
    text, st = nft.sync(nft.desired(before), after)
    assert text == SYNC_SERVICE_REMOVED
    assert st == nft.desired(after) and "ns5/sticky" not in st.services
    for name in _chains_of(before, "ns5/sticky"):
        kind = "set" if name.startswith("affinity-") else "chain"
        assert f"delete {kind} ip kube-proxy {name}" in text
    for name in _chains_of(before, "default/web") + _chains_of(before, "default/np"):
        assert name not in text


def test_sync_first_endpoint_swaps_no_endpoint_elements():
    before, after = V(*ALL4), V(WEB, NODEPORT, EMPTY_ONE, STICKY)
    text, st = nft.sync(nft.desired(before), after)
    assert text == SYNC_FIRST_ENDPOINT
    assert st == nft.desired(after)
    # and back: the chains go, the reject elements return
    text2, st2 = nft.sync(st, before)
    assert st2 == nft.desired(before)
    assert ('add element ip kube-proxy no-endpoint-services { 10.96.0.60 . tcp . 80 comment "ns6/empty:p80" '
            ": goto reject-chain }") in text2
    assert "delete element ip kube-proxy service-ips { 10.96.0.60 . tcp . 80 }" in text2
    assert f"delete chain ip kube-proxy service-{names.nft_service_base(EMPTY)}" in text2


def test_sync_changed_verdict_is_delete_then_add():
    """eTP Cluster -> Local with no local endpoint: the nodeport element keeps its key, changes value."""
    before = V(NODEPORT)
    after = V(dataclasses.replace(NODEPORT, external_policy_local=True))
    text, _ = nft.sync(nft.desired(before), after)
    lines = text.splitlines()
    base = names.nft_service_base(NODEPORT)
    assert 'add element ip kube-proxy no-endpoint-nodeports { udp . 30053 comment "default/np" : drop }' in lines
    assert (f"add rule ip kube-proxy external-{base} fib saddr type local goto service-{base} "
            "comment \"short-circuit local traffic\"") in lines
    # the service-nodeports element is unchanged (still goto external-…): not in the text
    assert "service-nodeports" not in text


def test_sync_element_value_change():
    """An external IP moving between services: delete+add in place, not deleted at the end."""
    a = dataclasses.replace(WEB, external_ips=("192.168.99.50",))
    b = dataclasses.replace(NODEPORT, protocol="TCP", port=80, external_ips=("192.168.99.50",))
    b_base = names.nft_service_base(b)
    # Full sync with both claiming the key: the later one (default/web sorts after default/np)
    # replaces the earlier one in the same transaction, as nftElementStorage does.
    full = nft.render(V(a, b)).splitlines()
    key = "service-ips { 192.168.99.50 . tcp . 80"
    assert [line for line in full if key in line] == [
        f"add element ip kube-proxy {key} : goto external-{b_base} }}",
        f"delete element ip kube-proxy {key} }}",
        f"add element ip kube-proxy {key} : goto external-{names.nft_service_base(a)} }}",
    ]
    assert nft.desired(V(a, b)).elements["service-ips"] >= {
        f"192.168.99.50 . tcp . 80 : goto external-{names.nft_service_base(a)}"}
    assert not any(e.startswith("192.168.99.50") and b_base in e for e in nft.desired(V(a, b)).elements["service-ips"])
    text, _ = nft.sync(nft.desired(V(a, b)), V(a, dataclasses.replace(b, external_ips=())))
    assert f"192.168.99.50 . tcp . 80 : goto external-{b_base}" not in text  # a wins the key (sorted later)
    text, _ = nft.sync(nft.desired(V(a)), V(dataclasses.replace(a, external_ips=()), b))
    lines = text.splitlines()
    i = lines.index("delete element ip kube-proxy service-ips { 192.168.99.50 . tcp . 80 }")
    assert lines[i + 1] == f"add element ip kube-proxy service-ips {{ 192.168.99.50 . tcp . 80 : goto external-{b_base} }}"
    assert lines.count("delete element ip kube-proxy service-ips { 192.168.99.50 . tcp . 80 }") == 1


def test_sync_base_change_is_a_full_sync_with_cleanup():
    before = V(*ALL4)
    after = V(WEB, NODEPORT, EMPTY, service_cidrs=("10.100.0.0/16",))
    text, st = nft.sync(nft.desired(before), after)
    assert text.startswith(nft.render(after))
    tail = text[len(nft.render(after)):].splitlines()
    sticky = sorted(_chains_of(before, "ns5/sticky"))  # stale objects go in name order
    assert tail == (
        [f"flush chain ip kube-proxy {c}" for c in sticky if not c.startswith("affinity-")]
        + [f"delete set ip kube-proxy {c}" for c in sticky if c.startswith("affinity-")]
        + [f"delete chain ip kube-proxy {c}" for c in sticky if not c.startswith("affinity-")]
    )
    assert st == nft.desired(after)


def test_sync_nodeport_ip_change_is_partial():
    before = V(NODEPORT)
    after = NodeView(N, ("192.168.0.11",), services=(NODEPORT,))
    text, _ = nft.sync(nft.desired(before), after)
    assert text == ("add element ip kube-proxy nodeport-ips { 192.168.0.11 }\n"
                    "delete element ip kube-proxy nodeport-ips { 192.168.0.10 }\n")


def test_sync_other_port_of_same_service_is_rewritten_too():
    """Upstream tracks changes per Service (NamespacedName): all its ports' chains are rewritten."""
    http = SP("default", "multi", "http", "TCP", 80, "10.96.0.90", endpoints=(E("10.244.1.2", 80),))
    dns = SP("default", "multi", "dns", "UDP", 53, "10.96.0.90", endpoints=(E("10.244.1.2", 53),))
    text, _ = nft.sync(nft.desired(V(http, dns)), V(http, dataclasses.replace(dns, endpoints=(E("10.244.1.3", 53),))))
    assert f"flush chain ip kube-proxy service-{names.nft_service_base(http)}" in text
    assert f"add chain ip kube-proxy service-{names.nft_service_base(dns)}" in text


def _random_view(rng, pool):
    """Some of the pool's Services, each with a random subset of its endpoints (maybe none)."""
    svcs = []
    for sp in pool:
        if rng.random() < 0.2:
            continue
        eps = tuple(e for e in sp.endpoints if rng.random() < 0.7)
        if rng.random() < 0.3:
            eps += (E(f"10.244.{rng.choice([1, 2])}.{rng.randint(20, 30)}", 80, node=rng.choice([N, "node-b"])),)
        svcs.append(dataclasses.replace(sp, endpoints=tuple({e.address: e for e in eps}.values())))
    return V(*svcs)


def _fast_and_general(pool, seeds=60, steps=8):
    """(seed, fast-path text and state, general-path text and state) over random changes."""
    import random

    for seed in range(seeds):
        rng = random.Random(seed)
        _, state = nft.sync(None, _random_view(rng, pool))
        for _ in range(steps):
            view = _random_view(rng, pool)
            assert state.memo is not None
            fast = nft.sync(state, view)
            yield seed, view, fast, nft.sync(nft.NftState.from_json(state.to_json()), view)
            state = fast[1]


def test_partial_sync_from_memo_writes_what_the_general_path_writes():
    """The in-process fast path (previous state with its memo) gives the same transaction and the
    same resulting state as the general path (the state read back from JSON), over random changes."""
    for seed, _, (fast_text, fast), (slow_text, slow) in _fast_and_general((WEB, NODEPORT, EMPTY, REMOTE_ONLY, STICKY, LB)):
        assert fast_text == slow_text, f"seed {seed}"
        assert fast == slow and fast.to_json() == slow.to_json(), f"seed {seed}"


def test_unchanged_view_from_memo_writes_nothing():
    _, state = nft.sync(None, V(*ALL4))
    text, again = nft.sync(state, V(*ALL4))
    assert text == "" and again == state


def test_partial_sync_from_memo_with_a_key_two_services_claim():
    """Two Services claim one service-ips key (an external IP:port): whichever changes or goes, the
    fast path leaves the same table as the general path (the later Service holds the key)."""
    shared = dataclasses.replace(REMOTE_ONLY, port=80, external_ips=("203.0.113.10",))  # LB's LB IP:80 too
    for seed, view, (_, fast), (_, slow) in _fast_and_general((WEB, LB, shared, EMPTY)):
        assert fast == slow == nft.desired(view), f"seed {seed}"


def test_proxier_recognises_its_own_state_read_back_from_the_lab_file():
    """The lab writes a sync's state as JSON and may read it back before the next sync: the proxier
    then continues from its in-memory state (memo and all) instead of re-parsing it."""
    from testbed.modes.nftables import NftablesProxier

    p = NftablesProxier()
    _, state = nft.sync(None, V(*ALL4))
    p._last["n"] = state
    assert p._previous("n", {"nft": state}) is state
    text = state.to_json()  # what state.write stores; made once
    assert state.serialised() is text and state.to_json() is text
    assert p._previous("n", {"nft": json.loads(json.dumps(text))}) is state
    other = p._previous("n", {"nft": nft.desired(V(WEB)).to_json()})
    assert other is not state and other.memo is None
