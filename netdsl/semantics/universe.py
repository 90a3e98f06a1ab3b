"""The class topology: a finite set of endpoints that stands for every cluster a program may be applied to.

Rule: every predicate an evaluator applies to an endpoint - a label selector over a pod's or its
namespace's labels, a namespace name, a named port's number, a CIDR, a DNS name, a target's own
non-pod identity - is a finite combination of atoms that the program and the emitted objects mention.
Endpoints alike in every atom get the same verdict from every evaluator, so one representative per
non-empty class (cell) decides for all of its members, in every cluster:

* namespaces: every label atom any namespace selector mentions (program or objects: each value of a
  key, the key's presence, the name) splits the namespaces on its own, so the namespace cells are the
  full product of the atoms - uniform for any boolean combination of them, whichever selectors the
  objects write - and the program's namespace selectors refine them further; each cell gets labels
  that satisfy exactly it; one name with several label sets becomes several variants of that
  namespace (Pod.variant);
* pods: per namespace cell, the cells of every pod selector that can apply there, refined by each as a
  whole (a cell ends up inside or outside each): the program's (services, `isolate for` subjects,
  rule subjects, peers, expectations) with the namespaces they apply in, and the objects' - every
  podSelector, endpointSelector, fromEndpoints/toEndpoints and Calico selector/notSelector, mutated or
  not - in the namespaces its namespace selector admits (beside none: the object's namespace; a
  cluster-wide object: all). A Calico expression refines by each term of its disjunctive normal form
  (negation pushed into the literals): inside or outside every term is inside or outside the
  expression. What cannot be read so (an unknown operator, a Calico selector that does not parse or
  has more than MAX_DNF_TERMS terms) refines by each of its atoms alone, which decides any
  combination of them. Each pod stands for any number of replicas (a pod's connection to itself is
  replica-to-replica traffic) and for every binding of its named ports;
* externals: one address per interval between CIDR boundaries, DNS names inside and outside each FQDN
  pattern, and the target's own identities (NON_POD_BY_TARGET);
* probes: one port per protocol and interval between port boundaries, and each again with each set
  of named ports the destination binds to it (Connection.names).

A difference found over the class topology is a real counterexample (each representative is a
concrete, possible pod); no difference means none in any cluster. Label values no selector mentions
are represented by one fresh value per key ("other"), absent labels by absence.

Why that is complete: an evaluator tests a pod only through the selectors of the program or of the
objects that apply in its namespace (plus the namespace's labels, its named ports and its address,
which the other classes cover). Two pods of one cell are inside or outside each of those selectors
alike - each refined the cell, and a refinement leaves every part entirely inside or entirely outside
(past MAX_DISJOINT_KEYS the outside parts overlap, but each still lies outside) - so every evaluator
treats them alike. A selector left out would break this even when made only of atoms others mention:
a mutated `!app, legacy, role` has no class among the cells of `app, legacy, role` alone. Applying a
selector in more namespaces than it can apply in only costs cells; in fewer would lose classes.

Limits (documented in the README): several named ports bound to the same number on one pod are
covered for up to MAX_NAME_SUBSETS names per protocol (beyond that: each alone, and all together);
DNS names are combined with every address class only while that stays under MAX_NAMED_EXTERNALS.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netdsl import ir
from netdsl.diagnostics import Diagnostic, error
from netdsl.ir import NAMESPACE_NAME_LABEL, Protocol
from netdsl.semantics import calico
from netdsl.semantics.calico import SelectorError, parse_selector
from netdsl.semantics.cilium import _plain
from netdsl.semantics.matrix import Probe, probe_names
from netdsl.semantics.model import External, Pod, Topology

ABSENT = "\x00absent"  # the atom "this key is not set"
OTHER = "\x00other"  # the atom "set to a value no selector mentions"
OTHER_VALUE = "netdsl-other"  # the stem of the label value that stands for OTHER in a representative

MAX_NAME_SUBSETS = 3
MAX_NAMED_EXTERNALS = 256
# Size guard: a class topology beyond this many endpoints is refused (the caller says so) rather
# than exhausting memory; real programs stay far below it (see benchmarks/verify.py).
MAX_ENDPOINTS = 60_000
MAX_DISJOINT_KEYS = 16  # of one selector: past them, its outside classes may overlap (see refine)

NsScope = Callable[[str, Mapping[str, str]], bool] | None  # None: every namespace


class TooLargeError(ValueError):
    """The class topology would exceed MAX_ENDPOINTS."""

    HINT = ("the program's selectors overlap in too many ways to judge every case (each independent "
            "label a selector tests doubles the classes): test fewer independent labels, or split the "
            "program")


# ------------------------------------------------------------------------------------------ cells

Atoms = frozenset[str]
Cell = dict[str, Atoms]  # key -> the atoms allowed (a key not in the dict: any atom)


@dataclass
class Space:
    """The atoms of each label key: ABSENT, OTHER and every value mentioned for it."""

    values: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    always_set: set[str] = field(default_factory=set)  # keys every object carries (a namespace's name)

    def mention(self, key: str, value: str | None = None) -> None:
        self.values[key]
        if value is not None:
            self.values[key].add(value)

    def atoms(self, key: str) -> Atoms:
        base = {OTHER, *self.values.get(key, ())}
        if key not in self.always_set:
            base.add(ABSENT)
        return frozenset(base)

    def requirement(self, r: ir.Requirement) -> Atoms:
        every = self.atoms(r.key)
        if r.operator is ir.Operator.IN:
            return frozenset(r.values) & every
        if r.operator is ir.Operator.NOT_IN:
            return every - frozenset(r.values)
        if r.operator is ir.Operator.EXISTS:
            return every - {ABSENT}
        return every & {ABSENT}

    def constraint(self, selector: ir.Selector) -> Cell | None:
        """The selector as a cell, or None if it is unsatisfiable."""
        cell: Cell = {}
        for r in selector.requirements:
            allowed = self.requirement(r)
            cell[r.key] = cell[r.key] & allowed if r.key in cell else allowed
            if not cell[r.key]:
                return None
        return cell


def _restrict(cell: Cell, key: str, allowed: Atoms, space: Space) -> Cell | None:
    current = cell.get(key, space.atoms(key))
    both = current & allowed
    if not both:
        return None
    return {**cell, key: both}


def refine(cells: list[Cell], constraint: Cell, space: Space) -> list[Cell]:
    """Split every cell into its part inside `constraint` and parts outside it: disjoint ones (the
    outside part for key k also meets the keys before k) for the first MAX_DISJOINT_KEYS keys, then
    parts that restrict only their own key. Those overlap - a cover, not a partition, so two classes
    may behave alike - but each is still entirely outside the constraint, and their size stays linear:
    disjoint parts of a selector with n requirements would carry n*n/2 label constraints."""
    out: list[Cell] = []
    keys = sorted(constraint)
    for cell in cells:
        inside: Cell | None = cell
        for k in keys:
            assert inside is not None
            inside = _restrict(inside, k, constraint[k], space)
            if inside is None:
                break
        if inside is None:  # disjoint: unchanged
            out.append(cell)
            continue
        if inside == cell:  # contained: unchanged
            out.append(cell)
            continue
        out.append(inside)
        prefix: Cell | None = cell
        for n, k in enumerate(keys):
            assert prefix is not None
            outside = _restrict(prefix if n < MAX_DISJOINT_KEYS else cell, k, space.atoms(k) - constraint[k], space)
            if outside is not None:
                out.append(outside)
            if n < MAX_DISJOINT_KEYS:
                prefix = _restrict(prefix, k, constraint[k], space)
                if prefix is None:
                    break
    return out


def _fresh(taken: Iterable[str], stem: str, start: int = 0) -> str:
    used = taken if isinstance(taken, (set, frozenset)) else set(taken)  # no copy per call
    n = start
    while True:
        candidate = stem if n == 0 else f"{stem}{n}"
        if candidate not in used:
            return candidate
        n += 1


def example(cell: Cell, space: Space) -> dict[str, str]:
    """Labels that satisfy exactly this cell: absent where allowed, else a mentioned value, else a
    value nothing mentions."""
    labels: dict[str, str] = {}
    for key in sorted(cell):
        atoms = cell[key]
        if ABSENT in atoms:
            continue
        mentioned = sorted(a for a in atoms if a != OTHER)
        labels[key] = mentioned[0] if mentioned else _fresh(space.values.get(key, ()), OTHER_VALUE)
    return labels


def is_other_value(value: str) -> bool:
    """Whether a representative's label value is one example() made up: a value no selector names."""
    return value == OTHER_VALUE or (value.startswith(OTHER_VALUE) and value[len(OTHER_VALUE):].isdigit())


# ------------------------------------------------------------------------------------------ what is mentioned


@dataclass
class Mentions:
    """Everything the program and the objects test endpoints against."""

    # (namespace scope, pod selector): the pod selectors, with the namespaces they can apply in
    pod_selectors: list[tuple[NsScope, ir.Selector]] = field(default_factory=list)
    namespace_selectors: list[ir.Selector] = field(default_factory=list)
    pod_space: Space = field(default_factory=Space)
    ns_space: Space = field(default_factory=lambda: Space(always_set={NAMESPACE_NAME_LABEL}))
    ports: dict[Protocol, set[int]] = field(default_factory=lambda: defaultdict(set))  # range boundaries
    port_names: set[tuple[str, Protocol | None]] = field(default_factory=set)
    networks: set[ir.IPNetwork] = field(default_factory=set)
    dns_names: set[str] = field(default_factory=set)
    dns_patterns: set[str] = field(default_factory=set)
    pod_networks: list[ir.IPNetwork] = field(default_factory=list)  # where pods have their addresses
    # the objects' pod selectors as conjunctions, with the namespaces they can apply in
    object_selectors: list[tuple[NsScope, ir.Selector]] = field(default_factory=list)

    def object_selector(self, scope: NsScope, requirements: Iterable[ir.Requirement]) -> None:
        selector = ir.Selector.of(list(requirements))
        self.object_selectors.append((scope, selector))
        for r in selector.requirements:
            self.pod_space.mention(r.key)
            for v in r.values:
                self.pod_space.mention(r.key, v)

    def pod_selector(self, scope: NsScope, selector: ir.Selector) -> None:
        self.pod_selectors.append((scope, selector))
        for r in selector.requirements:
            self.pod_space.mention(r.key)
            for v in r.values:
                self.pod_space.mention(r.key, v)

    def namespace_selector(self, selector: ir.Selector) -> None:
        self.namespace_selectors.append(selector)
        for r in selector.requirements:
            self.ns_space.mention(r.key)
            for v in r.values:
                self.ns_space.mention(r.key, v)

    def namespace_match(self, match: ir.NamespaceMatch) -> NsScope:
        if isinstance(match, ir.NamespaceByName):
            self.namespace_selector(_by_name(match.name))
            return _scope_by_name(match.name)
        if isinstance(match, ir.NamespaceBySelector):
            self.namespace_selector(match.selector)
            selector = match.selector
            return lambda name, labels: selector.matches({**labels, NAMESPACE_NAME_LABEL: name})
        return None

    def port_range(self, protocol: Protocol | None, lo: int, hi: int) -> None:
        for proto in (protocol,) if protocol is not None else tuple(Protocol):
            self.ports[proto].update((lo, hi + 1))

    def network(self, text: str | ir.IPNetwork) -> None:
        try:
            net = text if not isinstance(text, str) else ipaddress.ip_network(text, strict=False)
        except ValueError:
            return
        self.networks.add(net)


def _by_name(name: str) -> ir.Selector:
    return ir.Selector.of([ir.Requirement(NAMESPACE_NAME_LABEL, ir.Operator.IN, (name,))])


def _scope_by_name(name: str) -> NsScope:
    return lambda n, _labels: n == name


def mentions_of_program(program: ir.Program, into: Mentions | None = None) -> Mentions:
    m = into or Mentions()
    for ns in program.namespaces:
        m.namespace_selector(_by_name(ns.name))
    for name in program.system_namespaces:
        m.namespace_selector(_by_name(name))
    for s in program.services:
        m.pod_selector(_workload_scope(m, s), s.selector)
    for iso in program.isolations:
        if iso.cluster is not None:
            m.namespace_match(iso.cluster)
        else:
            m.namespace_selector(_by_name(iso.namespace))
        if iso.subject is not None:  # `isolate for S` splits the pods of its namespaces by S's selector
            m.pod_selector(_workload_scope(m, iso.subject), iso.subject.selector)
    for rule in program.rules:
        m.pod_selector(_workload_scope(m, rule.subject), rule.subject.selector)
        for peer in rule.peers:
            if isinstance(peer, ir.PodPeer):
                m.pod_selector(m.namespace_match(peer.namespaces), peer.pods)
            elif isinstance(peer, ir.CidrPeer):
                m.network(peer.cidr)
                for x in peer.excepts:
                    m.network(x)
            elif isinstance(peer, ir.FqdnPeer):
                (m.dns_patterns if peer.is_pattern else m.dns_names).add(peer.name)
        for p in rule.ports:
            _mention_port(m, p)
    for e in program.expectations:
        for pods in (e.source_pods, e.destination_pods):
            if pods is not None:  # the classes an expectation speaks about exist in the topology
                m.pod_selector(m.namespace_match(pods.namespaces), pods.pods)
        if e.port is not None:
            _mention_port(m, e.port)
        for text in (e.source, e.destination):
            m.network(text)
    return m


def _mention_port(m: Mentions, p: ir.PortMatch) -> None:
    if p.name is not None:
        m.port_names.add((p.name, p.protocol))
    elif p.port is not None:
        m.port_range(p.protocol, p.port, p.end_port or p.port)


def _workload_scope(m: Mentions, w: ir.Workload) -> NsScope:
    if w.cluster is not None:
        return m.namespace_match(w.cluster)
    m.namespace_selector(_by_name(w.namespace))
    return _scope_by_name(w.namespace)


# ---- the emitted objects: every label, port, CIDR and name they test (over-collecting only costs cells)

_CALICO_ATOM = re.compile(
    r"(?P<key>[A-Za-z0-9_./\-]+)\s*(?:(?:==|!=)\s*(?P<q>'[^']*'|\"[^\"]*\")"
    r"|(?:not\s+)?in\s*\{(?P<set>[^}]*)\})"
    r"|has\(\s*(?P<has>[A-Za-z0-9_./\-]+)\s*\)"
)
_CILIUM_NS = "io.kubernetes.pod.namespace"
_CILIUM_NS_LABELS = "io.cilium.k8s.namespace.labels."
_CALICO_NS_NAME = "projectcalico.org/name"
_POD_SELECTORS = ("selector", "notSelector", "podSelector", "endpointSelector", "fromEndpoints", "toEndpoints")


_OPERATORS = {op.value: op for op in ir.Operator}
_NEGATION = {ir.Operator.IN: ir.Operator.NOT_IN, ir.Operator.NOT_IN: ir.Operator.IN,
             ir.Operator.EXISTS: ir.Operator.DOES_NOT_EXIST, ir.Operator.DOES_NOT_EXIST: ir.Operator.EXISTS}
MAX_DNF_TERMS = 64  # of one Calico selector; past them, its literals split on their own (see _calico_terms)

Conjunctions = list[list[ir.Requirement]]  # selectors whose cells decide one selector of the objects


def _atomised(requirements: Iterable[ir.Requirement]) -> Conjunctions:
    """Each label atom a requirement mentions as a selector of its own: a cell that agrees on all of
    them agrees on any boolean combination of them (the fallback for selectors read only partly)."""
    out: Conjunctions = []
    for r in requirements:
        out.append([ir.Requirement(r.key, ir.Operator.EXISTS)])
        out += [[ir.Requirement(r.key, ir.Operator.IN, (v,))] for v in r.values]
    return out


def _label_requirements(selector: Any) -> tuple[list[ir.Requirement], bool]:
    """A Kubernetes (or Cilium) label selector's requirements, and whether every operator is one of the
    four (else the requirement stands for its atoms: key and values)."""
    if not isinstance(selector, Mapping):
        return [], True
    requirements: list[ir.Requirement] = []
    known = True
    for k, v in (selector.get("matchLabels") or {}).items():
        requirements.append(ir.Requirement(str(k), ir.Operator.IN, (str(v),)))
    for e in selector.get("matchExpressions") or ():
        if not isinstance(e, Mapping) or "key" not in e:
            continue
        op = _OPERATORS.get(str(e.get("operator")))
        values = tuple(sorted({str(v) for v in e.get("values") or ()}))
        known = known and op is not None
        with_values = op in (ir.Operator.IN, ir.Operator.NOT_IN) or op is None
        requirements.append(ir.Requirement(str(e["key"]), op or ir.Operator.IN, values if with_values else ()))
    return requirements, known


def _label_selector(selector: Any) -> Conjunctions:
    """A label selector as conjunctions whose cells decide it: itself, or its atoms when not read."""
    requirements, known = _label_requirements(selector)
    return [requirements] if known else _atomised(requirements)


def _namespace_scope(requirements: Sequence[ir.Requirement], name_key: str = NAMESPACE_NAME_LABEL) -> NsScope:
    """The namespaces a conjunction of namespace requirements (the name under `name_key`) admits."""
    if not requirements:
        return None
    selector = ir.Selector.of(list(requirements))
    return lambda name, labels: selector.matches({**labels, name_key: name})


def _object_scope(parent: Mapping[str, Any], namespace: Any, calico: bool) -> NsScope:
    """The namespaces a pod selector of the objects can apply in: its namespace selector's (read as
    the evaluators read it, or every namespace when it cannot be read), else the object's own
    namespace, else every namespace."""
    if "namespaceSelector" in parent:
        ns_selector = parent["namespaceSelector"]
        if calico:
            try:
                pred = parse_selector(str(ns_selector or "all()"))
            except SelectorError:
                return None
            return lambda name, labels: pred({**labels, _CALICO_NS_NAME: name})
        requirements, known = _label_requirements(ns_selector)
        return _namespace_scope(requirements) if known else None
    return _scope_by_name(namespace) if isinstance(namespace, str) else None


class _TooManyTermsError(ValueError):
    pass


def _calico_terms(text: Any) -> Conjunctions:
    """A Calico selector as the terms of its disjunctive normal form (negations pushed into the
    literals: `!has(k)` is DoesNotExist, `!(k == 'v')` and `k != 'v'` are NotIn): a cell inside or
    outside each term is inside or outside the selector. all() and global() are true for pods. A
    selector that does not parse, or whose normal form passes MAX_DNF_TERMS, gives its atoms."""
    if not isinstance(text, str):
        return []
    try:
        return [sorted(term, key=lambda r: (r.key, r.operator.value, r.values)) for term in _calico_dnf(text)]
    except (SelectorError, _TooManyTermsError):
        return _atomised(_calico_literals(text))


Dnf = list[frozenset[ir.Requirement]]


def _calico_dnf(text: str) -> Dnf:
    """The selector as Calico reads it (calico.parse), in disjunctive normal form."""
    return _dnf(calico.parse(text), True, text)


_COMPARE = {"==": ir.Operator.IN, "in": ir.Operator.IN, "!=": ir.Operator.NOT_IN, "not in": ir.Operator.NOT_IN}


def _dnf(expr: calico.Expr, positive: bool, text: str) -> Dnf:
    """The terms of `expr` (of its negation unless `positive`): !(a && b) = !a || !b."""
    if isinstance(expr, (calico.All, calico.Global)):  # true for pods
        return [frozenset()] if positive else []
    if isinstance(expr, calico.Not):
        return _dnf(expr.operand, not positive, text)
    if isinstance(expr, (calico.Has, calico.Compare)):
        r = (ir.Requirement(expr.key, ir.Operator.EXISTS) if isinstance(expr, calico.Has)
             else ir.Requirement(expr.key, _COMPARE[expr.op], expr.values))
        return [frozenset({r if positive else ir.Requirement(r.key, _NEGATION[r.operator], r.values)})]
    parts = [_dnf(part, positive, text) for part in expr.parts]
    if isinstance(expr, calico.And) == positive:  # a conjunction of terms: every combination
        terms: Dnf = [frozenset()]
        for part in parts:
            terms = list(dict.fromkeys(t | u for t in terms for u in part))
            if len(terms) > MAX_DNF_TERMS:
                raise _TooManyTermsError(text)
        return terms
    terms = list(dict.fromkeys(t for part in parts for t in part))
    if len(terms) > MAX_DNF_TERMS:
        raise _TooManyTermsError(text)
    return terms


def _calico_literals(text: Any) -> Iterator[ir.Requirement]:
    """Every label atom a Calico selector mentions, read leniently (whether or not it parses)."""
    if not isinstance(text, str):
        return
    for m in _CALICO_ATOM.finditer(text):
        if m.group("has"):
            yield ir.Requirement(m.group("has"), ir.Operator.EXISTS)
            continue
        found = [m.group("q")] if m.group("q") else [i.strip() for i in (m.group("set") or "").split(",")]
        yield ir.Requirement(m.group("key"), ir.Operator.IN,
                             tuple(sorted({v[1:-1] for v in found if len(v) >= 2 and v[0] in "'\""})))


def mentions_of_objects(objects: Iterable[Mapping[str, Any]], m: Mentions) -> None:
    """Add what the objects test: label keys and values (with the namespace a namespaced selector is
    confined to), namespace labels, ports, CIDRs, DNS names."""
    for obj in objects:
        api = str(obj.get("apiVersion", ""))
        cilium = api.startswith("cilium.io/")
        calico = api.startswith("projectcalico.org/")
        namespace = (obj.get("metadata") or {}).get("namespace")
        for path, value, parent in _walk(obj.get("spec") or {}, (), {}):
            last = path[-1] if path else ""
            scope: NsScope = None
            if last in _POD_SELECTORS:
                if calico and str(parent.get("namespaceSelector", "")).strip() == "global()":
                    continue  # only non-namespaced resources (network sets): no pod is told apart by it
                scope = _object_scope(parent, namespace, calico)  # where the selector can apply
            if calico and last in ("selector", "notSelector"):
                for term in _calico_terms(value):
                    m.object_selector(scope, term)
            elif calico and last == "namespaceSelector":
                for r in _calico_literals(value):
                    key = NAMESPACE_NAME_LABEL if r.key == _CALICO_NS_NAME else r.key
                    m.ns_space.mention(key)
                    for v in r.values:
                        m.ns_space.mention(key, v)
            elif last in ("podSelector", "endpointSelector", "fromEndpoints", "toEndpoints"):
                for sel in value if isinstance(value, list) else [value]:
                    if cilium:
                        _cilium_selector(m, sel, scope)
                    else:
                        for term in _label_selector(sel):
                            m.object_selector(scope, term)
            elif last == "namespaceSelector":
                for term in _label_selector(value):
                    for r in term:
                        m.ns_space.mention(r.key)
                        for v in r.values:
                            m.ns_space.mention(r.key, v)
            elif last in ("cidr", "except", "nets", "notNets", "toCIDR", "fromCIDR"):
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str):
                        m.network(text)
            elif last == "matchName" and isinstance(value, str):
                m.dns_names.add(value.rstrip("."))
            elif last == "matchPattern" and isinstance(value, str):
                m.dns_patterns.add(value.rstrip("."))
            elif calico and last in ("ingress", "egress") and isinstance(value, list):
                for rule in value:  # Calico names the protocol once per rule, beside its ports
                    if not isinstance(rule, Mapping):
                        continue
                    proto = rule.get("protocol")
                    protocol = Protocol(proto) if proto in Protocol._value2member_map_ else None
                    for side in ("source", "destination"):
                        for key in ("ports", "notPorts"):
                            for item in (rule.get(side) or {}).get(key) or ():
                                _object_port(m, item, protocol)
            elif not calico and last in ("ports", "notPorts") and isinstance(value, list):
                for item in value:
                    _object_port(m, item)


def _cilium_selector(m: Mentions, selector: Any, confined: NsScope) -> None:
    """A Cilium endpoint selector: its namespace requirements (the namespace's name and labels) split the
    namespaces and say where the rest, a pod selector, applies; without them it applies where the policy
    does (Cilium adds the policy's namespace; a superset of the namespaces is always safe)."""
    requirements, known = _label_requirements(selector)
    pod_part: list[ir.Requirement] = []
    ns_part: list[ir.Requirement] = []
    for r in requirements:
        key = _plain(r.key)
        if key == _CILIUM_NS or key.startswith(_CILIUM_NS_LABELS):
            ns_key = NAMESPACE_NAME_LABEL if key == _CILIUM_NS else key[len(_CILIUM_NS_LABELS):]
            ns_part.append(ir.Requirement(ns_key, r.operator, r.values))
            m.ns_space.mention(ns_key)
            for v in r.values:
                m.ns_space.mention(ns_key, v)
        elif not key.startswith("reserved:"):
            pod_part.append(ir.Requirement(key, r.operator, r.values))
    scope = None if not known else _namespace_scope(ns_part) if ns_part else confined
    for term in [pod_part] if known else _atomised(pod_part):
        m.object_selector(scope, term)


def _object_port(m: Mentions, item: Any, rule_protocol: Protocol | None = None) -> None:
    if isinstance(item, int) and not isinstance(item, bool):
        m.port_range(rule_protocol, item, item)
    elif isinstance(item, str):
        if re.fullmatch(r"\d+:\d+", item):
            lo, hi = map(int, item.split(":"))
            m.port_range(rule_protocol, lo, hi)
        elif item.isdigit():
            m.port_range(rule_protocol, int(item), int(item))
        elif item:
            m.port_names.add((item, rule_protocol))
    elif isinstance(item, Mapping):
        port, end = item.get("port"), item.get("endPort")
        proto_text = item.get("protocol", "TCP")  # Kubernetes' default; Cilium's ANY: every protocol
        protocol = Protocol(proto_text) if proto_text in Protocol._value2member_map_ else None
        if isinstance(port, int) and not isinstance(port, bool):
            m.port_range(protocol, port, end if isinstance(end, int) else port)
        elif isinstance(port, str) and port.isdigit():
            if port != "0":
                m.port_range(protocol, int(port), int(end) if isinstance(end, int) else int(port))
        elif isinstance(port, str) and port:
            m.port_names.add((port, protocol))


def _walk(value: Any, path: tuple[str, ...], parent: Mapping[str, Any]
          ) -> Iterator[tuple[tuple[str, ...], Any, Mapping[str, Any]]]:
    """(path, value, the mapping holding it) for everything below value."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield (*path, str(k)), v, value
            yield from _walk(v, (*path, str(k)), value)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, path, parent)


# ------------------------------------------------------------------------------------------ building


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NonPodHook = Callable[[Sequence[Mapping[str, str]], Sequence[Address]], list[External]]
# target -> the target's own non-pod identities, given the pod label classes and the external address
# classes (filled in by netdsl.semantics.targets)
NON_POD_BY_TARGET: dict[str, NonPodHook] = {}


@dataclass(frozen=True)
class Universe:
    topology: Topology
    probes: tuple[Probe, ...]


def build(programs: ir.Program | Sequence[ir.Program],
          objects_by_target: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
          identities: bool | None = None) -> Universe:
    """The class topology and probes for one or more programs (diff compares two) and the objects
    emitted for them: the cells refine all of them. A target's own non-pod identities are added when
    `identities` (default: when there is exactly one target, whose output is being judged); a topology
    shared by several targets leaves them out, since one CNI's identities do not exist under another."""
    programs = [programs] if isinstance(programs, ir.Program) else list(programs)
    m = Mentions()
    for program in programs:
        mentions_of_program(program, m)
        for net in program.pod_networks:
            m.network(net)
            m.pod_networks.append(net)
    for objects in (objects_by_target or {}).values():
        mentions_of_objects(objects, m)
    # pods are named after the services of the last program (diff: NEW), else of any
    targets = sorted(objects_by_target or {})
    if not (identities if identities is not None else len(targets) == 1):
        targets = []
    return _build(m, targets, programs[-1].services,
                  [s for program in programs[:-1] for s in program.services])


def _namespace_cells(m: Mentions) -> list[tuple[str, int, dict[str, str]]]:
    space = m.ns_space
    for key, values in list(space.values.items()):  # every value mentioned for a key splits on its own
        for v in sorted(values):
            m.namespace_selectors.append(ir.Selector.of([ir.Requirement(key, ir.Operator.IN, (v,))]))
        if key != NAMESPACE_NAME_LABEL:
            m.namespace_selectors.append(ir.Selector.of([ir.Requirement(key, ir.Operator.EXISTS)]))
    cells: list[Cell] = [{}]
    seen: set[ir.Selector] = set()
    for selector in m.namespace_selectors:
        if selector in seen:
            continue
        seen.add(selector)
        constraint = space.constraint(selector)
        if constraint is not None:
            cells = refine(cells, constraint, space)
    names_taken = set(space.values.get(NAMESPACE_NAME_LABEL, ()))
    out: list[tuple[str, int, dict[str, str]]] = []
    variants: dict[str, int] = defaultdict(int)
    fresh = 0
    for cell in sorted(cells, key=lambda c: sorted((k, sorted(v)) for k, v in c.items())):
        labels = example(cell, space)
        name = labels.pop(NAMESPACE_NAME_LABEL, None)
        if name is None or name.startswith("netdsl-other"):
            fresh += 1
            name = _fresh(names_taken, f"other-namespace-{fresh}" if fresh > 1 else "other-namespace")
            names_taken.add(name)
        out.append((name, variants[name], labels))
        variants[name] += 1
    return out


def too_large(exc: TooLargeError, what: str) -> Diagnostic:
    """A class topology past its size limit, as an error: refused rather than exhausting memory."""
    return error("limit", f"{what}: the program has {exc}, the limit", None, TooLargeError.HINT)


def _pod_cells(m: Mentions, name: str, labels: Mapping[str, str], budget: int = MAX_ENDPOINTS) -> list[dict[str, str]]:
    space = m.pod_space
    cells: list[Cell] = [{}]
    # the program's selectors that can apply here, then the objects' confined here or not confined:
    # every selector any evaluator may apply to a pod of this namespace (duplicates cost nothing)
    candidates = [selector for scope, selector in m.pod_selectors if scope is None or scope(name, labels)]
    candidates += [selector for scope, selector in m.object_selectors if scope is None or scope(name, labels)]
    relevant = list(dict.fromkeys(s for s in candidates if not s.is_everything))
    for selector in relevant:
        constraint = space.constraint(selector)
        if constraint is not None:
            cells = refine(cells, constraint, space)
            if len(cells) > budget:  # refuse as soon as it is too large, not after building it all
                raise TooLargeError(f"more than {MAX_ENDPOINTS} endpoint classes")
    return [example(c, space) for c in cells]


def _probes(m: Mentions) -> tuple[Probe, ...]:
    out: list[Probe] = []
    for protocol in Protocol:
        bounds = sorted({1, 65536, *(b for b in m.ports.get(protocol, ()) if 1 <= b <= 65536)})
        out += [(protocol, b) for b in bounds[:-1]]
    return tuple(out)


def probe_range(probes: Sequence[Probe], probe: Probe) -> tuple[int, int]:
    """The ports a probe of the class topology stands for: up to the next probe of its protocol."""
    protocol, port = probe[0], probe[1]
    higher = [p[1] for p in probes if p[0] is protocol and p[1] > port]
    return port, (min(higher) - 1 if higher else 65535)


def range_text(probes: Sequence[Probe], probe: Probe) -> str:
    lo, hi = probe_range(probes, probe)
    text = f"{lo}/{probe[0].value.lower()}" if lo == hi else f"{lo}-{hi}/{probe[0].value.lower()}"
    names = probe_names(probe)
    return text + (f" (as {', '.join(sorted(names))})" if names else "")


def _addresses(m: Mentions) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for version, top in ((4, 2**32), (6, 2**128)):
        bounds = {0, top}
        for net in m.networks:
            if net.version == version:
                bounds.add(int(net.network_address))
                bounds.add(int(net.broadcast_address) + 1)
        cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        out += [cls(b) for b in sorted(bounds)[:-1]]
    return out


def _dns_names(m: Mentions) -> list[str]:
    names = set(m.dns_names)
    for pattern in m.dns_patterns:
        if pattern == "*":
            continue
        names.add(pattern.replace("*", "x"))
        names.add(pattern.replace("*", "x.y"))  # `*` is one label: a name with a dot there must not match
        names.add(pattern.replace("*", ""))
    if names or m.dns_patterns:
        names.add("netdsl-unmatched.example")
    return sorted(n for n in names if n and not n.startswith("."))


def _named_probes(m: Mentions, probes: Sequence[Probe]) -> list[Probe]:
    """Each port class again with each set of named ports the destination may bind to it: a pod of the
    class topology stands for every binding of its named ports, to any number."""
    by_protocol: dict[Protocol, set[str]] = defaultdict(set)
    for name, protocol in m.port_names:
        for proto in (protocol,) if protocol is not None else tuple(Protocol):
            by_protocol[proto].add(name)
    out: list[Probe] = []
    for protocol, names in sorted(by_protocol.items(), key=lambda kv: kv[0].value):
        ordered = sorted(names)
        if len(ordered) <= MAX_NAME_SUBSETS:
            subsets = [c for k in range(1, len(ordered) + 1) for c in itertools.combinations(ordered, k)]
        else:
            subsets = [(n,) for n in ordered] + [tuple(ordered)]
        for probe in probes:
            if probe[0] is protocol:
                out += [(protocol, probe[1], frozenset(subset)) for subset in subsets]
    return out


def _by_namespace(services: Sequence[ir.Workload]) -> dict[str | None, list[ir.Workload]]:
    """Declared services by namespace (None: cluster blocks, which apply in every namespace), so a pod
    class is named from its own namespace's services, not tested against every service of the program."""
    out: dict[str | None, list[ir.Workload]] = defaultdict(list)
    for s in services:
        if s.declared:
            out[None if s.cluster is not None else s.namespace].append(s)
    return out


def _pod_name(namespace: str, labels: Mapping[str, str], services: Mapping[str | None, list[ir.Workload]]) -> str:
    """A readable name for a pod class: the services it belongs to, else its labels."""
    mine = (*services.get(namespace, ()), *services.get(None, ()))
    named = sorted({s.name for s in mine if s.selector.matches(dict(labels))})
    if named:
        return "+".join(named)
    if not labels:
        return "unlabelled"
    return "pod{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def variant_suffix(labels: Mapping[str, str]) -> str:
    """What a pod name of namespace variant k > 0 ends with: `~` and that variant's labels."""
    return "~" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def class_name(pod: Pod, topology: Topology) -> str:
    """A pod class's name without its namespace variant (`api+backend` for `api+backend~env=prod`)."""
    if pod.variant:
        suffix = variant_suffix(topology.variants.get((pod.namespace, pod.variant), {}))
        if pod.name.endswith(suffix):
            return pod.name[: -len(suffix)]
    return pod.name


def _distinguish(cells: Sequence[Mapping[str, str]], readables: Sequence[str]) -> list[str]:
    """Pod classes of one namespace that share a readable name (the same services, different labels
    some other selector tests) are told apart by those labels, not by a number: `api+backend` and
    `api+backend{role=monitor}`. The labels shown are those not common to every class of the name;
    a class without any keeps the bare name."""
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, readable in enumerate(readables):
        by_name[readable].append(i)
    out = list(readables)
    for readable, members in by_name.items():
        if len(members) < 2 or readable.startswith("pod{"):  # pod{...} already lists every label
            continue
        common = set.intersection(*(set(cells[i].items()) for i in members))
        for i in members:
            extra = sorted(set(cells[i].items()) - common)
            if extra:
                out[i] = readable + "{" + ",".join(f"{k}={v}" for k, v in extra) + "}"
    return out


def _build(m: Mentions, targets: Sequence[str], services: Sequence[ir.Workload],
           fallback: Sequence[ir.Workload] = ()) -> Universe:
    probes = _probes(m)
    probes = (*probes, *_named_probes(m, probes))
    namespaces: dict[str, dict[str, str]] = {}
    variants: dict[tuple[str, int], dict[str, str]] = {}
    pods: list[Pod] = []
    # a pod's address: in the declared pod networks (CNIs whose CIDR rules match pods see it there);
    # without them, outside every CIDR (the documented assumption the cidr-may-match-pods warning names)
    pod_address = m.pod_networks[0].network_address if m.pod_networks else None
    label_sets: dict[tuple[tuple[str, str], ...], None] = {}
    by_namespace, fallback_by_namespace = _by_namespace(services), _by_namespace(fallback)
    for name, variant, labels in _namespace_cells(m):
        if variant:
            variants[(name, variant)] = labels
        else:
            namespaces[name] = labels
        suffix = variant_suffix(labels) if variant else ""
        taken: set[str] = set()
        tried: dict[str, int] = {}
        cells = _pod_cells(m, name, {**labels, NAMESPACE_NAME_LABEL: name}, MAX_ENDPOINTS - len(pods))
        readables = []
        for pod_labels in cells:
            readable = _pod_name(name, pod_labels, by_namespace)
            if readable.startswith("pod{") and fallback:
                readable = _pod_name(name, pod_labels, fallback_by_namespace)
            readables.append(readable)
        for pod_labels, readable in zip(cells, _distinguish(cells, readables), strict=True):
            label_sets[tuple(sorted(pod_labels.items()))] = None
            stem = readable + suffix
            base = _fresh(taken, stem, tried.get(stem, 0))  # only for classes with equal labels (overlaps)
            tried[stem] = int(base[len(stem):] or 0) + 1  # the next free suffix: no rescan from 0
            taken.add(base)
            pods.append(Pod(name, base, pod_labels, {}, variant, pod_address))
            if len(pods) > MAX_ENDPOINTS:
                raise TooLargeError(f"more than {MAX_ENDPOINTS} endpoint classes")
    addresses = _addresses(m)
    externals = [External(a) for a in addresses]
    names = _dns_names(m)
    if names:
        spread = addresses if len(names) * len(addresses) <= MAX_NAMED_EXTERNALS else addresses[:1]
        externals += [External(a, name) for name in names for a in spread]
    for target in targets:
        hook = NON_POD_BY_TARGET.get(target)
        if hook is not None:
            externals += hook([dict(k) for k in label_sets], addresses)
    topology = Topology(namespaces, tuple(pods), tuple(dict.fromkeys(externals)), variants)
    return Universe(topology, probes)
