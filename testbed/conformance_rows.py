"""The behaviour rows of the conformance matrix, as tables: (from, protocol, to) → expectation.

Read each row like kube-proxy's packet-flow tables. Every row runs in every proxy mode; where
kube-proxy itself behaves differently per mode, `expect` says so per mode and `notes` say why.
"""
from .conformance import NO_POLICIES_IN_USERSPACE, NO_SCTP_IN_USERSPACE, Row
from .ipvs_schedulers import BEHAVIOURS

# topologies/default.yaml: nodes node-1/node-2, Deployment web (4 pods) behind Service web
# (80/TCP, 53/UDP) and web-nodeport (80 → NodePort 30080), Service empty (no endpoints),
# pod client (backs nothing, on node-1), outside client `outside`.
# The userspace proxy opens its own connection to the backend: the client's address is always lost.
CLIENT_OR_PROXY = {"userspace": "node", "*": "client"}

# The IPVS rows add a copy of Service web under each scheduler (annotation testbed.dev/ipvs-scheduler)
# and delete it again; the other modes have no schedulers.
SCHEDULERS_ARE_IPVS = {
    "iptables": "IPVS mode's schedulers: iptables mode picks an endpoint with `-m statistic --mode random`",
    "nftables": "IPVS mode's schedulers: nftables mode picks an endpoint with `numgen random`",
    "userspace": "IPVS mode's schedulers: the userspace proxy takes the endpoints round robin",
}

DEFAULT = [
    #   behaviour                                                              from            proto  to
    Row("ClusterIP TCP from a pod: DNAT to a backend, source preserved, even split", "pod/client", "tcp", "svc/web:80",
        backends="svc", source_seen=CLIENT_OR_PROXY, balance=True,
        notes={"userspace": "the proxy connects from the node: the source is lost, as in kube-proxy's userspace mode"},
        short="ClusterIP TCP from a pod"),
    Row("ClusterIP UDP from a pod: DNAT to a backend, source preserved, even split", "pod/client", "udp", "svc/web:53",
        backends="svc", source_seen=CLIENT_OR_PROXY, balance=True, short="ClusterIP UDP from a pod"),
    Row("ClusterIP from a node (host network): masqueraded to the node", "node/node-2", "tcp", "svc/web:80",
        backends="svc", source_seen="node", short="ClusterIP from a node"),
    Row("NodePort from outside via node-1: SNAT to the node, reply from the dialled address", "client/outside", "tcp",
        "nodeport/web-nodeport:80@node-1", backends="svc", source_seen="node", balance=True,
        short="NodePort via node-1"),
    Row("NodePort from outside via node-2: SNAT to the node, reply from the dialled address", "client/outside", "tcp",
        "nodeport/web-nodeport:80@node-2", backends="svc", source_seen="node", balance=True,
        short="NodePort via node-2"),
    Row("NodePort on 127.0.0.1 from the node itself", "node/node-1", "tcp", "localhost/web-nodeport:80",
        expect={"iptables": "answered", "nftables": "refused", "ipvs": "refused", "*": "answered"}, backends="svc",
        notes={"iptables": "route_localnet, as kube-proxy's iptables mode",
               "nftables": "kube-proxy's nftables mode has no localhost NodePorts: the node's own stack resets",
               "ipvs": "IPVS NodePort virtual servers are on the node IPs only: the node's own stack resets"},
        short="NodePort on 127.0.0.1"),
    Row("ClusterIP of a Service without endpoints: refused at once", "pod/client", "tcp", "svc/empty:80",
        expect={"userspace": "closed", "*": "refused"},
        notes={"userspace": "the userspace proxy accepts, then closes: no REJECT rule in that mode"},
        short="no endpoints: refused"),
    Row("ClusterIP on a port the Service does not have", "pod/client", "tcp", "unserved/web:81",
        expect={"iptables": "dropped", "nftables": "refused", "ipvs": "refused", "*": "dropped"},
        notes={"iptables": "no rule matches: routed on and dropped, as kube-proxy's iptables mode",
               "nftables": "cluster-ips-check rejects invalid ports of ClusterIPs",
               "ipvs": "the ClusterIP is local on kube-ipvs0 and KUBE-IPVS-FILTER rejects ports IPVS does not serve"},
        short="ClusterIP, port not served"),
    Row("A pod reaches itself through its own Service (hairpin masquerade)", "backend/web", "tcp", "svc/web:80",
        backends="self", source_seen="gateway", short="hairpin: a pod to itself"),
    Row("A backend's server dies, no readiness probe: what new connections see", "pod/client", "tcp", "svc/web:80",
        check="failover", expect={"userspace": "no-failure", "*": "failures"},
        notes={"userspace": "the userspace proxy retries the next endpoint, as kube-proxy's did",
               "iptables": "kube-proxy keeps the endpoint until a probe or a deletion removes it"},
        short="backend dies, no probe"),
    Row("A backend's server dies, readiness probe: its endpoint is removed; time to recovery", "pod/client", "tcp",
        "svc/probed:80", check="failover", expect={"userspace": "no-failure", "*": "recovers"},
        notes={"userspace": "the proxy retries the next endpoint until the probe removes the dead one",
               "*": "readiness probe every 1 s, failureThreshold 1: the prober marks the pod unready and every "
                    "node's rules drop it"}, short="backend dies, probed"),
    Row("An out-of-window segment from the backend on a live connection does not reset it (conntrack INVALID)",
        "pod/client", "tcp", "svc/web:80", action="stray-segment", expect={"nftables": "reset", "*": "answered"},
        notes={"iptables": "KUBE-FORWARD drops ctstate INVALID (#74840)",
               "nftables": "kube-proxy's nftables mode does not work around the conntrack bug unless "
                           "conntrack.tcpBeLiberal is set (#122663; upstream's CI sets it)",
               "ipvs": "IPVS translates its connections' replies itself",
               "userspace": "the proxy terminates the client's connection: nothing to un-NAT"},
        short="invalid conntrack: no reset"),
    *(Row(f"IPVS scheduler {name}: {b.claim}", "pod/client", "tcp", "svc/web:80",
          check="scheduler", scheduler=name, skip=SCHEDULERS_ARE_IPVS, short=f"IPVS scheduler {name}")
      for name, b in BEHAVIOURS.items()),
    # Change the lab: keep them last.
    Row("UDP client keeps its source port while the pod answering it is deleted: answered by a live backend "
        "(stale conntrack entries cleared)", "pod/client", "udp", "svc/web:53", action="cycle-udp-backend",
        notes={"userspace": "the userspace proxy relays UDP itself: a datagram sent while its session to the "
                            "deleted pod lasts (250 ms idle) may be lost, the next reaches a live backend",
               "*": "kube-proxy deletes the conntrack entries of UDP endpoints that went away"},
        short="UDP: backend cycles"),
    Row("Deleted pod: no new connection reaches it, its replacement is reached", "pod/client", "tcp", "svc/web:80",
        action="delete-backend", short="deleted pod replaced"),
]

# topologies/seed-a-service.yaml: the seed's a-service (80 → 9376) from pods on both nodes.
SEED = [
    Row("a-service answers on port 80 from a pod on node-1", "pod/client-1", "tcp", "svc/a-service:80",
        backends="svc", source_seen=CLIENT_OR_PROXY, balance=True, short="a-service from node-1"),
    Row("a-service answers on port 80 from a pod on node-2", "pod/client-2", "tcp", "svc/a-service:80",
        backends="svc", source_seen=CLIENT_OR_PROXY, balance=True, short="a-service from node-2"),
]

# topologies/service-types.yaml: every Service type and option (see the file's header).
NO_ETP_IN_USERSPACE = NO_POLICIES_IN_USERSPACE
SERVICE_TYPES = [
    Row("LoadBalancer from outside: the cloud LB, then the node's NodePort rules", "client/outside", "tcp", "lb/lb:80",
        backends="svc", source_seen="node", balance=True, short="LoadBalancer from outside"),
    Row("LoadBalancer with loadBalancerSourceRanges leaving the client out: dropped by the cloud's firewall",
        "client/outside", "tcp", "lb/lb-ranges:80", expect="dropped",
        notes={"*": "the LB is in nodeport mode (full NAT): the cloud enforces the ranges, as AWS/Azure/GCP "
                    "firewalls do; topologies/source-ranges.yaml shows the node's own rules doing it"},
        short="LB source ranges (cloud)"),
    Row("LoadBalancer with externalTrafficPolicy Local: only nodes passing the health check get traffic",
        "client/outside", "tcp", "lb/lb-local:80", backends="svc", source_seen={"userspace": "node", "*": "lb"},
        balance=True, notes={"iptables": "the LB's health checks of healthCheckNodePort steer it to node-2"},
        short="LB eTP Local: health check"),
    Row("NodePort with externalTrafficPolicy Local via a node with a local endpoint: client IP preserved",
        "client/outside", "tcp", "nodeport/np-local:80@node-2", backends="svc", source_seen="client",
        skip={"userspace": NO_ETP_IN_USERSPACE}, short="NodePort eTP Local: local"),
    Row("NodePort with externalTrafficPolicy Local via a node without one: dropped", "client/outside", "tcp",
        "nodeport/np-local:80@node-1", expect="dropped", skip={"userspace": NO_ETP_IN_USERSPACE},
        short="NodePort eTP Local: remote"),
    Row("externalIPs: traffic routed to a node is captured and balanced", "client/outside", "tcp", "external/ext:80",
        backends="svc", source_seen="node", short="externalIPs"),
    Row("sessionAffinity ClientIP: 15 requests in a row reach one backend", "pod/client", "tcp", "svc/sticky:80",
        check="affinity", short="sessionAffinity ClientIP"),
    Row("internalTrafficPolicy Local from a node without a local endpoint: dropped", "pod/client", "tcp",
        "svc/itp-local:80", expect="dropped", skip={"userspace": NO_ETP_IN_USERSPACE}, short="iTP Local: remote"),
    Row("internalTrafficPolicy Local from a node with one: answered locally", "pod/client-2", "tcp", "svc/itp-local:80",
        backends="svc", source_seen="client", skip={"userspace": NO_ETP_IN_USERSPACE}, short="iTP Local: local"),
    Row("multi-port Service, named targetPort over TCP", "pod/client", "tcp", "svc/multi:80",
        backends="svc", source_seen=CLIENT_OR_PROXY, short="multi-port named: TCP"),
    Row("multi-port Service, named targetPort over UDP", "pod/client", "udp", "svc/multi:53",
        backends="svc", source_seen=CLIENT_OR_PROXY, short="multi-port named: UDP"),
    Row("one port number over TCP and UDP: TCP", "pod/client", "tcp", "svc/both:5353", backends="svc",
        short="TCP+UDP on 5353: TCP"),
    Row("one port number over TCP and UDP: UDP", "pod/client", "udp", "svc/both:5353", backends="svc",
        short="TCP+UDP on 5353: UDP"),
    Row("ClusterIP SCTP from a pod: DNAT to a backend", "pod/client", "sctp", "svc/sctp:9000",
        backends="svc", source_seen="client", needs=("sctp",), skip={"userspace": NO_SCTP_IN_USERSPACE},
        notes={"iptables": "-m sctp -p sctp --dport 9000 in KUBE-SERVICES, DNAT in KUBE-SEP-",
               "nftables": "service-ips element . sctp . 9000, meta l4proto sctp dnat in the endpoint chain",
               "ipvs": "an SCTP virtual server (protocol 132) with masquerading real servers"}, short="ClusterIP SCTP"),
    Row("publishNotReadyAddresses: an unready pod still gets traffic", "pod/client", "tcp", "svc/nr-publish:80",
        backends="svc", short="publishNotReadyAddresses"),
    Row("the same unready pod behind a normal Service: no endpoints, refused", "pod/client", "tcp", "svc/nr:80",
        expect={"userspace": "closed", "*": "refused"}, short="unready pod: refused"),
    Row("service.kubernetes.io/service-proxy-name: kube-proxy ignores the Service", "pod/client", "tcp",
        "svc/other-proxy:80", expect="dropped", short="other service-proxy-name"),
    Row("cluster DNS: a ClusterIP Service's A record", "pod/client", "udp", "dns/sticky.default.svc.cluster.local",
        check="dns", answer=("A", "svc/sticky"), short="DNS: A record"),
    Row("cluster DNS: SRV for a named port", "pod/client", "udp", "dns/_http._tcp.multi.default.svc.cluster.local",
        check="dns", answer=("SRV", "80 multi.default.svc.cluster.local."), short="DNS: SRV named port"),
    Row("cluster DNS: a headless Service's ready pod IPs", "pod/client", "udp", "dns/headless.default.svc.cluster.local",
        check="dns", answer=("ENDPOINTS", "svc/headless"), short="DNS: headless pod IPs"),
    Row("cluster DNS: ExternalName is a CNAME", "pod/client", "udp", "dns/alias.default.svc.cluster.local",
        check="dns", answer=("CNAME", "web.default.svc.cluster.local."), short="DNS: ExternalName CNAME"),
    Row("cluster DNS: NXDOMAIN for what does not exist", "pod/client", "udp", "dns/nothing.default.svc.cluster.local",
        check="dns", answer=("NXDOMAIN",), short="DNS: NXDOMAIN"),
]

# topologies/ingress.yaml: several Services behind one ingress controller (a LoadBalancer Service).
INGRESS = [
    Row("Ingress: host and Prefix / route to shop", "client/outside", "tcp", "ingress/shop.example.com/hostname",
        check="http", backends="svc/shop", short="Ingress: host, Prefix /"),
    Row("Ingress: the longest Prefix (/api) wins", "client/outside", "tcp", "ingress/shop.example.com/api/x",
        check="http", backends="svc/api", short="Ingress: longest Prefix"),
    Row("Ingress: an Exact path", "client/outside", "tcp", "ingress/shop.example.com/healthz",
        check="http", backends="svc/api", short="Ingress: Exact path"),
    Row("Ingress: Prefix matches whole path elements (/apix is not /api)", "client/outside", "tcp",
        "ingress/shop.example.com/apix", check="http", backends="svc/shop", short="Ingress: /apix is not /api"),
    Row("Ingress: another host goes to the default backend", "client/outside", "tcp",
        "ingress/other.example.com/hostname", check="http", backends="svc/fallback", short="Ingress: default backend"),
]

# topologies/source-ranges.yaml: LoadBalancer web (3 pods) with loadBalancerSourceRanges
# [172.18.0.100/32, 203.0.113.0/24], outside clients `allowed` (172.18.0.100) and `denied`
# (172.18.0.120), the cloud LB in passthrough mode so the node sees the client's address.
RANGES_IN_USERSPACE = ("kube-proxy's userspace proxier never implemented loadBalancerSourceRanges: openPortal "
                       "REDIRECTs the LB ingress IP from every source")
SOURCE_RANGES = [
    Row("loadBalancerSourceRanges: a client inside the ranges is answered through the LB address and balanced",
        "client/allowed", "tcp", "lb/web:80", backends="svc", source_seen="node", balance=True,
        notes={"iptables": "KUBE-FW- matches -s 172.18.0.100/32 and jumps to KUBE-EXT-",
               "nftables": "the firewall chain's ip saddr != { ranges } drop does not match; services DNATs",
               "ipvs": "KUBE-LOAD-BALANCER-SOURCE-CIDR matches: RETURN from KUBE-SOURCE-RANGES-FIREWALL"},
        short="source ranges: allowed"),
    Row("loadBalancerSourceRanges: a client outside the ranges is dropped (no answer)", "client/denied", "tcp",
        "lb/web:80", expect={"userspace": "answered", "*": "dropped"}, backends="svc", source_seen="node",
        notes={"iptables": "no KUBE-FW- rule matches; filter KUBE-PROXY-FIREWALL drops it (older kube-proxy: "
                           "KUBE-MARK-DROP), as upstream",
               "nftables": "firewall-check (prerouting, before DNAT) → the firewall chain: ip saddr != { ranges } drop",
               "ipvs": "KUBE-SOURCE-RANGES-FIREWALL: no KUBE-LOAD-BALANCER-SOURCE-CIDR match, then -j DROP",
               "userspace": RANGES_IN_USERSPACE}, short="source ranges: denied"),
    Row("loadBalancerSourceRanges do not cover the Service's NodePort: the denied client is answered there",
        "client/denied", "tcp", "nodeport/web:80@node-1", backends="svc", source_seen="node",
        notes={"iptables": "KUBE-NODEPORTS jumps to KUBE-EXT-, not KUBE-FW-, as upstream",
               "nftables": "service-nodeports goes to the external chain; firewall-ips only holds the LB IP",
               "ipvs": "the NodePort virtual servers' ip,port are not in KUBE-LOAD-BALANCER-FW"},
        short="source ranges: NodePort"),
]

# topologies/kube-proxy-releases.yaml: node-1 in zone-a, node-2 in zone-b; pod client on node-1.
# Rows whose outcome changed between kube-proxy releases say so with "<X.Y" keys (the lab's version).
NO_NEW_FEATURES_IN_USERSPACE = "kube-proxy's userspace mode (removed in 1.26) predates trafficDistribution and ipMode"
RELEASES = [
    Row("trafficDistribution PreferClose: a pod in zone-a reaches zone-a's endpoints only, split evenly",
        "pod/client", "tcp", "svc/near:80", backends={"<1.31": "svc", "*": "zone"}, source_seen="client", balance=True,
        skip={"userspace": NO_NEW_FEATURES_IN_USERSPACE},
        notes={"<1.31": "before 1.31 the EndpointSlice controller set no hints for it (alpha in 1.30): every "
                        "endpoint", "*": "the controller's zone hints; kube-proxy keeps the endpoints hinted for zone-a"}),
    Row("trafficDistribution PreferClose, no endpoint in zone-a: falls back to every endpoint", "pod/client", "tcp",
        "svc/far:80", backends="svc", source_seen="client", balance=True, skip={"userspace": NO_NEW_FEATURES_IN_USERSPACE},
        notes={"*": "no hint names zone-a: kube-proxy ignores the hints"}),
    Row("LoadBalancer ipMode VIP: a pod's traffic to the LB IP is short-circuited by its node", "pod/client", "tcp",
        "lb/lb-vip:80", backends="svc", source_seen="client", skip={"userspace": NO_NEW_FEATURES_IN_USERSPACE},
        notes={"*": "externalTrafficPolicy Local's pod short-circuit: DNAT on node-1, no SNAT"}),
    Row("LoadBalancer ipMode Proxy: a pod's traffic to the LB IP goes to the load balancer", "pod/client", "tcp",
        "lb/lb-proxy:80", backends="svc", source_seen={"<1.30": "client", "*": "lb"},
        skip={"userspace": NO_NEW_FEATURES_IN_USERSPACE},
        notes={"<1.30": "kube-proxy ignored ipMode before 1.30 (alpha in 1.29): short-circuited like VIP",
               "*": "kube-proxy writes no rule for the LB IP: the cloud LB full-NATs it to a NodePort"}),
    Row("a node without the LoadBalancer's (eTP Local) endpoint reaches its LB IP itself", "node/node-1", "tcp",
        "lb/lb-vip:80", expect={"nftables<1.34": "dropped", "*": "answered"}, backends="svc",
        skip={"ipvs": "the node's own connection takes the LB IP (on kube-ipvs0) as source and KUBE-LOAD-BALANCER-LOCAL "
                      "returns before KUBE-MARK-MASQ: the endpoint's reply goes to that IP on its own node (testbed vm, "
                      "1.28 and 1.35: a crafted SYN from the node IP is answered, a real connection times out)"},
        notes={"nftables<1.34": "filter-output ran before DNAT (priority -110): no-endpoint-services dropped the "
                                "LB IP (fixed in 1.34 by #132456)",
               "nftables": "filter-output runs after DNAT (priority 0) since 1.34: the local short-circuit wins",
               "iptables": "KUBE-EXT- routes LOCAL traffic to the cluster endpoints"}),
]

TABLES = {"default.yaml": DEFAULT, "seed-a-service.yaml": SEED, "service-types.yaml": SERVICE_TYPES,
          "ingress.yaml": INGRESS, "source-ranges.yaml": SOURCE_RANGES, "kube-proxy-releases.yaml": RELEASES}
