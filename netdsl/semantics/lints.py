"""Lints that need the semantic engine: statements that change nothing (redundant, or shadowed by a
deny), flows that isolation elsewhere blocks, and services nothing mentions.

They evaluate the program over its class topology (netdsl.semantics.universe), so what they claim
holds in every cluster: "changes nothing" means that no pod, namespace or address of any cluster
gains or loses a connection without the statement (replicas of one workload included); a blocked
flow names a class of pods for which it is blocked. The engine lints run while their work stays
under MAX_CELLS (endpoint classes x endpoint classes x port classes x statements); the budget is
checked before anything is built, so `check` stays quick on any input.
"""

from __future__ import annotations

from dataclasses import replace

from netdsl import ir
from netdsl.diagnostics import Diagnostic, warning
from netdsl.netset import PortSet
from netdsl.semantics.matrix import matrix
from netdsl.semantics.model import Connection, External, port_matches
from netdsl.semantics.program import ProgramSemantics, peer_matches
from netdsl.semantics.universe import TooLargeError, Universe, build, range_text
from netdsl.semantics.verify import coexist, describe_endpoint

MAX_RULES = 200
MAX_CELLS = 40_000_000


def semantic_lints(program: ir.Program) -> list[Diagnostic]:
    out = unused_services(program)
    if len(program.rules) > MAX_RULES:
        return out
    try:
        universe = build(program)
    except TooLargeError:
        return out
    out += ineffective_statements(program, universe)
    out += blocked_flows(program, universe)
    return out


def _size(universe: Universe) -> int:
    n = len(universe.topology.endpoints)
    return n * n * len(universe.probes)


def blocked_flows(program: ir.Program, universe: Universe | None = None) -> list[Diagnostic]:
    """Allow statements whose connections isolation elsewhere blocks (a tier that denies what it does
    not decide for the other side): the flow does not work end to end, although netdsl derived its
    other half where it could. Deny statements are deliberate and not reported."""
    universe = universe or build(program)
    topology, probes = universe.topology, universe.probes
    if _size(universe) > MAX_CELLS:
        return []
    semantics = ProgramSemantics(program, topology)
    m = matrix(semantics, topology, probes)
    out: list[Diagnostic] = []
    reported: set[object] = set()
    for rule in program.rules:
        if rule.derived or rule.action is not ir.Action.ALLOW or rule.span in reported:
            continue
        subjects = [
            p for p in topology.pods
            if rule.subject.applies_in(p.namespace, topology.labels_of(p))
            and rule.subject.selector.matches(dict(p.labels))
        ]
        peers = [e for e in topology.endpoints if any(peer_matches(q, e, topology) for q in rule.peers)]
        # the probes its numeric ports take, by bisection (a statement may list thousands of ports)
        numeric = PortSet((pm.protocol, pm.port, pm.end_port) for pm in rule.ports if pm.name is None)
        named = [pm for pm in rule.ports if pm.name is not None]
        listed = [not rule.ports or numeric.contains(probe[0], probe[1]) for probe in probes]
        for s in subjects:
            for p in peers:
                if rule.span in reported:
                    break
                src, dst = (p, s) if rule.direction is ir.Direction.INGRESS else (s, p)
                if not coexist(src, dst):
                    continue
                for k, probe in enumerate(probes):
                    conn = Connection(src, dst, *probe)
                    if not listed[k] and not any(port_matches(pm, conn) for pm in named):
                        continue
                    if m.is_allowed(src, dst, probe):
                        continue
                    verdict = semantics.decide(conn)
                    if not verdict.allowed and not verdict.by_deny:  # a deny statement is deliberate
                        reported.add(rule.span)
                        where = describe_endpoint(src, topology) + " -> " + (
                            "another replica of it" if src == dst else describe_endpoint(dst, topology))
                        out.append(warning(
                            "blocked-flow", f"this flow does not work end to end: {where} on "
                            f"{range_text(probes, probe)} is denied", rule.span,
                            "decided by: " + ("; ".join(verdict.reasons) or "no statement"),
                        ))
                        break
    return out


def unused_services(program: ir.Program) -> list[Diagnostic]:
    used: set[tuple[str, ir.Selector]] = set()
    for r in program.rules:
        used.add((r.subject.namespace, r.subject.selector))
        for p in r.peers:
            if isinstance(p, ir.PodPeer) and isinstance(p.namespaces, ir.NamespaceByName):
                used.add((p.namespaces.name, p.pods))
    return [
        warning("unused", f"service `{s.name}` is declared but no statement uses it", s.span,
                "remove it, or add the flows it takes part in")
        for s in program.services
        if s.cluster is None and (s.namespace, s.selector) not in used and s.span is not None
    ]


def ineffective_statements(program: ir.Program, universe: Universe | None = None) -> list[Diagnostic]:
    """Explicit allow statements whose removal changes no verdict in any cluster: over the class
    topology of the whole program, which also refines the program without the statement."""
    universe = universe or build(program)
    topology, probes = universe.topology, universe.probes
    spans = list(dict.fromkeys(r.span for r in program.rules if not r.derived and r.action is ir.Action.ALLOW))
    if _size(universe) * (len(spans) + 1) > MAX_CELLS:
        return []  # keep `check` quick: this lint is for programs of a reviewable size
    baseline = matrix(ProgramSemantics(program, topology), topology, probes)
    out: list[Diagnostic] = []
    for span in spans:
        # a statement is its explicit rules and the other halves derived from it
        without = replace(program, rules=tuple(r for r in program.rules if r.span != span))
        reduced = matrix(ProgramSemantics(without, topology), topology, probes)
        if not any(coexist(src, dst) for src, dst, _p, _a in reduced.differences(baseline)
                   if not (isinstance(src, External) and isinstance(dst, External))):
            text = next(r.text for r in program.rules if r.span == span)
            out.append(warning(
                "redundant", f"`{text}` changes nothing in any cluster: other statements already allow what "
                "it allows, or a deny takes it all away", span,
                "remove it, or check the statements it overlaps",
            ))
    return out
