"""The Kubernetes fields testbed reads but does not model, and what each would change.

Kubernetes' own schema, for the objects testbed models, split three ways: fields testbed models
(the parsers in testbed.model read them), fields that exist but do not touch Service networking
(`BENIGN`: accepted, listed once as ignored), and fields that would change what traffic does in a
real cluster (`EFFECTS`: accepted, named once with how the lab differs). A field in neither is not
in Kubernetes' schema at all: a typo, which `kubectl apply` refuses (strict field validation); testbed
names it prominently and `--strict` refuses it too.

Paths are relative to the structure they describe ("pod" is a PodSpec, wherever it sits).
"""
from __future__ import annotations

# Every known field of each structure (modelled or not). Values of EFFECTS say what the lab does instead.
SCHEMA: dict[str, set[str]] = {
    "metadata": {"name", "namespace", "labels", "annotations", "uid", "resourceVersion", "creationTimestamp",
                 "generation", "managedFields", "ownerReferences", "finalizers", "generateName", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds"},
    "pod": {"activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "containers", "dnsConfig", "dnsPolicy",
            "enableServiceLinks", "ephemeralContainers", "hostAliases", "hostIPC", "hostNetwork", "hostPID", "hostUsers",
            "hostname", "hostnameOverride", "imagePullSecrets", "initContainers", "nodeName", "nodeSelector", "os",
            "overhead", "preemptionPolicy", "priority", "priorityClassName", "readinessGates", "resourceClaims",
            "resources", "restartPolicy", "runtimeClassName", "schedulerName", "schedulingGates", "securityContext",
            "serviceAccount", "serviceAccountName", "setHostnameAsFQDN", "shareProcessNamespace", "subdomain",
            "terminationGracePeriodSeconds", "tolerations", "topologySpreadConstraints", "volumes"},
    "container": {"args", "command", "env", "envFrom", "image", "imagePullPolicy", "lifecycle", "livenessProbe", "name",
                  "ports", "readinessProbe", "resizePolicy", "resources", "restartPolicy", "restartPolicyRules",
                  "securityContext", "startupProbe", "stdin", "stdinOnce", "terminationMessagePath",
                  "terminationMessagePolicy", "tty", "volumeDevices", "volumeMounts", "workingDir"},
    "containerPort": {"containerPort", "hostIP", "hostPort", "name", "protocol"},
    "probe": {"exec", "failureThreshold", "grpc", "httpGet", "initialDelaySeconds", "periodSeconds", "successThreshold",
              "tcpSocket", "terminationGracePeriodSeconds", "timeoutSeconds"},
    "httpGet": {"host", "httpHeaders", "path", "port", "scheme"},
    "tcpSocket": {"host", "port"},
    "grpc": {"port", "service"},
    "exec": {"command"},
    "service": {"allocateLoadBalancerNodePorts", "clusterIP", "clusterIPs", "externalIPs", "externalName",
                "externalTrafficPolicy", "healthCheckNodePort", "internalTrafficPolicy", "ipFamilies", "ipFamilyPolicy",
                "loadBalancerClass", "loadBalancerIP", "loadBalancerSourceRanges", "ports", "publishNotReadyAddresses",
                "selector", "sessionAffinity", "sessionAffinityConfig", "trafficDistribution", "type"},
    "servicePort": {"appProtocol", "name", "nodePort", "port", "protocol", "targetPort"},
    "selector": {"matchLabels", "matchExpressions"},
    "Deployment": {"minReadySeconds", "paused", "progressDeadlineSeconds", "replicas", "revisionHistoryLimit",
                   "selector", "strategy", "template"},
    "ReplicaSet": {"minReadySeconds", "replicas", "selector", "template"},
    "ReplicationController": {"minReadySeconds", "replicas", "selector", "template"},
    "StatefulSet": {"minReadySeconds", "ordinals", "persistentVolumeClaimRetentionPolicy", "podManagementPolicy",
                    "replicas", "revisionHistoryLimit", "selector", "serviceName", "template", "updateStrategy",
                    "volumeClaimTemplates"},
    "DaemonSet": {"minReadySeconds", "revisionHistoryLimit", "selector", "template", "updateStrategy"},
    "Job": {"activeDeadlineSeconds", "backoffLimit", "backoffLimitPerIndex", "completionMode", "completions",
            "managedBy", "manualSelector", "maxFailedIndexes", "parallelism", "podFailurePolicy",
            "podReplacementPolicy", "selector", "successPolicy", "suspend", "template", "ttlSecondsAfterFinished"},
    "template": {"metadata", "spec"},
    "endpointSlice": {"addressType", "endpoints", "ports"},
    "endpoint": {"addresses", "conditions", "deprecatedTopology", "hints", "hostname", "nodeName", "targetRef", "zone"},
    "conditions": {"ready", "serving", "terminating"},
    "slicePort": {"appProtocol", "name", "port", "protocol"},
    "node": {"configSource", "externalID", "podCIDR", "podCIDRs", "providerID", "taints", "unschedulable"},
    "endpoints": {"subsets"},
    "subset": {"addresses", "notReadyAddresses", "ports"},
    "address": {"ip", "hostname", "nodeName", "targetRef"},
}

# Known fields that change traffic in a real cluster and that the lab does not model (structure, field) → how.
EFFECTS: dict[tuple[str, str], str] = {
    ("pod", "affinity"): "pods are placed by nodeName, nodeSelector and taints only",
    ("pod", "topologySpreadConstraints"): "pods are placed by nodeName, nodeSelector and taints only",
    ("pod", "readinessGates"): "readiness follows the readiness probe only",
    ("pod", "dnsConfig"): "pods get the ClusterFirst resolv.conf",
    ("pod", "hostAliases"): "no /etc/hosts entries are added",
    ("container", "startupProbe"): "readiness probes run from the start",
    ("containerPort", "hostPort"): "the port is not opened on the node's address",
}

# Fields whose effect depends on their value: (structure, field) → (harmless values, how the lab differs).
VALUE_EFFECTS: dict[tuple[str, str], tuple[tuple, str]] = {
    ("pod", "dnsPolicy"): (("ClusterFirst", "ClusterFirstWithHostNet"), "pods get the ClusterFirst resolv.conf"),
    ("Deployment", "paused"): ((False,), "a paused Deployment's pods are still made"),
    ("Job", "suspend"): ((False,), "a suspended Job's pods are still made"),
    ("pod", "schedulingGates"): (([],), "scheduling gates are not modelled: pods are scheduled at once"),
}

# Annotations and labels with an effect testbed does not model, named once when present.
ANNOTATION_EFFECTS = {
    "service.kubernetes.io/topology-mode": "testbed's EndpointSlice controller does not allocate Auto's hints by "
                                           "zone CPU: a dump's hints are used, computed slices get none",
    "service.kubernetes.io/topology-aware-hints": "testbed's EndpointSlice controller does not allocate Auto's "
                                                  "hints by zone CPU: a dump's hints are used, computed slices get none",
    "nginx.ingress.kubernetes.io/rewrite-target": "paths are not rewritten (testbed's ingress proxy)",
    "nginx.ingress.kubernetes.io/use-regex": "paths are matched as written, not as regular expressions",
    "nginx.ingress.kubernetes.io/ssl-redirect": "no HTTPS redirect (TLS is not terminated)",
    "nginx.ingress.kubernetes.io/backend-protocol": "backends are spoken to in plain HTTP",
}


def known(structure: str, field: str) -> bool:
    return field in SCHEMA.get(structure, ())
