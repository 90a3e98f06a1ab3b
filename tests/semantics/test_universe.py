"""The class topology and the proof over every cluster (netdsl/semantics/universe.py, verify.py),
cross-checked against brute force: every label combination over small label universes, every port
near a boundary. A proof that holds means brute force finds no difference, and a difference brute force
finds is one the proof reports - also for planted bugs in the emitted objects."""

from __future__ import annotations

import copy
import ipaddress
import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdsl import ir
from netdsl.ir import Protocol
from netdsl.semantics.matrix import matrix
from netdsl.semantics.model import Connection, External, Pod, Topology
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.universe import Space, build, example, refine
from netdsl.semantics.vanilla import VanillaSemantics
from netdsl.semantics.verify import coexist, prove
from netdsl.source import Span
from tests.semantics.strategies import programs
from tests.semantics.test_equivalence import compile_paths_text

KEYS = ("a", "b", "c")
VALUES = ("x", "y")


@st.composite
def requirements(draw: st.DrawFn) -> ir.Requirement:
    key = draw(st.sampled_from(KEYS[:2]))
    op = draw(st.sampled_from(list(ir.Operator)))
    values: tuple[str, ...] = ()
    if op in (ir.Operator.IN, ir.Operator.NOT_IN):
        values = tuple(sorted(set(draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=2)))))
    return ir.Requirement(key, op, values)


@given(st.lists(st.lists(requirements(), max_size=3).map(ir.Selector.of), min_size=1, max_size=5))
def test_cells_cover_every_label_set(selectors: list[ir.Selector]) -> None:
    """Every label set over the keys and values (and a value and a key nobody mentions) behaves like
    the representative of one cell, for every selector."""
    space = Space()
    for s in selectors:
        for r in s.requirements:
            space.mention(r.key)
            for v in r.values:
                space.mention(r.key, v)
    cells: list[dict[str, frozenset[str]]] = [{}]
    for s in selectors:
        constraint = space.constraint(s)
        if constraint is not None:
            cells = refine(cells, constraint, space)
    signatures = {tuple(s.matches(example(c, space)) for s in selectors) for c in cells}
    choices = [None, *VALUES, "unmentioned"]
    for combo in itertools.product(choices, repeat=len(KEYS)):
        labels = {k: v for k, v in zip(KEYS, combo, strict=True) if v is not None}
        assert tuple(s.matches(labels) for s in selectors) in signatures, labels
    # cells are disjoint: no two representatives share a cell of every selector's truth... and each
    # representative satisfies its own cell
    assert len(cells) == len({tuple(sorted((k, tuple(sorted(v))) for k, v in c.items())) for c in cells})


# ------------------------------------------------------------------------------------------ brute force


def _selector_values(objects: list[Mapping[str, Any]], program: ir.Program
                     ) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Every label key and value the program and the objects mention: (pod labels, namespace labels)."""
    pods: dict[str, set[str]] = {}
    namespaces: dict[str, set[str]] = {}

    def add(into: dict[str, set[str]], selector: Any) -> None:
        if not isinstance(selector, Mapping):
            return
        for k, v in (selector.get("matchLabels") or {}).items():
            into.setdefault(k, set()).add(v)
        for e in selector.get("matchExpressions") or ():
            into.setdefault(e["key"], set()).update(e.get("values") or ())

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                if k == "podSelector":
                    add(pods, v)
                elif k == "namespaceSelector":
                    add(namespaces, v)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(objects)

    def add_ir(into: dict[str, set[str]], selector: ir.Selector) -> None:
        for req in selector.requirements:
            into.setdefault(req.key, set()).update(req.values)

    for svc in program.services:
        add_ir(pods, svc.selector)
    for iso in program.isolations:
        if iso.subject is not None:
            add_ir(pods, iso.subject.selector)
    for r in program.rules:
        add_ir(pods, r.subject.selector)
        for p in r.peers:
            if isinstance(p, ir.PodPeer):
                add_ir(pods, p.pods)
                if isinstance(p.namespaces, ir.NamespaceBySelector):
                    add_ir(namespaces, p.namespaces.selector)
    return pods, namespaces


def _combinations(values: Mapping[str, set[str]]) -> list[dict[str, str]]:
    keys = sorted(values)
    per_key = [[None, *sorted(values[k]), "zz-unmentioned"] for k in keys]
    return [{k: v for k, v in zip(keys, combo, strict=True) if v is not None}
            for combo in itertools.product(*per_key)]


def brute_topology(program: ir.Program, objects: list[Mapping[str, Any]], limit: int = 1500) -> Topology | None:
    """Namespaces: every name mentioned and one other, each with every combination of the namespace
    label values mentioned (absent, each value, one unmentioned value); pods: every combination of the
    pod label values - or None if that is more than `limit` pods."""
    pod_values, ns_values = _selector_values(objects, program)
    mentioned = ns_values.pop(ir.NAMESPACE_NAME_LABEL, set())
    mentioned |= {p.namespaces.name for r in program.rules for p in r.peers
                  if isinstance(p, ir.PodPeer) and isinstance(p.namespaces, ir.NamespaceByName)}
    names = sorted({n.name for n in program.namespaces} | {r.subject.namespace for r in program.rules
                                                            if r.subject.cluster is None}
                   | mentioned | {"kube-system", "zz-other"})
    ns_combos, pod_combos = _combinations(ns_values), _combinations(pod_values)
    if len(names) * len(ns_combos) * len(pod_combos) > limit:
        return None
    namespaces: dict[str, dict[str, str]] = {}
    variants: dict[tuple[str, int], dict[str, str]] = {}
    pods: list[Pod] = []
    for name in names:
        for vi, labels in enumerate(ns_combos):
            if vi == 0:
                namespaces[name] = labels
            else:
                variants[(name, vi)] = labels
            for pi, pod_labels in enumerate(pod_combos):
                pods.append(Pod(name, f"p{vi}-{pi}", pod_labels, {}, vi))
    return Topology(namespaces, tuple(pods), tuple(_brute_addresses(program, objects)), variants)


def _brute_addresses(program: ir.Program, objects: list[Mapping[str, Any]]) -> list[External]:
    """Both ends of every CIDR and their outside neighbours, and an address of each family."""
    nets: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for r in program.rules:
        for p in r.peers:
            if isinstance(p, ir.CidrPeer):
                nets.update((p.cidr, *p.excepts))

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                if k in ("cidr", "except"):
                    for text in v if isinstance(v, list) else [v]:
                        nets.add(ipaddress.ip_network(text, strict=False))
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(objects)
    found = {ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::"), ipaddress.ip_address("198.51.100.7")}
    for net in nets:
        lo, hi = int(net.network_address), int(net.broadcast_address)
        top = 2**32 - 1 if net.version == 4 else 2**128 - 1
        cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        found.update(cls(n) for n in (lo - 1, lo, hi, hi + 1) if 0 <= n <= top)
    return [External(a) for a in sorted(found, key=lambda a: (a.version, a))]


def brute_probes(program: ir.Program, objects: list[Mapping[str, Any]]) -> list[tuple[Protocol, int]]:
    ports = {1, 80, 65535}
    for r in program.rules:
        for p in r.ports:
            if p.port is not None:
                ports.update({p.port - 1, p.port, (p.end_port or p.port), (p.end_port or p.port) + 1})

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            if isinstance(value.get("port"), int):
                end = value.get("endPort", value["port"])
                ports.update({value["port"] - 1, value["port"], end, end + 1})
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(objects)
    return [(proto, p) for p in sorted(ports) if 1 <= p <= 65535 for proto in Protocol]


def brute_differs(program: ir.Program, objects: list[Mapping[str, Any]]) -> bool | None:
    topology = brute_topology(program, objects)
    if topology is None:
        return None
    probes = brute_probes(program, objects)
    want = matrix(ProgramSemantics(program, topology), topology, probes)
    got = matrix(VanillaSemantics(objects, topology), topology, probes)
    return any(coexist(s, d) for s, d, _p, _a in got.differences(want))


FLIPPED = {"In": "NotIn", "NotIn": "In", "Exists": "DoesNotExist", "DoesNotExist": "Exists"}
UNMENTIONED = "zz-planted"  # a label value neither the program nor the objects mention


def _mutations(objects: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """A planted bug: one small change to one emitted policy."""
    mutated = copy.deepcopy(objects)
    policy = rng.choice(mutated)
    spec = policy["spec"]
    rules = [r for key in ("ingress", "egress") for r in spec.get(key) or ()]
    choice = rng.randrange(5)
    if choice == 0 and rules:  # a port off by one
        ports = [p for r in rules for p in r.get("ports") or () if isinstance(p.get("port"), int)]
        if ports:
            rng.choice(ports)["port"] += 1
            return mutated
    if choice == 1 and spec.get("podSelector", {}).get("matchLabels"):  # a label dropped from the subject
        labels = spec["podSelector"]["matchLabels"]
        labels.pop(sorted(labels)[0])
        return mutated
    if choice == 2:  # an operator read the other way round
        for sel in _selectors(spec):
            for e in sel.get("matchExpressions") or ():
                e["operator"] = FLIPPED[e["operator"]]
                return mutated
    if choice == 3 and rules:  # a rule dropped
        for key in ("ingress", "egress"):
            if spec.get(key):
                spec[key].pop(rng.randrange(len(spec[key])))
                return mutated
    spec["podSelector"] = {}  # the policy selects every pod of its namespace
    return mutated


def _edits(objects: list[dict[str, Any]]) -> list[Callable[[], object]]:
    """Every small change to one selector of the objects (in place): each operator read the other way
    round, a value added, removed or replaced by one nobody mentions, each `k: v` dropped, set to
    another value or turned into `k NotIn [v]`, a selector emptied, a namespace selector dropped from
    its peer (the pod selector then applies in the policy's namespace only)."""
    out: list[Callable[[], object]] = []
    for sel in _selectors(objects):
        for e in sel.get("matchExpressions") or ():
            out.append(lambda e=e: e.update(operator=FLIPPED[e["operator"]]))
            if e.get("values"):
                out.append(lambda e=e: e.update(values=[*e["values"], UNMENTIONED]))
                out.append(lambda e=e: e.update(values=[UNMENTIONED]))
                if len(e["values"]) > 1:
                    out.append(lambda e=e: e.update(values=e["values"][1:]))
        for k in sorted(sel.get("matchLabels") or {}):
            out.append(lambda sel=sel, k=k: sel["matchLabels"].pop(k))
            out.append(lambda sel=sel, k=k: sel["matchLabels"].update({k: UNMENTIONED}))
            out.append(lambda sel=sel, k=k: sel.setdefault("matchExpressions", []).append(
                {"key": k, "operator": "NotIn", "values": [sel["matchLabels"].pop(k)]}))
        if sel:
            out.append(sel.clear)
    for peer in _peers_with_namespaces(objects):
        out.append(lambda peer=peer: peer.pop("namespaceSelector"))
    return out


def _selectors(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("podSelector", "namespaceSelector") and isinstance(v, dict):
                yield v
            yield from _selectors(v)
    elif isinstance(value, list):
        for v in value:
            yield from _selectors(v)


def _peers_with_namespaces(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if "namespaceSelector" in value and "podSelector" in value:
            yield value
        for v in value.values():
            yield from _peers_with_namespaces(v)
    elif isinstance(value, list):
        for v in value:
            yield from _peers_with_namespaces(v)


@settings(max_examples=max(10, settings.default.max_examples // 4), deadline=None)
@given(programs(), st.integers(0, 2**32))
def test_the_proof_agrees_with_brute_force_on_planted_bugs(text: str, seed: int) -> None:
    result = compile_paths_text(text, "vanilla")
    assert result.ok, [d.message for d in result.diagnostics if d.is_error]  # compile proved it already
    program = result.program
    assert program is not None
    objects = [m.body for m in result.manifests]
    if not objects:
        return
    mutated = _mutations(objects, random.Random(seed))
    differs = brute_differs(program, mutated)
    if differs is None:
        return  # too many label combinations for brute force
    proof = prove(program, "vanilla", mutated)
    # sound: a bug brute force sees is never proven away
    if differs:
        assert not proof.holds, text
    # complete: a reported difference is real - brute force covers every label value either mentions
    # (named ports it does not bind, so there it only checks soundness)
    if not any(p.name for r in program.rules for p in r.ports):
        assert proof.holds == (not differs), (text, proof.counterexamples[:1])


@settings(max_examples=max(5, settings.default.max_examples // 3), deadline=None)
@given(programs(), st.data())
def test_the_proof_agrees_with_brute_force_on_every_selector_edit(text: str, data: st.DataObject) -> None:
    """Each small change to one selector of the emitted objects (up to 12 per program): the proof
    fails exactly when brute force finds a difference. The changes recombine atoms the program tests,
    bring in values nobody mentions and move selectors to other namespaces."""
    result = compile_paths_text(text, "vanilla")
    assert result.ok and result.program is not None
    objects = [m.body for m in result.manifests]
    if brute_topology(result.program, objects) is None:
        return  # too many label combinations for brute force
    count = len(_edits(objects))
    chosen = data.draw(st.lists(st.integers(0, count - 1), max_size=12, unique=True)) if count else []
    named = any(p.name for r in result.program.rules for p in r.ports)
    for n in chosen:
        mutated = copy.deepcopy(objects)
        _edits(mutated)[n]()
        differs = brute_differs(result.program, mutated)
        if differs is None:
            continue  # the edit brought in a value too many for brute force
        holds = prove(result.program, "vanilla", mutated).holds
        assert not (differs and holds), (text, n)  # sound
        assert named or holds == (not differs), (text, n)  # complete (brute force binds no named ports)


def test_replicas_of_one_workload_are_a_connection() -> None:
    text = "namespace k { isolate\n service broker = app=broker\n broker accepts broker on 9092 }\n"
    result = compile_paths_text(text, "vanilla")
    assert result.ok and result.program is not None
    universe = build(result.program)
    broker = next(p for p in universe.topology.pods if p.name == "broker")
    m = matrix(ProgramSemantics(result.program, universe.topology), universe.topology, universe.probes)
    assert m.is_allowed(broker, broker, (Protocol.TCP, 9092))


@pytest.mark.parametrize("target", ["vanilla", "calico", "cilium"])
def test_a_namespace_with_and_without_its_declared_labels(target: str) -> None:
    text = ("namespace staging labels env=staging\n"
            "namespace prod { isolate ingress\n service api = app=api\n api accepts namespaces[env=staging] }\n")
    result = compile_paths_text(text, target)
    assert result.ok, [d.message for d in result.diagnostics if d.is_error]
    assert result.program is not None
    topology = build(result.program).topology
    staging = {(p.variant, tuple(sorted(topology.labels_of(p).items()))) for p in topology.pods
               if p.namespace == "staging"}
    assert len(staging) >= 2  # staging with env=staging, and staging without it
    assert any(dict(labels).get("env") == "staging" for _, labels in staging)
    assert any("env" not in dict(labels) for _, labels in staging)


NAMED = """\
pod networks = 10.244.0.0/16
namespace shop labels team=a {
  isolate
  service web = app=web
  service api = app=api, tier in (x, y)
  web connects to api on http, 8080
  api accepts pods[role=probe] in namespaces[team=a] on metrics/udp, 9000-9001
  web connects to cidr 0.0.0.0/0 except 192.0.2.0/24 on 443
}
"""


@pytest.mark.parametrize("target", ["vanilla", "calico", "cilium"])
def test_the_fast_matrix_is_decide_on_class_topologies(target: str) -> None:
    """Over the class topology (pods without named ports of their own, probes that bind them, replica
    cells, namespace variants, pod addresses, the target's identities), the fast matrix agrees with
    decide() for the program and the target."""
    from netdsl.semantics.matrix import by_decide
    from netdsl.semantics.targets import EVALUATOR_BY_TARGET

    result = compile_paths_text(NAMED, target)
    assert result.ok and result.program is not None, [d.message for d in result.diagnostics if d.is_error]
    objects = [m.body for m in result.manifests]
    universe = build(result.program, {target: objects})
    topology = universe.topology
    probes = [p for p in universe.probes if p[1] in (443, 8080, 9000, 9002) or len(p) > 2][:40]
    assert any(len(p) > 2 for p in probes)  # named-port probes are among them
    for evaluator in (ProgramSemantics(result.program, topology), EVALUATOR_BY_TARGET[target](objects, topology)):
        assert matrix(evaluator, topology, probes) == by_decide(evaluator, topology, probes)


def test_an_isolations_subject_splits_the_pods_of_its_namespace() -> None:
    """`isolate for S` restricts S's pods only: the class topology must hold a pod of the namespace that
    S selects and one it does not, even when no service or rule mentions S's labels (an imported IR)."""
    web = ir.Workload("shop", "web", ir.Selector.of([ir.Requirement("app", ir.Operator.IN, ("web",))]))
    isolation = ir.Isolation("shop", ir.Direction.INGRESS, Span("t.seg", 1, 1, 1, 2), subject=web)
    program = ir.Program((ir.Namespace("shop", ()),), (), (isolation,), ())
    topology = build(program).topology
    pods = [p for p in topology.pods if p.namespace == "shop"]
    semantics = ProgramSemantics(program, topology)
    reached = {p.labels.get("app"): semantics.decide(Connection(p, p, Protocol.TCP, 80)).allowed for p in pods}
    assert reached.pop("web") is False
    assert reached and all(reached.values())  # pods web does not select exist, and are not isolated


# ------------------------------------------------------------------------------------------ regressions
# Each is a planted bug the class topology once proved away: the objects' selectors were split only
# by the atoms the program does not test, so a selector of the objects made of the program's atoms in
# a new combination, or applied in other namespaces than the program's, had no class of its own.

SUPERSET = "namespace prod {\n  service ui = app, legacy, role\n  ui accepts pods[app], pods[app, legacy, role]\n}\n"
# The second peer, read the other way round on `app`: pods with legacy and role but no app get in.
WRONG_PEER = {
    "vanilla": lambda objects: objects[0]["spec"]["ingress"][0]["from"][1]["podSelector"]["matchExpressions"][0]
    .update(operator="DoesNotExist"),
    "calico": lambda objects: objects[0]["spec"]["ingress"][1]["source"]
    .update(selector="!(has(app) || !has(legacy) || !has(role))"),  # the same, negated and in DNF
    "cilium": lambda objects: objects[0]["spec"]["ingress"][0]["fromEndpoints"][1]["matchExpressions"][0]
    .update(operator="DoesNotExist"),
}


@pytest.mark.parametrize("target", ["vanilla", "calico", "cilium"])
def test_a_selector_of_the_objects_is_split_by_as_a_whole(target: str) -> None:
    """The mutated peer `!app, legacy, role` is made of atoms the program tests, in a combination no
    program selector has: the topology needs a pod of that class to see the difference."""
    result = compile_paths_text(SUPERSET, target)
    assert result.ok and result.program is not None
    objects = [copy.deepcopy(m.body) for m in result.manifests]
    assert prove(result.program, target, objects).holds
    WRONG_PEER[target](objects)
    if target == "vanilla":
        assert brute_differs(result.program, objects)
    proof = prove(result.program, target, objects)
    assert not proof.holds
    src = proof.counterexamples[0].src
    assert isinstance(src, Pod) and "app" not in src.labels and {"legacy", "role"} <= set(src.labels)


def test_a_selector_of_the_objects_applies_in_the_namespaces_its_namespace_selector_admits() -> None:
    """`allow dns` with the namespace selector dropped: kube-dns pods of every namespace get in. The
    program tests k8s-app=kube-dns only in kube-system; the objects' selector applies everywhere."""
    result = compile_paths_text("namespace prod {\n  service api = app=api\n  allow dns\n}\n", "vanilla")
    assert result.ok and result.program is not None
    objects = [copy.deepcopy(m.body) for m in result.manifests]
    peer = objects[0]["spec"]["egress"][0]["to"][0]
    assert peer["namespaceSelector"]["matchLabels"].pop(ir.NAMESPACE_NAME_LABEL) == "kube-system"
    assert brute_differs(result.program, objects)
    proof = prove(result.program, "vanilla", objects)
    assert not proof.holds
    dst = proof.counterexamples[0].dst
    assert isinstance(dst, Pod) and dst.namespace != "kube-system" and dst.labels.get("k8s-app") == "kube-dns"
