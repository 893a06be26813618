"""kube-proxy's chain and object names, computed exactly as upstream does.

iptables (pkg/proxy/iptables/proxier.go, `portProtoHash`, `servicePortEndpointChainName`):
the hash is base32(sha256(svcPortName + lower(proto) [+ "ip:port"]))[:16], concatenated with no
separator, because iptables chain names must stay within 28 characters.

nftables (pkg/proxy/nftables/proxier.go, `hashAndTruncate`, `servicePortChainNameBase`,
`servicePortEndpointChainNameBase`): base names are readable (`ns/svc/proto/port`) and prefixed
with an 8-char hash so two bases never collide after truncation.
"""
from __future__ import annotations

import base64
import functools
import hashlib

from testbed.proxy import Endpoint, ServicePort

SVC_PREFIX = "KUBE-SVC-"
SVL_PREFIX = "KUBE-SVL-"
EXT_PREFIX = "KUBE-EXT-"
FW_PREFIX = "KUBE-FW-"
SEP_PREFIX = "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX)

# knftables.NameLengthMax (256) minus 16, as upstream's chainNameBaseLengthMax.
NFT_CHAIN_NAME_BASE_LENGTH_MAX = 240


@functools.lru_cache(maxsize=1 << 18)  # syncs rehash the same names: 70,000 per sync at 10,000 Services
def _b32_sha256(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()


def port_proto_hash(svc_port_name: str, proto: str) -> str:
    """16-char hash shared by a service port's SVC/SVL/EXT/FW chains (`proto` is lower-case)."""
    return _b32_sha256(svc_port_name + proto)[:16]


def service_chain(sp: ServicePort) -> str:
    return SVC_PREFIX + port_proto_hash(sp.port_name_string, sp.proto)


def local_chain(sp: ServicePort) -> str:
    return SVL_PREFIX + port_proto_hash(sp.port_name_string, sp.proto)


def external_chain(sp: ServicePort) -> str:
    return EXT_PREFIX + port_proto_hash(sp.port_name_string, sp.proto)


def firewall_chain(sp: ServicePort) -> str:
    return FW_PREFIX + port_proto_hash(sp.port_name_string, sp.proto)


def endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    return SEP_PREFIX + _b32_sha256(sp.port_name_string + sp.proto + ep.address)[:16]


def is_service_chain_name(name: str) -> bool:
    """Upstream's isServiceChainName: the per-service chains a sync may delete when stale."""
    return name.startswith(SERVICE_CHAIN_PREFIXES)


def nft_hash_and_truncate(name: str) -> str:
    """`<8-char hash>-<name>`, cut to 237 chars + "..." if longer than 240."""
    out = _b32_sha256(name)[:8] + "-" + name
    if len(out) > NFT_CHAIN_NAME_BASE_LENGTH_MAX:
        out = out[: NFT_CHAIN_NAME_BASE_LENGTH_MAX - 3] + "..."
    return out


def nft_service_base(sp: ServicePort) -> str:
    """Base of `service-…`/`local-…`/`external-…`/`firewall-…`: hash-ns/svc/proto/portName."""
    return nft_hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name}")


def nft_endpoint_base(sp: ServicePort, ep: Endpoint) -> str:
    """Base of `endpoint-…`/`affinity-…`; IPv6 colons become dots (colons are illegal in nft names)."""
    ip = ep.ip.replace(":", ".")
    return nft_hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name}__{ip}/{ep.port}")
