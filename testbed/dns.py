"""The cluster DNS (what kube-dns / CoreDNS's `kubernetes` plugin serves), as a pure function of the cluster state.

`records(cluster)` builds the `Zone` for `cluster.local` following the Kubernetes DNS-Based Service Discovery
specification (github.com/kubernetes/dns, docs/specification.md; schema version 1.1.0 as CoreDNS reports it):

- `dns-version.<zone>` TXT "1.1.0".
- A Service with a ClusterIP (ClusterIP, NodePort, LoadBalancer): `<svc>.<ns>.svc.<zone>` A → the ClusterIP;
  for every *named* port `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV 0 100 <port> `<svc>.<ns>.svc.<zone>.`;
  the PTR `<d>.<c>.<b>.<a>.in-addr.arpa` → `<svc>.<ns>.svc.<zone>.`.
- A headless Service (clusterIP: None): `<svc>.<ns>.svc.<zone>` A → every ready endpoint IP (every endpoint when
  publishNotReadyAddresses is set), `<host>.<svc>.<ns>.svc.<zone>` A → that IP, where `<host>` is the endpoint's IP
  with dashes, or the endpoint's `hostname` when it has one (a StatefulSet's pods: `web-0.<svc>.<ns>.svc.<zone>`);
  per named port one SRV per endpoint, priority 0, weight 100/N (as CoreDNS), the endpoint's port (the targetPort:
  there is no proxy in front of a headless Service), target `<host>.<svc>.<ns>.svc.<zone>.`; a PTR per endpoint.
  No ready endpoints → the Service's name does not exist (NXDOMAIN), as the specification asks.
- An ExternalName Service: `<svc>.<ns>.svc.<zone>` CNAME → spec.externalName, nothing else. When the target is
  inside the zone, `Zone.resolve` follows it and adds the target's records to the answer (as CoreDNS does).
- Services kube-proxy ignores (the service-proxy-name label) are in DNS all the same.
- Pods: `<a>-<b>-<c>-<d>.<ns>.pod.<zone>` A → the pod IP (deprecated by the specification, still required).
  With pods="insecure" (kubeadm's Corefile, the default here) any dashed IPv4 under a known namespace is answered,
  as `pods insecure` does; pods="verified" answers only IPs of pods that exist in that namespace.
- The apex: SOA `ns.dns.<zone>. hostmaster.<zone>.` (CoreDNS's names and timers; the serial is a CRC of the
  records, so it changes when they do) and NS `ns.dns.<zone>.`, whose A is the kube-system/kube-dns ClusterIP.

`Zone.resolve(name, qtype)` is what the server answers (`testbed/dns_server.py` only does the wire format):

- A name in the zone that has records of the type: NOERROR, authoritative. SRV and NS answers carry the A records
  of their in-zone targets in the additional section.
- A name in the zone that exists with other types only, or is an empty non-terminal (`default.svc.<zone>`, a
  known namespace's `<ns>.svc.<zone>`): NOERROR with no answer and the SOA in the authority section (NODATA).
  AAAA for every existing name is NODATA: the lab is IPv4-only.
- Any other name in the zone: NXDOMAIN with the SOA in the authority section.
- Names outside the zone are REFUSED: **the lab has no upstream DNS and no query or traffic may leave the lab**,
  so where CoreDNS would `forward . /etc/resolv.conf`, this server refuses. That includes reverse (in-addr.arpa)
  names with no PTR here (CoreDNS falls through to the upstream for those, too).
- A CNAME chain stays inside the zone: a target outside it is returned as the bare CNAME (NOERROR), an in-zone
  target that does not exist gives NXDOMAIN with the CNAME in the answer (RFC 6604), a loop gives SERVFAIL.

Not modelled: pod `hostname`/`subdomain` records, endpoint `hostname` fields, IPv6 (no AAAA data), wildcard
queries (deprecated, removed from CoreDNS), the `kubernetes` plugin's `endpoint_pod_names` and `ttl` options,
multi-cluster `clusterset.local`.

`resolv_conf(namespace, nameserver)` is the /etc/resolv.conf the kubelet writes for a ClusterFirst pod.

The zone is JSON (`Zone.to_json`/`from_json`, `Zone.write` is atomic): the lab writes it, the server reads it and
re-reads it on SIGHUP. This module imports nothing from testbed at run time, so the server starts fast.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .control import ClusterState

DOMAIN = "cluster.local"
TTL = 5  # CoreDNS's default TTL, also the SOA minimum (the negative-caching TTL)
SCHEMA_VERSION = "1.1.0"
FORMAT = 1  # of the JSON document

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

TYPES = ("SOA", "NS", "A", "AAAA", "CNAME", "PTR", "SRV", "TXT")  # what a zone may hold, in presentation order
_MAX_CHAIN = 8
_PODS_MODES = ("insecure", "verified", "disabled")


def normalise(name: str) -> str:
    """A name as the zone keys it: lower case (ASCII only, as DNS compares), no trailing dot."""
    name = name.rstrip(".") if name not in (".", "") else ""
    return name.translate(_LOWER)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def dashed(ip: str) -> str:
    """10.244.1.5 → 10-244-1-5 (IPv6: colons to dashes, as CoreDNS does)."""
    return ip.replace(".", "-").replace(":", "-")


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


@dataclass(frozen=True, order=True)
class Record:
    """One resource record. `data` by type:

    A/AAAA (ip,) · CNAME/NS/PTR (target,) · SRV (priority, weight, port, target) · TXT (string, ...) ·
    SOA (mname, rname, serial, refresh, retry, expire, minimum). Names are normalised (no trailing dot).
    """

    name: str
    type: str
    data: tuple
    ttl: int = TTL

    def __str__(self) -> str:
        t = self.type
        if t in ("CNAME", "NS", "PTR"):
            rdata = f"{self.data[0]}."
        elif t == "SRV":
            rdata = f"{self.data[0]} {self.data[1]} {self.data[2]} {self.data[3]}."
        elif t == "TXT":
            rdata = " ".join(json.dumps(s) for s in self.data)
        elif t == "SOA":
            rdata = f"{self.data[0]}. {self.data[1]}. " + " ".join(str(x) for x in self.data[2:])
        else:
            rdata = " ".join(str(x) for x in self.data)
        return f"{self.name}.\t{self.ttl}\tIN\t{t}\t{rdata}"

    def to_json(self) -> list:
        return [self.name, self.type, self.ttl, list(self.data)]

    @classmethod
    def from_json(cls, row: list) -> Record:
        name, rtype, ttl, data = row
        if rtype not in TYPES:
            raise ValueError(f"unsupported record type {rtype!r}")
        return cls(normalise(name), rtype, tuple(data), int(ttl))


@dataclass(frozen=True)
class Result:
    """What to answer: rcode, the three sections, and whether the answer is authoritative."""

    rcode: int
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    authoritative: bool = True


@dataclass(frozen=True)
class Zone:
    domain: str
    records: tuple[Record, ...]
    namespaces: tuple[str, ...] = ()
    pods: str = "insecure"
    _index: dict = field(default=None, init=False, repr=False, compare=False)
    _exists: frozenset = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pods not in _PODS_MODES:
            raise ValueError(f"pods: expected one of {', '.join(_PODS_MODES)}, got {self.pods!r}")
        index: dict[str, list[Record]] = {}
        for r in self.records:
            index.setdefault(r.name, []).append(r)
        exists = set()
        d = self.domain
        for n in [*index, *(f"{ns}.svc.{d}" for ns in self.namespaces),
                  *((f"{ns}.pod.{d}" for ns in self.namespaces) if self.pods == "insecure" else ())]:
            if not self.contains(n):
                continue
            while n != d:
                exists.add(n)
                n = n.split(".", 1)[1]
        exists.add(d)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "_exists", frozenset(exists))

    # -- lookups ----------------------------------------------------------------------------------------------
    def contains(self, name: str) -> bool:
        """Whether a (normalised) name is inside the zone's domain."""
        return name == self.domain or name.endswith("." + self.domain)

    def get(self, name: str, rtype: str | None = None) -> tuple[Record, ...]:
        """The records at a name (of one type), including pod A records synthesised in insecure mode."""
        name = normalise(name)
        rrs = self._index.get(name, ())
        if not rrs and self.pods == "insecure":
            rrs = self._pod_record(name)
        return rrs if rtype is None else tuple(r for r in rrs if r.type == rtype)

    def exists(self, name: str) -> bool:
        """A name exists if it owns records or is an ancestor of one inside the zone (an empty non-terminal)."""
        name = normalise(name)
        return name in self._exists or bool(self.get(name))

    def names(self) -> list[str]:
        return sorted(self._index)

    @property
    def soa(self) -> Record:
        return next(r for r in self._index.get(self.domain, ()) if r.type == "SOA")

    def _pod_record(self, name: str) -> tuple[Record, ...]:
        m = _POD_NAME.fullmatch(name)
        if not m or not name.endswith(f".pod.{self.domain}") or name.count(".") != self.domain.count(".") + 3:
            return ()
        host, ns = m.group(1), m.group(2)
        if ns not in self.namespaces:
            return ()
        parts = host.split("-")
        if any(len(p) > 1 and p[0] == "0" for p in parts):  # 010-... is not how anyone dashes an IP
            return ()
        try:
            ip = ipaddress.IPv4Address(".".join(parts))
        except ValueError:
            return ()
        return (Record(name, "A", (str(ip),)),)

    # -- answering --------------------------------------------------------------------------------------------
    def resolve(self, qname: str, qtype: str) -> Result:
        """The answer to one question (qtype a mnemonic like "A", "SRV", "ANY"; unknown ones are "TYPEnnn")."""
        name, qtype = normalise(qname), qtype.upper()
        if not self.contains(name):
            rrs = self._index.get(name, ())  # reverse names we hold PTRs for
            if not rrs:
                return Result(REFUSED, authoritative=False)
            return Result(NOERROR, tuple(r for r in rrs if qtype in ("ANY", r.type)))
        chain: list[Record] = []
        seen = {name}
        while True:
            rrs = self.get(name)
            if not rrs:
                return Result(NOERROR if name in self._exists else NXDOMAIN, tuple(chain), (self.soa,))
            cname = next((r for r in rrs if r.type == "CNAME"), None)
            if cname is not None and qtype not in ("CNAME", "ANY"):
                chain.append(cname)
                name = cname.data[0]
                if not self.contains(name):
                    return Result(NOERROR, tuple(chain))  # no upstream to chase it with
                if name in seen or len(seen) > _MAX_CHAIN:
                    return Result(SERVFAIL, authoritative=False)
                seen.add(name)
                continue
            match = [r for r in rrs if qtype in ("ANY", r.type)]
            if not match:
                return Result(NOERROR, tuple(chain), (self.soa,))
            extra: list[Record] = []
            for r in match:
                target = r.data[3] if r.type == "SRV" else r.data[0] if r.type == "NS" else None
                if target and self.contains(target):
                    extra.extend(x for x in self.get(target) if x.type in ("A", "AAAA") and x not in extra)
            return Result(NOERROR, tuple(chain + match), (), tuple(extra))

    # -- serialisation ----------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": FORMAT, "domain": self.domain, "pods": self.pods, "namespaces": list(self.namespaces),
                "records": [r.to_json() for r in self.records]}

    @classmethod
    def from_json(cls, data: dict) -> Zone:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a testbed DNS zone (format {FORMAT})")
        zone = cls(normalise(data["domain"]), tuple(Record.from_json(r) for r in data["records"]),
                   tuple(data.get("namespaces", ())), data.get("pods", "insecure"))
        if not any(r.type == "SOA" for r in zone._index.get(zone.domain, ())):
            raise ValueError(f"zone {zone.domain}: no SOA record at the apex")
        return zone

    def to_text(self) -> str:
        """The zone in master-file presentation format (for people, not parsed back)."""
        return "".join(f"{r}\n" for r in self.records)

    def write(self, path: str) -> None:
        """Write the JSON atomically (temporary file + rename), so a server reloading on SIGHUP never sees half."""
        import tempfile  # only the writer (the lab) pays for it, not the server's start-up

        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".zone-", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, separators=(",", ":"))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @classmethod
    def read(cls, path: str) -> Zone:
        with open(path) as f:
            return cls.from_json(json.load(f))


_POD_NAME = re.compile(r"([0-9]{1,3}(?:-[0-9]{1,3}){3})\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.pod\..+")

_TYPE_ORDER = {t: i for i, t in enumerate(TYPES)}


def _sort_key(r: Record):
    """Forward names before reverse ones, then DNS canonical order (labels right to left), type, data."""
    return (r.name.endswith(".arpa"), tuple(reversed(r.name.split("."))), _TYPE_ORDER[r.type], r.data)


def records(cluster: ClusterState, domain: str = DOMAIN, *, nameserver: str | None = None,
            pods: str = "insecure", ttl: int = TTL) -> Zone:
    """The cluster's DNS zone. `nameserver` (the NS's A record) defaults to the kube-system/kube-dns ClusterIP."""
    domain = normalise(domain)
    out: set[Record] = set()
    namespaces = {"default", "kube-system"}

    def add(name: str, rtype: str, *data) -> None:
        out.add(Record(normalise(name), rtype, tuple(data), ttl))

    for info in cluster.services:
        s = info.service
        namespaces.add(s.namespace)
        base = f"{s.name}.{s.namespace}.svc.{domain}"
        if s.type == "ExternalName":
            if s.external_name:
                add(base, "CNAME", normalise(s.external_name))
            continue
        if s.namespace == "kube-system" and s.name == "kube-dns" and nameserver is None and info.cluster_ip:
            nameserver = info.cluster_ip
        if not s.headless:
            if not info.cluster_ip:
                continue
            add(base, _addr_type(info.cluster_ip), info.cluster_ip)
            add(reverse_name(info.cluster_ip), "PTR", base)
            for sp in s.ports:
                if sp.name:
                    add(f"_{sp.name}._{sp.protocol.lower()}.{base}", "SRV", 0, 100, sp.port, base)
            continue
        published = [[e for e in eps if e.ready or s.publish_not_ready] for eps in info.endpoints]
        # An endpoint with a hostname (a StatefulSet's pod, or spec.hostname with spec.subdomain set to
        # this Service) is named by it, as CoreDNS does; the others by their dashed address.
        hostnames = dict(info.hostnames)
        for ip in sorted({e.ip for eps in published for e in eps}, key=ipaddress.ip_address):
            host = f"{hostnames.get(ip) or dashed(ip)}.{base}"
            add(base, _addr_type(ip), ip)
            add(host, _addr_type(ip), ip)
            add(reverse_name(ip), "PTR", host)
        for sp, eps in zip(s.ports, published, strict=True):
            if not sp.name:
                continue
            targets = sorted({(e.ip, e.port) for e in eps}, key=lambda t: (ipaddress.ip_address(t[0]), t[1]))
            weight = max(1, 100 // len(targets)) if targets else 100
            for ip, port in targets:
                add(f"_{sp.name}._{sp.protocol.lower()}.{base}", "SRV", 0, weight, port,
                    f"{hostnames.get(ip) or dashed(ip)}.{base}")
    if pods != "disabled":
        for p in cluster.pods:
            namespaces.add(p.namespace)
            if p.ip:
                add(f"{dashed(p.ip)}.{p.namespace}.pod.{domain}", _addr_type(p.ip), p.ip)
    for d in getattr(cluster.topology, "deployments", ()):
        namespaces.add(d.namespace)
    ns_name = f"ns.dns.{domain}"
    add(domain, "NS", ns_name)
    if nameserver:
        add(ns_name, _addr_type(nameserver), nameserver)
    add(f"dns-version.{domain}", "TXT", SCHEMA_VERSION)
    body = sorted(out, key=_sort_key)
    serial = zlib.crc32("".join(f"{r}\n" for r in body).encode()) or 1
    soa = Record(domain, "SOA", (ns_name, f"hostmaster.{domain}", serial, 7200, 1800, 86400, TTL), ttl)
    return Zone(domain, (soa, *body), tuple(sorted(namespaces)), pods)


def _addr_type(ip: str) -> str:
    return "AAAA" if ":" in ip else "A"


def resolv_conf(namespace: str, nameserver: str, domain: str = DOMAIN) -> str:
    """/etc/resolv.conf as the kubelet writes it for a dnsPolicy: ClusterFirst pod (no host search domains here)."""
    domain = normalise(domain)
    return (f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {nameserver}\n"
            "options ndots:5\n")
