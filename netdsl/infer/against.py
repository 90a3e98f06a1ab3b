"""`--against PROGRAM`: what the program lacks for the observed traffic.

Rule: every needed observation (forwarded or AUDIT) becomes a connection for each pair of observed
pods it stands for; a connection the program's semantics (netdsl.semantics.program) would block, over
the topology of the observed pods and their labels, is missing. Each missing flow is written on the
side that blocks it: on the server (`accepts`) when its ingress denies, else on the client (`connects
to`) - a derived other half never restricts a pod nothing restricted, so the addition opens the
blocked flow and restricts nothing the program left open. Missing DNS is `allow dns for` the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from netdsl import ir, parse
from netdsl.infer.model import Observation, Observed, Workload, connections, topology
from netdsl.infer.synthesize import CILIUM, Proposal, Synthesis, port_word, verdict_note
from netdsl.ir import Direction
from netdsl.semantics.model import Pod
from netdsl.semantics.program import ProgramSemantics


@dataclass
class Missing:
    observation: Observation
    side: str  # ingress: the server's ingress blocks; egress: only the client's egress


def blocked(observed: Observed, program: ir.Program, target: str) -> list[Missing]:
    """The needed observations the program blocks, with the side to open."""
    declared = {ns.name: dict(ns.labels) for ns in program.namespaces}
    topo = topology(observed, target == CILIUM, declared)
    # namespace labels: as observed where the flows carried them, else as the program declares them
    namespaces = {ns: dict(labels) or declared.get(ns, {}) for ns, labels in topo.namespaces.items()}
    topo = type(topo)(namespaces, topo.pods, topo.externals)
    semantics = ProgramSemantics(program, topo)
    out: dict[tuple[str, str, int, str], Missing] = {}
    for o, conn in connections(observed, target == CILIUM):
        if not o.needed or o.key in out:
            continue
        if semantics.decide(conn).allowed:
            continue
        ingress_denies = isinstance(conn.dst, Pod) and not semantics.side(
            conn.dst, Direction.INGRESS, conn.src, conn).allowed
        out[o.key] = Missing(o, "ingress" if ingress_denies else "egress")
    return [out[k] for k in sorted(out)]


def selector_of(w: Workload) -> ir.Selector:
    return ir.Selector.of([
        ir.Requirement(k, ir.Operator.DOES_NOT_EXIST) if v is None else ir.Requirement(k, ir.Operator.IN, (v,))
        for k, v in w.selector])


def declared_names(modules: Sequence[parse.Module]) -> dict[str, set[str]]:
    """Names the program declares, per namespace ("" for cidr sets): the proposal never reuses them."""
    taken: dict[str, set[str]] = {}

    def walk(ns: str, statements: Sequence[object]) -> None:
        for s in statements:
            if isinstance(s, (parse.ServiceDecl, parse.GroupDecl)):
                taken.setdefault(ns, set()).add(s.name.text)

    for m in modules:
        for top in m.statements:
            if isinstance(top, parse.CidrsDecl):
                taken.setdefault("", set()).add(top.name.text)
            elif isinstance(top, parse.NamespaceBlock):
                walk(top.name.text, top.statements)
            elif isinstance(top, parse.TierBlock):
                for item in top.items:
                    if isinstance(item, parse.NamespaceBlock):
                        walk(item.name.text, item.statements)
    return taken


def missing(observed: Observed, program: ir.Program, modules: Sequence[parse.Module], target: str) -> Proposal:
    found = blocked(observed, program, target)
    reuse: dict[Workload, str] = {}
    for w in observed.workloads:
        want = selector_of(w)
        same = [s.name for s in program.services
                if s.namespace == w.namespace and s.cluster is None and s.selector == want]
        if same:
            reuse[w] = sorted(same)[0]
    s = Synthesis(observed, target, declared_names(modules), reuse)
    dns: dict[str, list[Workload]] = {}
    dns_counts: dict[str, int] = {}
    for m in found:
        o = m.observation
        if o.dns and isinstance(o.client, Workload):
            dns.setdefault(o.client.namespace, []).append(o.client)
            dns_counts[o.client.namespace] = dns_counts.get(o.client.namespace, 0) + o.flows
        else:
            s.flow(o, m.side)
    proposal = s.finish((), dns, dns_counts)
    n = len(found)
    proposal.header = [
        f"Missing from the program for the observed traffic (`netdsl infer --against`, target {target}):",
        f"{n} observed connection{'s' * (n != 1)} the program would block. Add these statements to it.",
    ]
    proposal.header += [f"  {m.observation.client} -> {m.observation.server} on "
                        f"{port_word(m.observation.port, m.observation.protocol)}: {verdict_note(m.observation)}"
                        for m in found[:20]]
    return proposal
