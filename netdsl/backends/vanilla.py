"""networking.k8s.io/v1 NetworkPolicy: allow-only, union of policies, isolation per direction.

One policy per namespace for default deny (`podSelector: {}`), one per `isolate for S` (S's
selector, no rules), and one per workload carrying all its ingress and egress rules. `policyTypes` is
always explicit and lists exactly the directions the policy restricts: a policy that listed Egress
without egress rules would silently cut the workload's egress.
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
    isolation_groups,
    label_selector,
    object_annotations,
    rule_comment,
)
from netdsl.backends.calico import DEFAULT_VERSION as DEFAULT_CALICO_VERSION
from netdsl.backends.calico import parse_version
from netdsl.diagnostics import Diagnostic, error
from netdsl.source import Span

API_VERSION = "networking.k8s.io/v1"
STAGED_API_VERSION = "projectcalico.org/v3"


def namespace_selector(match: ir.NamespaceMatch) -> dict[str, Any]:
    if isinstance(match, ir.NamespaceByName):
        return {"matchLabels": {ir.NAMESPACE_NAME_LABEL: match.name}}
    if isinstance(match, ir.NamespaceBySelector):
        return label_selector(match.selector)
    return {}


def peer(p: ir.Peer, policy_namespace: str) -> dict[str, Any]:
    if isinstance(p, ir.CidrPeer):
        block: dict[str, Any] = {"cidr": str(p.cidr)}
        if p.excepts:
            block["except"] = [str(e) for e in p.excepts]
        return {"ipBlock": block}
    assert isinstance(p, ir.PodPeer)
    if isinstance(p.namespaces, ir.NamespaceByName) and p.namespaces.name == policy_namespace:
        return {"podSelector": label_selector(p.pods)}
    out: dict[str, Any] = {"namespaceSelector": namespace_selector(p.namespaces)}
    if not p.pods.is_everything:
        out["podSelector"] = label_selector(p.pods)
    return out


def port(p: ir.PortMatch) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": p.protocol.value}
    if p.name is not None:
        out["port"] = p.name
    elif p.port is not None:
        out["port"] = p.port
        if p.end_port is not None:
            out["endPort"] = p.end_port
    return out


def rule(r: ir.Rule, policy_namespace: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not any(isinstance(p, ir.AnyPeer) for p in r.peers):
        key = "from" if r.direction is ir.Direction.INGRESS else "to"
        out[key] = [peer(p, policy_namespace) for p in r.peers]
    if r.ports:
        out["ports"] = [port(p) for p in r.ports]
    return out


def metadata(name: str, namespace: str, spans: list[Span], rules: list[ir.Rule] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": dict(MANAGED_BY),
        "annotations": object_annotations(spans, rules or []),
    }


class VanillaBackend(Backend):
    name = "vanilla"
    staged = False
    capabilities = frozenset({
        Capability.ALLOW, Capability.ISOLATION, Capability.NAMED_PORTS, Capability.PORT_RANGES,
        Capability.SCTP, Capability.CIDR_EXCEPT,
    })

    def build(self, program: ir.Program, options: Options) -> list[Manifest]:
        self.staged = bool(options.extra.get("staged"))
        out: list[Manifest] = []
        for g in isolation_groups(program):  # cluster-wide ones are refused (no CLUSTER_WIDE capability)
            selector = ir.EVERYTHING if g.subject is None else g.subject.selector
            body = {
                "apiVersion": API_VERSION,
                "kind": "NetworkPolicy",
                "metadata": metadata(g.name, g.namespace, g.spans),
                "spec": {"podSelector": label_selector(selector), "policyTypes": [d.value for d in g.directions]},
            }
            out.append(self._manifest(body, ingress=[], egress=[], rank=0))

        by_workload: dict[tuple[str, str], list[ir.Rule]] = defaultdict(list)
        for r in program.rules:
            by_workload[(r.subject.namespace, r.subject.name)].append(r)
        for (ns, name), rules in by_workload.items():
            rules.sort(key=lambda r: (*r.span.sort_key, r.derived))
            ingress = [r for r in rules if r.direction is ir.Direction.INGRESS]
            egress = [r for r in rules if r.direction is ir.Direction.EGRESS]
            spec: dict[str, Any] = {
                "podSelector": label_selector(rules[0].subject.selector),
                "policyTypes": [d.value for d, rs in ((ir.Direction.INGRESS, ingress),
                                                      (ir.Direction.EGRESS, egress)) if rs],
            }
            if ingress:
                spec["ingress"] = [rule(r, ns) for r in ingress]
            if egress:
                spec["egress"] = [rule(r, ns) for r in egress]
            body = {
                "apiVersion": API_VERSION,
                "kind": "NetworkPolicy",
                "metadata": metadata(name, ns, [r.span for r in rules], rules),
                "spec": spec,
            }
            out.append(self._manifest(body, ingress=ingress, egress=egress))
        out.sort(key=lambda m: m.sort_key)
        return out

    def check_options(self, program: ir.Program, options: Options) -> list[Diagnostic]:
        version = parse_version(str(options.extra.get("calico_version", DEFAULT_CALICO_VERSION)))
        if options.extra.get("staged") and version < (3, 30):
            return [error("unsupported", "staged policies need Calico 3.30 or later", None,
                          "use --calico-version 3.30 or later, or leave out --staged")]
        return []

    def _manifest(
        self, body: dict[str, Any], ingress: list[ir.Rule], egress: list[ir.Rule], rank: int = 1
    ) -> Manifest:
        if self.staged:
            # Calico's preview of a Kubernetes NetworkPolicy: same spec, reported but not enforced.
            body["apiVersion"] = STAGED_API_VERSION
            body["kind"] = "StagedKubernetesNetworkPolicy"
            body["spec"] = {"stagedAction": "Set", **body["spec"]}
        meta = body["metadata"]
        context = {
            "policy": body,
            "ingress_comments": [rule_comment(r) for r in ingress],
            "egress_comments": [rule_comment(r) for r in egress],
        }
        return Manifest(body["apiVersion"], body["kind"], meta["name"], meta["namespace"], body,
                        "NetworkPolicy.yaml.j2", context, rank=rank)
