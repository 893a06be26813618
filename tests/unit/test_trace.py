"""testbed.trace's pure half on real `nft -a monitor trace` output, captured from labs of topologies/default.yaml.

Fixtures (trimmed only of nothing but trailing blanks; the readiness/barrier markers and the client
kernel's RST after the SYN-ACK are kept on purpose, the parser must drop them):
- IPT_WEB_NODE1/IPT_WEB_NODE2: iptables mode, pod `client` (node-1) → svc/web:80, DNATed to a web pod
  on node-2. Note the kernel reused trace ids 6f5db9c2/f3b7d623 for the RST that followed.
- IPT_EMPTY_NODE1: iptables mode, client → svc/empty:80 (no endpoints) → filter KUBE-SERVICES REJECT.
- NFT_EMPTY_NODE1: the same in nftables mode (testbed.render.nftables applied by hand in a lab):
  table `ip kube-proxy`, vmap @no-endpoint-services → goto reject-chain → reject.
- NAT_LISTING/FILTER_LISTING/IPTABLES_SAVE: `nft -a list table ip nat|filter` and `iptables-save`
  of node-1 at the time of IPT_WEB_NODE1 (only the chains the trace went through).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from probes.conntrack import parse as parse_conntrack
from probes.handshake import Handshake
from testbed.trace import (
    ChainListing,
    NodeTrace,
    annotate,
    build_tree,
    decide_ending,
    nat_from_flow,
    parse_iptables_save,
    parse_listing,
    parse_monitor,
    parse_packet_fields,
    probe_segments,
    without_tracing_table,
)

IPT_WEB_NODE1 = """\
trace id f64ece6d ip testbed-trace-d8202e out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 65352 ip length 41 udp sport 51800 udp dport 25024 udp length 21 @th,64,96 0x746573746265642d74726163
trace id f64ece6d ip testbed-trace-d8202e out rule ip daddr 127.0.0.1 udp dport 25024 meta nftrace set 1 drop comment "testbed-trace ready" # handle 5 (verdict drop)
trace id 6f5db9c2 ip testbed-trace-d8202e pre packet: iif "cbr0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.100.195.26 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 44910 ip length 40 tcp sport 43649 tcp dport 80 tcp flags == syn tcp window 64240
trace id 6f5db9c2 ip testbed-trace-d8202e pre rule ip saddr 10.244.0.2 ip daddr 10.100.195.26 tcp sport 43649 meta nftrace set 1 comment "testbed-trace probe" # handle 3 (verdict continue)
trace id 6f5db9c2 ip testbed-trace-d8202e pre policy accept
trace id 6f5db9c2 ip nat PREROUTING packet: iif "cbr0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.100.195.26 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 44910 ip length 40 tcp sport 43649 tcp dport 80 tcp flags == syn tcp window 64240
trace id 6f5db9c2 ip nat PREROUTING rule  counter packets 16 bytes 647 jump KUBE-SERVICES # handle 22 (verdict jump KUBE-SERVICES)
trace id 6f5db9c2 ip nat KUBE-SERVICES rule meta l4proto tcp ip daddr 10.100.195.26  tcp dport 80 counter packets 10 bytes 400 jump KUBE-SVC-CDGGSHYLG3RE2FKL # handle 48 (verdict jump KUBE-SVC-CDGGSHYLG3RE2FKL)
trace id 6f5db9c2 ip nat KUBE-SVC-CDGGSHYLG3RE2FKL rule  counter packets 1 bytes 40 jump KUBE-SEP-Q46P26NJZAFWFAHZ # handle 53 (verdict jump KUBE-SEP-Q46P26NJZAFWFAHZ)
trace id 6f5db9c2 ip nat KUBE-SEP-Q46P26NJZAFWFAHZ rule meta l4proto tcp   counter packets 1 bytes 40 dnat to 10.244.1.3:9376 # handle 61 (verdict accept)
trace id f3b7d623 ip filter FORWARD packet: iif "cbr0" oif "eth0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 44910 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == syn tcp window 64240
trace id f3b7d623 ip filter FORWARD rule ct state new  counter packets 15 bytes 607 jump KUBE-PROXY-FIREWALL # handle 13 (verdict jump KUBE-PROXY-FIREWALL)
trace id f3b7d623 ip filter FORWARD rule  counter packets 41 bytes 1727 jump KUBE-FORWARD # handle 14 (verdict jump KUBE-FORWARD)
trace id f3b7d623 ip filter FORWARD rule ct state new  counter packets 14 bytes 567 jump KUBE-SERVICES # handle 15 (verdict jump KUBE-SERVICES)
trace id f3b7d623 ip filter FORWARD rule ct state new  counter packets 12 bytes 487 jump KUBE-EXTERNAL-SERVICES # handle 16 (verdict jump KUBE-EXTERNAL-SERVICES)
trace id f3b7d623 ip filter FORWARD policy accept
trace id f3b7d623 ip nat POSTROUTING packet: iif "cbr0" oif "eth0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 44910 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == syn tcp window 64240
trace id f3b7d623 ip nat POSTROUTING rule  counter packets 15 bytes 596 jump KUBE-POSTROUTING # handle 26 (verdict jump KUBE-POSTROUTING)
trace id f3b7d623 ip nat KUBE-POSTROUTING rule meta mark & 0x00004000 != 0x00004000 counter packets 14 bytes 556 return # handle 27 (verdict return)
trace id f3b7d623 ip nat POSTROUTING policy accept
trace id 6f5db9c2 ip testbed-trace-d8202e pre packet: iif "cbr0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.100.195.26 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 0 ip length 40 tcp sport 43649 tcp dport 80 tcp flags == rst tcp window 0
trace id 6f5db9c2 ip testbed-trace-d8202e pre rule ip saddr 10.244.0.2 ip daddr 10.100.195.26 tcp sport 43649 meta nftrace set 1 comment "testbed-trace probe" # handle 3 (verdict continue)
trace id 6f5db9c2 ip testbed-trace-d8202e pre policy accept
trace id f3b7d623 ip filter FORWARD packet: iif "cbr0" oif "eth0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 0 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == rst tcp window 0
trace id f3b7d623 ip filter FORWARD rule  counter packets 41 bytes 1727 jump KUBE-FORWARD # handle 14 (verdict jump KUBE-FORWARD)
trace id f3b7d623 ip filter KUBE-FORWARD rule  ct state related,established counter packets 26 bytes 1120 accept # handle 25 (verdict accept)
trace id 1d837bb4 ip testbed-trace-d8202e out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 65406 ip length 41 udp sport 50455 udp dport 25024 udp length 21 @th,64,96 0x746573746265642d74726163
trace id 1d837bb4 ip testbed-trace-d8202e out rule ip daddr 127.0.0.1 udp dport 25024 meta nftrace set 1 drop comment "testbed-trace ready" # handle 5 (verdict drop)
"""

IPT_WEB_NODE2 = """\
trace id efbe00d4 ip testbed-trace-d8202e out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 42921 ip length 41 udp sport 50541 udp dport 25024 udp length 21 @th,64,96 0x746573746265642d74726163
trace id efbe00d4 ip testbed-trace-d8202e out rule ip daddr 127.0.0.1 udp dport 25024 meta nftrace set 1 drop comment "testbed-trace ready" # handle 5 (verdict drop)
trace id a7a417dd ip testbed-trace-d8202e pre packet: iif "eth0" ether saddr 0e:84:c8:98:c7:d6 ether daddr d6:08:8a:0a:83:92 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 44910 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == syn tcp window 64240
trace id a7a417dd ip testbed-trace-d8202e pre rule iifname "eth0" ip saddr { 10.244.0.2, 172.18.0.2, 172.18.0.3 } ip daddr 10.244.1.0/24 meta l4proto tcp meta nftrace set 1 comment "testbed-trace arrival" # handle 4 (verdict continue)
trace id a7a417dd ip testbed-trace-d8202e pre policy accept
trace id a7a417dd ip nat PREROUTING packet: iif "eth0" ether saddr 0e:84:c8:98:c7:d6 ether daddr d6:08:8a:0a:83:92 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 44910 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == syn tcp window 64240
trace id a7a417dd ip nat PREROUTING rule  counter packets 5 bytes 200 jump KUBE-SERVICES # handle 22 (verdict jump KUBE-SERVICES)
trace id a7a417dd ip nat PREROUTING policy accept
trace id a7a417dd ip filter FORWARD packet: iif "eth0" oif "cbr0" ether saddr 0e:84:c8:98:c7:d6 ether daddr d6:08:8a:0a:83:92 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 62 ip id 44910 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == syn tcp window 64240
trace id a7a417dd ip filter FORWARD rule ct state new  counter packets 4 bytes 160 jump KUBE-PROXY-FIREWALL # handle 13 (verdict jump KUBE-PROXY-FIREWALL)
trace id a7a417dd ip filter FORWARD rule  counter packets 12 bytes 496 jump KUBE-FORWARD # handle 14 (verdict jump KUBE-FORWARD)
trace id a7a417dd ip filter FORWARD rule ct state new  counter packets 3 bytes 120 jump KUBE-SERVICES # handle 15 (verdict jump KUBE-SERVICES)
trace id a7a417dd ip filter FORWARD rule ct state new  counter packets 3 bytes 120 jump KUBE-EXTERNAL-SERVICES # handle 16 (verdict jump KUBE-EXTERNAL-SERVICES)
trace id a7a417dd ip filter FORWARD policy accept
trace id a7a417dd ip nat POSTROUTING packet: iif "eth0" oif "cbr0" ether saddr 0e:84:c8:98:c7:d6 ether daddr d6:08:8a:0a:83:92 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 62 ip id 44910 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == syn tcp window 64240
trace id a7a417dd ip nat POSTROUTING rule  counter packets 5 bytes 200 jump KUBE-POSTROUTING # handle 26 (verdict jump KUBE-POSTROUTING)
trace id a7a417dd ip nat KUBE-POSTROUTING rule meta mark & 0x00004000 != 0x00004000 counter packets 3 bytes 120 return # handle 27 (verdict return)
trace id a7a417dd ip nat POSTROUTING policy accept
trace id a7a417dd ip testbed-trace-d8202e pre packet: iif "eth0" ether saddr 0e:84:c8:98:c7:d6 ether daddr d6:08:8a:0a:83:92 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 0 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == rst tcp window 0
trace id a7a417dd ip testbed-trace-d8202e pre rule iifname "eth0" ip saddr { 10.244.0.2, 172.18.0.2, 172.18.0.3 } ip daddr 10.244.1.0/24 meta l4proto tcp meta nftrace set 1 comment "testbed-trace arrival" # handle 4 (verdict continue)
trace id a7a417dd ip testbed-trace-d8202e pre policy accept
trace id a7a417dd ip filter FORWARD packet: iif "eth0" oif "cbr0" ether saddr 0e:84:c8:98:c7:d6 ether daddr d6:08:8a:0a:83:92 ip saddr 10.244.0.2 ip daddr 10.244.1.3 ip dscp cs0 ip ecn not-ect ip ttl 62 ip id 0 ip length 40 tcp sport 43649 tcp dport 9376 tcp flags == rst tcp window 0
trace id a7a417dd ip filter FORWARD rule  counter packets 12 bytes 496 jump KUBE-FORWARD # handle 14 (verdict jump KUBE-FORWARD)
trace id a7a417dd ip filter KUBE-FORWARD rule  ct state related,established counter packets 8 bytes 336 accept # handle 25 (verdict accept)
trace id 96974ee8 ip testbed-trace-d8202e out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 42981 ip length 41 udp sport 57507 udp dport 25024 udp length 21 @th,64,96 0x746573746265642d74726163
trace id 96974ee8 ip testbed-trace-d8202e out rule ip daddr 127.0.0.1 udp dport 25024 meta nftrace set 1 drop comment "testbed-trace ready" # handle 5 (verdict drop)
"""

IPT_EMPTY_NODE1 = """\
trace id 0a7c3510 ip testbed-trace-7597f5 out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 65457 ip length 41 udp sport 49371 udp dport 28874 udp length 21 @th,64,96 0x746573746265642d74726163
trace id 0a7c3510 ip testbed-trace-7597f5 out rule ip daddr 127.0.0.1 udp dport 28874 meta nftrace set 1 drop comment "testbed-trace ready" # handle 5 (verdict drop)
trace id be104fb7 ip testbed-trace-7597f5 pre packet: iif "cbr0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.110.52.197 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 4822 ip length 40 tcp sport 40282 tcp dport 80 tcp flags == syn tcp window 64240
trace id be104fb7 ip testbed-trace-7597f5 pre rule ip saddr 10.244.0.2 ip daddr 10.110.52.197 tcp sport 40282 meta nftrace set 1 comment "testbed-trace probe" # handle 3 (verdict continue)
trace id be104fb7 ip testbed-trace-7597f5 pre policy accept
trace id be104fb7 ip nat PREROUTING packet: iif "cbr0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.110.52.197 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 4822 ip length 40 tcp sport 40282 tcp dport 80 tcp flags == syn tcp window 64240
trace id be104fb7 ip nat PREROUTING rule  counter packets 17 bytes 687 jump KUBE-SERVICES # handle 22 (verdict jump KUBE-SERVICES)
trace id be104fb7 ip nat PREROUTING policy accept
trace id 669136d2 ip filter FORWARD packet: iif "cbr0" oif "eth0" ether saddr 3a:e5:63:9e:b0:28 ether daddr 12:6a:01:ac:8f:11 ip saddr 10.244.0.2 ip daddr 10.110.52.197 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 4822 ip length 40 tcp sport 40282 tcp dport 80 tcp flags == syn tcp window 64240
trace id 669136d2 ip filter FORWARD rule ct state new  counter packets 16 bytes 647 jump KUBE-PROXY-FIREWALL # handle 13 (verdict jump KUBE-PROXY-FIREWALL)
trace id 669136d2 ip filter FORWARD rule  counter packets 44 bytes 1851 jump KUBE-FORWARD # handle 14 (verdict jump KUBE-FORWARD)
trace id 669136d2 ip filter FORWARD rule ct state new  counter packets 15 bytes 607 jump KUBE-SERVICES # handle 15 (verdict jump KUBE-SERVICES)
trace id 669136d2 ip filter KUBE-SERVICES rule meta l4proto tcp ip daddr 10.110.52.197  tcp dport 80 counter packets 2 bytes 80 reject # handle 22 (verdict drop)
trace id 0b51fef8 ip testbed-trace-7597f5 out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 65461 ip length 41 udp sport 45507 udp dport 28874 udp length 21 @th,64,96 0x746573746265642d74726163
trace id 0b51fef8 ip testbed-trace-7597f5 out rule ip daddr 127.0.0.1 udp dport 28874 meta nftrace set 1 drop comment "testbed-trace ready" # handle 5 (verdict drop)
"""

NFT_EMPTY_NODE1 = """\
trace id c219b643 ip testbed-trace-7af76c out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 43001 ip length 41 udp sport 44495 udp dport 23984 udp length 21 @th,64,96 0x746573746265642d74726163
trace id c219b643 ip testbed-trace-7af76c out rule ip daddr 127.0.0.1 udp dport 23984 meta nftrace set 1 drop comment "testbed-trace ready" # handle 5 (verdict drop)
trace id 661c962c ip testbed-trace-7af76c pre packet: iif "cbr0" ether saddr 76:80:ba:e1:62:69 ether daddr 0a:dc:4a:a9:b2:4e ip saddr 10.244.0.2 ip daddr 10.110.52.197 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 58580 ip length 40 tcp sport 45039 tcp dport 80 tcp flags == syn tcp window 64240
trace id 661c962c ip testbed-trace-7af76c pre rule ip saddr 10.244.0.2 ip daddr 10.110.52.197 tcp sport 45039 meta nftrace set 1 comment "testbed-trace probe" # handle 3 (verdict continue)
trace id 661c962c ip testbed-trace-7af76c pre policy accept
trace id 661c962c ip kube-proxy filter-prerouting-pre-dnat packet: iif "cbr0" ether saddr 76:80:ba:e1:62:69 ether daddr 0a:dc:4a:a9:b2:4e ip saddr 10.244.0.2 ip daddr 10.110.52.197 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 58580 ip length 40 tcp sport 45039 tcp dport 80 tcp flags == syn tcp window 64240
trace id 661c962c ip kube-proxy filter-prerouting-pre-dnat rule ct state new jump firewall-check # handle 24 (verdict jump firewall-check)
trace id 661c962c ip kube-proxy filter-prerouting-pre-dnat policy accept
trace id 661c962c ip kube-proxy nat-prerouting packet: iif "cbr0" ether saddr 76:80:ba:e1:62:69 ether daddr 0a:dc:4a:a9:b2:4e ip saddr 10.244.0.2 ip daddr 10.110.52.197 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 58580 ip length 40 tcp sport 45039 tcp dport 80 tcp flags == syn tcp window 64240
trace id 661c962c ip kube-proxy nat-prerouting rule jump services # handle 28 (verdict jump services)
trace id 661c962c ip kube-proxy nat-prerouting policy accept
trace id ac8aeb83 ip kube-proxy filter-forward packet: iif "cbr0" oif "eth0" ether saddr 76:80:ba:e1:62:69 ether daddr 0a:dc:4a:a9:b2:4e ip saddr 10.244.0.2 ip daddr 10.110.52.197 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 58580 ip length 40 tcp sport 45039 tcp dport 80 tcp flags == syn tcp window 64240
trace id ac8aeb83 ip kube-proxy filter-forward rule ct state new jump service-endpoints-check # handle 21 (verdict jump service-endpoints-check)
trace id ac8aeb83 ip kube-proxy service-endpoints-check rule ip daddr . meta l4proto . th dport vmap @no-endpoint-services # handle 47 (verdict goto reject-chain)
trace id ac8aeb83 ip kube-proxy reject-chain rule reject # handle 46 (verdict drop)
trace id edf23bc9 ip testbed-trace-7af76c out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 43083 ip length 41 udp sport 33933 udp dport 23984 udp length 21 @th,64,96 0x746573746265642d74726163
trace id edf23bc9 ip testbed-trace-7af76c out rule ip daddr 127.0.0.1 udp dport 23984 meta nftrace set 1 drop comment "testbed-trace ready" # handle 5 (verdict drop)
"""

NAT_LISTING = """\
table ip nat {
	chain PREROUTING { # handle 21
		type nat hook prerouting priority dstnat; policy accept;
		 counter packets 19 bytes 767 jump KUBE-SERVICES # handle 22
	}
	chain POSTROUTING { # handle 25
		type nat hook postrouting priority srcnat; policy accept;
		 counter packets 17 bytes 676 jump KUBE-POSTROUTING # handle 26
	}
	chain KUBE-POSTROUTING { # handle 3
		meta mark & 0x00004000 != 0x00004000 counter packets 15 bytes 596 return # handle 27
		counter packets 2 bytes 80 meta mark set mark xor 0x4000 # handle 28
		 counter packets 2 bytes 80 masquerade fully-random # handle 29
	}
	chain KUBE-SERVICES { # handle 1
		meta l4proto tcp ip daddr 10.105.84.38  tcp dport 80 counter packets 0 bytes 0 jump KUBE-SVC-GCYSPZR5VVR6P7RM # handle 31
		meta l4proto tcp ip daddr 10.100.195.26  tcp dport 80 counter packets 11 bytes 440 jump KUBE-SVC-CDGGSHYLG3RE2FKL # handle 48
		meta l4proto udp ip daddr 10.100.195.26  udp dport 53 counter packets 1 bytes 47 jump KUBE-SVC-OORGQSBIFXI7NHIM # handle 62
		 fib daddr type local counter packets 3 bytes 109 jump KUBE-NODEPORTS # handle 76
	}
	chain KUBE-SVC-CDGGSHYLG3RE2FKL { # handle 11
		meta l4proto tcp ip saddr != 10.244.0.0/16 ip daddr 10.100.195.26  tcp dport 80 counter packets 0 bytes 0 jump KUBE-MARK-MASQ # handle 49
		 meta random & 2147483647 < 536870912 counter packets 2 bytes 80 jump KUBE-SEP-LQ2VTO5I74KKCYEH # handle 50
		 meta random & 2147483647 < 715827883 counter packets 5 bytes 200 jump KUBE-SEP-J4B7FTW46TY4ZHQO # handle 51
		 meta random & 2147483647 < 1073741824 counter packets 2 bytes 80 jump KUBE-SEP-H3QZMLALUIPSFPVG # handle 52
		 counter packets 2 bytes 80 jump KUBE-SEP-Q46P26NJZAFWFAHZ # handle 53
	}
	chain KUBE-SEP-Q46P26NJZAFWFAHZ { # handle 15
		ip saddr 10.244.1.3  counter packets 0 bytes 0 jump KUBE-MARK-MASQ # handle 60
		meta l4proto tcp   counter packets 2 bytes 80 dnat to 10.244.1.3:9376 # handle 61
	}
}
"""

FILTER_LISTING = """\
table ip filter {
	chain FORWARD { # handle 12
		type filter hook forward priority filter; policy accept;
		ct state new  counter packets 18 bytes 727 jump KUBE-PROXY-FIREWALL # handle 13
		 counter packets 48 bytes 2015 jump KUBE-FORWARD # handle 14
		ct state new  counter packets 16 bytes 647 jump KUBE-SERVICES # handle 15
		ct state new  counter packets 13 bytes 527 jump KUBE-EXTERNAL-SERVICES # handle 16
	}
	chain KUBE-SERVICES { # handle 1
		meta l4proto tcp ip daddr 10.110.52.197  tcp dport 80 counter packets 3 bytes 120 reject # handle 22
	}
}
"""

IPTABLES_SAVE = """\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A KUBE-SERVICES -d 10.110.52.197/32 -p tcp -m comment --comment "default/empty has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-Q46P26NJZAFWFAHZ - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-CDGGSHYLG3RE2FKL - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SEP-Q46P26NJZAFWFAHZ -s 10.244.1.3/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-Q46P26NJZAFWFAHZ -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 10.244.1.3:9376
-A KUBE-SERVICES -d 10.105.84.38/32 -p tcp -m comment --comment "default/web-nodeport cluster IP" -m tcp --dport 80 -j KUBE-SVC-GCYSPZR5VVR6P7RM
-A KUBE-SERVICES -d 10.100.195.26/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-CDGGSHYLG3RE2FKL
-A KUBE-SERVICES -d 10.100.195.26/32 -p udp -m comment --comment "default/web:udp cluster IP" -m udp --dport 53 -j KUBE-SVC-OORGQSBIFXI7NHIM
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-CDGGSHYLG3RE2FKL ! -s 10.244.0.0/16 -d 10.100.195.26/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.0.3:9376" -m statistic --mode random --probability 0.25000000000 -j KUBE-SEP-LQ2VTO5I74KKCYEH
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.0.4:9376" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-J4B7FTW46TY4ZHQO
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.1.2:9376" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-H3QZMLALUIPSFPVG
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.1.3:9376" -j KUBE-SEP-Q46P26NJZAFWFAHZ
COMMIT
"""

CLIENT, WEB_IP, EMPTY_IP = "10.244.0.2", "10.100.195.26", "10.110.52.197"
LISTINGS = {("ip", "nat"): parse_listing(NAT_LISTING), ("ip", "filter"): parse_listing(FILTER_LISTING)}


def _probe(node_texts: dict[str, str], entry: str, dst: str, sport: int, proto: str = "tcp"):
    by_node = {n: build_tree(parse_monitor(t)) for n, t in node_texts.items()}
    return probe_segments(by_node, entry, CLIENT, dst, proto, sport)


def _node_traces(segs_by_node, iptables=None) -> list[NodeTrace]:
    out = []
    for n, segs in segs_by_node.items():
        annotate(segs, LISTINGS if n == "node-1" else {}, iptables)
        out.append(NodeTrace(n, f"lab-{n}", segs))
    return out


# ----------------------------------------------------------------------------- parse_monitor


def test_parse_monitor_reads_every_kind_of_line():
    events = parse_monitor(IPT_WEB_NODE1 + "some unrelated line\n")
    assert len(events) == len(IPT_WEB_NODE1.splitlines())
    kinds = {e.kind for e in events}
    assert kinds == {"packet", "rule", "policy"}
    jump = next(e for e in events if e.kind == "rule" and e.table == "nat" and e.chain == "PREROUTING")
    assert (jump.trace_id, jump.family, jump.handle, jump.verdict, jump.target) == ("6f5db9c2", "ip", 22, "jump", "KUBE-SERVICES")
    # iptables-nft's xt matches print as nothing; counters are dropped
    assert jump.rule == "counter jump KUBE-SERVICES"
    dnat = next(e for e in events if e.chain == "KUBE-SEP-Q46P26NJZAFWFAHZ")
    assert dnat.rule == "meta l4proto tcp counter dnat to 10.244.1.3:9376"
    assert (dnat.verdict, dnat.target, dnat.handle) == ("accept", None, 61)
    policy = next(e for e in events if e.kind == "policy" and e.table == "filter")
    assert (policy.chain, policy.verdict) == ("FORWARD", "accept")


def test_parse_monitor_packet_fields():
    ev = parse_monitor(IPT_WEB_NODE1)
    first_probe = next(e for e in ev if e.kind == "packet" and e.chain == "pre")
    pk = first_probe.packet
    assert pk["iif"] == "cbr0"
    assert (pk["ip saddr"], pk["ip daddr"], pk["tcp sport"], pk["tcp dport"]) == (CLIENT, WEB_IP, "43649", "80")
    assert pk["tcp flags"] == "syn" and pk["ip id"] == "44910" and pk["ether saddr"] == "3a:e5:63:9e:b0:28"
    fwd = next(e for e in ev if e.kind == "packet" and e.chain == "FORWARD").packet
    assert (fwd["iif"], fwd["oif"], fwd["ip daddr"], fwd["tcp dport"]) == ("cbr0", "eth0", "10.244.1.3", "9376")
    marker = ev[0].packet
    assert marker["@th,64,96"] == "0x746573746265642d74726163" and marker["udp dport"] == "25024"


def test_parse_packet_fields_multiword_values():
    f = dict(parse_packet_fields('iif "eth0" ip saddr 1.2.3.4 tcp flags == syn | ack meta mark 0x00004000'))
    assert f == {"iif": "eth0", "ip saddr": "1.2.3.4", "tcp flags": "syn | ack", "meta mark": "0x00004000"}


def test_parse_monitor_keeps_trailing_blank_lines_and_verdict_targets_with_slashes():
    line = ("trace id ac8aeb83 ip kube-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips "
            "# handle 53 (verdict goto service-SUSTUHLJ-default/web/tcp/http) \n")
    (e,) = parse_monitor(line)
    assert (e.verdict, e.target, e.handle) == ("goto", "service-SUSTUHLJ-default/web/tcp/http", 53)
    assert e.rule == "ip daddr . meta l4proto . th dport vmap @service-ips"


# ----------------------------------------------------------------------------- build_tree


def test_build_tree_clusterip_dnat_path():
    segs = build_tree(parse_monitor(IPT_WEB_NODE1))
    # markers, the SYN (two ids: the kernel rehashes after DNAT), and the marker after
    assert [s.trace_id for s in segs] == ["f64ece6d", "6f5db9c2", "f3b7d623", "1d837bb4"]
    syn = segs[1]
    assert [(p.table, p.chain) for p in syn.passes][:2] == [("testbed-trace-d8202e", "pre"), ("nat", "PREROUTING")]
    nat = syn.passes[1]
    assert [s.chain for s in nat.steps] == \
        ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-CDGGSHYLG3RE2FKL", "KUBE-SEP-Q46P26NJZAFWFAHZ"]
    assert [s.verdict for s in nat.steps] == ["jump", "jump", "jump", "accept"]
    assert nat.steps[-1].action == "DNAT" and nat.verdict == "accept"
    # the same trace id came back for the client kernel's RST: a third pass, with its own packet
    assert syn.passes[2].packet["tcp flags"] == "rst"


def test_probe_segments_keeps_only_the_probe_on_every_node():
    ours, ip_id = _probe({"node-1": IPT_WEB_NODE1, "node-2": IPT_WEB_NODE2}, "node-1", WEB_IP, 43649)
    assert ip_id == "44910"
    n1 = [(p.table, p.chain) for s in ours["node-1"] for p in s.passes]
    assert n1 == [("testbed-trace-d8202e", "pre"), ("nat", "PREROUTING"), ("filter", "FORWARD"), ("nat", "POSTROUTING")]
    n2 = [(p.table, p.chain) for s in ours["node-2"] for p in s.passes]
    assert n2 == [("testbed-trace-d8202e", "pre"), ("nat", "PREROUTING"), ("filter", "FORWARD"), ("nat", "POSTROUTING")]
    assert all(p.packet.get("tcp flags") == "syn" for segs in ours.values() for s in segs for p in s.passes)
    assert [p.table for p in without_tracing_table(ours["node-1"][0].passes)] == ["nat"]


def test_probe_segments_without_the_probe():
    ours, ip_id = _probe({"node-1": IPT_WEB_NODE1}, "node-1", WEB_IP, 1234)
    assert ip_id is None and ours == {"node-1": []}


# ----------------------------------------------------------------------------- back to iptables


def test_parse_listing_and_iptables_save():
    nat = LISTINGS[("ip", "nat")]
    assert (nat["PREROUTING"].hook, nat["PREROUTING"].priority) == ("prerouting", "dstnat")
    assert nat["KUBE-SERVICES"].hook is None
    assert [h for h, _ in nat["KUBE-SVC-CDGGSHYLG3RE2FKL"].rules] == [49, 50, 51, 52, 53]
    assert nat["KUBE-SEP-Q46P26NJZAFWFAHZ"].rules[1] == (61, "meta l4proto tcp counter dnat to 10.244.1.3:9376")
    ipt = parse_iptables_save(IPTABLES_SAVE)
    assert len(ipt["nat"]["KUBE-SVC-CDGGSHYLG3RE2FKL"]) == 5 and ipt["filter"]["INPUT"] == []


def test_annotate_maps_handles_to_iptables_rules_and_comments():
    ours, _ = _probe({"node-1": IPT_WEB_NODE1}, "node-1", WEB_IP, 43649)
    segs = ours["node-1"]
    annotate(segs, LISTINGS, parse_iptables_save(IPTABLES_SAVE))
    nat = segs[0].passes[1]
    assert nat.hook == "prerouting"
    svc, sep = nat.steps[1], nat.steps[3]
    assert svc.iptables.startswith("-A KUBE-SERVICES -d 10.100.195.26/32 -p tcp") and svc.comment == "default/web:http cluster IP"
    assert nat.steps[2].comment == "default/web:http -> 10.244.1.3:9376"
    assert sep.iptables.endswith("-j DNAT --to-destination 10.244.1.3:9376") and sep.action == "DNAT"
    fwd = segs[1].passes[0]
    assert fwd.hook == "forward" and fwd.steps[-1].text == "policy accept"
    # the tracing table's own chain: no listing, hook guessed from its name
    assert segs[0].passes[0].hook == "prerouting"


def test_annotate_finds_a_rule_by_its_text_when_a_sync_renumbered_the_chain():
    """A sync between the probe and the listing rewrote the chains: every handle is new."""
    ours, _ = _probe({"node-1": IPT_WEB_NODE1}, "node-1", WEB_IP, 43649)
    renumbered = {key: {name: ChainListing(c.name, c.hook, c.priority, [(h + 1000, text) for h, text in c.rules])
                        for name, c in chains.items()} for key, chains in LISTINGS.items()}
    segs = ours["node-1"]
    annotate(segs, renumbered, parse_iptables_save(IPTABLES_SAVE))
    svc, sep = segs[0].passes[1].steps[1], segs[0].passes[1].steps[3]
    assert svc.comment == "default/web:http cluster IP" and svc.iptables.startswith("-A KUBE-SERVICES -d 10.100.195.26/32")
    assert sep.iptables.endswith("-j DNAT --to-destination 10.244.1.3:9376")


def test_annotate_leaves_nft_text_when_counts_disagree():
    ours, _ = _probe({"node-1": IPT_WEB_NODE1}, "node-1", WEB_IP, 43649)
    ipt = parse_iptables_save(IPTABLES_SAVE)
    ipt["nat"]["KUBE-SVC-CDGGSHYLG3RE2FKL"].pop()  # the chain changed between the trace and the dump
    annotate(ours["node-1"], LISTINGS, ipt)
    step = ours["node-1"][0].passes[1].steps[2]
    assert step.iptables is None and step.text == "counter jump KUBE-SEP-Q46P26NJZAFWFAHZ"


# ----------------------------------------------------------------------------- endings


def _hs(**kw) -> Handshake:
    base = {"proto": "tcp", "client": f"{CLIENT}:43649", "dialled": f"{WEB_IP}:80", "outcome": "answered",
            "reply": "syn-ack", "reply_from": f"{WEB_IP}:80", "backend": "default/web-x",
            "backend_saw_src": f"{CLIENT}:43649", "backend_saw_dst": "10.244.1.3:9376"}
    return Handshake(**(base | kw))


def test_ending_received_with_dnat_and_no_snat():
    ours, _ = _probe({"node-1": IPT_WEB_NODE1, "node-2": IPT_WEB_NODE2}, "node-1", WEB_IP, 43649)
    e = decide_ending(_hs(), _node_traces(ours, parse_iptables_save(IPTABLES_SAVE)))
    assert e.kind == "received" and e.backend == "default/web-x" and e.snat is False
    assert e.summary == ("received by pod default/web-x at 10.244.1.3:9376 "
                         f"(DNAT from {WEB_IP}:80; source seen {CLIENT}, not SNATed)")


def test_reject_for_a_service_without_endpoints_iptables():
    ours, _ = _probe({"node-1": IPT_EMPTY_NODE1}, "node-1", EMPTY_IP, 40282)
    steps = [s for seg in ours["node-1"] for p in seg.passes for s in p.steps]
    assert [s.chain for s in steps if s.table == "filter"] == ["FORWARD"] * 3 + ["KUBE-SERVICES"]
    nodes = _node_traces(ours, parse_iptables_save(IPTABLES_SAVE))
    h = _hs(dialled=f"{EMPTY_IP}:80", outcome="refused", reply="icmp port-unreachable", reply_from="10.244.0.1",
            backend=None, backend_saw_src=None, backend_saw_dst=None)
    e = decide_ending(h, nodes)
    assert e.kind == "rejected" and e.node == "node-1" and e.how == "icmp port-unreachable"
    assert (e.step.table, e.step.chain, e.step.verdict, e.step.action) == ("filter", "KUBE-SERVICES", "drop", "REJECT")
    assert e.step.comment == "default/empty has no endpoints"
    assert e.step.iptables.endswith("-j REJECT --reject-with icmp-port-unreachable")
    assert e.summary == "rejected by ip filter KUBE-SERVICES (default/empty has no endpoints) (icmp port-unreachable)"


def test_reject_for_a_service_without_endpoints_nftables_mode():
    ours, ip_id = _probe({"node-1": NFT_EMPTY_NODE1}, "node-1", EMPTY_IP, 45039)
    assert ip_id == "58580"
    passes = without_tracing_table([p for s in ours["node-1"] for p in s.passes])
    assert [(p.table, p.chain) for p in passes] == [("kube-proxy", "filter-prerouting-pre-dnat"),
                                                   ("kube-proxy", "nat-prerouting"), ("kube-proxy", "filter-forward")]
    last = passes[-1].steps
    assert [(s.chain, s.verdict, s.target) for s in last] == [
        ("filter-forward", "jump", "service-endpoints-check"),
        ("service-endpoints-check", "goto", "reject-chain"),
        ("reject-chain", "drop", None)]
    h = _hs(dialled=f"{EMPTY_IP}:80", outcome="refused", reply="icmp port-unreachable", reply_from="10.244.0.1",
            backend=None, backend_saw_src=None, backend_saw_dst=None)
    e = decide_ending(h, [NodeTrace("node-1", "x", ours["node-1"])])
    assert e.kind == "rejected" and e.step.action == "REJECT" and e.step.chain == "reject-chain"
    assert "via service-endpoints-check" in e.summary and e.summary.endswith("(icmp port-unreachable)")


def test_ending_without_reply_or_rule():
    e = decide_ending(_hs(outcome="dropped", reply=None, reply_from=None, backend=None, backend_saw_src=None,
                          backend_saw_dst=None), [])
    assert e.kind == "no-reply"


def test_nat_from_conntrack():
    (flow,) = parse_conntrack("tcp      6 9 CLOSE src=172.18.0.100 dst=172.18.0.2 sport=45690 dport=30080 "
                              "src=10.244.0.3 dst=10.244.0.1 sport=9376 dport=45150 mark=0 use=1\n")
    nat = nat_from_flow("node-1", flow)
    assert nat.dnat_to == "10.244.0.3:9376" and nat.snat_to == "10.244.0.1:45150"
    assert nat.orig == "172.18.0.100:45690 -> 172.18.0.2:30080"


# ----------------------------------------------------------------------------- plan (which nodes, which address)


@pytest.fixture(scope="module")
def cluster():
    from testbed import model
    from testbed.control import reconcile
    path = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"
    return reconcile(model.load_file(str(path)).with_lab(name="tr"))[0]


def test_plan_targets(cluster):
    from testbed.trace import plan
    web = next(s for s in cluster.services if s.service.name == "web")
    p = plan("tr", cluster, "client", "svc/web", "tcp")
    assert (p.source_ns, p.client_ip, p.entry_node, p.dst_ip, p.dst_port) == \
        ("tr-default.client", CLIENT, "node-1", web.cluster_ip, 80)
    assert p.candidate_nodes == ("node-2",) and p.service == "default/web:http"
    assert plan("tr", cluster, "client", "svc/default/web:udp", "udp").dst_port == 53
    np_ = plan("tr", cluster, "client/outside", "nodeport/web-nodeport@node-2", "tcp")
    assert (np_.entry_node, np_.dst_ip, np_.dst_port, np_.candidate_nodes) == \
        ("node-2", cluster.node("node-2").ip, 30080, ("node-1",))
    assert plan("tr", cluster, "client/outside", "svc/web-nodeport", "tcp").entry_node == "node-1"
    empty = plan("tr", cluster, "node/node-2", "svc/empty", "tcp")
    assert (empty.entry_node, empty.client_ip, empty.candidate_nodes) == ("node-2", cluster.node("node-2").ip, ())
    raw = plan("tr", cluster, "client/outside", f"{cluster.node('node-1').ip}:30080", "tcp")
    assert raw.entry_node == "node-1" and raw.candidate_nodes == ("node-2",)


def test_plan_errors(cluster):
    from testbed.errors import TestbedError
    from testbed.trace import plan
    with pytest.raises(TestbedError, match="cannot reach its ClusterIP"):
        plan("tr", cluster, "client/outside", "svc/web", "tcp")
    with pytest.raises(TestbedError, match="no UDP port"):
        plan("tr", cluster, "client", "svc/empty", "udp")
    with pytest.raises(TestbedError, match="no service named"):
        plan("tr", cluster, "client", "svc/nope", "tcp")
    with pytest.raises(TestbedError, match="expected --to"):
        plan("tr", cluster, "client", "web", "tcp")


# ----------------------------------------------------------------------------- the rich view


def test_render_tree_shows_chains_nat_and_ending():
    from rich.console import Console

    from testbed.trace import Nat, Trace
    from testbed.trace_view import render_tree

    ours, _ = _probe({"node-1": IPT_WEB_NODE1, "node-2": IPT_WEB_NODE2}, "node-1", WEB_IP, 43649)
    nodes = _node_traces(ours, parse_iptables_save(IPTABLES_SAVE))
    h = _hs()
    t = Trace(lab="tr", source="client", source_ns="tr-default.client", client_ip=CLIENT, target="svc/web:80",
              dst_ip=WEB_IP, dst_port=80, proto="tcp", sport=43649, service="default/web:http", entry_node="node-1",
              nodes=nodes, nat=[Nat("node-1", "tcp", f"{CLIENT}:43649 -> {WEB_IP}:80", f"10.244.1.3:9376 -> {CLIENT}:43649",
                                    "10.244.1.3:9376", None)],
              ending=decide_ending(h, nodes), handshake=h)
    con = Console(record=True, width=250)
    con.print(render_tree(t))
    out = con.export_text()
    assert "node node-1" in out and "node node-2" in out
    assert "prerouting · ip nat PREROUTING" in out and "testbed-trace" not in out
    assert '-d 10.100.195.26/32 -p tcp -m comment --comment "default/web:http cluster IP"' in out
    assert "-j DNAT --to-destination 10.244.1.3:9376  → accept  [DNAT]" in out
    assert "DNAT to 10.244.1.3:9376; not SNATed" in out
    assert out.rstrip().endswith(f"→ received by pod default/web-x at 10.244.1.3:9376 (DNAT from {WEB_IP}:80; "
                                 f"source seen {CLIENT}, not SNATed)")
    # the KUBE-SEP rule is drawn under the KUBE-SVC jump, which is under KUBE-SERVICES
    lines = out.splitlines()
    i_svc = next(i for i, ln in enumerate(lines) if "KUBE-SERVICES: -d 10.100.195.26" in ln)
    i_sep = next(i for i, ln in enumerate(lines) if "KUBE-SEP-Q46P26NJZAFWFAHZ: -p tcp" in ln)
    assert lines[i_sep].index("KUBE-SEP-Q46P26NJZAFWFAHZ:") > lines[i_svc].index("KUBE-SERVICES:")


def test_a_rule_added_after_the_monitor_started_gets_its_text_from_the_listing():
    # A sync between the monitor's start and the probe rewrites the chains: nft knows only the handle.
    rule = next(line for line in IPT_WEB_NODE1.splitlines() if "# handle 48 " in line)
    unknown = rule.split(" rule ")[0] + " unknown rule handle 48 (verdict jump KUBE-SVC-CDGGSHYLG3RE2FKL)"
    ev = [e for e in parse_monitor(unknown)]
    assert [(e.kind, e.handle, e.verdict, e.target) for e in ev] == [("rule", 48, "jump", "KUBE-SVC-CDGGSHYLG3RE2FKL")]
    ours, _ = _probe({"node-1": IPT_WEB_NODE1.replace(rule, unknown)}, "node-1", WEB_IP, 43649)
    annotate(ours["node-1"], LISTINGS, parse_iptables_save(IPTABLES_SAVE))
    svc = ours["node-1"][0].passes[1].steps[1]
    assert svc.handle == 48 and svc.comment == "default/web:http cluster IP"
    assert svc.iptables.startswith("-A KUBE-SERVICES -d 10.100.195.26/32 -p tcp")
