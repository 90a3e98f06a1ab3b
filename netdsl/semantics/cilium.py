"""What a set of cilium.io/v2 CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy objects allows, read
from the objects, following Cilium's policy documentation:

* an endpoint is default-deny in a direction when a policy selecting it has rules for that direction
  (allow or deny), unless that policy sets `enableDefaultDeny.<direction>: false`; `true` forces it;
* a matching deny rule (ingressDeny / egressDeny) wins over every allow; otherwise any matching allow
  rule allows; in default-deny nothing else is allowed;
* a rule's peers: fromEndpoints/toEndpoints (label selectors over the endpoint's labels, its namespace
  `k8s:io.kubernetes.pod.namespace` and its namespace's labels `k8s:io.cilium.k8s.namespace.labels.*`;
  in a namespaced policy a selector that does not name the namespace means the policy's namespace),
  CIDR sets with except, entities, toFQDNs (a named external); a rule with only toPorts matches every
  peer, the empty rule `{}` none;
* toPorts: port "0" is every port of the protocol, protocol ANY (or none) every protocol; named ports
  resolve on the destination; L7 rules refine an allowed port and are not evaluated here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from netdsl.ir import Protocol
from netdsl.semantics.model import (
    Connection,
    Endpoint,
    External,
    Pod,
    Topology,
    Verdict,
    both_sides,
    entity_matches,
    resolve_port,
)
from netdsl.semantics.vanilla import selector_matches

NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS = "io.cilium.k8s.namespace.labels."


def _plain(key: str) -> str:
    """Cilium label sources: `k8s:app` and `app` mean the same for Kubernetes pods."""
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


def _names_namespace(selector: Mapping[str, Any]) -> bool:
    return NAMESPACE_KEY in (selector.get("matchLabels") or {}) or any(
        e["key"] == NAMESPACE_KEY for e in selector.get("matchExpressions") or ()
    )


class CiliumSemantics:
    def __init__(self, objects: Iterable[Mapping[str, Any]], topology: Topology) -> None:
        self.topology = topology
        self.policies: list[Mapping[str, Any]] = []
        for obj in objects:
            if obj.get("apiVersion") != "cilium.io/v2" or obj.get("kind") not in (
                "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"
            ):
                raise ValueError(f"not a Cilium policy: {obj.get('apiVersion')}/{obj.get('kind')}")
            self.policies.append(obj)

    def labels(self, pod: Pod) -> dict[str, str]:
        out = dict(pod.labels)
        out[NAMESPACE_KEY] = pod.namespace
        for k, v in self.topology.labels_of(pod).items():
            out[NAMESPACE_LABELS + k] = v
        return out

    def selects(self, policy: Mapping[str, Any], pod: Pod) -> bool:
        if policy["kind"] == "CiliumNetworkPolicy" and policy["metadata"]["namespace"] != pod.namespace:
            return False
        return selector_matches(_normalise(policy["spec"].get("endpointSelector")), self.labels(pod))

    def peer_matches(self, rule: Mapping[str, Any], policy: Mapping[str, Any], peer: Endpoint, to: bool) -> bool:
        prefix = "to" if to else "from"
        kinds = [k for k in rule if k != "toPorts"]
        if not kinds:
            return "toPorts" in rule  # L4-only rules match every peer; the empty rule none
        for key in kinds:
            values = rule[key]
            if key == f"{prefix}Endpoints" and isinstance(peer, Pod):
                for sel in values:
                    norm = _normalise(sel)
                    implicit = policy["kind"] == "CiliumNetworkPolicy" and not _names_namespace(norm)
                    if implicit and peer.namespace != policy["metadata"]["namespace"]:
                        continue  # a namespaced policy's selectors mean its own namespace
                    if selector_matches(norm, self.labels(peer)):
                        return True
            elif key in (f"{prefix}CIDRSet", f"{prefix}CIDR") and isinstance(peer, External):
                for block in values:
                    cidr = block if isinstance(block, str) else block["cidr"]
                    net = ipaddress.ip_network(cidr, strict=False)
                    if peer.address.version != net.version or peer.address not in net:
                        continue
                    excepts = [] if isinstance(block, str) else block.get("except") or []
                    if not any(peer.address in ipaddress.ip_network(e, strict=False) for e in excepts):
                        return True
            elif key == f"{prefix}Entities":
                if any(entity_matches(e, peer) for e in values):
                    return True
            elif key == "toFQDNs" and isinstance(peer, External) and peer.name is not None:
                for f in values:
                    if "matchName" in f and f["matchName"].rstrip(".") == peer.name:
                        return True
                    if "matchPattern" in f and _pattern(f["matchPattern"]).fullmatch(peer.name):
                        return True
        return False

    @staticmethod
    def ports_match(rule: Mapping[str, Any], conn: Connection) -> bool:
        if "toPorts" not in rule:
            return True
        for entry in rule["toPorts"]:
            for p in entry.get("ports") or ():
                protocol = p.get("protocol", "ANY")
                if protocol != "ANY" and protocol != conn.protocol.value:
                    continue
                port = str(p.get("port", "0"))
                if port == "0":
                    return True
                if re.fullmatch(r"\d+", port):
                    if int(port) <= conn.port <= int(p.get("endPort", port)):
                        return True
                elif resolve_port(conn.dst, port, Protocol(conn.protocol.value)) == conn.port:
                    return True
        return False

    def side(self, pod: Pod, direction: str, other: Endpoint, conn: Connection) -> Verdict:
        to = direction == "egress"
        selecting = [p for p in self.policies if self.selects(p, pod)]
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
        return Verdict(False, (f"{pod} {direction} is default-deny",))

    def decide(self, conn: Connection) -> Verdict:
        return both_sides(conn, lambda pod, egress: self.side(
            pod, "egress" if egress else "ingress", conn.dst if egress else conn.src, conn))


def _pattern(pattern: str) -> re.Pattern[str]:
    if pattern == "*":
        return re.compile(r".*")
    return re.compile("".join("[-a-z0-9_]*" if ch == "*" else re.escape(ch) for ch in pattern.rstrip(".")))
