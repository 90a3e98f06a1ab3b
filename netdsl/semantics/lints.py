"""Lints that need the semantic engine: statements that change nothing (redundant, or shadowed by a
deny), and services nothing mentions. They evaluate the program over the topology it implies, so they
run for programs of a reviewable size (`check` on up to MAX_RULES rules)."""

from __future__ import annotations

from dataclasses import replace

from netdsl import ir
from netdsl.diagnostics import Diagnostic, warning
from netdsl.semantics.model import Connection, External, port_matches, topology_from_program
from netdsl.semantics.program import ProgramSemantics, peer_matches
from netdsl.semantics.targets import probes_for

MAX_RULES = 200
MAX_EVALUATIONS = 150_000  # connection verdicts one lint may compute


def semantic_lints(program: ir.Program) -> list[Diagnostic]:
    out = unused_services(program)
    if len(program.rules) <= MAX_RULES:
        out += ineffective_statements(program)
        out += blocked_flows(program)
    return out


def blocked_flows(program: ir.Program) -> list[Diagnostic]:
    """Allow statements whose connections isolation elsewhere blocks (a tier that denies what it does
    not decide for the other side): the flow does not work end to end, although netdsl derived its
    other half where it could. Deny statements are deliberate and not reported. Checked for the pods
    the program models."""
    topology = topology_from_program(program)
    probes = probes_for([program], topology)
    semantics = ProgramSemantics(program, topology)
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
        for s in subjects:
            for p in peers:
                if p == s or rule.span in reported:
                    continue
                src, dst = (p, s) if rule.direction is ir.Direction.INGRESS else (s, p)
                for proto, port in probes:
                    conn = Connection(src, dst, proto, port)
                    if rule.ports and not any(port_matches(m, conn) for m in rule.ports):
                        continue
                    verdict = semantics.decide(conn)
                    if not verdict.allowed and not verdict.by_deny:  # a deny statement is deliberate
                        reported.add(rule.span)
                        out.append(warning(
                            "blocked-flow", f"this flow does not work end to end: {conn} is denied", rule.span,
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


def ineffective_statements(program: ir.Program) -> list[Diagnostic]:
    """Explicit allow statements whose removal changes no verdict over the implied topology."""
    topology = topology_from_program(program)
    probes = probes_for([program], topology)
    conns = [
        Connection(src, dst, proto, port)
        for src in topology.endpoints for dst in topology.endpoints
        if src != dst and not (isinstance(src, External) and isinstance(dst, External))
        for proto, port in probes
    ]
    spans = list(dict.fromkeys(r.span for r in program.rules if not r.derived and r.action is ir.Action.ALLOW))
    if len(conns) * (len(spans) + 1) > MAX_EVALUATIONS:
        return []  # keep `check` quick: this lint is for programs of a reviewable size
    full = ProgramSemantics(program, topology)
    baseline = [full.decide(c).allowed for c in conns]
    out: list[Diagnostic] = []
    for span in spans:
        # a statement is its explicit rules and the other halves derived from it
        without = replace(program, rules=tuple(r for r in program.rules if r.span != span))
        reduced = ProgramSemantics(without, topology)
        if all(reduced.decide(c).allowed == allowed for c, allowed in zip(conns, baseline, strict=True)):
            text = next(r.text for r in program.rules if r.span == span)
            out.append(warning(
                "redundant", f"`{text}` changes nothing: other statements already allow what it allows, "
                "or a deny takes it all away", span,
                "remove it, or check the statements it overlaps",
            ))
    return out
