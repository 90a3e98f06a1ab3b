"""What a set of cilium.io/v2 CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy objects allows, read
from the objects, following Cilium's policy documentation and its source (cilium/cilium main, 2026):

* an endpoint is default-deny in a direction when a policy selecting it has rules for that direction
  (allow or deny), unless that policy sets `enableDefaultDeny.<direction>: false`; `true` forces it;
* a matching deny rule (ingressDeny / egressDeny) wins over every allow; otherwise any matching allow
  rule allows; in default-deny nothing else is allowed;
* a rule's peers: fromEndpoints/toEndpoints (label selectors, see below), CIDR sets with except,
  entities, toFQDNs (a named external); a rule with only toPorts matches every peer, the empty rule none;
* toPorts: port "0" is every port of the protocol, protocol ANY (or none) every protocol; named ports
  resolve on the destination; L7 rules refine an allowed port and are not evaluated here.

Identities. Cilium matches selectors against an endpoint's identity labels, each with a source:
a pod has `k8s:` labels, `k8s:io.kubernetes.pod.namespace=<ns>` and its namespace's labels as
`k8s:io.cilium.k8s.namespace.labels.<key>`; an address outside the cluster has `reserved:world` (and
`world-ipv4`/`-ipv6`); Cilium's reserved identities have only `reserved:` labels (host, remote-node,
kube-apiserver = kube-apiserver + remote-node, health, ingress, init, unmanaged: cilium
pkg/identity/numericidentity.go reservedIdentityLabels; model.CILIUM_RESERVED_LABELS). A key without a
source (`app`) means any source. So a selector made only of negative requirements (NotIn,
DoesNotExist) is satisfied by world, host, remote-node, ... too (cilium/cilium#46949, #46996).

What Cilium adds to a selector before matching (pkg/k8s/apis/cilium.io/utils/utils.go,
getEndpointSelector and ParseToCiliumRule):
* fromEndpoints/toEndpoints: a selector with a `reserved:` key is taken as written. Otherwise, unless
  it has a requirement of any operator on the namespace key `io.kubernetes.pod.namespace`: in a
  CiliumNetworkPolicy Cilium adds `namespace = <the policy's namespace>` (newer releases skip this when
  the selector has a namespace-label key `io.cilium.k8s.namespace.labels.*`, as modelled here); in a
  CiliumClusterwideNetworkPolicy it adds `namespace Exists` (cilium/cilium#12890; not when the subject
  selects `reserved:init`). A negative requirement on the namespace key (`NotIn`) therefore turns the
  safety off: such a selector also matches reserved identities.
* Cilium 1.18+ with `policy-default-local-cluster` also adds `io.cilium.k8s.policy.cluster=<local>`
  when the selector names no cluster, which reserved identities do not carry; this evaluator models the
  setting off (the older default and still an option), the permissive reading, so netdsl's output must
  be safe without it.
* endpointSelector: in a CiliumNetworkPolicy Cilium always adds the policy's namespace (only its pods).
  A clusterwide policy's endpointSelector is taken as written and selects every local endpoint whose
  labels match: pods, and the health endpoint, the Ingress (Envoy) endpoint (cilium commit 04f19e9: its
  policy is computed and enforced by Envoy) and endpoints still initialising (`reserved:init`). Those
  then become default-deny like any endpoint: a clusterwide isolation selected by a negative-only
  selector cuts Cilium's health checks and Ingress (the Cilium docs' service-mesh "default deny"
  example selects `io.kubernetes.pod.namespace NotIn [kube-system]` and Ingress answers 403). The host
  is selected only by a `nodeSelector` policy (pkg/policy/rule.go, rule.matches); world, remote-node,
  kube-apiserver and unmanaged are not local endpoints and no policy applies to them.

Entities (pkg/policy/api/entity.go): see model.entity_matches; `cluster` is every pod of the local
cluster plus every reserved identity but world.

CIDR rules (toCIDR, toCIDRSet, fromCIDR...) match only addresses outside the cluster (identity None) in
the default `policy-cidr-match-mode` (empty): pods and reserved identities have identities of their own
and are never selected by CIDR. With `policy-cidr-match-mode=nodes` (Cilium 1.15+, cilium/cilium#27464)
CIDR selectors also match the nodes (host, remote-node, kube-apiserver) by their addresses; that mode is
not modelled: netdsl's output is evaluated for the default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from netdsl.netset import net_set_of
from netdsl.semantics.model import (
    Connection,
    Endpoint,
    External,
    Topology,
    Verdict,
    binds,
    both_sides,
    entity_matches,
    reserved_labels,
)
from netdsl.semantics.vanilla import selector_matches

NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS = "io.cilium.k8s.namespace.labels."
RESERVED = "reserved:"
# Reserved identities that are local endpoints an endpointSelector can select (the host: nodeSelector)
SELECTABLE = frozenset({"cilium:health", "cilium:ingress", "cilium:init"})
HOST = "cilium:host"


def _plain(key: str) -> str:
    """Cilium label sources: `k8s:app`, `any:app` and `app` mean the same for Kubernetes pods."""
    for source in ("k8s:", "any:"):
        if key.startswith(source):
            return key[len(source):]
    return key


def _normalise(selector: Mapping[str, Any] | None) -> dict[str, Any]:
    selector = selector or {}
    out: dict[str, Any] = {}
    if selector.get("matchLabels"):
        out["matchLabels"] = {_plain(k): v for k, v in selector["matchLabels"].items()}
    if selector.get("matchExpressions"):
        out["matchExpressions"] = [{**e, "key": _plain(e["key"])} for e in selector["matchExpressions"]]
    return out


def _keys(selector: Mapping[str, Any]) -> list[str]:
    return [*(selector.get("matchLabels") or {}), *(e["key"] for e in selector.get("matchExpressions") or ())]


def _with(selector: dict[str, Any], requirement: dict[str, Any]) -> dict[str, Any]:
    return {**selector, "matchExpressions": [*(selector.get("matchExpressions") or ()), requirement]}


class CiliumSemantics:
    def __init__(self, objects: Iterable[Mapping[str, Any]], topology: Topology) -> None:
        self.topology = topology
        self.policies: list[Mapping[str, Any]] = []
        for obj in objects:
            if obj.get("apiVersion") != "cilium.io/v2" or obj.get("kind") not in (
                "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"
            ):
                raise ValueError(f"not a Cilium policy: {obj.get('apiVersion')}/{obj.get('kind')}")
            self.policies.extend(_rules_of(obj))

    def labels(self, endpoint: Endpoint) -> dict[str, str]:
        """The identity labels selectors see (sources dropped, `reserved:` kept)."""
        if isinstance(endpoint, External):
            out = {RESERVED + r: "" for r in reserved_labels(endpoint)}
            if endpoint.identity is not None and endpoint.identity.startswith("cilium:"):
                out.update({k: v for k, v in endpoint.labels.items() if not k.startswith(RESERVED)})
            return out
        out = dict(endpoint.labels)
        out[NAMESPACE_KEY] = endpoint.namespace
        for k, v in self.topology.labels_of(endpoint).items():
            out[NAMESPACE_LABELS + k] = v
        return out

    def selects(self, policy: Mapping[str, Any], endpoint: Endpoint) -> bool:
        """Whether the policy applies to the endpoint (see the module's rule on endpointSelector)."""
        spec = policy["spec"]
        clusterwide = policy["kind"] == "CiliumClusterwideNetworkPolicy"
        if "nodeSelector" in spec and "endpointSelector" not in spec:
            return (clusterwide and isinstance(endpoint, External) and endpoint.identity == HOST
                    and selector_matches(_normalise(spec["nodeSelector"]), self.labels(endpoint)))
        if isinstance(endpoint, External):
            return (clusterwide and endpoint.identity in SELECTABLE
                    and selector_matches(_normalise(spec.get("endpointSelector")), self.labels(endpoint)))
        if not clusterwide and policy["metadata"]["namespace"] != endpoint.namespace:
            return False
        return selector_matches(_normalise(spec.get("endpointSelector")), self.labels(endpoint))

    def has_side(self, endpoint: External) -> bool:
        """A non-pod endpoint some policy applies to (then default-deny rules apply to it as well)."""
        return any(self.selects(p, endpoint) for p in self.policies)

    @staticmethod
    def peer_selector(selector: Mapping[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
        """A fromEndpoints/toEndpoints selector as Cilium matches it: with the namespace requirement it
        adds when the selector names neither a reserved label nor the namespace key."""
        norm = _normalise(selector)
        keys = _keys(norm)
        if any(k.startswith(RESERVED) for k in keys) or NAMESPACE_KEY in keys:
            return norm
        if policy["kind"] == "CiliumClusterwideNetworkPolicy":
            subject = _keys(_normalise(policy["spec"].get("endpointSelector")))
            if RESERVED + "init" in subject:
                return norm
            return _with(norm, {"key": NAMESPACE_KEY, "operator": "Exists"})
        if any(k.startswith(NAMESPACE_LABELS) for k in keys):
            return norm
        return _with(norm, {"key": NAMESPACE_KEY, "operator": "In", "values": [policy["metadata"]["namespace"]]})

    def peer_matches(self, rule: Mapping[str, Any], policy: Mapping[str, Any], peer: Endpoint, to: bool) -> bool:
        prefix = "to" if to else "from"
        kinds = [k for k in rule if k != "toPorts" and rule[k]]  # Cilium reads [] and null as absent
        if not kinds:
            return bool(rule.get("toPorts"))  # L4-only rules match every peer; the empty rule none
        world = isinstance(peer, External) and peer.identity is None
        for key in kinds:
            values = rule[key]
            if key == f"{prefix}Endpoints":
                labels = self.labels(peer)
                if any(selector_matches(self.peer_selector(sel, policy), labels) for sel in values):
                    return True
            elif key in (f"{prefix}CIDRSet", f"{prefix}CIDR") and world:
                assert isinstance(peer, External)
                for block in values:
                    cidr = block if isinstance(block, str) else block["cidr"]
                    net = ipaddress.ip_network(cidr, strict=False)
                    if peer.address.version != net.version or peer.address not in net:
                        continue
                    excepts = None if isinstance(block, str) else block.get("except")
                    if peer.address not in net_set_of(excepts):
                        return True
            elif key == f"{prefix}Entities":
                if any(entity_matches(e, peer) for e in values):
                    return True
            elif key == "toFQDNs" and world and isinstance(peer, External) and peer.name is not None:
                host = peer.name.lower().rstrip(".")  # DNS names are case-insensitive
                for f in values:
                    if "matchName" in f and f["matchName"].lower().rstrip(".") == host:
                        return True
                    if "matchPattern" in f and _pattern(f["matchPattern"].lower()).fullmatch(host):
                        return True
        return False

    @staticmethod
    def ports_match(rule: Mapping[str, Any], conn: Connection) -> bool:
        if not rule.get("toPorts"):
            return True
        for entry in rule["toPorts"]:
            for p in entry.get("ports") or ():
                protocol = str(p.get("protocol") or "ANY").upper()  # Cilium's ParseL4Proto
                if protocol != "ANY" and protocol != conn.protocol.value:
                    continue
                port = str(p.get("port", "0")).lower()  # port names compare case-insensitively
                if port == "0":
                    return True
                if re.fullmatch(r"\d+", port):
                    if int(port) <= conn.port <= int(p.get("endPort", port)):
                        return True
                elif binds(conn, port, conn.protocol):
                    return True
        return False

    def side(self, endpoint: Endpoint, direction: str, other: Endpoint, conn: Connection) -> Verdict:
        to = direction == "egress"
        selecting = [p for p in self.policies if self.selects(p, endpoint)]
        deny_mode = False
        allowing: list[str] = []
        for policy in selecting:
            spec = policy["spec"]
            has_rules = bool(spec.get(direction)) or bool(spec.get(direction + "Deny"))
            explicit = (spec.get("enableDefaultDeny") or {}).get(direction)
            if explicit is True or (has_rules and explicit is not False):
                deny_mode = True
            for i, rule in enumerate(spec.get(direction + "Deny") or ()):
                if self.peer_matches(rule, policy, other, to) and self.ports_match(rule, conn):
                    return Verdict(False, (f"{policy['kind']} {policy['metadata']['name']} {direction}Deny[{i}]",))
            for i, rule in enumerate(spec.get(direction) or ()):
                if self.peer_matches(rule, policy, other, to) and self.ports_match(rule, conn):
                    allowing.append(f"{policy['kind']} {policy['metadata']['name']} {direction}[{i}]")
        if allowing or not deny_mode:
            return Verdict(True, tuple(allowing))
        return Verdict(False, (f"{endpoint} {direction} is default-deny",))

    def decide(self, conn: Connection) -> Verdict:
        def side(endpoint: Endpoint, egress: bool) -> Verdict:
            return self.side(endpoint, "egress" if egress else "ingress", conn.dst if egress else conn.src, conn)

        def identity_side(endpoint: External, egress: bool) -> Verdict | None:
            return side(endpoint, egress) if self.has_side(endpoint) else None

        return both_sides(conn, side, identity_side)


def _rules_of(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A policy's rules: `spec` and each of `specs` (Cilium adds them up), each as a policy of its own."""
    if obj.get("specs") is None:
        return [obj]
    out: list[Mapping[str, Any]] = [{**obj, "spec": spec} for spec in obj["specs"]]
    if obj.get("spec") is not None:
        out.insert(0, obj)
    return out


def _pattern(pattern: str) -> re.Pattern[str]:
    if pattern == "*":
        return re.compile(r".*")
    return re.compile("".join("[-a-z0-9_]*" if ch == "*" else re.escape(ch) for ch in pattern.rstrip(".")))
