"""What a set of projectcalico.org/v3 objects allows, read from the objects themselves, following
Calico's documentation of policy evaluation and, where the documentation is silent, the code that
turns the v3 objects into what Felix enforces (projectcalico/calico, libcalico-go
lib/backend/syncersv1/updateprocessors and lib/backend/k8s/conversion, read at 87c1590):

* tiers in `order` (the default tier at 1000000; a Tier without order after every ordered one, by
  name; a Tier object may set `defaultAction`); a policy without `types` applies to Ingress, to
  Egress instead when it has only egress rules, to both when it has both;
* in a tier, the policies that apply to the endpoint (selector, namespaceSelector for global
  policies, `types`), by `order` then name; in a policy, rules in order; the first rule whose
  protocol, source and destination match decides: Allow and Deny end evaluation, Pass jumps to the
  next tier; a tier that applies but decides nothing applies its defaultAction (Deny by default);
* no tier applies, or every tier passes: the Kubernetes namespace profile allows (for a host
  endpoint: the `projectcalico-default-allow` profile automatic host endpoints get).

Endpoints and their labels (what selectors are evaluated against):

* A pod (workload endpoint) carries its own labels, except keys starting `pcns.` / `pcsa.` (the
  syncer drops them, "prevents a wep from pretending it is in another namespace"), plus
  `projectcalico.org/namespace=<ns>` and `projectcalico.org/orchestrator=k8s`, which the conversion
  overwrites (workload_endpoint_default.go), and, from its namespace profile, `pcns.<k>=<v>` for each
  namespace label and `pcns.projectcalico.org/name=<ns>` (conversion.go). A pod cannot set any of these.
* A host endpoint (`External(identity="calico:host-endpoint")`) carries exactly its own labels, which
  an admin may set to anything (validation only checks the syntax; automatic host endpoints copy the
  Node's labels). Its labels are "in the same namespace as those of workload endpoints" (docs,
  "Host endpoints"). It belongs to no namespace. GlobalNetworkPolicy "applies to workload endpoint
  resources in all namespaces, and to host endpoint resources" (docs, "Global network policy").
* A NetworkSet carries its labels, `projectcalico.org/namespace=<ns>` and its namespace's `pcns.`
  labels (the namespace profile); a GlobalNetworkSet carries its labels. A rule selector that matches
  a set matches every address in its `nets` - a pod's or a host endpoint's address too (selectors
  become IP sets).

Selectors, as the syncer rewrites them (updateprocessors/rules.go, globalnetworkpolicyprocessor.go):

* a namespaceSelector is evaluated on the endpoint's `pcns.`-prefixed labels, with `all()` meaning
  `has(projectcalico.org/namespace)` (in a namespace) and, in a rule, `global()` meaning
  `!has(projectcalico.org/namespace)` (non-namespaced: host endpoints and network sets). So a
  namespaceSelector made only of negative requirements (`k != 'v'`, `!has(k)`, `not in`) also
  matches host endpoints and network sets, which have no `pcns.` labels.
* In a GlobalNetworkPolicy's own selector with a namespaceSelector, every `all()` of the combined
  expression becomes `has(projectcalico.org/namespace)`; `global()` there evaluates to true.
* A rule selector without namespaceSelector means the policy's namespace
  (`projectcalico.org/namespace == '<ns>'`) in a NetworkPolicy, and every namespace and every
  non-namespaced resource in a GlobalNetworkPolicy (docs, "Calico automatic labels").
* `nets` / `notNets` match addresses: externals, host endpoints and pods (`Pod.address`; None: the
  pod is outside every CIDR the objects mention). Calico has no notion of "outside the cluster". A
  rule's `notSelector` excludes the addresses its selector's IP set holds; in a NetworkPolicy any
  selector field, notSelector included, also scopes the rule to the policy's namespace.
* Automatic host endpoints copy their Node's labels and add `projectcalico.org/created-by:
  calico-kube-controllers` (kube-controllers node/controller.go); manual ones carry no guaranteed label.

Not modelled: host endpoint failsafe ports, pre-DNAT / applyOnForward / doNotTrack policies, and the
workload-to-own-host path (DefaultEndpointToHostAction). Staged kinds are evaluated as if enforced.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from netdsl.ir import DEFAULT_TIER_ORDER, Protocol
from netdsl.netset import net_set, net_set_of
from netdsl.semantics.model import (
    Connection,
    Endpoint,
    External,
    Pod,
    Topology,
    Verdict,
    binds,
    both_sides,
)

# ------------------------------------------------------------------------------------- selectors

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>&&|\|\||==|!=|!|\(|\)|\{|\}|,)"
    r"|(?P<word>[A-Za-z0-9_./\-]+))"
)

Labels = Mapping[str, str]
Predicate = Callable[[Labels], bool]
Hook = Callable[[Labels], bool]

NAMESPACE_LABEL = "projectcalico.org/namespace"  # on every workload endpoint, set by Calico
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
NAMESPACE_PREFIX = "pcns."  # namespace labels as a workload endpoint inherits them
SERVICE_ACCOUNT_PREFIX = "pcsa."
CALICO_NAMESPACE_NAME = "projectcalico.org/name"
HOST_ENDPOINT = "calico:host-endpoint"


def _true(_labels: Labels) -> bool:
    return True


def _in_namespace(labels: Labels) -> bool:
    return NAMESPACE_LABEL in labels


def _not_in_namespace(labels: Labels) -> bool:
    return NAMESPACE_LABEL not in labels


class SelectorError(ValueError):
    pass


# The selector as parsed, once, for every reader (this module's predicates, the importer's DNF).
# Operators are the ones Calico has that netdsl reads; contains / starts with / ends with are errors.
CompareOp = Literal["==", "!=", "in", "not in"]


@dataclass(frozen=True)
class Compare:
    """`key == 'v'`, `key != 'v'` (values has one), `key in {..}`, `key not in {..}` (sorted, unique)."""

    key: str
    op: CompareOp
    values: tuple[str, ...]


@dataclass(frozen=True)
class Has:
    key: str


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class Global:
    pass


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class And:
    parts: tuple[Expr, ...]  # two or more


@dataclass(frozen=True)
class Or:
    parts: tuple[Expr, ...]  # two or more


Expr = Compare | Has | All | Global | Not | And | Or


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


def parse(text: str) -> Expr:
    """Calico's selector language: ==, !=, in {}, not in {}, has(), !, &&, ||, (), all(), global().
    `has`, `all` and `global` not followed by `(` are label keys, as in Calico's tokenizer."""
    tokens = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

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

    def values() -> tuple[str, ...]:
        take("{")
        out = set()
        while peek() != "}":
            out.add(value())
            if peek() == ",":
                take(",")
        take("}")
        return tuple(sorted(out))

    def atom() -> Expr:
        tok = take()
        if tok == "(":
            inner = disjunction()
            take(")")
            return inner
        if tok == "!":
            return Not(atom())
        if tok in ("all", "global", "has") and peek() == "(":
            take("(")
            if tok == "has":
                key = take()
                take(")")
                return Has(key)
            take(")")
            return All() if tok == "all" else Global()
        op = take()
        if op == "==":
            return Compare(tok, "==", (value(),))
        if op == "!=":
            return Compare(tok, "!=", (value(),))
        if op == "in":
            return Compare(tok, "in", values())
        if op == "not" and peek() == "in":
            take("in")
            return Compare(tok, "not in", values())
        raise SelectorError(f"unsupported operator {op!r} in {text!r}")

    def conjunction() -> Expr:
        parts = [atom()]
        while peek() == "&&":
            take("&&")
            parts.append(atom())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def disjunction() -> Expr:
        parts = [conjunction()]
        while peek() == "||":
            take("||")
            parts.append(conjunction())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    result = disjunction()
    if peek() is not None:
        raise SelectorError(f"unexpected {peek()!r} in {text!r}")
    return result


def parse_selector(text: str, *, prefix: str = "", all_: Hook = _true, global_: Hook = _true) -> Predicate:
    """A selector (see `parse`) as a predicate on labels. `prefix` is put before every label key
    (Calico's PrefixVisitor: `pcns.` for namespace selectors); `all_` and `global_` are what all() and
    global() mean after Calico's rewriting (both true as written)."""
    return compile_selector(parse(text), prefix=prefix, all_=all_, global_=global_)


def compile_selector(expr: Expr, *, prefix: str = "", all_: Hook = _true, global_: Hook = _true) -> Predicate:
    """`parse_selector` for a selector already parsed."""

    def pred(e: Expr) -> Predicate:
        if isinstance(e, Compare):
            key, vs = prefix + e.key, frozenset(e.values)
            if e.op in ("==", "in"):
                return lambda labels: labels.get(key) in vs
            return lambda labels: labels.get(key) not in vs
        if isinstance(e, Has):
            key = prefix + e.key
            return lambda labels: key in labels
        if isinstance(e, All):
            return all_
        if isinstance(e, Global):
            return global_
        if isinstance(e, Not):
            negated = pred(e.operand)
            return lambda labels: not negated(labels)
        parts = [pred(p) for p in e.parts]
        if isinstance(e, And):
            return lambda labels: all(p(labels) for p in parts)
        return lambda labels: any(p(labels) for p in parts)

    return pred(expr)


# ------------------------------------------------------------------------------------- evaluation

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_host_endpoint(endpoint: Endpoint) -> bool:
    return isinstance(endpoint, External) and endpoint.identity == HOST_ENDPOINT


def has_side(endpoint: Endpoint) -> bool:
    """Calico policy applies to workload endpoints and host endpoints."""
    return isinstance(endpoint, Pod) or is_host_endpoint(endpoint)


def address_of(endpoint: Endpoint) -> Address | None:
    return endpoint.address


def _within(address: Address | None, nets: Sequence[Network]) -> bool:
    return address is not None and address in net_set(nets)


def _namespace_is(namespace: str) -> Predicate:
    return lambda labels: labels.get(NAMESPACE_LABEL) == namespace


def _and(*parts: Predicate) -> Predicate:
    return lambda labels: all(p(labels) for p in parts)


class CalicoSemantics:
    def __init__(self, objects: Iterable[Mapping[str, Any]], topology: Topology) -> None:
        self.topology = topology
        self.tier_order: dict[str, tuple[float, str]] = {"default": (DEFAULT_TIER_ORDER, "Deny")}
        self.network_sets: list[tuple[dict[str, str], list[Network]]] = []
        self.namespaced_sets: list[tuple[str, dict[str, str], list[Network]]] = []
        self.policies: dict[str, list[tuple[tuple[float, str], Mapping[str, Any]]]] = defaultdict(list)
        for obj in objects:
            if obj.get("apiVersion") != "projectcalico.org/v3":
                raise ValueError(f"not a Calico object: {obj.get('apiVersion')}/{obj.get('kind')}")
            kind = obj["kind"].removeprefix("Staged")
            spec = obj.get("spec") or {}
            if kind == "Tier":
                name = obj["metadata"]["name"]
                # a tier without order comes after every ordered one (the default tier has its own)
                default = DEFAULT_TIER_ORDER if name == "default" else float("inf")
                order = spec.get("order")
                self.tier_order[name] = (default if order is None else order, spec.get("defaultAction") or "Deny")
            elif kind == "GlobalNetworkSet":
                nets = [ipaddress.ip_network(n, strict=False) for n in spec.get("nets") or ()]
                self.network_sets.append((dict(obj["metadata"].get("labels") or {}), nets))
            elif kind == "NetworkSet":
                nets = [ipaddress.ip_network(n, strict=False) for n in spec.get("nets") or ()]
                self.namespaced_sets.append((obj["metadata"].get("namespace") or "default",
                                             dict(obj["metadata"].get("labels") or {}), nets))
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
        for namespace, labels, nets in self.namespaced_sets:
            self.network_sets.append((self._namespaced_set_labels(namespace, labels), nets))
        self._selectors: dict[tuple[str, str], Predicate] = {}
        self._subjects: dict[tuple[str, str | None, str, str | None], Predicate] = {}
        self._labels: dict[Endpoint, Labels | None] = {}
        self._rule_selectors: dict[tuple[str | None, str | None, str | None, str | None], Predicate | None] = {}

    # ---- selectors as Felix evaluates them
    def selector(self, text: str | None, mode: str = "plain") -> Predicate:
        """mode: plain (as written), subject (all() of a global policy with a namespaceSelector),
        namespaces (a policy's namespaceSelector), rule-namespaces (a rule's namespaceSelector)."""
        text = text or "all()"
        key = (text, mode)
        if key not in self._selectors:
            if mode == "plain":
                pred = parse_selector(text)
            elif mode == "subject":
                pred = parse_selector(text, all_=_in_namespace)
            elif mode == "namespaces":
                pred = parse_selector(text, prefix=NAMESPACE_PREFIX, all_=_in_namespace)
            else:
                pred = parse_selector(text, prefix=NAMESPACE_PREFIX, all_=_in_namespace, global_=_not_in_namespace)
            self._selectors[key] = pred
        return self._selectors[key]

    def subject(self, policy: Mapping[str, Any]) -> Predicate:
        """The endpoints a policy applies to (updateprocessors: (global)networkpolicyprocessor.go)."""
        spec = policy.get("spec") or {}
        namespace = policy["metadata"].get("namespace") if policy["kind"] == "NetworkPolicy" else None
        key = (policy["kind"], namespace, spec.get("selector") or "", spec.get("namespaceSelector"))
        if key not in self._subjects:
            if namespace is not None:
                pred = _and(self.selector(spec.get("selector")), _namespace_is(namespace))
            elif spec.get("namespaceSelector"):
                pred = _and(self.selector(spec.get("selector"), "subject"),
                            self.selector(spec["namespaceSelector"], "namespaces"))
            else:
                pred = self.selector(spec.get("selector"))
            self._subjects[key] = pred
        return self._subjects[key]

    def rule_selector(self, entity: Mapping[str, Any], policy: Mapping[str, Any]) -> Predicate | None:
        """An entity rule's positive selector (rules.go getEndpointSelector); None: no selector."""
        namespace = policy["metadata"].get("namespace") if policy["kind"] == "NetworkPolicy" else None
        ns_text, text = entity.get("namespaceSelector"), entity.get("selector")
        key = (namespace, ns_text, text, "not" if "notSelector" in entity else None)
        if key not in self._rule_selectors:
            ns_part: Predicate | None = None
            if ns_text:
                ns_part = self.selector(ns_text, "rule-namespaces")
            elif namespace is not None:
                ns_part = _namespace_is(namespace)
            own = self.selector(text) if text else None
            pred: Predicate | None = own
            if ns_part is not None and (text or "notSelector" in entity or ns_text):
                pred = ns_part if own is None else _and(ns_part, own)
            self._rule_selectors[key] = pred
        return self._rule_selectors[key]

    def labels(self, endpoint: Endpoint) -> Labels | None:
        """The labels Felix sees on an endpoint; None: not a Calico endpoint (an outside address)."""
        if endpoint not in self._labels:
            self._labels[endpoint] = self._felix_labels(endpoint)
        return self._labels[endpoint]

    def _felix_labels(self, endpoint: Endpoint) -> Labels | None:
        if isinstance(endpoint, Pod):
            namespace_labels = {**self.topology.labels_of(endpoint), CALICO_NAMESPACE_NAME: endpoint.namespace}
            own = {k: v for k, v in endpoint.labels.items()
                   if not k.startswith((NAMESPACE_PREFIX, SERVICE_ACCOUNT_PREFIX))}
            return {
                **own,
                NAMESPACE_LABEL: endpoint.namespace,
                ORCHESTRATOR_LABEL: "k8s",
                **{NAMESPACE_PREFIX + k: v for k, v in namespace_labels.items()},
            }
        if is_host_endpoint(endpoint):
            return endpoint.labels
        return None

    def _namespaced_set_labels(self, namespace: str, labels: Mapping[str, str]) -> dict[str, str]:
        """A NetworkSet as Felix sees it: its own labels, its namespace's label and, through the namespace
        profile, the namespace's `pcns.` labels (libcalico-go updateprocessors/networksetprocessor.go)."""
        namespace_labels = {**self.topology.namespace_labels(namespace), CALICO_NAMESPACE_NAME: namespace}
        own = {k: v for k, v in labels.items() if not k.startswith((NAMESPACE_PREFIX, SERVICE_ACCOUNT_PREFIX))}
        return {**own, NAMESPACE_LABEL: namespace,
                **{NAMESPACE_PREFIX + k: v for k, v in namespace_labels.items()}}

    def member(self, pred: Predicate, endpoint: Endpoint) -> bool:
        """Whether the endpoint's address is in the IP set of a selector: a matching endpoint's own, or
        inside a matching GlobalNetworkSet."""
        labels = self.labels(endpoint)
        if labels is not None and pred(labels):
            return True
        address = address_of(endpoint)
        return address is not None and any(pred(ls) and _within(address, nets) for ls, nets in self.network_sets)

    # ---- matching
    def applies(self, policy: Mapping[str, Any], endpoint: Endpoint, direction: str) -> bool:
        spec = policy.get("spec") or {}
        # libcalico-go defaultPolicyTypesField: Ingress without egress rules, Egress without ingress rules
        types = spec.get("types") or (["Ingress"] if not spec.get("egress") else
                                      ["Egress"] if not spec.get("ingress") else ["Ingress", "Egress"])
        if direction not in types:
            return False
        labels = self.labels(endpoint)
        return has_side(endpoint) and labels is not None and self.subject(policy)(labels)

    def entity_matches(self, entity: Mapping[str, Any], policy: Mapping[str, Any], endpoint: Endpoint) -> bool:
        address = address_of(endpoint)
        if "nets" in entity and address not in net_set_of(entity["nets"]):
            return False
        if "notNets" in entity and address in net_set_of(entity["notNets"]):
            return False
        positive = self.rule_selector(entity, policy)
        if positive is not None and not self.member(positive, endpoint):
            return False
        return "notSelector" not in entity or not self.member(self.selector(entity["notSelector"]), endpoint)

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
            elif binds(conn, p, protocol):
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

    def side(self, endpoint: Endpoint, direction: str, conn: Connection) -> Verdict:
        key = direction.lower()
        for tier in self.tiers:
            applying = [p for _, p in self.policies.get(tier, ()) if self.applies(p, endpoint, direction)]
            if not applying:
                continue
            decided: tuple[str, str] | None = None
            for policy in applying:
                for i, rule in enumerate(policy["spec"].get(key) or ()):
                    if rule.get("action") == "Log":
                        continue  # Log records the packet and goes on to the next rule
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
        return both_sides(
            conn, lambda endpoint, egress: self.side(endpoint, "Egress" if egress else "Ingress", conn),
            has_side=has_side,
        )
