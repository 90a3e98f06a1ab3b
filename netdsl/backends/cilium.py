"""cilium.io/v2 CiliumNetworkPolicy (namespaced) and CiliumClusterwideNetworkPolicy (cluster blocks).

Cilium allows the union of allow rules, a deny rule wins over every allow, and a pod selected by a
policy with rules for a direction is default-deny in that direction. So:

* one policy per workload, with its allow rules and its deny rules (ingressDeny / egressDeny);
* peers of different kinds go in different rules: Cilium rejects fromEndpoints with fromEntities (or
  CIDRs, FQDNs) in one rule, and ports always sit inside the rule they restrict - the seed's §4.3 put
  toFQDNs and toPorts in separate rules, opening 443 to everyone and every port to the named hosts;
* FQDN egress only works if Cilium's DNS proxy sees the lookups: the policy that has it also carries a
  DNS rule with `rules.dns` (lowering adds the DNS flow to the program; this backend adds the proxy);
* isolation is `enableDefaultDeny` plus an empty rule - never a rule-less `ingress: []`, which Cilium
  treats as no policy for that direction - with the endpointSelector of every pod, or (`isolate for
  S`) of S;
* endpoint selectors in a namespaced policy mean the policy's namespace unless they name
  `k8s:io.kubernetes.pod.namespace` - peers in other namespaces always carry it;
* every selector that means pods says so. Cilium's own identities (world, host, remote-node,
  kube-apiserver, health, ingress, init, unmanaged) carry only `reserved:` labels, so a selector made
  only of negative requirements (NotIn, DoesNotExist) matches them too, and Cilium adds its implicit
  namespace requirement only to selectors that do not name the namespace key, and never to a
  clusterwide endpointSelector (cilium/cilium#46949; netdsl.semantics.cilium). So a peer that names
  the namespace key names it positively (`In`, or `Exists` beside a `NotIn`), and a clusterwide
  endpointSelector without a positive requirement gets `k8s:io.kubernetes.pod.namespace` Exists -
  otherwise a peer admits the Internet and the nodes, and a clusterwide isolation cuts Cilium's health
  checks and Ingress.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from netdsl import ir
from netdsl.backends import (
    MANAGED_BY,
    Backend,
    Capability,
    Manifest,
    Options,
    digest,
    isolation_groups,
    label_selector,
    object_annotations,
    rule_comment,
)
from netdsl.lower import DNS_NAMESPACE, DNS_SELECTOR
from netdsl.source import Span

API_VERSION = "cilium.io/v2"
NAMESPACE_KEY = "k8s:io.kubernetes.pod.namespace"
NAMESPACE_LABELS = "k8s:io.cilium.k8s.namespace.labels."


def namespace_requirements(match: ir.NamespaceMatch) -> list[ir.Requirement]:
    """Which namespaces, as requirements on an endpoint's own labels (Cilium labels every endpoint
    with its namespace and its namespace's labels)."""
    if isinstance(match, ir.NamespaceByName):
        return [ir.Requirement(NAMESPACE_KEY, ir.Operator.IN, (match.name,))]
    if isinstance(match, ir.AllNamespaces):
        return [ir.Requirement(NAMESPACE_KEY, ir.Operator.EXISTS)]
    out = []
    for r in match.selector.requirements:
        key = NAMESPACE_KEY if r.key == ir.NAMESPACE_NAME_LABEL else NAMESPACE_LABELS + r.key
        out.append(ir.Requirement(key, r.operator, r.values))
    if not any(r.key == NAMESPACE_KEY and _positive(r) for r in out):
        # Only a selector naming the namespace key escapes a namespaced policy's own namespace, and
        # only a positive requirement keeps Cilium's reserved identities out (`name notin (a)`).
        out.append(ir.Requirement(NAMESPACE_KEY, ir.Operator.EXISTS))
    return out


def _positive(r: ir.Requirement) -> bool:
    """A requirement no endpoint without the label satisfies."""
    return r.operator in (ir.Operator.IN, ir.Operator.EXISTS)


def pods_only(requirements: list[ir.Requirement]) -> list[ir.Requirement]:
    """What a clusterwide endpointSelector needs so that it selects pods only: Cilium's reserved
    identities carry only `reserved:` labels, so a positive requirement on any other key keeps them out;
    otherwise require the pod-namespace label."""
    if any(_positive(r) and not r.key.startswith("reserved:") for r in requirements):
        return []
    return [ir.Requirement(NAMESPACE_KEY, ir.Operator.EXISTS)]


def port_entry(p: ir.PortMatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.name is not None:
        out["port"] = p.name
    elif p.port is None:
        out["port"] = "0"  # every port of the protocol
    else:
        out["port"] = str(p.port)
        if p.end_port is not None:
            out["endPort"] = p.end_port
    out["protocol"] = p.protocol.value
    return out


def http_rule(h: ir.HttpRule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if h.method is not None:
        out["method"] = h.method
    if h.path is not None:
        out["path"] = h.path
    if h.host is not None:
        out["host"] = h.host
    if h.headers:
        out["headers"] = list(h.headers)
    return out


class CiliumBackend(Backend):
    name = "cilium"
    capabilities = frozenset({
        Capability.ALLOW, Capability.DENY, Capability.CLUSTER_WIDE, Capability.ISOLATION,
        Capability.NAMED_PORTS, Capability.PORT_RANGES, Capability.SCTP, Capability.CIDR_EXCEPT,
        Capability.FQDN, Capability.L7_HTTP, Capability.ENTITIES,
    })

    def build(self, program: ir.Program, options: Options) -> list[Manifest]:
        out: list[Manifest] = []
        for g in isolation_groups(program):
            subject = g.subject or ir.Workload(g.namespace, g.name, ir.EVERYTHING, cluster=g.cluster)
            spec: dict[str, Any] = {
                "endpointSelector": self.endpoint_selector(subject, program),
                "enableDefaultDeny": {d.value.lower(): True for d in g.directions},
            }
            for d in g.directions:
                spec[d.value.lower()] = [{}]  # a rule that allows nothing: default deny, valid for Cilium
            out.append(self.manifest(subject, g.name, spec, g.spans, {}, rank=0, program=program))
        by_workload: dict[ir.Workload, list[ir.Rule]] = defaultdict(list)
        for r in program.rules:
            by_workload[r.subject].append(r)
        for subject, rules in by_workload.items():
            rules.sort(key=lambda r: (*r.span.sort_key, r.derived))
            has_fqdn = any(isinstance(p, ir.FqdnPeer) for r in rules for p in r.peers)
            spec = {"endpointSelector": self.endpoint_selector(subject, program)}
            comments: dict[str, list[str]] = {}
            for direction in ir.Direction:
                for deny in (False, True):
                    section = direction.value.lower() + ("Deny" if deny else "")
                    entries: list[dict[str, Any]] = []
                    notes: list[str] = []
                    for r in rules:
                        if r.direction is not direction or (r.action is ir.Action.DENY) != deny:
                            continue
                        for entry in self.rules(r, subject, has_fqdn):
                            entries.append(entry)
                            notes.append(rule_comment(r))
                    if entries:
                        spec[section] = entries
                        comments[section] = notes
            out.append(self.manifest(subject, subject.name, spec, [r.span for r in rules], comments,
                                     program=program))
        out.sort(key=lambda m: m.sort_key)
        return out

    def endpoint_selector(self, subject: ir.Workload, program: ir.Program) -> dict[str, Any]:
        if subject.cluster is None:
            return label_selector(subject.selector)  # Cilium adds the policy's namespace
        extra = [] if isinstance(subject.cluster, ir.AllNamespaces) else namespace_requirements(subject.cluster)
        # a clusterwide endpointSelector is taken as written: say that it means pods
        extra += pods_only([*subject.selector.requirements, *extra])
        return label_selector(subject.selector, extra)

    def manifest(self, subject: ir.Workload, name: str, spec: dict[str, Any], spans: list[Span],
                 comments: dict[str, list[str]], program: ir.Program, rank: int = 1) -> Manifest:
        clusterwide = subject.cluster is not None
        kind = "CiliumClusterwideNetworkPolicy" if clusterwide else "CiliumNetworkPolicy"
        if clusterwide:
            name = "cluster-" + name
            if subject.cluster != program.plain_cluster:
                name = f"{name}-{digest(str(subject.cluster))}"
        meta: dict[str, Any] = {"name": name}
        if not clusterwide:
            meta["namespace"] = subject.namespace
        meta["labels"] = dict(MANAGED_BY)
        meta["annotations"] = object_annotations(spans)
        body = {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}
        return Manifest(API_VERSION, kind, name, meta.get("namespace"), body, "Policy.yaml.j2",
                        {"obj": body, "comments": comments}, rank=rank)

    # ---- rules
    def rules(self, r: ir.Rule, subject: ir.Workload, has_fqdn: bool) -> list[dict[str, Any]]:
        """One Cilium rule per kind of peer (endpoints, CIDRs, entities, FQDNs), ports inside each."""
        to = r.direction is ir.Direction.EGRESS
        prefix = "to" if to else "from"
        endpoints: list[dict[str, Any]] = []
        cidrs: list[dict[str, Any]] = []
        entities: list[str] = []
        fqdns: list[dict[str, str]] = []
        for peer in r.peers:
            if isinstance(peer, ir.PodPeer):
                endpoints.append(self.endpoints(peer, subject))
            elif isinstance(peer, ir.CidrPeer):
                block: dict[str, Any] = {"cidr": str(peer.cidr)}
                if peer.excepts:
                    block["except"] = [str(e) for e in peer.excepts]
                cidrs.append(block)
            elif isinstance(peer, ir.EntityPeer):
                entities.append(peer.name)
            elif isinstance(peer, ir.FqdnPeer):
                fqdns.append({"matchPattern" if peer.is_pattern else "matchName": peer.name})
            else:
                entities.append("all")
        ports = self.to_ports(r, dns_proxy=has_fqdn and to and _is_dns(r))
        out = []
        for key, values in ((f"{prefix}Endpoints", endpoints), (f"{prefix}CIDRSet", cidrs),
                            (f"{prefix}Entities", list(dict.fromkeys(entities))), ("toFQDNs", fqdns)):
            if values:
                rule: dict[str, Any] = {key: values}
                if ports:
                    rule["toPorts"] = ports
                out.append(rule)
        return out

    def endpoints(self, peer: ir.PodPeer, subject: ir.Workload) -> dict[str, Any]:
        same = (
            subject.cluster is None and isinstance(peer.namespaces, ir.NamespaceByName)
            and peer.namespaces.name == subject.namespace
        )
        if same:  # a namespaced policy's selectors mean its own namespace
            return label_selector(peer.pods)
        return label_selector(peer.pods, namespace_requirements(peer.namespaces))

    @staticmethod
    def to_ports(r: ir.Rule, dns_proxy: bool) -> list[dict[str, Any]]:
        if not r.ports:
            return []
        entry: dict[str, Any] = {"ports": [port_entry(p) for p in r.ports]}
        if r.http:
            entry["rules"] = {"http": [http_rule(h) for h in r.http]}
        elif dns_proxy:
            # Cilium's DNS proxy learns the addresses of FQDN destinations from the lookups it sees
            entry["rules"] = {"dns": [{"matchPattern": "*"}]}
        return [entry]


def _is_dns(r: ir.Rule) -> bool:
    return r.action is ir.Action.ALLOW and any(
        isinstance(p, ir.PodPeer) and isinstance(p.namespaces, ir.NamespaceByName)
        and p.namespaces.name == DNS_NAMESPACE and p.pods == DNS_SELECTOR for p in r.peers
    ) and all(p.port == 53 and p.end_port is None for p in r.ports) and len(r.peers) == 1
