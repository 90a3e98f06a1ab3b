"""`expect` statements, checked against the program itself and against the objects emitted for each
target, over the class topology (netdsl.semantics.universe): their verdicts hold in every cluster.

An endpoint of an expectation is a class: a service (`ns/name`: every pod its selector matches in
that namespace, whatever else it carries, in a namespace of any labels; a service of a cluster block
in every namespace of the block), `pods[...] in ...`, `any pod in ...`, or an IP address.
`allowed` holds when every member of the source class may reach every member of the destination
class (on the port; without a port, on some port), `denied` when no member may reach any (on the
port; without one, on any port). A named port means each destination pod's port of that name, on the
pods that have one. A failed expectation is an error at its line with a counterexample and what
decided it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from netdsl import ir
from netdsl.diagnostics import Diagnostic, error
from netdsl.semantics.matrix import Evaluator, Matrix, Probe, matrix, probe_names, probe_text
from netdsl.semantics.model import Connection, Endpoint, External, Pod, Topology
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.targets import EVALUATOR_BY_TARGET
from netdsl.semantics.universe import TooLargeError, build, too_large
from netdsl.semantics.verify import coexist, describe_endpoint


def check_expectations(
    program: ir.Program, emitted: Mapping[str, Iterable[Mapping[str, Any]]]
) -> list[Diagnostic]:
    """Errors for expectations that do not hold for the program or for one of the `emitted` targets
    (target name -> its objects), in some cluster."""
    if not program.expectations:
        return []
    objects = {t: list(o) for t, o in emitted.items()}
    try:
        universe = build(program, objects)
    except TooLargeError as exc:
        return [too_large(exc, "cannot check the expectations")]
    topology = universe.topology
    evaluators: dict[str, Evaluator] = {"the program": ProgramSemantics(program, topology)}
    for target, objs in objects.items():
        evaluators[f"target `{target}`"] = EVALUATOR_BY_TARGET[target](objs, topology)
    matrices = {who: matrix(ev, topology, universe.probes) for who, ev in evaluators.items()}
    out: list[Diagnostic] = []
    for e in program.expectations:
        problem = _check(e, program, topology, universe.probes, evaluators, matrices)
        if problem is not None:
            out.append(problem)
    return out


def members(text: str, program: ir.Program, topology: Topology, pods: ir.PodPeer | None = None) -> list[Endpoint]:
    """The endpoints of the class topology an expectation's endpoint stands for: the pods of its class,
    or the address."""
    if pods is not None:
        return [p for p in topology.pods
                if ir.namespace_matches(pods.namespaces, p.namespace, topology.labels_of(p))
                and pods.pods.matches(dict(p.labels))]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return [next((x for x in topology.externals if x.address == address and x.identity is None
                      and x.name is None), External(address))]
    ns, _, name = text.rpartition("/")
    services = [s for s in program.services if s.name == name and s.cluster is None and s.namespace == ns]
    return [p for p in topology.pods for s in services
            if p.namespace == s.namespace and s.selector.matches(dict(p.labels))]


def _probes_of(e: ir.Expectation, dst: Endpoint, probes: Sequence[Probe]) -> list[Probe]:
    """The probes of an expectation with a port, for one destination: the port; a named port at every
    number the destination may bind it to (in the class topology, every port class; none for an
    address)."""
    assert e.port is not None
    if e.port.name is None:
        assert e.port.port is not None
        return [(e.port.protocol, e.port.port)]
    if not isinstance(dst, Pod):
        return []
    if e.port.name in dst.ports:
        number, protocol = dst.ports[e.port.name]
        return [(protocol, number)] if protocol is e.port.protocol else []
    return [p for p in probes if p[0] is e.port.protocol and e.port.name in probe_names(p)]


def _check(e: ir.Expectation, program: ir.Program, topology: Topology, probes: Sequence[Probe],
           evaluators: Mapping[str, Evaluator], matrices: Mapping[str, Matrix]) -> Diagnostic | None:
    sources = members(e.source, program, topology, e.source_pods)
    destinations = members(e.destination, program, topology, e.destination_pods)
    pairs = [(s, d) for s in sources for d in destinations
             if coexist(s, d) and not (isinstance(s, External) and isinstance(d, External))]
    if not pairs:
        return error("expectation", f"cannot evaluate `{e.text}`: no pods or addresses on both ends", e.span)
    extra = [x for s, d in pairs for x in (s, d) if isinstance(x, External) and x not in topology.externals]
    for who, m in matrices.items():
        failure = _first_failure(e, pairs, probes, m, evaluators[who] if extra else None)
        if failure is None:
            continue
        src, dst, probe, allowed = failure
        conn = Connection(src, dst, *probe)
        verdict = evaluators[who].decide(conn)
        where = f"{describe_endpoint(src, topology)} -> " + (
            "another replica of it" if src == dst else describe_endpoint(dst, topology))
        if e.allowed and e.port is None:
            what = f"{where} is denied on every port"
        else:
            what = f"{where} on {probe_text(probe)} is {'allowed' if allowed else 'denied'}"
        why = "; ".join(verdict.reasons) if verdict.reasons else "no policy applies to it"
        return error("expectation", f"expectation does not hold for {who}: {what}", e.span,
                     f"decided by: {why}")
    return None


def _allowed(m: Matrix, evaluator: Evaluator | None, src: Endpoint, dst: Endpoint, probe: Probe) -> bool:
    if evaluator is not None:
        return evaluator.decide(Connection(src, dst, *probe)).allowed
    return m.is_allowed(src, dst, probe)


def _first_failure(e: ir.Expectation, pairs: Sequence[tuple[Endpoint, Endpoint]], probes: Sequence[Probe],
                   m: Matrix, evaluator: Evaluator | None) -> tuple[Endpoint, Endpoint, Probe, bool] | None:
    for src, dst in pairs:
        if e.port is not None:
            for probe in _probes_of(e, dst, probes):
                if _allowed(m, evaluator, src, dst, probe) != e.allowed:
                    return src, dst, probe, not e.allowed
            continue
        if e.allowed:
            if not any(_allowed(m, evaluator, src, dst, p) for p in probes):
                return src, dst, probes[0], False
        else:
            hit = next((p for p in probes if _allowed(m, evaluator, src, dst, p)), None)
            if hit is not None:
                return src, dst, hit, True
    return None
