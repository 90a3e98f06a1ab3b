"""`netdsl infer`: propose `.seg` from observed traffic. The passes, one module each:

* formats (netdsl/infer/formats.py): read Hubble, Calico flow-log and Inspektor Gadget records;
* model (netdsl/infer/model.py): workloads and observations (client, server, port, verdicts);
* synthesize (netdsl/infer/synthesize.py): the proposal as a syntax tree, printed by netdsl.printer;
* against (netdsl/infer/against.py): only what an existing program lacks.

Rule: the proposal, lowered, allows every needed observed connection (forwarded or AUDIT) and, without
`--against`, nothing else between the observed workloads but DNS. `infer` checks this itself before
printing: a proposal that fails it is a bug and is not printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netdsl import ir, parse
from netdsl.compiler import MAX_FILE_BYTES, MAX_TOTAL_BYTES, LimitError, display_path, read_limited
from netdsl.infer.against import missing
from netdsl.infer.formats import FlowError, Reading, read_flows
from netdsl.infer.model import Observed, connections, observe, topology
from netdsl.infer.synthesize import CILIUM, Proposal, propose, render
from netdsl.lower import lower
from netdsl.semantics.program import ProgramSemantics
from netdsl.source import SourceFile

__all__ = ["FlowError", "InferError", "Outcome", "infer", "lower_proposal", "read_inputs"]


class InferError(Exception):
    """Input that cannot be used; the message says which and why."""


@dataclass
class Outcome:
    text: str
    proposal: Proposal
    observed: Observed
    notes: list[str] = field(default_factory=list)


def read_inputs(paths: Sequence[str], stdin: bytes | None = None) -> list[Reading]:
    readings: list[Reading] = []
    total = 0
    for raw in paths:
        if raw == "-":
            shown, data = "<stdin>", stdin or b""
        else:
            shown = display_path(Path(raw))
            try:
                with open(raw, "rb") as f:
                    data = read_limited(f, shown)
            except IsADirectoryError:
                raise InferError(f"{shown}: a directory; give the flow files themselves") from None
            except OSError as exc:
                raise InferError(f"{shown}: {exc.strerror or exc}") from None
            except LimitError as exc:
                raise InferError(f"{exc}  [limit]") from None
        if len(data) > MAX_FILE_BYTES:
            raise InferError(f"{shown}: larger than {MAX_FILE_BYTES // 2**20} MiB, the limit for one file  [limit]")
        total += len(data)
        if total > MAX_TOTAL_BYTES:
            raise InferError(f"the input is larger than {MAX_TOTAL_BYTES // 2**20} MiB in all  [limit]")
        readings.append(read_flows(shown, data))
    return readings


def program_modules(sources: Sequence[SourceFile]) -> list[parse.Module]:
    """The syntax trees of a program that `compiler.check` accepted (to see the names it declares)."""
    return [m for f in sources if (m := parse.parse(f)[0]) is not None]


def lower_proposal(proposal: Proposal, program_modules: Sequence[parse.Module] = ()) -> ir.Program:
    """The proposal (with the program it completes) as IR; InferError if it does not lower."""
    module = parse.Module(SourceFile("<infer>", ""), tuple(proposal.statements()))
    program, diags = lower([*program_modules, module])
    errors = [d for d in diags if d.is_error]
    if errors:
        raise InferError("the proposal does not compile (a bug in netdsl infer): "
                         + "; ".join(d.message for d in errors[:3]))
    return program


def infer(readings: Sequence[Reading], target: str,
          against: tuple[ir.Program, Sequence[parse.Module]] | None = None) -> Outcome:
    observed = observe(readings)
    if not observed.observations:
        raise InferError("no connection with a port was observed (nothing to propose)")
    if against is None:
        proposal = propose(observed, target)
        program = lower_proposal(proposal)
    else:
        proposal = missing(observed, against[0], against[1], target)
        program = lower_proposal(proposal, against[1]) if not proposal.empty else against[0]
    # the rule of this command, checked on every run: every needed observed connection is allowed
    topo = topology(observed, target == CILIUM, [ns.name for ns in program.namespaces])
    semantics = ProgramSemantics(program, topo)
    blocked = sorted({str(c) for o, c in connections(observed, target == CILIUM)
                      if o.needed and o.key not in proposal.unwritten and not semantics.decide(c).allowed})
    if blocked:
        raise InferError(f"the proposal would block {len(blocked)} observed connection(s), e.g. {blocked[0]} "
                         "(a bug in netdsl infer)")
    if against is not None and proposal.empty:
        return Outcome("", proposal, observed,
                       [f"the program already allows all {len(observed.observations)} observed connections"])
    return Outcome(render(proposal), proposal, observed)



