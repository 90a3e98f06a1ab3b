"""The program and each target's compiled output as evaluators over one topology: what explain and
diff judge. It sits above the compiler (it compiles each target) and below the commands.

Without a topology of the user's, the topology is the class topology of the program and every
target's output (netdsl.semantics.universe): its verdicts hold in every cluster. With one (`--topology
DIR`), they are about that cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from netdsl import ir
from netdsl.backends import Options, backend_names
from netdsl.compiler import Result, compile_checked, stream
from netdsl.semantics.engine import PROGRAM, Unavailable
from netdsl.semantics.matrix import Evaluator, Probe
from netdsl.semantics.model import Topology
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.targets import EVALUATOR_BY_TARGET, probes_for
from netdsl.semantics.universe import build

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def default_targets() -> list[str]:
    return [t for t in backend_names() if t in EVALUATOR_BY_TARGET]


def _first_error(result: Result) -> str:
    for d in result.diagnostics:
        if d.is_error:
            where = f"{d.span}: " if d.span else ""
            return f"{where}{d.message}"
    return "compilation failed"


@dataclass(frozen=True)
class Analysis:
    topology: Topology
    probes: tuple[Probe, ...]
    evaluators: dict[str, Evaluator | Unavailable]
    every_cluster: bool  # the topology is the class topology: verdicts hold in every cluster


def compiled_objects(base: Result, targets: Iterable[str], options: Options | None = None
                     ) -> dict[str, list[Mapping[str, Any]] | Unavailable]:
    """Each target's emitted objects (read back from the YAML it prints), or why there are none.
    Translation validation is left to the caller, which judges the output itself."""
    out: dict[str, list[Mapping[str, Any]] | Unavailable] = {}
    for target in targets:
        if target not in backend_names():
            out[target] = Unavailable(target, f"no target named {target!r}", cannot_express=False)
            continue
        if target not in EVALUATOR_BY_TARGET:
            out[target] = Unavailable(target, f"netdsl has no evaluator for target {target!r} yet",
                                      cannot_express=False)
            continue
        # a failed `expect` is about the program, not about what the targets emit: judge them anyway
        diagnostics = [d for d in base.diagnostics if d.code != "expectation"]
        compiled = compile_checked(replace(base, diagnostics=diagnostics, manifests=[]), target, options,
                                   validate=False)
        if not compiled.ok:
            out[target] = Unavailable(target, _first_error(compiled))
            continue
        out[target] = [d for d in yaml.load_all(stream(compiled.manifests), Loader=_Loader) if d is not None]
    return out


def analyse(result_or_program: Result | ir.Program, targets: Iterable[str], topology: Topology | None = None,
            options: Options | None = None, extra_programs: Sequence[ir.Program] = ()) -> Analysis:
    """"program" -> ProgramSemantics, then each target -> the evaluator of the objects the compiler emits
    for it (or Unavailable), over `topology` or else the class topology."""
    base = Result(program=result_or_program) if isinstance(result_or_program, ir.Program) else result_or_program
    program = base.program
    if program is None:
        raise ValueError("the program has errors; nothing to evaluate")
    objects = compiled_objects(base, targets, options)
    emitted = {t: o for t, o in objects.items() if not isinstance(o, Unavailable)}
    if topology is None:
        universe = build([program, *extra_programs], emitted)
        topology, probes, every = universe.topology, universe.probes, True
    else:
        probes, every = probes_for([program, *extra_programs], topology), False
    evs: dict[str, Evaluator | Unavailable] = {PROGRAM: ProgramSemantics(program, topology)}
    for target, got in objects.items():
        evs[target] = got if isinstance(got, Unavailable) else EVALUATOR_BY_TARGET[target](got, topology)
    return Analysis(topology, probes, evs, every)


def evaluators(result_or_program: Result | ir.Program, targets: Iterable[str], topology: Topology | None = None,
               options: Options | None = None) -> dict[str, Evaluator | Unavailable]:
    """`analyse(...).evaluators`."""
    return analyse(result_or_program, targets, topology, options).evaluators
