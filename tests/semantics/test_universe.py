"""The class topology and the proof over every cluster (netdsl/semantics/universe.py, verify.py),
cross-checked against brute force: every label combination over small label universes, every port
near a boundary. A proof that holds means brute force finds no difference, and a difference brute force
finds is one the proof reports - also for planted bugs in the emitted objects."""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdsl import ir
from netdsl.ir import Protocol
from netdsl.semantics.matrix import matrix
from netdsl.semantics.model import Pod, Topology
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.universe import Space, build, example, refine
from netdsl.semantics.vanilla import VanillaSemantics
from netdsl.semantics.verify import prove
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


def _selector_values(objects: list[Mapping[str, Any]], program: ir.Program) -> dict[str, set[str]]:
    """Every label key and value the program and the objects mention (pods and namespaces alike)."""
    found: dict[str, set[str]] = {}

    def walk(value: Any) -> Iterator[tuple[str, str | None]]:
        if isinstance(value, Mapping):
            for k, v in (value.get("matchLabels") or {}).items() if isinstance(value.get("matchLabels"), Mapping) \
                    else ():
                yield k, v
            for e in value.get("matchExpressions") or () if isinstance(value.get("matchExpressions"), list) else ():
                yield e["key"], None
                for v in e.get("values") or ():
                    yield e["key"], v
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)

    for k, v in walk(objects):
        found.setdefault(k, set())
        if v is not None:
            found[k].add(v)
    selectors = [s.selector for s in program.services]
    for r in program.rules:
        selectors.append(r.subject.selector)
        for p in r.peers:
            if isinstance(p, ir.PodPeer):
                selectors.append(p.pods)
                if isinstance(p.namespaces, ir.NamespaceBySelector):
                    selectors.append(p.namespaces.selector)
    for s in selectors:
        for req in s.requirements:
            found.setdefault(req.key, set()).update(req.values)
    return found


def brute_topology(program: ir.Program, objects: list[Mapping[str, Any]], limit: int = 1500) -> Topology | None:
    """Namespaces: every name mentioned and one other, each with every combination of the namespace
    label values mentioned; pods: every combination of pod label values (absent, each mentioned value,
    one unmentioned value) - or None if that is more than `limit` pods."""
    values = _selector_values(objects, program)
    mentioned = values.pop(ir.NAMESPACE_NAME_LABEL, set())
    mentioned |= {p.namespaces.name for r in program.rules for p in r.peers
                  if isinstance(p, ir.PodPeer) and isinstance(p.namespaces, ir.NamespaceByName)}
    names = sorted({n.name for n in program.namespaces} | {r.subject.namespace for r in program.rules
                                                            if r.subject.cluster is None}
                   | mentioned | {"kube-system", "zz-other"})
    keys = sorted(values)
    per_key = [[None, *sorted(values[k]), "zz-unmentioned"] for k in keys]
    combos = list(itertools.product(*per_key)) if keys else [()]
    ns_combos = combos[:4]  # namespace labels: a few combinations (pods vary fully)
    if len(names) * len(ns_combos) * len(combos) > limit:
        return None
    namespaces: dict[str, dict[str, str]] = {}
    variants: dict[tuple[str, int], dict[str, str]] = {}
    pods: list[Pod] = []
    for name in names:
        for vi, ns_combo in enumerate(ns_combos):
            labels = {k: v for k, v in zip(keys, ns_combo, strict=True) if v is not None}
            if vi == 0:
                namespaces[name] = labels
            else:
                variants[(name, vi)] = labels
            for pi, combo in enumerate(combos):
                pod_labels = {k: v for k, v in zip(keys, combo, strict=True) if v is not None}
                pods.append(Pod(name, f"p{vi}-{pi}", pod_labels, {}, vi))
    return Topology(namespaces, tuple(pods), (), variants)


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
    return any(not (s.namespace == d.namespace and s.variant != d.variant)  # type: ignore[union-attr]
               for s, d, _p, _a in got.differences(want))


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
                e["operator"] = {"In": "NotIn", "NotIn": "In", "Exists": "DoesNotExist",
                                 "DoesNotExist": "Exists"}[e["operator"]]
                return mutated
    if choice == 3 and rules:  # a rule dropped
        for key in ("ingress", "egress"):
            if spec.get(key):
                spec[key].pop(rng.randrange(len(spec[key])))
                return mutated
    spec["podSelector"] = {}  # the policy selects every pod of its namespace
    return mutated


def _selectors(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("podSelector", "namespaceSelector") and isinstance(v, dict):
                yield v
            yield from _selectors(v)
    elif isinstance(value, list):
        for v in value:
            yield from _selectors(v)


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
