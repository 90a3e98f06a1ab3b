"""What a set of projectcalico.org/v3 objects allows, read from the objects themselves, following
Calico's documentation of policy evaluation:

* tiers in `order` (the default tier at 1000000; a Tier object may set `defaultAction`);
* in a tier, the policies that apply to the endpoint (selector, namespaceSelector for global
  policies, `types`), by `order` then name; in a policy, rules in order; the first rule whose
  protocol, source and destination match decides: Allow and Deny end evaluation, Pass jumps to the
  next tier; a tier that applies but decides nothing applies its defaultAction (Deny by default);
* no tier applies, or every tier passes: the Kubernetes namespace profile allows.

A rule's selector without namespaceSelector means the policy's own namespace in a NetworkPolicy, and
every namespace (and GlobalNetworkSets) in a GlobalNetworkPolicy; `namespaceSelector: global()` in a
NetworkPolicy selects GlobalNetworkSets. Staged kinds are evaluated as if enforced (a preview).
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from netdsl.ir import DEFAULT_TIER_ORDER, Protocol
from netdsl.semantics.model import (
    Connection,
    Endpoint,
    External,
    Pod,
    Topology,
    Verdict,
    both_sides,
    resolve_port,
)

# ------------------------------------------------------------------------------------- selectors

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>&&|\|\||==|!=|!|\(|\)|\{|\}|,)"
    r"|(?P<word>[A-Za-z0-9_./\-]+))"
)

Labels = Mapping[str, str]
Predicate = Callable[[Labels, bool], bool]  # (labels, is_global_resource) -> match


class SelectorError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SelectorError(f"cannot read selector {text!r} at {pos}")
        out.append(m.group().strip())
        pos = m.end()
    return out


def parse_selector(text: str) -> Predicate:
    """Calico's selector language: ==, !=, in {}, not in {}, has(), !, &&, ||, (), all(), global()."""
    tokens = _tokens(text)
    pos = 0

    def peek(k: int = 0) -> str | None:
        return tokens[pos + k] if pos + k < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal pos
        tok = peek()
        if tok is None or (expected is not None and tok != expected):
            raise SelectorError(f"expected {expected or 'a token'} in {text!r}, found {tok!r}")
        pos += 1
        return tok

    def value() -> str:
        tok = take()
        if tok[:1] in "'\"" and tok[-1:] == tok[:1]:
            return tok[1:-1]
        raise SelectorError(f"expected a quoted value in {text!r}, found {tok!r}")

    def values() -> set[str]:
        take("{")
        out = set()
        while peek() != "}":
            out.add(value())
            if peek() == ",":
                take(",")
        take("}")
        return out

    def atom() -> Predicate:
        tok = take()
        if tok == "(":
            inner = disjunction()
            take(")")
            return inner
        if tok == "!":
            inner = atom()
            return lambda labels, g: not inner(labels, g)
        if tok in ("all", "global", "has"):
            take("(")
            if tok == "has":
                key = take()
                take(")")
                return lambda labels, g: key in labels
            take(")")
            if tok == "all":
                return lambda labels, g: True
            return lambda labels, g: g
        key = tok
        op = take()
        if op == "==":
            v = value()
            return lambda labels, g: labels.get(key) == v
        if op == "!=":
            v = value()
            return lambda labels, g: labels.get(key) != v
        if op == "in":
            vs = values()
            return lambda labels, g: labels.get(key) in vs
        if op == "not" and peek() == "in":
            take("in")
            vs = values()
            return lambda labels, g: labels.get(key) not in vs
        raise SelectorError(f"unsupported operator {op!r} in {text!r}")

    def conjunction() -> Predicate:
        parts = [atom()]
        while peek() == "&&":
            take("&&")
            parts.append(atom())
        return lambda labels, g: all(p(labels, g) for p in parts)

    def disjunction() -> Predicate:
        parts = [conjunction()]
        while peek() == "||":
            take("||")
            parts.append(conjunction())
        return lambda labels, g: any(p(labels, g) for p in parts)

    result = disjunction()
    if peek() is not None:
        raise SelectorError(f"unexpected {peek()!r} in {text!r}")
    return result


# ------------------------------------------------------------------------------------- evaluation


def _namespace_labels(topology: Topology, pod: Pod) -> dict[str, str]:
    return {**topology.labels_of(pod), "projectcalico.org/name": pod.namespace}


class CalicoSemantics:
    def __init__(self, objects: Iterable[Mapping[str, Any]], topology: Topology) -> None:
        self.topology = topology
        self.tier_order: dict[str, tuple[float, str]] = {"default": (DEFAULT_TIER_ORDER, "Deny")}
        self.network_sets: list[tuple[dict[str, str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]] = []
        self.policies: dict[str, list[tuple[tuple[float, str], Mapping[str, Any]]]] = defaultdict(list)
        for obj in objects:
            if obj.get("apiVersion") != "projectcalico.org/v3":
                raise ValueError(f"not a Calico object: {obj.get('apiVersion')}/{obj.get('kind')}")
            kind = obj["kind"].removeprefix("Staged")
            spec = obj.get("spec") or {}
            if kind == "Tier":
                self.tier_order[obj["metadata"]["name"]] = (spec.get("order", 0), spec.get("defaultAction", "Deny"))
            elif kind == "GlobalNetworkSet":
                nets = [ipaddress.ip_network(n, strict=False) for n in spec.get("nets") or ()]
                self.network_sets.append((dict(obj["metadata"].get("labels") or {}), nets))
            elif kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
                order = spec.get("order")
                key = (float("inf") if order is None else float(order), obj["metadata"]["name"])
                self.policies[spec.get("tier", "default")].append((key, {**obj, "kind": kind}))
            else:
                raise ValueError(f"unknown Calico kind {obj['kind']}")
        for tier in self.policies:
            if tier not in self.tier_order:
                raise ValueError(f"policies in tier {tier!r}, which no Tier object declares")
            self.policies[tier].sort(key=lambda kp: kp[0])
        self.tiers = sorted(self.tier_order, key=lambda t: (self.tier_order[t][0], t))
        self._selectors: dict[str, Predicate] = {}

    def selector(self, text: str | None) -> Predicate:
        text = text or "all()"
        if text not in self._selectors:
            self._selectors[text] = parse_selector(text)
        return self._selectors[text]

    # ---- matching
    def applies(self, policy: Mapping[str, Any], pod: Pod, direction: str) -> bool:
        spec = policy.get("spec") or {}
        types = spec.get("types") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
        if direction not in types:
            return False
        if policy["kind"] == "NetworkPolicy":
            if policy["metadata"]["namespace"] != pod.namespace:
                return False
        elif "namespaceSelector" in spec and not self.selector(spec["namespaceSelector"])(
            _namespace_labels(self.topology, pod), False
        ):
            return False
        return self.selector(spec.get("selector"))(pod.labels, False)

    def entity_matches(self, entity: Mapping[str, Any], policy: Mapping[str, Any], endpoint: Endpoint) -> bool:
        if "nets" in entity and (not isinstance(endpoint, External) or not any(
            endpoint.address.version == n.version and endpoint.address in n
            for n in map(ipaddress.ip_network, entity["nets"])
        )):
            return False
        if "notNets" in entity and isinstance(endpoint, External) and any(
            endpoint.address.version == n.version and endpoint.address in n
            for n in map(ipaddress.ip_network, entity["notNets"])
        ):
            return False
        has_selector = "selector" in entity or "namespaceSelector" in entity
        return not has_selector or self.selected(entity, policy, endpoint)

    def selected(self, entity: Mapping[str, Any], policy: Mapping[str, Any], endpoint: Endpoint) -> bool:
        labels_match = self.selector(entity.get("selector"))
        ns_text = entity.get("namespaceSelector")
        if isinstance(endpoint, External):
            # only GlobalNetworkSets carry external addresses; reachable from a NetworkPolicy rule only
            # through namespaceSelector global()
            if policy["kind"] == "NetworkPolicy" and (ns_text is None or not self.selector(ns_text)({}, True)):
                return False
            if policy["kind"] == "GlobalNetworkPolicy" and ns_text is not None and not self.selector(
                ns_text
            )({}, True):
                return False
            return any(
                labels_match(labels, True) and any(
                    endpoint.address.version == n.version and endpoint.address in n for n in nets
                )
                for labels, nets in self.network_sets
            )
        if ns_text is None:
            if policy["kind"] == "NetworkPolicy" and endpoint.namespace != policy["metadata"]["namespace"]:
                return False
        elif not self.selector(ns_text)(_namespace_labels(self.topology, endpoint), False):
            return False
        return labels_match(endpoint.labels, False)

    @staticmethod
    def ports_match(ports: Iterable[Any], conn: Connection, protocol: Protocol) -> bool:
        for p in ports:
            if isinstance(p, int):
                if p == conn.port:
                    return True
            elif re.fullmatch(r"\d+:\d+", p):
                lo, hi = map(int, p.split(":"))
                if lo <= conn.port <= hi:
                    return True
            elif resolve_port(conn.dst, p, protocol) == conn.port:
                return True
        return False

    def rule_matches(self, rule: Mapping[str, Any], policy: Mapping[str, Any], conn: Connection) -> bool:
        protocol = rule.get("protocol")
        if protocol is not None and protocol != conn.protocol.value:
            return False
        source = rule.get("source") or {}
        destination = rule.get("destination") or {}
        if not self.entity_matches(source, policy, conn.src):
            return False
        if not self.entity_matches(destination, policy, conn.dst):
            return False
        if "ports" in destination:
            if protocol is None:
                return False  # Calico requires a protocol with ports
            if not self.ports_match(destination["ports"], conn, conn.protocol):
                return False
        return True

    def side(self, pod: Pod, direction: str, conn: Connection) -> Verdict:
        key = direction.lower()
        for tier in self.tiers:
            applying = [p for _, p in self.policies.get(tier, ()) if self.applies(p, pod, direction)]
            if not applying:
                continue
            decided: tuple[str, str] | None = None
            for policy in applying:
                for i, rule in enumerate(policy["spec"].get(key) or ()):
                    if self.rule_matches(rule, policy, conn):
                        decided = (rule["action"], f"{policy['kind']} {policy['metadata']['name']} {key}[{i}]")
                        break
                if decided is not None:
                    break
            if decided is None:
                action = self.tier_order[tier][1]
                reason = f"tier {tier}: no rule matched, default action {action}"
            else:
                action, reason = decided
            if action == "Pass":
                continue
            return Verdict(action == "Allow", (reason,))
        return Verdict(True, ())

    def decide(self, conn: Connection) -> Verdict:
        return both_sides(conn, lambda pod, egress: self.side(pod, "Egress" if egress else "Ingress", conn))
