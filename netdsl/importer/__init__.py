"""`netdsl import`: existing manifests -> `.seg` that is proven to mean the same (see model.py).

Rule. Read the inputs (read.py); send each object to the translator of its API group
(networking.k8s.io: vanilla, projectcalico.org: calico, cilium.io: cilium - dispatch by kind through
each translator's KINDS; a translator not built yet makes its kinds "not supported yet"); objects of
no policy group (Deployments in a kustomize build) are skipped with a warning. Every Gap is an error
(a warning with `partial`, and its part is left out). Then the proof is the oracle: the idiomatic
text (decompile.py), parsed and lowered as `netdsl check` does, must be proven equivalent to the
translator's `understood` objects for every cluster (netdsl.semantics.verify.prove); if it is not,
the literal form (both halves of every flow written, no `allow dns`) is tried; if neither proves, the
import is an error with the counterexample, and nothing is output. The warnings `netdsl check` gives
for the imported program are reported, so the user sees the pitfalls the manifests had.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

from netdsl import ir
from netdsl.compiler import check_files
from netdsl.diagnostics import Diagnostic, error, warning
from netdsl.importer.decompile import decompile
from netdsl.importer.model import SourceObject, Translation
from netdsl.importer.read import read, skipped
from netdsl.parse import parse
from netdsl.semantics.lints import semantic_lints
from netdsl.semantics.universe import TooLargeError
from netdsl.semantics.verify import prove
from netdsl.source import SourceFile

TARGET_BY_GROUP = {
    "networking.k8s.io": "vanilla",
    "projectcalico.org": "calico",
    "crd.projectcalico.org": "calico",
    "cilium.io": "cilium",
}
STREAM = "<import>"  # the name of the imported program when it is one stream
CLUSTER_FILE = "cluster.seg"  # top-level statements (tiers, cluster blocks, cidrs) with `-o DIR`


@dataclass
class ImportResult:
    target: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # file name -> text (one, STREAM, without -o)
    sources: dict[str, SourceFile] = field(default_factory=dict)  # inputs and outputs, for diagnostics
    diagnostics: list[Diagnostic] = field(default_factory=list)
    translation: Translation | None = None
    program: ir.Program | None = None
    literal: bool = False  # the idiomatic form did not prove; the literal one did

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    @property
    def text(self) -> str:
        return "\n".join(self.files[name] for name in sorted(self.files))


def translator(target: str) -> ModuleType | None:
    """The translator module of a target, or None when it is not built yet."""
    try:
        return importlib.import_module(f"netdsl.importer.{target}")
    except ModuleNotFoundError as exc:
        if exc.name == f"netdsl.importer.{target}":
            return None
        raise


def canonical(text: str, name: str) -> str:
    """The text in the printer's canonical layout, once netdsl/printer.py exists (branch fmt)."""
    try:
        printer = importlib.import_module("netdsl.printer")
    except ModuleNotFoundError:
        return text
    module, errors = parse(SourceFile(name, text))
    if module is None or errors:
        return text  # the check below reports it
    return str(printer.print_module(module))


def _dispatch(objects: Sequence[SourceObject], target: str | None,
              out: ImportResult) -> dict[str, list[SourceObject]]:
    by_target: dict[str, list[SourceObject]] = {}
    for obj in objects:
        group = obj.api_version.partition("/")[0]
        tgt = TARGET_BY_GROUP.get(group)
        if tgt is None:
            out.diagnostics.append(skipped(obj))
            continue
        module = translator(tgt)
        if module is None or obj.kind not in module.KINDS:
            out.diagnostics.append(error(
                "import-unsupported", f"{obj.title} ({obj.api_version}): importing this kind is not supported yet",
                obj.span(), "import the other objects on their own, or write this one in .seg by hand"))
            continue
        by_target.setdefault(tgt, []).append(obj)
    if target is not None:
        for tgt, objs in by_target.items():
            if tgt != target:
                for obj in objs:
                    out.diagnostics.append(error(
                        "import-target", f"{obj.title} is a {tgt} object, but --target is {target}", obj.span()))
        return {target: by_target.get(target, [])}
    if len(by_target) > 1:
        out.diagnostics.append(error(
            "import-target", f"the input has objects of several targets ({', '.join(sorted(by_target))})",
            None, "import each target's objects on their own, or give --target"))
    return by_target


def import_manifests(
    paths: Sequence[str],
    namespace: str | None = None,
    target: str | None = None,
    partial: bool = False,
    stdin: bytes | None = None,
    directory: str | None = None,
) -> ImportResult:
    """Read, translate, decompile, prove (see the module's rule). `directory`: one file per namespace
    in it (`<namespace>.seg`, CLUSTER_FILE for top-level statements) instead of one stream."""
    out = ImportResult()
    got = read(paths, namespace, stdin)
    out.sources.update(got.sources)
    out.diagnostics.extend(got.diagnostics)
    if not out.ok:
        return out
    by_target = _dispatch(got.objects, target, out)
    if not out.ok:
        return out
    if not by_target or not any(by_target.values()):
        out.diagnostics.append(error("import-object", "no network policy found in the input"))
        return out
    ((tgt, objects),) = by_target.items()
    out.target = tgt
    module = translator(tgt)
    assert module is not None
    t: Translation = module.translate(objects)
    out.translation = t
    for name, labels in sorted(got.namespace_labels.items()):
        if name in t.namespaces and not t.namespaces[name]:
            t.namespaces[name] = tuple(sorted((k, v) for k, v in labels.items() if k != ir.NAMESPACE_NAME_LABEL))
    for gap in t.gaps:
        report = warning if partial else error
        out.diagnostics.append(report(
            "import-gap", f"{gap.source.title} {gap.path or '(the object)'}: cannot be said exactly in .seg: "
            f"{gap.reason}{'; left out' if partial else ''}", gap.span,
            None if partial else "--partial imports the rest and lists what it leaves out"))
    if not out.ok:
        return out
    failures: list[str] = []
    for literal in (False, True):
        texts = decompile(t, literal)
        if directory is not None:
            files = {os.path.join(directory, f"{ns}.seg" if ns else CLUSTER_FILE): text for ns, text in texts.items()}
        else:
            files = {STREAM: "\n".join(texts[ns] for ns in sorted(texts))}
        files = {name: canonical(text, name) for name, text in files.items()}
        sources = [SourceFile(name, text) for name, text in sorted(files.items())]
        checked = check_files(sources)
        if checked.program is None:
            failures.append("; ".join(d.message for d in checked.diagnostics if d.is_error))
            continue
        try:
            proof = prove(checked.program, tgt, t.understood)
        except TooLargeError as exc:
            out.diagnostics.append(error("limit", f"cannot prove the import: {exc}"))
            return out
        if not proof.holds:
            failures.append(proof.counterexamples[0].describe(proof.universe.topology, tgt))
            continue
        out.files, out.program, out.literal = files, checked.program, literal
        out.sources.update({s.path: s for s in sources})
        out.diagnostics.extend(d for d in checked.diagnostics if not d.is_error)
        out.diagnostics.extend(semantic_lints(checked.program))
        return out
    names = ", ".join(sorted({o.title for o in objects})[:5]) + (", ..." if len(objects) > 5 else "")
    out.diagnostics.append(error(
        "import-proof", f"no .seg program found that means exactly what {names} mean: e.g. {failures[-1]}",
        None, "usually a flow whose two halves differ (netdsl always makes a flow work end to end): "
        "give the other half the same ports and peers, or import with --partial after removing it"))
    return out


def write_files(files: dict[str, str], force: bool = False) -> list[Diagnostic]:
    """Write each file atomically (a temporary file renamed over it); an existing file only with
    `force`. Nothing is written when one of them is in the way."""
    problems = [error("output", f"{name} exists; not replacing it", None, "pass --force to replace it")
                for name in sorted(files) if os.path.lexists(name) and not force]
    if problems:
        return problems
    for name, text in sorted(files.items()):
        directory = os.path.dirname(name) or "."
        tmp = os.path.join(directory, f".{os.path.basename(name)}.tmp-{os.getpid()}")
        try:
            os.makedirs(directory, exist_ok=True)
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name)
        except OSError as exc:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            return [error("output", f"{name}: {exc.strerror or exc}")]
    return []
