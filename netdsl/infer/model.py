"""Observations: who talked to whom, on which port, and what the network said.

Rule: every pod is known by its workload. Its identity is the first of the labels
`app.kubernetes.io/name`, `app`, `k8s-app` it carries (selector: that one label), else its owner (the
tool's owner field, or the pod name without the ReplicaSet/pod hash or StatefulSet ordinal) with the
pod's labels minus those that differ between replicas (pod-template-hash, controller-revision-hash,
statefulset.kubernetes.io/pod-name, ...) as selector; a pod with no such label at all is picked out
by the absence of every identity key the namespace's other workloads use. Replicas thus collapse into
one workload. An endpoint that is no pod is an external: a reserved identity (host, world,
kube-apiserver, ...) with its address if known, and the DNS names it answered to. Connections to
kube-dns on port 53 are DNS. A connection seen by both ends (two reporters) counts once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netdsl.infer.formats import Endpoint, Flow, Reading
from netdsl.ir import SYSTEM_NAMESPACES, Protocol
from netdsl.lower import RESERVED_NAMES
from netdsl.parse import _keywords
from netdsl.semantics import model as sem

IDENTITY_KEYS = ("app.kubernetes.io/name", "app", "k8s-app")
# Labels a controller sets per pod or per revision: never part of a selector.
VARYING_LABELS = frozenset({
    "pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index", "pod-template-generation", "controller-uid", "job-name",
    "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name", "batch.kubernetes.io/job-completion-index",
})
DNS_PORT = 53
_REPLICA_SUFFIX = re.compile(r"(-[a-z0-9]{6,10})?-[a-z0-9]{5}$|-[0-9]+$")


@dataclass(frozen=True, order=True)
class Workload:
    namespace: str
    name: str
    # (key, value) for key=value; (key, None) for `!key`
    selector: tuple[tuple[str, str | None], ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all((k not in labels) if v is None else labels.get(k) == v for k, v in self.selector)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class External:
    """Not a pod: `kind` world, host, kube-apiserver, remote-node, ...; `address` if seen."""

    kind: str
    address: str | None
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        shown = self.address or self.kind
        return f"{shown} ({', '.join(self.names)})" if self.names else shown


Party = Workload | External


@dataclass
class Observation:
    """One (client, server, port, protocol): how many flows, with which verdicts."""

    client: Party
    server: Party
    port: int
    protocol: str
    verdicts: dict[str, int] = field(default_factory=dict)
    dns: bool = False

    @property
    def flows(self) -> int:
        return sum(self.verdicts.values())

    @property
    def needed(self) -> bool:
        """Traffic the workload needs: it went through, or only an audit-mode policy would drop it."""
        return bool(self.verdicts.get("allowed") or self.verdicts.get("audit"))

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (str(self.client), str(self.server), self.port, self.protocol)


@dataclass
class Observed:
    observations: list[Observation]
    workloads: list[Workload]
    pods: dict[tuple[str, str], tuple[Workload, Mapping[str, str]]]  # (ns, pod) -> workload, labels
    namespace_labels: dict[str, dict[str, str]]
    skipped: dict[str, int]
    flows: list[tuple[Flow, Party, Party]]  # every flow read, with the parties it was given

    @property
    def namespaces(self) -> list[str]:
        return sorted({w.namespace for w in self.workloads})


def is_system(namespace: str) -> bool:
    return namespace in SYSTEM_NAMESPACES


def owner_of(ep: Endpoint) -> str:
    if ep.owner:
        return ep.owner
    pod = ep.pod or "pod"
    return _REPLICA_SUFFIX.sub("", pod) or pod


def _identity(ep: Endpoint) -> tuple[str, tuple[tuple[str, str | None], ...]] | None:
    """The workload name and selector from identity labels or stable labels; None: no label at all."""
    for key in IDENTITY_KEYS:
        if ep.labels.get(key):
            return ep.labels[key], ((key, ep.labels[key]),)
    stable = tuple(sorted((k, v) for k, v in ep.labels.items() if k not in VARYING_LABELS))
    if stable:
        return owner_of(ep), stable
    return None


_NOT_LABEL = re.compile(r"[^a-z0-9]+")


def dns_label(text: str, fallback: str = "pods") -> str:
    """A name netdsl accepts (a DNS label: lowercase letters, digits, '-'; at most 63) that is no keyword."""
    name = _NOT_LABEL.sub("-", text.lower()).strip("-")[:63].strip("-") or fallback
    return name + "-svc" if name in _keywords() or name in RESERVED_NAMES else name


_name = dns_label


def observe(readings: Sequence[Reading]) -> Observed:
    flows = [f for r in readings for f in r.flows]
    skipped: dict[str, int] = {}
    for r in readings:
        for reason, n in r.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    dns: dict[str, set[str]] = {}
    for r in readings:
        for k, learnt in r.dns.items():
            dns.setdefault(k, set()).update(learnt)

    # workloads: pods with identity first, then label-less pods (selected by the absence of the keys
    # their namespace's other workloads use)
    endpoints = [ep for f in flows for ep in (f.client, f.server) if ep.is_pod and ep.namespace]
    by_identity: dict[tuple[str, tuple[tuple[str, str | None], ...]], str] = {}
    bare: dict[tuple[str, str], None] = {}
    for ep in endpoints:
        assert ep.namespace is not None
        got = _identity(ep)
        if got is None:
            bare[(ep.namespace, owner_of(ep))] = None
        else:
            by_identity.setdefault((ep.namespace, got[1]), got[0])
    names: dict[tuple[str, str], int] = {}
    workload_of: dict[tuple[str, tuple[tuple[str, str | None], ...]], Workload] = {}

    def fresh(ns: str, base: str) -> str:
        name = _name(base)
        n = names.get((ns, name), 0) + 1
        names[(ns, name)] = n
        return name if n == 1 else f"{name[:60]}-{n}"

    for (ns, selector), base in sorted(by_identity.items()):
        workload_of[(ns, selector)] = Workload(ns, fresh(ns, base), selector)
    for ns in sorted({ns for ns, _ in bare}):
        # pods without labels cannot be told apart: one workload per namespace, named after the first
        keys = sorted({*IDENTITY_KEYS, *(k for (n, sel) in by_identity for k, _ in sel if n == ns)})
        selector = tuple((k, None) for k in keys)
        owner = min(o for n, o in bare if n == ns)
        workload_of[(ns, selector)] = Workload(ns, fresh(ns, owner), selector)

    def party(ep: Endpoint) -> Party:
        if ep.is_pod and ep.namespace:
            got = _identity(ep)
            if got is None:
                keys = next(sel for (n, sel) in workload_of if n == ep.namespace and all(v is None for _, v in sel))
                return workload_of[(ep.namespace, keys)]
            return workload_of[(ep.namespace, got[1])]
        return External(ep.reserved or "world", ep.address, ep.names)

    pods: dict[tuple[str, str], tuple[Workload, Mapping[str, str]]] = {}
    namespace_labels: dict[str, dict[str, str]] = {}
    parties: list[tuple[Flow, Party, Party]] = []
    for f in flows:
        client, server = party(f.client), party(f.server)
        if isinstance(server, External) and server.address and not server.names:
            learnt = dns.get(f"{f.client.namespace}/{f.client.pod}/{server.address}", set())
            if learnt:
                server = External(server.kind, server.address, tuple(sorted(learnt)))
        parties.append((f, client, server))
        for ep, p in ((f.client, client), (f.server, server)):
            if isinstance(p, Workload) and ep.namespace:
                pod = ep.pod or f"{p.name}-pod"
                labels = dict(ep.labels) if ep.labels or ep.pod else dict(_example(p))
                pods.setdefault((ep.namespace, pod), (p, labels))
                if ep.namespace_labels:
                    namespace_labels.setdefault(ep.namespace, {}).update(ep.namespace_labels)

    # aggregate: per key and reporter, then the larger count of the reporters (one connection, two ends)
    counts: dict[tuple[str, str, int, str], dict[str, dict[str, int]]] = {}
    first: dict[tuple[str, str, int, str], Observation] = {}
    for f, client, server in parties:
        obs = Observation(client, server, f.port, f.protocol)
        key = obs.key
        first.setdefault(key, obs)
        per = counts.setdefault(key, {}).setdefault(f.reporter, {})
        per[f.verdict] = per.get(f.verdict, 0) + 1
    observations: list[Observation] = []
    for key, obs in first.items():
        for per in counts[key].values():
            for verdict, n in per.items():
                obs.verdicts[verdict] = max(obs.verdicts.get(verdict, 0), n)
        obs.dns = is_dns(obs.server, obs.port)
        observations.append(obs)
    observations.sort(key=lambda o: o.key)
    workloads = sorted(set(workload_of.values()))
    return Observed(observations, workloads, pods, namespace_labels, skipped, parties)


def is_dns(server: Party, port: int) -> bool:
    return (isinstance(server, Workload) and server.namespace == "kube-system" and port == DNS_PORT
            and (("k8s-app", "kube-dns") in server.selector or server.name in ("kube-dns", "coredns")))


def _example(w: Workload) -> dict[str, str]:
    return {k: v for k, v in w.selector if v is not None}


# ------------------------------------------------------------------------------------------ topology

# Addresses for externals seen without one (a reserved identity whose IP the tool did not print).
_PLACEHOLDER = {"host": "192.0.2.1", "remote-node": "192.0.2.2", "kube-apiserver": "192.0.2.3",
                "world": "198.51.100.1"}


def endpoint_of(party: Party, observed: Observed, cilium: bool) -> sem.Endpoint:
    """The semantic endpoint that stands for a party (a workload: its first observed pod)."""
    if isinstance(party, Workload):
        ns_pod = next(k for k, (w, _) in sorted(observed.pods.items()) if w == party)
        return pod_of(ns_pod, observed)
    address = ipaddress.ip_address(party.address or _PLACEHOLDER.get(party.kind, "198.51.100.1"))
    if party.kind == "world" or not cilium:
        return sem.External(address, party.names[0] if party.names else None)
    return sem.External(address, None, f"cilium:{party.kind}")


def pod_of(ns_pod: tuple[str, str], observed: Observed) -> sem.Pod:
    _w, labels = observed.pods[ns_pod]
    return sem.Pod(ns_pod[0], ns_pod[1], dict(labels))


def topology(observed: Observed, cilium: bool, extra_namespaces: Iterable[str] = ()) -> sem.Topology:
    namespaces = {ns: dict(observed.namespace_labels.get(ns, {})) for ns in
                  sorted({ns for ns, _ in observed.pods} | set(extra_namespaces))}
    pods = tuple(pod_of(k, observed) for k in sorted(observed.pods))
    externals: set[sem.Endpoint] = {endpoint_of(p, observed, cilium) for o in observed.observations
                                    for p in (o.client, o.server) if isinstance(p, External)}
    return sem.Topology(namespaces, pods, tuple(sorted((e for e in externals if isinstance(e, sem.External)),
                                                       key=str)))


def connections(observed: Observed, cilium: bool) -> list[tuple[Observation, sem.Connection]]:
    """Each observation with a connection for every observed pod pair it stands for."""
    out: list[tuple[Observation, sem.Connection]] = []
    for o in observed.observations:
        sources = _endpoints(o.client, observed, cilium)
        destinations = _endpoints(o.server, observed, cilium)
        for s in sources:
            for d in destinations:
                out.append((o, sem.Connection(s, d, Protocol(o.protocol), o.port)))
    return out


def _endpoints(party: Party, observed: Observed, cilium: bool) -> list[sem.Endpoint]:
    if isinstance(party, Workload):
        return [pod_of(k, observed) for k, (w, _) in sorted(observed.pods.items()) if w == party]
    return [endpoint_of(party, observed, cilium)]
