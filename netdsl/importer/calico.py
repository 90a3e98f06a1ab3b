"""Import projectcalico.org/v3 objects: Tier, NetworkPolicy, GlobalNetworkPolicy, GlobalNetworkSet,
NetworkSet -> netdsl IR (see model.py for the contract).

Rule: every accepted form means exactly what netdsl.semantics.calico says the object means, for every
endpoint Calico knows - pods, host endpoints (any labels but Calico's and netdsl's own) and network sets;
anything else is a Gap and leaves `understood`.

* Defaults: missing `types` = Ingress, plus Egress when there are egress rules (Egress alone when
  there are only egress rules: libcalico-go defaultPolicyTypesField); missing `order` = after every
  ordered policy; missing `tier` = `default`; a Tier without `defaultAction` denies.
* Order: tiers by (order, name), policies in a tier by (order, name), rules in order. An IR tier
  applies to a pod where one of its rules does, a Calico tier where one of its policies does: a
  policy that applies in a direction but has no rule there becomes, in a tier that denies, a trailing
  `deny from anywhere` for its subject (the tier's own default); in the default tier an isolation
  (`isolate [DIRECTION] [for SUBJECT]`).
* The default tier: `.seg` puts deny statements first there, so a Deny after an Allow in Calico's
  order is a gap (the order would change); Pass there is a gap (`.seg` allows pass only in tiers).
* Selectors: conjunctions of ==, !=, has, !has, in, not in, all() (a `||` in a subject repeats the
  policy's rules for each alternative - the first match is the same; in a peer, several peers).
  `k != 'v'` and `k not in {..}` match endpoints without k in Calico, as NotIn does in the IR.
  Keys Calico sets itself (`projectcalico.org/`, `pcns.`, `pcsa.`) are a gap in pod selectors; in a
  namespaceSelector `projectcalico.org/name` is the namespace's name.
* Pods only: a selector is taken for pods only where no host endpoint or network set can satisfy it:
  a GlobalNetworkPolicy needs a namespaceSelector with a positive requirement (or all()), and so does
  a rule peer's namespaceSelector; a GlobalNetworkPolicy rule selector without namespaceSelector also
  matches host endpoints (gap). `namespaceSelector: global()` selects network sets exactly only when
  the selector requires a `netdsl.dev/` label (an admin gives a host endpoint none; see
  netdsl.semantics.calico); then the peer is the CIDRs of the sets it matches.
* A selector that matches a network set's labels (evaluated on the set itself) adds that set's
  CIDRs where Calico's scoping makes that exact (a NetworkPolicy's own namespace); elsewhere a gap.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netdsl import ir
from netdsl.importer.model import IMPORTED, Gap, SourceObject, Translation
from netdsl.semantics.calico import All, And, Compare, Expr, Global, Has, Not, SelectorError, parse, parse_selector

API_VERSION = "projectcalico.org/v3"
CRD_API_VERSION = "crd.projectcalico.org/v1"  # as `kubectl get <kind>.crd.projectcalico.org` shows them
KINDS = frozenset({
    "NetworkPolicy", "GlobalNetworkPolicy", "Tier", "GlobalNetworkSet", "NetworkSet",
    "StagedNetworkPolicy", "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy",
})
CALICO_NAMESPACE_NAME = "projectcalico.org/name"
NAMESPACE_LABEL = "projectcalico.org/namespace"
CALICO_PREFIXES = ("projectcalico.org/", "pcns.", "pcsa.")
# Host endpoints never carry these (netdsl.semantics.targets): a positive requirement on one of them
# tells a network set from a host endpoint.
NOT_ON_HOST_ENDPOINTS = ("netdsl.dev/",)
MAX_TERMS = 16  # alternatives of one selector after distributing `||` (beyond: a gap, never a guess)
DEFAULT_TIER = "default"

_POLICY_FIELDS = frozenset({"tier", "order", "selector", "namespaceSelector", "types", "ingress", "egress",
                            "performanceHints"})
_RULE_FIELDS = frozenset({"action", "protocol", "source", "destination", "metadata"})
_ENTITY_FIELDS = frozenset({"nets", "notNets", "selector", "namespaceSelector", "ports"})
_PROTOCOLS = {"TCP": ir.Protocol.TCP, "UDP": ir.Protocol.UDP, "SCTP": ir.Protocol.SCTP,
              "6": ir.Protocol.TCP, "17": ir.Protocol.UDP, "132": ir.Protocol.SCTP}


class UnsupportedError(Exception):
    """A part `.seg` cannot say exactly: the message is the Gap's reason."""


# ------------------------------------------------------------------------------------- selectors

# An atom: (key, operator, values); operator one of the ir.Operator values, or "all" / "global".
Atom = tuple[str, str, tuple[str, ...]]
Term = frozenset[Atom]  # a conjunction
Dnf = list[Term]  # a disjunction of conjunctions; [] matches nothing, [frozenset()] everything

_NEGATE = {"In": "NotIn", "NotIn": "In", "Exists": "DoesNotExist", "DoesNotExist": "Exists"}


def _or(a: Dnf, b: Dnf) -> Dnf:
    out = list(dict.fromkeys([*a, *b]))
    if len(out) > MAX_TERMS:
        raise UnsupportedError(f"a selector with more than {MAX_TERMS} alternatives")
    return out


def _and(a: Dnf, b: Dnf) -> Dnf:
    out: Dnf = []
    for x in a:
        for y in b:
            out = _or(out, [x | y])
    return out


def _not(a: Dnf) -> Dnf:
    out: Dnf = [frozenset()]
    for term in a:
        alternatives: Dnf = []
        for key, op, values in sorted(term):
            if op in ("all", "global"):
                if op == "global":
                    raise UnsupportedError("a negated global()")
                continue  # !all() is false: this alternative adds nothing
            alternatives.append(frozenset({(key, _NEGATE[op], values)}))
        out = _and(out, alternatives)
    return out


# What each of Calico's comparisons is as an IR operator (`!=` and `not in` also match a missing key).
_OPERATORS = {"==": "In", "in": "In", "!=": "NotIn", "not in": "NotIn"}


def parse_dnf(text: str) -> Dnf:
    """A Calico selector (parsed by netdsl.semantics.calico) as alternatives of conjunctions of atoms;
    UnsupportedError for what is not one of ==, !=, in, not in, has, !, &&, ||, (), all(), global()
    (contains, starts with, ends with, ...). An empty selector is all()."""
    if not text.strip():
        return [frozenset()]
    try:
        expr = parse(text)
    except SelectorError as exc:
        raise UnsupportedError(str(exc)) from None
    return _dnf(expr)


def _dnf(expr: Expr) -> Dnf:
    if isinstance(expr, Compare):
        return [frozenset({(expr.key, _OPERATORS[expr.op], expr.values)})]
    if isinstance(expr, Has):
        return [frozenset({(expr.key, "Exists", ())})]
    if isinstance(expr, All):
        return [frozenset({("", "all", ())})]
    if isinstance(expr, Global):
        return [frozenset({("", "global", ())})]
    if isinstance(expr, Not):
        return _not(_dnf(expr.operand))
    out = _dnf(expr.parts[0])
    for part in expr.parts[1:]:
        out = _and(out, _dnf(part)) if isinstance(expr, And) else _or(out, _dnf(part))
    return out


def _requirements(term: Term, *, namespace: bool) -> list[ir.Requirement] | None:
    """A conjunction as IR requirements (None: it matches nothing). In a namespaceSelector Calico's
    `projectcalico.org/name` is the namespace's name."""
    out = []
    for key, op, values in term:
        if op == "all":
            continue
        if op == "global":
            raise UnsupportedError("global() outside a rule's namespaceSelector")
        if namespace and key == CALICO_NAMESPACE_NAME:
            key = ir.NAMESPACE_NAME_LABEL
        elif key.startswith(CALICO_PREFIXES):
            raise UnsupportedError(f"a selector on {key!r}, a label Calico sets itself")
        out.append(ir.Requirement(key, ir.Operator(op), values))
    selector = ir.Selector.of(out)
    return list(selector.requirements) if selector.satisfiable else None


def pod_selectors(text: str | None) -> list[ir.Selector]:
    """A pod selector (absent: all()) as alternative IR selectors; unsatisfiable ones left out."""
    out = []
    for term in parse_dnf(text or "all()"):
        reqs = _requirements(term, namespace=False)
        if reqs is not None:
            out.append(ir.Selector.of(reqs))
    return list(dict.fromkeys(out))


def namespace_matches(text: str) -> list[ir.NamespaceMatch] | None:
    """A namespaceSelector as alternative namespace matches; None: `global()` alone (non-namespaced
    resources). Each alternative must require something positive (or be all()): one of negative
    requirements only also matches host endpoints and network sets, which have no namespace labels."""
    terms = parse_dnf(text)
    if any(("", "global", ()) in t for t in terms):
        if terms == [frozenset({("", "global", ())})]:
            return None
        raise UnsupportedError(f"global() combined with other namespace requirements in {text!r}")
    out: list[ir.NamespaceMatch] = []
    for term in terms:
        reqs = _requirements(term, namespace=True)
        if reqs is None:
            continue
        if ("", "all", ()) not in term and not any(
                r.operator in (ir.Operator.IN, ir.Operator.EXISTS) for r in reqs):
            raise UnsupportedError(f"the namespaceSelector {text!r} has only negative requirements: it also "
                              "matches host endpoints and network sets")
        out.append(_namespace_match(reqs))
    return list(dict.fromkeys(out))


def _namespace_match(reqs: list[ir.Requirement]) -> ir.NamespaceMatch:
    if not reqs:
        return ir.AllNamespaces()
    if (len(reqs) == 1 and reqs[0].key == ir.NAMESPACE_NAME_LABEL and reqs[0].operator is ir.Operator.IN
            and len(reqs[0].values) == 1):
        return ir.NamespaceByName(reqs[0].values[0])
    return ir.NamespaceBySelector(ir.Selector.of(reqs))


# ------------------------------------------------------------------------------------- translation


@dataclass
class _NetworkSet:
    name: str  # the `cidrs` set it becomes
    namespace: str | None  # None: a GlobalNetworkSet
    labels: dict[str, str]
    peers: tuple[ir.CidrPeer, ...]


@dataclass
class _Policy:
    source: SourceObject
    body: dict[str, Any]  # the normalized object, rules removed as they are gapped
    tier: str
    order: float
    index: int
    subjects: list[ir.Workload] = field(default_factory=list)


def _protocol(value: Any) -> ir.Protocol:
    text = str(value).upper()
    if text not in _PROTOCOLS:
        raise UnsupportedError(f"protocol {value}")
    return _PROTOCOLS[text]


def _ports(items: Any, protocol: ir.Protocol | None) -> tuple[tuple[ir.PortMatch, ...], list[int | str]]:
    if not isinstance(items, list) or not items:
        raise UnsupportedError("an empty or malformed port list")
    if protocol is None:
        raise UnsupportedError("ports without a protocol (Calico rejects such a rule)")
    out: list[ir.PortMatch] = []
    normalized: list[int | str] = []
    for item in items:
        text = str(item)
        if isinstance(item, bool):
            raise UnsupportedError(f"port {item!r}")
        if text.isdigit():
            out.append(ir.PortMatch(protocol, int(text)))
            normalized.append(int(text))
        elif re.fullmatch(r"\d+:\d+", text):
            lo, hi = map(int, text.split(":"))
            if lo > hi:
                raise UnsupportedError(f"port range {text}")
            out.append(ir.PortMatch(protocol, lo) if lo == hi else ir.PortMatch(protocol, lo, hi))
            normalized.append(lo if lo == hi else f"{lo}:{hi}")
        elif re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", text) and any(c.isalpha() for c in text):
            out.append(ir.PortMatch(protocol, name=text))
            normalized.append(text)
        else:
            raise UnsupportedError(f"port {item!r}")
    return tuple(out), normalized


def _networks(items: Any) -> list[ir.IPNetwork]:
    if not isinstance(items, list):
        raise UnsupportedError("a malformed nets list")
    try:
        return [ipaddress.ip_network(str(n), strict=False) for n in items]
    except ValueError as exc:
        raise UnsupportedError(f"an address that is not a CIDR ({exc})") from None


def cidr_peers(nets: Sequence[ir.IPNetwork], not_nets: Sequence[ir.IPNetwork], network_set: str | None = None
               ) -> list[ir.CidrPeer]:
    """nets minus notNets as CIDR peers: a notNet covering a net removes it, one inside it is an except."""
    out = []
    for net in nets:
        same = [n for n in not_nets if n.version == net.version]
        if any(net.subnet_of(n) for n in same):  # type: ignore[arg-type]
            continue
        excepts = tuple(sorted({n for n in same if n.subnet_of(net)}, key=str))  # type: ignore[arg-type]
        out.append(ir.CidrPeer(net, excepts, network_set=network_set))
    return list(dict.fromkeys(out))


class _Translator:
    def __init__(self, objects: Sequence[SourceObject]) -> None:
        self.objects = objects
        self.out = Translation("calico")
        self.tiers: dict[str, tuple[float, str, SourceObject | None]] = {
            DEFAULT_TIER: (ir.DEFAULT_TIER_ORDER, "Deny", None)}
        self.sets: list[_NetworkSet] = []
        self.policies: list[_Policy] = []
        self.understood: list[tuple[int, dict[str, Any]]] = []
        self.terminal: list[ir.Rule] = []  # trailing denies of policies without rules (see applies_without_rules)
        self.default_allow_seen = {d: False for d in ir.Direction}

    def gap(self, source: SourceObject, path: str, reason: str) -> None:
        self.out.gaps.append(Gap(source, path, reason))

    def run(self) -> Translation:
        for index, obj in enumerate(self.objects):
            try:
                self.read(index, obj)
            except UnsupportedError as exc:
                self.gap(obj, "", str(exc))
        self.check_tiers()
        for policy in sorted(self.policies, key=lambda p: (self.tiers[p.tier][0], p.tier, p.order,
                                                             p.source.name, p.index)):
            self.policy(policy)
        self.finish_tiers()
        for r in self.out.rules:  # the namespaces the import names
            for m in (r.subject.cluster, *(p.namespaces for p in r.peers if isinstance(p, ir.PodPeer))):
                if isinstance(m, ir.NamespaceByName):
                    self.out.namespaces.setdefault(m.name, ())
        self.out.understood = [body for _, body in sorted(self.understood, key=lambda ib: ib[0])]
        return self.out

    # ---- objects
    def read(self, index: int, obj: SourceObject) -> None:
        if obj.api_version.startswith("networking.k8s.io/"):
            raise UnsupportedError(
                "a Kubernetes NetworkPolicy among Calico objects: Calico enforces it in its default tier at "
                "order 1000, between the Calico policies; mixed input is not imported yet (import the "
                "Kubernetes policies on their own)")
        if obj.api_version not in (API_VERSION, CRD_API_VERSION):
            raise UnsupportedError(f"apiVersion {obj.api_version or '(none)'}")
        if obj.kind.startswith("Staged"):
            raise UnsupportedError(f"{obj.kind}: staged policies are not enforced; .seg has no staged statements")
        body = copy.deepcopy(dict(obj.body))
        body["apiVersion"] = API_VERSION  # the CRD storage form has the same spec
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise UnsupportedError("a spec that is not a mapping")
        body["spec"] = spec
        if obj.kind == "Tier":
            self.tier(index, obj, body)
        elif obj.kind in ("GlobalNetworkSet", "NetworkSet"):
            self.network_set(index, obj, body)
        elif obj.kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
            self.read_policy(index, obj, body)
        else:
            raise UnsupportedError(f"{obj.kind} is not a kind netdsl imports")

    def tier(self, index: int, obj: SourceObject, body: dict[str, Any]) -> None:
        spec = body["spec"]
        extra = set(spec) - {"order", "defaultAction"}
        if extra:
            raise UnsupportedError(f"Tier fields {sorted(extra)}")
        action = spec.get("defaultAction") or "Deny"
        if action not in ("Deny", "Pass"):
            raise UnsupportedError(f"defaultAction {action}")
        order = spec.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))):
            raise UnsupportedError(f"order {order!r}")
        if obj.name == DEFAULT_TIER:
            if order not in (None, ir.DEFAULT_TIER_ORDER) or action != "Deny":
                raise UnsupportedError("the default tier with another order or defaultAction than Calico's")
            spec.update(order=ir.DEFAULT_TIER_ORDER, defaultAction="Deny")
            self.understood.append((index, body))
            return
        if order is not None and order != int(order):
            raise UnsupportedError(f"a fractional tier order {order}")
        spec["defaultAction"] = action
        self.tiers[obj.name] = (float("inf") if order is None else float(order), action, obj)
        self.understood.append((index, body))

    def network_set(self, index: int, obj: SourceObject, body: dict[str, Any]) -> None:
        spec = body["spec"]
        extra = set(spec) - {"nets"}
        if extra:
            raise UnsupportedError(f"{obj.kind} fields {sorted(extra)} (allowedEgressDomains: DNS names)")
        labels = {str(k): str(v) for k, v in ((body.get("metadata") or {}).get("labels") or {}).items()}
        namespace = obj.namespace if obj.kind == "NetworkSet" else None
        name = obj.name if namespace is None else f"{namespace}-{obj.name}"
        while name in self.out.cidr_sets:
            name += "-set"
        peers = tuple(cidr_peers(_networks(spec.get("nets") or []), [], name))
        self.sets.append(_NetworkSet(name, namespace, labels, peers))
        self.out.cidr_sets[name] = peers
        self.understood.append((index, body))

    def read_policy(self, index: int, obj: SourceObject, body: dict[str, Any]) -> None:
        spec = body["spec"]
        extra = set(spec) - _POLICY_FIELDS
        if obj.kind == "NetworkPolicy":
            extra |= {"namespaceSelector"} & set(spec)
        for flag in ("doNotTrack", "preDNAT", "applyOnForward"):
            if flag in extra and not spec.get(flag):
                extra.discard(flag)  # false is the default
        if extra:
            raise UnsupportedError(f"policy fields {sorted(extra)}")
        for key in ("selector", "namespaceSelector"):
            if spec.get(key) in (None, ""):  # Calico reads an empty selector as an absent one
                spec.pop(key, None)
        for key in ("ingress", "egress"):
            if spec.get(key) is None:
                spec.pop(key, None)
            elif not isinstance(spec[key], list):
                raise UnsupportedError(f"{key} is not a list")
        if not spec.get("types"):
            # libcalico-go defaultPolicyTypesField
            spec["types"] = (["Ingress"] if not spec.get("egress") else
                             ["Egress"] if not spec.get("ingress") else ["Ingress", "Egress"])
        if not set(spec["types"]) <= {"Ingress", "Egress"}:
            raise UnsupportedError(f"types {spec['types']}")
        tier = spec.get("tier") or DEFAULT_TIER
        order = spec.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))):
            raise UnsupportedError(f"order {order!r}")
        if obj.kind == "NetworkPolicy":
            self.out.namespaces.setdefault(str(obj.namespace), ())
        policy = _Policy(obj, body, tier, float("inf") if order is None else float(order), index)
        policy.subjects = self.subjects(policy)
        self.policies.append(policy)
        self.understood.append((index, body))

    def check_tiers(self) -> None:
        kept = []
        for p in self.policies:
            if p.tier not in self.tiers:
                self.gap(p.source, "spec.tier", f"tier {p.tier!r}, which no Tier object in the input declares")
                self.understood = [(i, b) for i, b in self.understood if b is not p.body]
            else:
                kept.append(p)
        self.policies = kept
        # a tier without order comes after every ordered one (by name): orders past them all
        last = int(max(o for o, _, _ in self.tiers.values() if o != float("inf")))
        for name, (order, action, obj) in sorted(self.tiers.items(), key=lambda kv: (kv[1][0], kv[0])):
            if obj is None:
                continue
            if order == float("inf"):
                last += 1
                order = last
            self.out.tiers.append(ir.Tier(name, int(order), ir.Action(action), IMPORTED))

    def subjects(self, policy: _Policy) -> list[ir.Workload]:
        obj, spec = policy.source, policy.body["spec"]
        selectors = pod_selectors(spec.get("selector"))
        if obj.kind == "NetworkPolicy":
            return [ir.Workload(str(obj.namespace), _name(obj.name, i, len(selectors)), s, IMPORTED)
                    for i, s in enumerate(selectors)]
        if "namespaceSelector" not in spec:
            raise UnsupportedError("a GlobalNetworkPolicy without namespaceSelector also applies to host "
                              "endpoints, which .seg cannot select")
        matches = namespace_matches(str(spec["namespaceSelector"]))
        if matches is None:
            raise UnsupportedError("a GlobalNetworkPolicy for non-namespaced endpoints (host endpoints)")
        out: list[ir.Workload] = []
        count = len(matches) * len(selectors)
        for m in matches:
            for s in selectors:
                out.append(ir.Workload("", _name(obj.name, len(out), count), s, IMPORTED, cluster=m))
        return out

    # ---- rules
    def policy(self, policy: _Policy) -> None:
        obj, spec = policy.source, policy.body["spec"]
        tier = None if policy.tier == DEFAULT_TIER else policy.tier
        for direction in ir.Direction:
            key = direction.value.lower()
            rules = spec.get(key) or []
            kept: list[Any] = []
            translated: list[tuple[ir.Action, tuple[ir.Peer, ...], tuple[ir.PortMatch, ...]]] = []
            for i, rule in enumerate(rules):
                path = f"spec.{key}[{i}]"
                try:
                    action, peers, ports, normalized = self.rule(obj, direction, rule, tier)
                except UnsupportedError as exc:
                    self.gap(obj, path, str(exc))
                    continue
                kept.append(normalized)
                if direction.value in spec["types"] and peers:
                    translated.append((action, peers, ports))
            if key in spec:
                spec[key] = kept
            if direction.value not in spec["types"]:
                continue
            for subject in policy.subjects:
                for action, peers, ports in translated:
                    self.out.rules.append(ir.Rule(subject, direction, peers, ports, IMPORTED,
                                                  text=f"{obj.title} {key}", action=action, tier=tier))
                if not translated:
                    self.applies_without_rules(policy, subject, direction, tier)

    def applies_without_rules(self, policy: _Policy, subject: ir.Workload, direction: ir.Direction,
                              tier: str | None) -> None:
        """The policy makes its tier apply to its subject in `direction` but no rule of it matches: the
        tier's own default (a trailing deny; nothing for Pass), or in the default tier an isolation."""
        if tier is not None:
            if self.tiers[tier][1] == "Deny":
                self.terminal.append(ir.Rule(subject, direction, (ir.AnyPeer(),), (), IMPORTED,
                                             text=f"{policy.source.title}: tier {tier} denies the rest",
                                             action=ir.Action.DENY, tier=tier))
            return
        self.out.isolations.append(ir.Isolation(
            subject.namespace, direction, IMPORTED, cluster=subject.cluster,
            subject=None if subject.selector.is_everything else subject))

    def finish_tiers(self) -> None:
        """Trailing denies after their tier's rules; the default tier's order checked."""
        by_tier: dict[str | None, list[ir.Rule]] = {}
        for r in [*self.out.rules, *self.terminal]:
            by_tier.setdefault(r.tier, []).append(r)
        order = {t.name: i for i, t in enumerate(self.out.tiers)}
        self.out.rules = [r for t in sorted(by_tier, key=lambda t: order.get(t, len(order)) if t else len(order))
                          for r in by_tier[t]]

    def rule(self, obj: SourceObject, direction: ir.Direction, rule: Any, tier: str | None
             ) -> tuple[ir.Action, tuple[ir.Peer, ...], tuple[ir.PortMatch, ...], dict[str, Any]]:
        if not isinstance(rule, dict):
            raise UnsupportedError("a rule that is not a mapping")
        extra = set(rule) - _RULE_FIELDS
        if extra:
            raise UnsupportedError(f"rule fields {sorted(extra)} (.seg has no "
                              f"{', '.join(sorted(extra))})")
        action = rule.get("action")
        if action == "Log":
            raise UnsupportedError("a Log rule (.seg has no logging)")
        if action not in ("Allow", "Deny", "Pass"):
            raise UnsupportedError(f"action {action!r}")
        if tier is None and action == "Pass":
            raise UnsupportedError("Pass in the default tier (.seg allows pass only inside a tier)")
        if tier is None and action == "Deny" and self.default_allow_seen[direction]:
            raise UnsupportedError("a Deny after an Allow in the default tier (.seg puts deny statements first "
                              "there, which would change the order)")
        normalized = copy.deepcopy(rule)
        protocol = None
        if rule.get("protocol") is not None:
            protocol = _protocol(rule["protocol"])
            normalized["protocol"] = protocol.value
        entities = {side: _entity(rule.get(side), side) for side in ("source", "destination")}
        for side, entity in entities.items():
            if entity:
                normalized[side] = entity
            else:
                normalized.pop(side, None)
        own_side, peer_side = (("destination", "source") if direction is ir.Direction.INGRESS
                               else ("source", "destination"))
        own, other = entities[own_side], entities[peer_side]
        if set(own) - {"ports"}:
            raise UnsupportedError(f"a {own_side} that narrows the policy's own endpoints ({', '.join(sorted(own))})")
        if "ports" in entities["source"]:
            raise UnsupportedError("source ports")
        ports: tuple[ir.PortMatch, ...] = ()
        if "ports" in entities["destination"]:
            ports, numbers = _ports(entities["destination"]["ports"], protocol)
            normalized["destination"]["ports"] = numbers
        elif protocol is not None:
            ports = (ir.PortMatch(protocol),)
        peers = self.peers(obj, {k: v for k, v in other.items() if k != "ports"})
        if tier is None and action == "Allow" and peers:
            self.default_allow_seen[direction] = True
        return ir.Action(action), peers, ports, normalized

    def peers(self, obj: SourceObject, entity: dict[str, Any]) -> tuple[ir.Peer, ...]:
        if not entity:
            return (ir.AnyPeer(),)
        selects = "selector" in entity or "namespaceSelector" in entity
        if selects and ("nets" in entity or "notNets" in entity):
            raise UnsupportedError("nets together with a selector")
        if not selects:
            not_nets = _networks(entity.get("notNets") or [])
            if "nets" in entity:
                return tuple(cidr_peers(_networks(entity["nets"]), not_nets))
            # every pod (they have no address in netdsl's model) and every address outside notNets
            every = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            return (ir.PodPeer(ir.AllNamespaces(), ir.EVERYTHING), *cidr_peers(every, not_nets))
        namespaced = obj.kind == "NetworkPolicy"
        selectors = pod_selectors(entity.get("selector"))
        if "namespaceSelector" in entity:
            matches = namespace_matches(str(entity["namespaceSelector"]))
            if matches is None:
                return self.global_peers(str(entity.get("selector") or "all()"), selectors)
        elif namespaced:
            matches = [ir.NamespaceByName(str(obj.namespace))]
        else:
            raise UnsupportedError("a GlobalNetworkPolicy rule selector without namespaceSelector also matches "
                              "host endpoints and network sets")
        peers: list[ir.Peer] = [ir.PodPeer(m, s) for m in matches for s in selectors]
        peers += self.sets_selected(obj, entity, selectors)
        return tuple(dict.fromkeys(peers))

    def sets_selected(self, obj: SourceObject, entity: dict[str, Any], selectors: list[ir.Selector]
                      ) -> list[ir.Peer]:
        """The network sets a namespaced selector also matches (Calico gives a NetworkSet its
        namespace's label): exact only for a NetworkPolicy's own namespace without namespaceSelector."""
        out: list[ir.Peer] = []
        for s in self.sets:
            if s.namespace is None or not any(sel.matches(s.labels) for sel in selectors):
                continue
            if obj.kind == "NetworkPolicy" and "namespaceSelector" not in entity:
                if s.namespace == obj.namespace:
                    out.extend(s.peers)
                continue
            raise UnsupportedError(f"the selector also matches NetworkSet {s.namespace}/{s.name}'s addresses")
        return out

    def global_peers(self, text: str, selectors: list[ir.Selector]) -> tuple[ir.Peer, ...]:
        """`namespaceSelector: global()`: host endpoints and GlobalNetworkSets the selector matches."""
        for s in selectors:
            if not any(r.key.startswith(NOT_ON_HOST_ENDPOINTS) and r.operator in (ir.Operator.IN, ir.Operator.EXISTS)
                       for r in s.requirements):
                raise UnsupportedError(f"the selector {text!r} with global() also matches host endpoints that carry "
                                  "its labels (only a netdsl.dev/ label tells a network set apart)")
        try:
            match = parse_selector(text)
        except SelectorError as exc:
            raise UnsupportedError(str(exc)) from None
        out: list[ir.Peer] = []
        for ns in self.sets:
            if ns.namespace is None and match(ns.labels):
                out.extend(ns.peers)
        return tuple(dict.fromkeys(out))


def _entity(value: Any, side: str) -> dict[str, Any]:
    """A rule's source or destination with Calico's "absent" forms left out: null, "" and [] constrain
    nothing (Go's empty values); fields .seg cannot say are UnsupportedError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnsupportedError(f"a {side} that is not a mapping")
    out = {k: copy.deepcopy(v) for k, v in value.items() if v not in (None, "", [], {})}
    extra = set(out) - _ENTITY_FIELDS
    if extra:
        raise UnsupportedError(f"{side} fields {sorted(extra)}")
    return out


def _name(policy: str, index: int, count: int) -> str:
    return policy if count == 1 else f"{policy}-{index + 1}"


def translate(objects: Sequence[SourceObject]) -> Translation:
    """Calico objects -> IR, gaps and the objects the IR is proven equal to (see the module's rule)."""
    return _Translator(objects).run()


def source_objects(bodies: Sequence[Mapping[str, Any]]) -> list[SourceObject]:
    """Objects as read, for tests and callers that have bodies only (namespace filled in: `default`)."""
    out = []
    for i, body in enumerate(bodies):
        body = dict(body)
        if body.get("kind") in ("NetworkPolicy", "NetworkSet", "StagedNetworkPolicy"):
            meta = dict(body.get("metadata") or {})
            meta.setdefault("namespace", "default")
            body["metadata"] = meta
        out.append(SourceObject(body, f"object {i + 1}"))
    return out
