"""The behaviour rows of the conformance matrix, as tables: (from, protocol, to) → expectation.

Read each row like kube-proxy's packet-flow tables. Every row runs in every proxy mode; where
kube-proxy itself behaves differently per mode, `expect` says so per mode and `notes` say why.
"""
from testbed.conformance import Row

# topologies/default.yaml: nodes node-1/node-2, Deployment web (4 pods) behind Service web
# (80/TCP, 53/UDP) and web-nodeport (80 → NodePort 30080), Service empty (no endpoints),
# pod client (backs nothing, on node-1), outside client `outside`.
# The userspace proxy opens its own connection to the backend: the client's address is always lost.
CLIENT_OR_PROXY = {"userspace": "node", "*": "client"}

DEFAULT = [
    #   behaviour                                                              from            proto  to
    Row("ClusterIP TCP from a pod: DNAT to a backend, source preserved, even split", "pod/client", "tcp", "svc/web:80",
        backends="svc", source_seen=CLIENT_OR_PROXY, balance=True,
        notes={"userspace": "the proxy connects from the node: the source is lost, as in kube-proxy's userspace mode"}),
    Row("ClusterIP UDP from a pod: DNAT to a backend, source preserved, even split", "pod/client", "udp", "svc/web:53",
        backends="svc", source_seen=CLIENT_OR_PROXY, balance=True),
    Row("ClusterIP from a node (host network): masqueraded to the node", "node/node-2", "tcp", "svc/web:80",
        backends="svc", source_seen="node"),
    Row("NodePort from outside via node-1: SNAT to the node, reply from the dialled address", "client/outside", "tcp",
        "nodeport/web-nodeport:80@node-1", backends="svc", source_seen="node", balance=True),
    Row("NodePort from outside via node-2: SNAT to the node, reply from the dialled address", "client/outside", "tcp",
        "nodeport/web-nodeport:80@node-2", backends="svc", source_seen="node", balance=True),
    Row("NodePort on 127.0.0.1 from the node itself", "node/node-1", "tcp", "localhost/web-nodeport:80",
        expect={"iptables": "answered", "nftables": "refused", "*": "answered"}, backends="svc",
        notes={"iptables": "route_localnet, as kube-proxy's iptables mode",
               "nftables": "kube-proxy's nftables mode has no localhost NodePorts: the node's own stack resets"}),
    Row("ClusterIP of a Service without endpoints: refused at once", "pod/client", "tcp", "svc/empty:80",
        expect={"userspace": "closed", "*": "refused"},
        notes={"userspace": "the userspace proxy accepts, then closes: no REJECT rule in that mode"}),
    Row("ClusterIP on a port the Service does not have", "pod/client", "tcp", "unserved/web:81",
        expect={"iptables": "dropped", "nftables": "refused", "*": "dropped"},
        notes={"iptables": "no rule matches: routed on and dropped, as kube-proxy's iptables mode",
               "nftables": "cluster-ips-check rejects invalid ports of ClusterIPs"}),
    Row("A pod reaches itself through its own Service (hairpin masquerade)", "backend/web", "tcp", "svc/web:80",
        backends="self", source_seen="gateway"),
    # Changes the lab: keep it last.
    Row("Deleted pod: no new connection reaches it, its replacement is reached", "pod/client", "tcp", "svc/web:80",
        action="delete-backend"),
]

# topologies/seed-a-service.yaml: the seed's a-service (80 → 9376) from pods on both nodes.
SEED = [
    Row("a-service answers on port 80 from a pod on node-1", "pod/client-1", "tcp", "svc/a-service:80",
        backends="svc", source_seen=CLIENT_OR_PROXY, balance=True),
    Row("a-service answers on port 80 from a pod on node-2", "pod/client-2", "tcp", "svc/a-service:80",
        backends="svc", source_seen=CLIENT_OR_PROXY, balance=True),
]

TABLES = {"default.yaml": DEFAULT, "seed-a-service.yaml": SEED}
