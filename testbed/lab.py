"""A running lab: up, apply, delete, down, and the sync loop that ties control → render → apply.

Like kube-proxy's sync loop, every change (a Deployment scaled, a pod deleted and replaced, a
Service edited) recomputes the whole desired state and applies the difference: new pods are wired
and started, every node gets one rules transaction, and only then are removed pods torn down.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from . import loadbalancer as lbmod
from . import faultpoint, manifests, model, modes, state, supervisor, versions
from .control import Allocations, ClusterState, PodInfo, lb_address, reconcile
from .errors import KernelFeatureError, LabNotFound, PrivilegeError, TestbedError, TopologyError, fill
from .kernel import conntrack as kconntrack
from .kernel import nft as knft
from .kernel import netns, wiring
from .kernel.transaction import TransactionError

Progress = Callable[[str, dict], None]
SYNC_LOG = 50  # syncs kept in the lab state (what `get endpoints` summarises)


def _quiet(event: str, info: dict) -> None:
    pass


@dataclass
class SyncReport:
    """What one sync did and how long it took (change → rules applied on every node)."""

    added_pods: list[str] = field(default_factory=list)
    removed_pods: list[str] = field(default_factory=list)
    nodes_synced: list[str] = field(default_factory=list)
    transactions: int = 0
    seconds_to_rules: float = 0.0
    seconds_total: float = 0.0
    render_seconds: float = 0.0
    apply_seconds: float = 0.0
    conntrack_deleted: int = 0
    failed_nodes: list[str] = field(default_factory=list)  # out of date: their transaction failed


SYNCING = "sync in progress"  # a node's mark while its transaction runs (left by a killed sync)


def _one_line(e: Exception) -> str:
    """What a node's record says about why its sync failed."""
    if isinstance(e, TransactionError):
        return e.summary()
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class SyncError(TestbedError):
    """Rules on some nodes were not applied. The change is recorded and the other nodes have it;
    those nodes are out of date (`testbed get nodes`) until their next sync, a full one."""

    def __init__(self, failures: dict[str, Exception], report: SyncReport, tail: str | None = None):
        self.failures, self.report = failures, report
        names = ", ".join(failures)
        parts = [e.describe(f"on node {node}") if isinstance(e, TransactionError) else f"node {node}: {e}"
                 for node, e in failures.items()]
        tail = tail or (f"{names} {'is' if len(failures) == 1 else 'are'} out of date (testbed get nodes); "
                        f"the change is recorded and the other nodes have it. The next sync (any "
                        f"change, or the same command again) gives {names} a full sync")
        super().__init__(f"rules were not applied on {names}:\n" + "\n".join(parts) + "\n" + fill(tail))


def require_root() -> None:
    if os.geteuid() != 0:
        raise PrivilegeError("testbed needs root for network namespaces and rules: run it with sudo (or as root)")


def check_kernel(mode: str) -> None:
    """Say what is missing and how to get it, before anything is built."""
    if not os.path.exists("/proc/self/ns/net"):
        raise KernelFeatureError("this kernel has no network namespaces (CONFIG_NET_NS)")
    modes.require(mode)


DELETE_KINDS = {
    "pod": "Pod", "pods": "Pod", "po": "Pod", "service": "Service", "services": "Service", "svc": "Service",
    "deployment": "Deployment", "deployments": "Deployment", "deploy": "Deployment",
    "replicaset": "ReplicaSet", "replicasets": "ReplicaSet", "rs": "ReplicaSet",
    "replicationcontroller": "ReplicationController", "replicationcontrollers": "ReplicationController",
    "rc": "ReplicationController", "statefulset": "StatefulSet", "statefulsets": "StatefulSet", "sts": "StatefulSet",
    "daemonset": "DaemonSet", "daemonsets": "DaemonSet", "ds": "DaemonSet", "job": "Job", "jobs": "Job",
    "endpointslice": "EndpointSlice", "endpointslices": "EndpointSlice",
}


def _owned_by(doc: dict, kind: str, name: str) -> bool:
    refs = (doc.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, dict) and r.get("kind") == kind and r.get("name") == name for r in refs)


def _doc_key(doc: dict) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace") or "default" if doc.get("kind") != "Lab" else ""
    return (doc.get("kind", ""), ns, meta.get("name", ""))


def _read_docs(path: str) -> tuple[list, str]:
    """The documents of a file (or `-`), Lists flattened; an empty file is refused as kubectl does."""
    docs, name = manifests.load_documents(path)
    if not docs:
        raise TopologyError(name, None, None, "holds no objects (expected a Lab document and/or Kubernetes manifests)")
    return docs, name


class Lab:
    """Handle on a lab by name; the truth lives in /run/testbed/<name>/ and in the kernel."""

    def __init__(self, name: str, progress: Progress = _quiet):
        self.name = name
        self.progress = progress
        self._state: dict | None = None

    # ------------------------------------------------------------------ state

    @property
    def saved(self) -> dict:
        if self._state is None:
            self._state = state.read(self.name)
            if self._state is None:
                raise LabNotFound(f"no lab named {self.name!r} is running (labs: {', '.join(state.list_labs()) or 'none'})")
        return self._state

    def exists(self) -> bool:
        return state.read(self.name) is not None

    def topology(self, docs: list[dict] | None = None) -> model.Topology:
        s = self.saved
        topo = model.parse_documents(docs if docs is not None else s["manifests"], s.get("source", "<lab>"))
        return topo.with_lab(name=self.name, proxy_mode=s["mode"])

    def cluster(self) -> ClusterState:
        self._state = state.read(self.name) or self._state  # another process may have changed it
        st, _ = reconcile(self.topology(), Allocations.from_json(self.saved["alloc"]))
        return st

    def _save(self) -> None:
        state.write(self.name, self._state)

    def out_of_date(self) -> dict[str, str]:
        """Nodes whose rules may not match the lab's state, and why: "syncing" while a command
        holds the lock; a mark left by a sync that is no longer running was left by a killed one."""
        nodes = {n: r["out_of_date"]["reason"] for n, r in self.saved.get("nodes", {}).items() if r.get("out_of_date")}
        if SYNCING in nodes.values():
            now = "syncing" if state.is_locked(self.name) else "a sync was interrupted (its process died)"
            nodes = {n: now if r == SYNCING else r for n, r in nodes.items()}
        return nodes

    @classmethod
    def open(cls, name: str, progress: Progress = _quiet) -> "Lab":
        """A handle on a running lab for a command: its agent is restarted if it is not running."""
        lab = cls(name, progress)
        lab.ensure_agent()
        return lab

    def agent_record(self) -> tuple[dict | None, bool]:
        """The lab's agent as recorded (None: the lab never got one) and whether that process runs."""
        rec = self.saved.get("agent")
        return rec, bool(rec) and supervisor.alive(rec["pid"], rec["start"])

    def wait_agent_started(self, timeout: float = 120.0) -> None:
        """Until the lab's agent has run its first step. Waits on what the agent does (readiness,
        the cloud LB's health checks) start their own bounds after this: on a busy machine the
        agent can take seconds just to import. Raises TestbedError at once if it is not running."""
        from probes.poll import wait_until

        def started() -> bool:
            self._state = None
            rec, alive = self.agent_record()
            if not rec:
                return True  # a lab without an agent (`up` did not finish): nothing to wait for
            if not alive:
                raise TestbedError(f"lab {self.name}: its agent (pid {rec['pid']}) is not running")
            return supervisor.agent_started(self.name, rec)

        wait_until(started, timeout=timeout, interval=0.02, message=f"lab {self.name}'s agent to start")

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until every pod is ready. Pods with a readiness probe start unready, as in Kubernetes,
        and the prober's clock starts with the agent, so this waits for the agent first."""
        from probes.poll import wait_until

        self.wait_agent_started()
        wait_until(lambda: all(p.ready for p in Lab(self.name).cluster().pods if not p.terminating), timeout=timeout,
                   message=f"every pod of lab {self.name} ready")

    def ensure_agent(self) -> dict | None:
        """The lab's agent (prober, grace-period clock) runs, or is started again: a killed agent
        would leave readiness unfollowed. Returns {"old": pid, "new": pid} and reports the event
        "agent-restarted" when it restarted one; None when it was running (or the lab never got
        one: `up` did not finish) or when not root (then "agent-down" is reported)."""
        rec, alive = self.agent_record()
        if not rec or alive:
            return None
        if os.geteuid() != 0:
            self.progress("agent-down", {"old": rec["pid"]})
            return None
        with state.locked(self.name):
            self._state = None
            rec, alive = self.agent_record()
            if not rec or alive:
                return None  # another command restarted it meanwhile
            self.saved["agent"] = supervisor.start_agent(self.name)
            self._save()
        info = {"old": rec["pid"], "new": self.saved["agent"]["pid"]}
        self.progress("agent-restarted", info)
        return info

    # ------------------------------------------------------------------ up

    @classmethod
    def up(cls, topo_path: str | None = None, name: str | None = None, mode: str | None = None,
           progress: Progress = _quiet, strict: bool = False, rebuild_endpoints: bool | None = None,
           kube_proxy_version: str | None = None) -> "Lab":
        require_root()
        docs, path = _read_docs(str(topo_path or model.builtin("default")))
        topo = model.parse_documents(docs, path, strict=strict, rebuild_endpoints=rebuild_endpoints)
        if kube_proxy_version:  # whose rules every node writes (verify runs a mode at several)
            topo = model.with_kube_proxy_version(topo, kube_proxy_version)
        name = name or topo.lab.name
        mode = mode or topo.lab.proxy_mode
        if not model.LAB_NAME.match(name):
            raise TopologyError(path, None, "--name",
                                f"expected a lab name of at most 16 characters (a-z, 0-9, '-'), got {name!r}")
        if mode not in modes.NAMES:
            raise TopologyError(path, None, "--mode", f"expected one of {', '.join(modes.NAMES)}, got {mode!r}")
        topo = topo.with_lab(name=name, proxy_mode=mode)
        check_kernel(mode)
        lab = cls(name, progress)
        if state.read(name) is not None or state.read_journal(name) or any(
                n.startswith(f"{name}-") and wiring.ns_owner(n)
                and wiring.ns_owner(n).startswith(f"{wiring.ALIAS_PREFIX}{name}:") for n in netns.list_names()):
            raise TestbedError(f"a lab named {name!r} already exists: `testbed down {name}` first, or pick another --name")
        progress("notes", {"topology": topo})
        cluster, alloc = reconcile(topo)
        for n in cluster.nodes:  # before anything is built: a release without the mode is refused
            reason = versions.check_mode(cluster.kube_proxy_version(n.name), mode)
            if reason:
                raise TopologyError(path, f"node {n.name}", "kube-proxy version", reason)
        with state.locked(name):
            lab._state = {"lab": name, "mode": mode, "source": path, "manifests": model.kept_documents(docs, topo.lab),
                          "alloc": alloc.to_json(),
                          "pods": {}, "nodes": {}, "created": time.time(), "syncs": []}
            lab._save()
            agent = None
            try:
                agent = supervisor.start_agent(name, held=True)  # it imports while the lab is built
                lab._build(cluster)
                report = lab._sync(cluster, alloc, started=time.perf_counter(), change="lab up")
                lab.saved["agent"] = supervisor.release_agent(agent)
                lab._save()
            except BaseException as e:
                if agent is not None and agent.get("go") is not None:
                    os.close(agent["go"])  # the held agent reads EOF and exits; teardown stops it too
                progress("rollback", {})
                lab._teardown()
                if isinstance(e, SyncError):
                    raise SyncError(e.failures, e.report, tail=f"lab {name} was not built: everything it made "
                                                                f"is removed") from None
                raise
        progress("ready", {"report": report})
        return lab

    def _build(self, cluster: ClusterState) -> None:
        lab = self.name
        net = ipaddress.ip_network(cluster.lab.node_network)
        with wiring.Netlink() as ipr_of:
            self.progress("step", {"what": "fabric", "total": len(cluster.nodes) + len(cluster.clients)})
            state.journal(lab, "ns", wiring.fabric_ns(lab))
            wiring.build_fabric(lab, ipr_of)
            gateway = str(net.network_address + 1)
            wiring.fabric_gateway(lab, gateway, net.prefixlen, ipr_of)
            for role, hosts in (("node", cluster.nodes), ("client", cluster.clients)):
                for h in hosts:
                    state.journal(lab, "ns", wiring.host_ns(lab, h.name))
                    wiring.attach_host(lab, role, h.name, h.ip, net.prefixlen, gateway, ipr_of)
                    self.progress("advance", {"what": f"{role} {h.name}"})
            # The simulated cloud load balancer, on the node network like the nodes.
            state.journal(lab, "ns", wiring.host_ns(lab, "lb"))
            wiring.attach_host(lab, "lb", "lb", lb_address(cluster.lab), net.prefixlen, gateway, ipr_of)
            wiring.set_sysctls(wiring.host_ns(lab, "lb"), {
                "net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.eth0.rp_filter": "0",
                # passthrough sends packets back out the interface they came in on: no redirects
                "net.ipv4.conf.all.send_redirects": "0", "net.ipv4.conf.eth0.send_redirects": "0"})
            lb_ipr = ipr_of(wiring.host_ns(lab, "lb"))
            # A cloud's network knows where pod CIDRs live: the LB answers a pod whose traffic its node
            # did not capture (an ingress IP of ipMode Proxy) through the pod's node.
            for n in cluster.nodes:
                lb_ipr.route("add", dst=n.pod_cidr, gateway=n.ip)
            if cluster.lab.lb_mode == "passthrough":
                for mark, table, node_ip in lbmod.routes(cluster):
                    lb_ipr.route("add", dst="0.0.0.0/0", gateway=node_ip, table=table)
                    lb_ipr.rule("add", fwmark=mark, table=table, priority=lbmod.RULE_PRIORITY_BASE + mark)
            # Outside clients reach the load-balancer pool through the LB, as through a cloud's edge.
            for c in cluster.clients:
                cipr = ipr_of(wiring.host_ns(lab, c.name))
                for prefix in lbmod.pool_prefixes(cluster.lab):
                    cipr.route("add", dst=prefix, gateway=lb_address(cluster.lab))
            self.saved["lb"] = {"ns": wiring.host_ns(lab, "lb"), "addrs": [], "healthy": {}}
            for n in cluster.nodes:
                routes = [(o.pod_cidr, o.ip) for o in cluster.nodes if o.name != n.name]
                wiring.setup_node(lab, n.name, n.gateway, ipaddress.ip_network(n.pod_cidr).prefixlen, routes, ipr_of,
                                  tcp_be_liberal=cluster.lab.conntrack_tcp_be_liberal)
                self.saved["nodes"][n.name] = {"ns": wiring.host_ns(lab, n.name), "lab": lab}
        self._save()

    # ------------------------------------------------------------------ sync

    def _sync(self, cluster: ClusterState, alloc: Allocations, started: float, change: str = "",
              detail: str = "") -> SyncReport:
        """Bring the kernel to `cluster`: add pods, one rules transaction per node, remove pods.

        Each sync is logged with the kind of change that triggered it (`change`, what `get endpoints`
        groups by), its `detail`, and, like kube-proxy's network_programming_duration_seconds, the
        time from the change to rules on every node.

        Each node is its own kube-proxy: one whose transaction fails is marked out of date and
        the others go on; the change stays recorded, SyncError says what failed where, and the
        node's next sync is a full one. Every node is marked before its transaction and unmarked
        after it, so a process killed in between leaves the mark too."""
        report = SyncReport()
        lab = self.name
        have: dict = self.saved["pods"]
        want = {p.key: p for p in cluster.pods}
        self._remove_orphans(cluster)
        new = [p for k, p in want.items() if k not in have]
        gone = [k for k in have if k not in want or have[k]["ip"] != want[k].ip or have[k]["node"] != want[k].node]
        by_node = {n.name: n for n in cluster.nodes}
        self._write_addon_files(cluster)
        starting = None
        if new:
            self.progress("step", {"what": "pods", "total": len(new)})
            with wiring.Netlink() as ipr_of:
                for p in new:
                    if p.host_network:
                        continue  # it runs in its node's namespace: nothing to wire
                    node = by_node[p.node]
                    ns = wiring.pod_ns(lab, p.namespace, p.name)
                    state.journal(lab, "ns", ns)
                    wiring.add_pod(lab, p.node, p.namespace, p.name, p.ip,
                                   ipaddress.ip_network(node.pod_cidr).prefixlen, node.gateway, ipr_of,
                                   hairpin=cluster.lab.hairpin_mode == "hairpin-veth")
                    faultpoint.reach("pod-wired")
                    self.progress("advance", {"what": f"pod {p.key}"})
            starting = supervisor.launch_workloads(lab, [supervisor.workload_spec(lab, p) for p in new])
            # A new lab's servers start while its rules are written (no client can connect before
            # `up` returns; in the emulated guest each takes seconds to import); a live lab's
            # new pods serve before any rule points at them.
            procs = starting.started if change == "lab up" else starting.wait()
            faultpoint.reach("workloads-started")
            for p in new:
                have_entry = {"ns": wiring.netns_of(lab, p), "node": p.node, "ip": p.ip, "proc": procs.get(p.key),
                              "created": time.time()}
                if p.host_network:
                    have_entry["host_network"] = True
                if p.key in have:  # re-addressed pod: keep the old record for removal below
                    have[p.key + "#old"] = have[p.key]
                    gone = [g if g != p.key else p.key + "#old" for g in gone]
                have[p.key] = have_entry
                report.added_pods.append(p.key)
        # Nodes already out of date get a full sync; all are marked until their transaction is in.
        nodes = self.saved["nodes"]
        stale = {n.name for n in cluster.nodes if nodes[n.name].get("out_of_date")}
        for n in cluster.nodes:
            nodes[n.name].setdefault("out_of_date", {"since": time.time(), "reason": SYNCING})
        self._save()  # the new pods' processes and the marks are recorded before any rule changes
        faultpoint.reach("pods-recorded")
        # Rules: one transaction per node, every node.
        self.progress("step", {"what": "rules", "total": len(cluster.nodes)})
        proxier = modes.get(self.saved["mode"]).proxier
        failed: dict[str, Exception] = {}
        nodes_ms: dict[str, float] = {}  # each node's sync, as its kube-proxy's sync_proxy_rules_duration
        for n in cluster.nodes:
            rec = nodes[n.name]
            view = cluster.node_view(n.name)
            node_started = time.perf_counter()
            try:
                timing = proxier.sync(rec["ns"], view, rec, full=n.name in stale)
            except (TestbedError, RuntimeError, OSError) as e:
                if isinstance(e, state.StateWriteError) or (isinstance(e, OSError) and state.full_error(e)):
                    raise
                rec["out_of_date"] = {"since": time.time(), "reason": _one_line(e)}
                failed[n.name] = e
                self.progress("failed", {"what": f"rules on {n.name}", "error": _one_line(e)})
                continue
            del rec["out_of_date"]
            nodes_ms[n.name] = round((time.perf_counter() - node_started) * 1000, 2)
            faultpoint.reach("rules-applied")
            report.render_seconds += timing.render
            report.apply_seconds += timing.kernel
            if cluster.lab.conntrack_cleanup:  # kube-proxy's reconciler runs after each successful sync
                report.conntrack_deleted += kconntrack.cleanup_stale_udp(rec["ns"], view)
            report.transactions += timing.transactions
            report.nodes_synced.append(n.name)
            self.progress("advance", {"what": f"rules on {n.name}"})
        if starting is not None:
            starting.wait()
        faultpoint.reach("rules-done")
        self._sync_load_balancer(cluster)
        self._reload_addons(cluster, skip=set(report.added_pods))
        report.seconds_to_rules = time.perf_counter() - started
        # Published only now, so what `get endpoints` shows is what the rules already do.
        self.saved["alloc"] = alloc.to_json()
        self._save()
        faultpoint.reach("published")
        # Only now that no rule points at them, remove the pods that went away (while a node is
        # out of date its rules may still: they go with the next sync that reaches every node).
        victims = [(k, have.pop(k)) for k in gone if k in have] if not failed else []
        if victims:
            supervisor.stop_many([(v["proc"]["pid"], v["proc"]["start"]) for _, v in victims if v.get("proc")])
            with wiring.Netlink() as ipr_of:
                for k, v in victims:
                    ns_name, pod = k.split("#")[0].split("/", 1)
                    if not v.get("host_network"):  # a host-network pod's namespace is its node's
                        wiring.remove_pod(lab, v["node"], ns_name, pod, ipr_of)
                    report.removed_pods.append(k.split("#")[0])
        report.seconds_total = time.perf_counter() - started
        report.failed_nodes = sorted(failed)
        self._note_first_seen(cluster)
        self.saved["syncs"] = (self.saved.get("syncs", []) + [{
            "at": time.time(), "change": change, "trigger": f"{change}: {detail}" if detail else change,
            "mode": self.saved["mode"],
            "to_rules_ms": round(report.seconds_to_rules * 1000, 2),
            "total_ms": round(report.seconds_total * 1000, 2), "added": report.added_pods,
            "removed": report.removed_pods, "transactions": report.transactions,
            "conntrack_deleted": report.conntrack_deleted, "failed": report.failed_nodes,
            "nodes_ms": nodes_ms}])[-SYNC_LOG:]
        self._save()
        if failed:
            raise SyncError(failed, report)
        return report

    def _note_first_seen(self, cluster: ClusterState) -> None:
        """When each Service, workload and Ingress first appeared (kubectl's AGE in `testbed get`)."""
        seen, now = self.saved.get("since", {}), time.time()
        topo = cluster.topology
        keys = [f"Service/{s.key}" for s in cluster.services] + [w.ref for w in topo.workloads] + \
               [f"Ingress/{i.key}" for i in topo.ingresses]
        self.saved["since"] = {k: seen.get(k, now) for k in keys}

    def _remove_orphans(self, cluster: ClusterState) -> list[str]:
        """Pod namespaces that a sync journaled and made but never recorded (it was killed, or
        failed before the record was written): their processes are stopped and they are removed,
        so nothing unrecorded keeps serving and the pod can be made again."""
        lab = self.name
        hosts = {wiring.fabric_ns(lab), wiring.host_ns(lab, "lb")}
        hosts |= {wiring.host_ns(lab, h) for h in [*self.saved["nodes"], *(h.name for h in (*cluster.nodes, *cluster.clients))]}
        recorded = {v["ns"] for v in self.saved["pods"].values()}
        journaled = {e[1] for e in state.read_journal(lab) if e[0] == "ns" and len(e) > 1}
        orphans = sorted(n for n in journaled - hosts - recorded if "." in n and netns.exists(n))
        if not orphans:
            return []
        supervisor.stop_many(supervisor.pids_in_named(orphans))
        with wiring.Netlink() as ipr_of:
            for n in orphans:
                ns_name, pod = n[len(lab) + 1:].split(".", 1)
                for node in cluster.nodes:  # its veth is on one of them
                    wiring.remove_pod(lab, node.name, ns_name, pod, ipr_of)
        self.progress("orphans", {"namespaces": orphans})
        return orphans

    def _write_addon_files(self, cluster: ClusterState) -> None:
        """The cluster DNS zone, the ingress route table, and each namespace's resolv.conf."""
        from . import dns, ingress
        from .control import INGRESS_CONTROLLER, dns_ip

        zone = supervisor.addon_file(self.name, "dns")
        zone.parent.mkdir(parents=True, exist_ok=True)
        with state.writing(zone):
            dns.records(cluster, cluster.lab.cluster_domain).write(str(zone))
        topo = cluster.topology
        if topo.ingresses:
            routes = supervisor.addon_file(self.name, "ingress")
            routes.parent.mkdir(parents=True, exist_ok=True)
            table = ingress.routes(topo.ingresses, topo.ingress_classes, cluster.services, controller=INGRESS_CONTROLLER)
            state.replace_file(routes, json.dumps(table.to_json()))
        if cluster.lab.cluster_dns:
            resolv = state.lab_dir(self.name) / "resolv"
            resolv.mkdir(parents=True, exist_ok=True)
            for ns in {p.namespace for p in cluster.pods}:
                text = dns.resolv_conf(ns, dns_ip(cluster.lab), cluster.lab.cluster_domain)
                state.replace_file(resolv / f"{ns}.conf", text)

    def _reload_addons(self, cluster: ClusterState, skip: set[str]) -> None:
        """SIGHUP the DNS and ingress pods so they serve the files just written."""
        import signal as _signal

        for p in cluster.pods:
            rec = self.saved["pods"].get(p.key, {})
            proc = rec.get("proc")
            if p.workload != "netexec" and p.key not in skip and proc and supervisor.alive(proc["pid"], proc["start"]):
                os.kill(proc["pid"], _signal.SIGHUP)

    def _sync_load_balancer(self, cluster: ClusterState) -> None:
        """The cloud provider's side: LB addresses on the LB namespace, and its forwarding rules."""
        rec = self.saved.get("lb")
        if not rec:
            return
        want = lbmod.addresses(cluster)
        if want or rec["addrs"]:
            with wiring.Netlink() as ipr_of:
                ipr = ipr_of(rec["ns"])
                eth0 = wiring._index(ipr, "eth0")
                # nodeport: the LB owns the addresses (it NATs them); passthrough: it only routes
                # packets for them on to a node, unchanged (clients reach them via the LB's route).
                if cluster.lab.lb_mode != "passthrough":
                    for ip in sorted(set(rec["addrs"]) - set(want)):
                        ipr.addr("del", index=eth0, address=ip, prefixlen=32)
                    for ip in sorted(set(want) - set(rec["addrs"])):
                        ipr.addr("add", index=eth0, address=ip, prefixlen=32)
            rec["addrs"] = want
        healthy = {k: v for k, v in rec.get("healthy", {}).items()}
        for info in cluster.services:  # eTP=Local: no node is healthy until a health check passed
            if info.service.type == "LoadBalancer" and info.health_check_node_port and info.key not in healthy:
                healthy[info.key] = []
        text = lbmod.render(cluster, healthy, cluster.lab.lb_mode)
        if text != rec.get("applied"):
            knft.apply(rec["ns"], text)
            rec["applied"] = text
        # Addresses a dump's Services kept outside the pool (a real cloud's or MetalLB's): the clients
        # reach them through the LB, like the pool itself.
        pool = [ipaddress.ip_network(p) for p in lbmod.pool_prefixes(cluster.lab)]
        self._client_routes(cluster, rec, "kept_routes", lb_address(cluster.lab),
                            [ip for ip in want if not any(ipaddress.ip_address(ip) in n for n in pool)])
        # externalIPs: the network routes them to a node (the first), as an admin's router would.
        self._client_routes(cluster, rec, "external_routes", cluster.nodes[0].ip,
                            [ip for info in cluster.services if info.proxied for ip in info.service.external_ips])

    def _client_routes(self, cluster: ClusterState, rec: dict, key: str, via: str, addresses: list[str]) -> None:
        """/32 routes on every outside client to `addresses` via `via`, kept in rec[key] to change by difference."""
        want, have = sorted(set(addresses)), rec.get(key, [])
        if want == have or not cluster.clients:
            return
        with wiring.Netlink() as ipr_of:
            for c in cluster.clients:
                ipr = ipr_of(wiring.host_ns(self.name, c.name))
                for ip in sorted(set(have) - set(want)):
                    ipr.route("del", dst=f"{ip}/32")
                for ip in sorted(set(want) - set(have)):
                    ipr.route("add", dst=f"{ip}/32", gateway=via)
        rec[key] = want

    def set_lb_health(self, healthy: dict[str, list[str]]) -> None:
        """Record the cloud LB's health-check results (service → healthy nodes) and re-apply its rules."""
        with state.locked(self.name):
            self._state = None
            rec = self.saved.get("lb")
            if not rec or rec.get("healthy") == healthy:
                return
            rec["healthy"] = healthy
            self._sync_load_balancer(self.cluster_from(Allocations.from_json(self.saved["alloc"])))
            self._save()

    def switch_mode(self, mode: str) -> SyncReport:
        """Remove the current mode's rules from every node completely, then sync in `mode`."""
        require_root()
        self.ensure_agent()
        check_kernel(mode)
        started = time.perf_counter()
        with state.locked(self.name):
            self._state = None
            old = modes.get(self.saved["mode"]).proxier
            for rec in self.saved["nodes"].values():  # from here each node's rules are in flux
                rec.setdefault("out_of_date", {"since": time.time(), "reason": SYNCING})
            self._save()
            for rec in self.saved["nodes"].values():
                old.cleanup(rec["ns"], rec)
                faultpoint.reach("cleaned")
            self.saved["mode"] = mode
            self._save()
            cluster, alloc = reconcile(self.topology(), Allocations.from_json(self.saved["alloc"]))
            return self._sync(cluster, alloc, started, change="proxy mode", detail=f"→ {mode}")

    # ------------------------------------------------------------------ changes

    def apply(self, path: str) -> SyncReport:
        """Merge the objects of FILE into the lab (replacing ones of the same kind and name) and sync."""
        require_root()
        self.ensure_agent()
        started = time.perf_counter()
        docs, path = _read_docs(path)
        for d in docs:
            if isinstance(d.data, dict) and d.data.get("kind") == "Lab":
                raise TopologyError(path, f"Lab {(d.data.get('metadata') or {}).get('name')} ({d.where})", None,
                                    "a running lab's Lab document cannot be changed: `testbed down` and `up` again")
        with state.locked(self.name):
            self._state = None
            stored = copy.deepcopy(self.saved["manifests"])
            index = {_doc_key(d): i for i, d in enumerate(stored)}
            # Validate the file's objects over the running ones (errors point into FILE) before
            # touching the kernel.
            topo = model.parse_documents(docs, path, base=self.topology()).with_lab(name=self.name, proxy_mode=self.saved["mode"])
            for d in model.kept_documents(docs, topo.lab)[1:]:
                k = _doc_key(d)
                if k in index:
                    stored[index[k]] = d
                else:
                    index[k] = len(stored)
                    stored.append(d)
            cluster, alloc = reconcile(topo, Allocations.from_json(self.saved["alloc"]))
            self.saved["manifests"] = stored
            detail = ", ".join(f"{d.data.get('kind')}/{(d.data.get('metadata') or {}).get('name')}" for d in docs
                               if isinstance(d.data, dict))
            return self._sync(cluster, alloc, started, change="apply", detail=detail)

    def delete(self, kind: str, name: str, namespace: str = "default", grace: int | None = None) -> SyncReport:
        """Delete a pod or another object, as the API server would.

        A deleted pod is terminating for its grace period (terminationGracePeriodSeconds, or
        `grace`): its endpoint turns ready=false, serving, terminating; its server keeps answering;
        the lab's agent removes it when the period ends. A Deployment's pod is replaced at once by
        one with a new name and IP. `grace=0` removes the pod immediately.
        """
        require_root()
        self.ensure_agent()
        started = time.perf_counter()
        kind = DELETE_KINDS.get(kind.lower())
        if kind is None:
            raise TestbedError(f"expected one of: {', '.join(sorted(set(DELETE_KINDS.values()), key=str.lower))}")
        with state.locked(self.name):
            self._state = None
            alloc = Allocations.from_json(self.saved["alloc"])
            key = f"{namespace}/{name}"
            stored = self.saved["manifests"]
            idx = [i for i, d in enumerate(stored) if _doc_key(d) == (kind, namespace, name)]
            current = {p.key: p for p in self.cluster_from(alloc).pods}
            if kind == "Pod":
                pod = current.get(key)
                if pod is None or (not idx and not pod.owner):
                    raise TestbedError(f"no pod {key} in lab {self.name}")
                if pod.terminating:
                    raise TestbedError(f"pod {key} is already terminating")
                self._terminate(alloc, [pod], grace)
            elif not idx:
                raise TestbedError(f"no {kind} {key} in lab {self.name}")
            if kind in model.WORKLOAD_KINDS:
                # Cascading deletion, as the garbage collector does: its ReplicaSets and pods go too.
                owned = {(kind, name)} | {("ReplicaSet", _doc_key(d)[2]) for d in stored
                                          if _doc_key(d)[:2] == ("ReplicaSet", namespace) and _owned_by(d, kind, name)}
                idx += [i for i, d in enumerate(stored) if _doc_key(d)[1] == namespace and i not in idx
                        and (_doc_key(d)[0] in ("ReplicaSet", "Pod")) and any(_owned_by(d, k, n) for k, n in owned)]
                self._terminate(alloc, [p for p in current.values() if p.owner == key and not p.terminating
                                        and (p.owner_kind == kind or p.owner_kind is None)], grace)
            stored = [d for i, d in enumerate(stored) if i not in idx]
            topo = model.parse_documents(stored, self.saved.get("source", "<lab>")).with_lab(
                name=self.name, proxy_mode=self.saved["mode"])
            cluster, alloc = reconcile(topo, alloc)
            self.saved["manifests"] = stored
            return self._sync(cluster, alloc, started, change=f"delete {kind.lower()}", detail=key)

    def cluster_from(self, alloc: Allocations) -> ClusterState:
        st, _ = reconcile(self.topology(), alloc)
        return st

    @staticmethod
    def _terminate(alloc: Allocations, pods: list[PodInfo], grace: int | None) -> None:
        now = time.time()
        for p in pods:
            period = p.grace_period if grace is None else grace
            if period <= 0:
                alloc.deleted.append(p.key)
                continue
            rec = alloc.pods.setdefault(p.key, {})
            rec.update(terminating=now + period, snapshot=p.snapshot(), ready=p.ready)

    def expire_terminating(self, now: float | None = None) -> SyncReport | None:
        """Remove pods whose grace period has ended (the agent calls this; so does every change)."""
        now = time.time() if now is None else now
        with state.locked(self.name):
            self._state = None
            alloc = Allocations.from_json(self.saved["alloc"])
            done = [k for k, r in alloc.pods.items() if r.get("terminating") and r["terminating"] <= now]
            if not done:
                return None
            for k in done:
                alloc.pods.pop(k)
            cluster, alloc = reconcile(self.topology(), alloc)
            return self._sync(cluster, alloc, time.perf_counter(), change="grace period ended", detail=", ".join(done))

    def set_pod_state(self, ready: dict[str, bool] | None = None, restarted: dict[str, dict] | None = None) -> SyncReport | None:
        """Record readiness changes (from the prober) and restarted servers, then sync."""
        started = time.perf_counter()
        with state.locked(self.name):
            self._state = None
            alloc = Allocations.from_json(self.saved["alloc"])
            changed = False
            for key, value in (ready or {}).items():
                if key in alloc.pods and alloc.pods[key].get("ready") != value:
                    alloc.pods[key]["ready"] = value
                    changed = True
            for key, proc in (restarted or {}).items():
                if key in self.saved["pods"]:
                    self.saved["pods"][key]["proc"] = proc
                    self.saved["pods"][key]["restarts"] = self.saved["pods"][key].get("restarts", 0) + 1
                    changed = True
            if not changed:
                return None
            cluster, alloc = reconcile(self.topology(), alloc)
            detail = ", ".join([f"{k} ready={str(v).lower()}" for k, v in (ready or {}).items()]
                               + [f"{k} restarted" for k in (restarted or {})])
            return self._sync(cluster, alloc, started, change="readiness" if ready else "restart", detail=detail)

    def record_latency(self, entries: list[dict]) -> None:
        """Keep programming latencies observed by traffic (testbed.latency) for `get endpoints`."""
        with state.locked(self.name):
            self._state = None
            self.saved["latency"] = (self.saved.get("latency", []) + entries)[-SYNC_LOG:]
            self._save()

    # ------------------------------------------------------------------ staging failures

    STAGES = {"stop": "SIGKILL", "hang": "SIGSTOP", "resume": "SIGCONT", "unready": "SIGUSR1", "ready": "SIGUSR2"}

    def stage(self, pod_name: str, action: str) -> str:
        """Make a pod's server stop (killed: connections refused), hang (stopped: connections time
        out), resume, fail its readiness check (`unready`: /readyz answers 503) or pass it again
        (`ready`), or `start` a server that was stopped. The pod itself, its IP and its endpoint
        stay: only probes (and kube-proxy after them) can react."""
        import signal as _signal

        require_root()
        self.ensure_agent()
        cluster = self.cluster()
        pod = find_pod(cluster, pod_name)
        rec = self.saved["pods"].get(pod.key)
        if rec is None:
            raise TestbedError(f"pod {pod.key} has no server in lab {self.name}")
        proc = rec.get("proc") or {}
        running = bool(proc) and supervisor.alive(proc["pid"], proc["start"])
        if action == "start":
            if running:
                return f"{pod.key}: server already running (pid {proc['pid']})"
            new = supervisor.start_workloads(self.name, [supervisor.workload_spec(self.name, pod)])[pod.key]
            self.set_pod_state(restarted={pod.key: new})
            return f"{pod.key}: server started (pid {new['pid']})"
        sig = self.STAGES.get(action)
        if sig is None:
            raise TestbedError(f"expected one of: {', '.join([*self.STAGES, 'start'])}, got {action!r}")
        if not running:
            raise TestbedError(f"pod {pod.key}'s server is not running (`testbed pod start {pod.name}`)")
        os.kill(proc["pid"], getattr(_signal, sig))
        if action == "stop":
            supervisor.stop(proc["pid"], proc["start"], timeout=1.0)
        return f"{pod.key}: {action} ({sig} to pid {proc['pid']})"

    # ------------------------------------------------------------------ down

    def down(self) -> dict:
        """Remove everything of this lab; idempotent, needs neither the topology file nor state.json."""
        require_root()
        with state.locked(self.name):
            return self._teardown()

    def _teardown(self) -> dict:
        lab = self.name
        saved = state.read(lab) or {}
        names = {e[1] for e in state.read_journal(lab) if e[0] == "ns" and len(e) > 1}
        names |= {v["ns"] for v in saved.get("pods", {}).values() if "ns" in v}
        # Namespaces marked as ours in the kernel, even if the journal is gone.
        mark = f"{wiring.ALIAS_PREFIX}{lab}:"
        for n in netns.list_names():
            if n.startswith(f"{lab}-") and n not in names:
                owner = wiring.ns_owner(n)
                if owner and owner.startswith(mark):
                    names.add(n)
        procs = {(int(e[1]), e[2]) for e in state.read_journal(lab) if e[0] == "pid" and len(e) > 2}
        procs |= {(v["proc"]["pid"], v["proc"]["start"]) for v in saved.get("pods", {}).values() if v.get("proc")}
        procs |= set(supervisor.pids_in_named(names))
        stopped = supervisor.stop_many(sorted(procs))
        removed = 0
        for n in sorted(names):
            removed += netns.delete(n)
        d = state.lab_dir(lab)
        if d.exists():
            for p in sorted(d.rglob("*"), reverse=True):
                if p.name == "lock":
                    continue
                p.unlink() if not p.is_dir() else p.rmdir()
            try:
                (d / "lock").unlink()
                d.rmdir()
            except OSError:
                pass
        self._state = None
        return {"namespaces": removed, "processes": stopped}


def down_all() -> list[str]:
    """Every lab with a state directory, plus namespaces whose owner alias names a lab."""
    labs = set(state.list_labs())
    for n in netns.list_names():
        owner = wiring.ns_owner(n)
        if owner and owner.startswith(wiring.ALIAS_PREFIX):
            labs.add(owner.split(":")[1])
    for lab in sorted(labs):
        Lab(lab).down()
    return sorted(labs)


def find_pod(cluster: ClusterState, name: str) -> PodInfo:
    ns, _, pod = name.rpartition("/")
    for p in cluster.pods:
        if p.name == pod and (not ns or p.namespace == ns):
            return p
    raise TestbedError(f"no pod named {name!r} (pods: {', '.join(p.name for p in cluster.pods)})")


def target_namespace(lab: str, cluster: ClusterState, target: str) -> str:
    """`POD`, `ns/POD`, `node/NAME` or `client/NAME` → the network namespace to run in."""
    m = re.fullmatch(r"(node|client|pod)/(.+)", target)
    if m and m[1] in ("node", "client"):
        hosts = cluster.nodes if m[1] == "node" else cluster.clients
        if m[2] not in {h.name for h in hosts}:
            raise TestbedError(f"no {m[1]} named {m[2]!r} (have: {', '.join(h.name for h in hosts)})")
        return wiring.host_ns(lab, m[2])
    p = find_pod(cluster, m[2] if m else target)
    return wiring.netns_of(lab, p)
