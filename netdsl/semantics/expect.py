"""`expect` statements: checked against the program itself and against the objects emitted for each
target, over the topology the program implies (one pod per declared service, see
topology_from_program). A failed expectation is an error at its line, with what decided."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from typing import Protocol as TypingProtocol

from netdsl import ir
from netdsl.diagnostics import Diagnostic, error
from netdsl.ir import Protocol
from netdsl.semantics.model import Connection, Topology, Verdict, topology_from_program
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.targets import EVALUATOR_BY_TARGET, probes_for


class Evaluator(TypingProtocol):
    def decide(self, conn: Connection) -> Verdict: ...


def check_expectations(
    program: ir.Program, emitted: Mapping[str, Iterable[Mapping[str, Any]]]
) -> list[Diagnostic]:
    """Errors for expectations that do not hold for the program or for one of the `emitted` targets
    (target name -> its objects)."""
    if not program.expectations:
        return []
    topology = topology_from_program(program)
    evaluators: dict[str, Evaluator] = {"the program": ProgramSemantics(program, topology)}
    for target, objects in emitted.items():
        evaluators[f"target `{target}`"] = EVALUATOR_BY_TARGET[target](list(objects), topology)
    probes = probes_for([program], topology)
    out: list[Diagnostic] = []
    for e in program.expectations:
        problem = _check(e, topology, evaluators, probes)
        if problem is not None:
            out.append(problem)
    return out


def _check(
    e: ir.Expectation, topology: Topology, evaluators: Mapping[str, Evaluator], probes: Sequence[tuple[Protocol, int]]
) -> Diagnostic | None:
    src, dst = topology.find(e.source), topology.find(e.destination)
    if src is None or dst is None or src == dst:
        return error("expectation", f"cannot evaluate `{e.text}`: no distinct endpoints for it", e.span)
    if e.port is not None and e.port.port is not None:
        conns = [Connection(src, dst, e.port.protocol, e.port.port)]
    else:
        conns = [Connection(src, dst, proto, port) for proto, port in probes]
    for who, evaluator in evaluators.items():
        verdicts = [(c, evaluator.decide(c)) for c in conns]
        if e.allowed:
            if any(v.allowed for _, v in verdicts):
                continue
            conn, verdict = verdicts[0]
            what = f"{conn} is denied" if len(conns) == 1 else f"{src} -> {dst} is denied on every port"
        else:
            offending = [(c, v) for c, v in verdicts if v.allowed]
            if not offending:
                continue
            conn, verdict = offending[0]
            what = f"{conn} is allowed"
        why = "; ".join(verdict.reasons) if verdict.reasons else "no policy applies to it"
        return error("expectation", f"expectation does not hold for {who}: {what}", e.span,
                     f"decided by: {why}")
    return None
