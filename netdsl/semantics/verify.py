"""Translation validation: a target's emitted objects allow exactly what the program allows, in every
cluster.

Both are evaluated over the class topology of the program and the objects together
(netdsl.semantics.universe): one representative per class of namespaces, pods (with replicas and
named-port bindings), addresses, DNS names and the target's own identities, and one probe per class
of ports. Within a class every evaluator gives one verdict, so equal matrices prove the two equal for
every cluster, and each differing cell is a concrete counterexample: a namespace with these labels,
a pod with these labels, this port, this address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netdsl import ir
from netdsl.semantics.matrix import Evaluator, Matrix, Probe, matrix, probe_text, sides
from netdsl.semantics.model import Connection, Endpoint, External, Pod, Topology, Verdict
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.targets import EVALUATOR_BY_TARGET
from netdsl.semantics.universe import Universe, build

MAX_COUNTEREXAMPLES = 5


@dataclass(frozen=True)
class Counterexample:
    src: Endpoint
    dst: Endpoint
    probe: Probe
    program: Verdict
    target: Verdict

    def describe(self, topology: Topology, target: str) -> str:
        said = "allows" if self.program.allowed else "denies"
        does = "allows" if self.target.allowed else "denies"
        why_p = "; ".join(self.program.reasons) or "no statement applies"
        why_t = "; ".join(self.target.reasons) or "no policy applies"
        dst = "another replica of it" if self.src == self.dst else describe_endpoint(self.dst, topology)
        return (f"{describe_endpoint(self.src, topology)} -> {dst} on "
                f"{probe_text(self.probe)}: the program {said} it ({why_p}); the {target} output {does} it "
                f"({why_t})")


def describe_endpoint(e: Endpoint, topology: Topology) -> str:
    """An endpoint as the class it stands for: namespace labels, pod labels, named ports, address."""
    if isinstance(e, External):
        if e.identity is not None:
            return str(e)
        return f"{e.name} ({e.address})" if e.name else f"address {e.address}"
    ns_labels = {k: v for k, v in topology.labels_of(e).items() if k != ir.NAMESPACE_NAME_LABEL}
    ns = e.namespace + (_labels(ns_labels) if ns_labels else "")
    pod = _labels(e.labels) if e.labels else "{no labels}"
    ports = ""
    if e.ports:
        ports = " with ports " + ", ".join(f"{n}={num}/{p.value.lower()}" for n, (num, p) in sorted(e.ports.items()))
    return f"pod {pod} in namespace {ns}{ports}"


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def coexist(src: Endpoint, dst: Endpoint) -> bool:
    """Two endpoints of the class topology that can be in one cluster: a namespace has one label set."""
    return not (isinstance(src, Pod) and isinstance(dst, Pod) and src.namespace == dst.namespace
                and src.variant != dst.variant)


def differences(first: Matrix, second: Matrix) -> Iterable[tuple[Endpoint, Endpoint, Probe, bool]]:
    """The cells where two matrices over one class topology differ (pairs that can coexist)."""
    for src, dst, probe, allowed in first.differences(second):
        if coexist(src, dst):
            yield src, dst, probe, allowed


@dataclass(frozen=True)
class Proof:
    target: str
    universe: Universe
    counterexamples: tuple[Counterexample, ...]
    differing: int  # how many (class, class, port class) cells differ

    @property
    def holds(self) -> bool:
        return not self.counterexamples


def prove(program: ir.Program, target: str, objects: Sequence[Mapping[str, Any]]) -> Proof:
    """Whether `objects` (what `target` emits for program) allow exactly what program allows."""
    universe = build(program, {target: objects})
    topology = universe.topology
    reference: Evaluator = ProgramSemantics(program, topology)
    judged: Evaluator = EVALUATOR_BY_TARGET[target](list(objects), topology)
    # Equal sides (each endpoint's egress and ingress, per probe) prove equal verdicts without building
    # the matrices; unequal sides may still mean equal verdicts, which the matrices decide.
    mine, theirs = sides(reference, topology, universe.probes), sides(judged, topology, universe.probes)
    if mine is not None and theirs is not None and mine == theirs:
        return Proof(target, universe, (), 0)
    want = matrix(reference, topology, universe.probes)
    got = matrix(judged, topology, universe.probes)
    found: list[Counterexample] = []
    count = 0
    for src, dst, probe, _allowed in differences(want, got):
        count += 1
        if len(found) < MAX_COUNTEREXAMPLES:
            conn = Connection(src, dst, *probe)
            found.append(Counterexample(src, dst, probe, reference.decide(conn), judged.decide(conn)))
    return Proof(target, universe, tuple(found), count)
