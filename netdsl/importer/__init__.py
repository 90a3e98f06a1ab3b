"""`netdsl import`: existing manifests -> `.seg` that is proven to mean the same (see model.py).

Rule. Read the inputs (read.py); send each object to the translator of its API group
(networking.k8s.io: vanilla, projectcalico.org: calico, cilium.io: cilium - dispatch by kind through
each translator's KINDS; a kind of a policy group that no KINDS lists is "not supported"); objects of
no policy group (Deployments in a kustomize build) are skipped with a warning. Every Gap is an error
(a warning with `partial`, and its part is left out); every Translation.warnings entry (a pitfall
imported as it is, such as the seed's split Cilium FQDN rule) an `import-pitfall` warning. Then the
proof is the oracle (netdsl.semantics.verify.prove: the printed text, parsed and lowered as `netdsl
check` does, against the translator's `understood` objects, for every cluster), over these forms in turn:
1. idiomatic (decompile.py): flows merged, an egress rule lowering derives as the other half of an
   ingress statement left out, `allow dns`, `isolate`, groups;
2. one-sided, at most MAX_ROUNDS - 1 times: the statements the counterexamples' verdicts name
   (`file:line: text`, in the program's reasons: usually a derived other half the input does not have)
   become one-sided rules, and the halves they stood for are written out as one-sided rules;
3. literal: every input rule its own one-sided rule - exactly the input, which must prove; if it does
   not, that is a translator or evaluator bug, reported as an error with the counterexample.
Nothing is output unless a form proves; ImportResult.form says which did. The proof is L4 only: the
HTTP rules are checked structurally - for every (subject, direction, tier, peer, port) the set of
ir.HttpRule of the lowered program equals the translation's - and a difference fails the form. The
warnings `netdsl check` gives for the imported program are reported, so the user sees the pitfalls the
manifests had.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

from netdsl import ir
from netdsl import parse as syntax
from netdsl.compiler import check_files
from netdsl.diagnostics import Diagnostic, error, warning
from netdsl.importer.decompile import Decompiled, DecompileError, Form, decompile, leaves, statements_of
from netdsl.importer.model import SourceObject, Translation
from netdsl.importer.read import read, skipped
from netdsl.parse import parse
from netdsl.printer import print_statements
from netdsl.semantics.lints import semantic_lints
from netdsl.semantics.universe import TooLargeError
from netdsl.semantics.verify import Proof, prove
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
    # which form proved: "idiomatic"; "one-sided" (some statements written as one-sided rules where the
    # proof showed a derived other half the input does not have); "literal" (every rule on its own)
    form: Form | None = None

    @property
    def literal(self) -> bool:
        return self.form == "literal"

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    @property
    def text(self) -> str:
        return "\n".join(self.files[name] for name in sorted(self.files))


def translator(target: str) -> ModuleType:
    """The translator module of a target (netdsl/importer/<target>.py; see model.py for its interface)."""
    return importlib.import_module(f"netdsl.importer.{target}")


def _dispatch(objects: Sequence[SourceObject], target: str | None,
              out: ImportResult) -> dict[str, list[SourceObject]]:
    by_target: dict[str, list[SourceObject]] = {}
    for obj in objects:
        group = obj.api_version.partition("/")[0]
        tgt = TARGET_BY_GROUP.get(group)
        if tgt is None:
            out.diagnostics.append(skipped(obj))
            continue
        if obj.kind not in translator(tgt).KINDS:
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
    t: Translation = translator(tgt).translate(objects)
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
    for gap in t.warnings:
        out.diagnostics.append(warning(
            "import-pitfall", f"{gap.source.title} {gap.path or '(the object)'}: {gap.reason}; imported as it is",
            gap.span, "the .seg says exactly what the manifests say, this pitfall included: fix it there"))
    _prove(out, t, tgt, objects, directory)
    return out


MAX_ROUNDS = 4  # one-sided refinements before the literal form


def _files(d: Decompiled, directory: str | None) -> dict[str, str]:
    if directory is not None:
        return {os.path.join(directory, f"{ns}.seg" if ns else CLUSTER_FILE): print_statements(stmts)
                for ns, stmts in d.files.items()}
    return {STREAM: print_statements(statements_of(d))}


def _lines(d: Decompiled, directory: str | None, sources: list[SourceFile]) -> dict[tuple[str, int], tuple[int, ...]]:
    """(file, line) of each printed flow or `allow dns` statement -> the Translation rules it says: the
    printed text parsed again, its statements matched to the tree's in order."""
    built: dict[str, list[syntax.NamespaceStmt]] = {}
    for ns, stmts in d.files.items():
        name = STREAM if directory is None else os.path.join(directory, f"{ns}.seg" if ns else CLUSTER_FILE)
        built.setdefault(name, []).extend(leaves(stmts))
    if directory is None:
        built[STREAM] = list(leaves(statements_of(d)))
    out: dict[tuple[str, int], tuple[int, ...]] = {}
    for source in sources:
        module, _ = parse(source)
        if module is None:
            continue
        for mine, printed in zip(built.get(source.path, []), leaves(module.statements), strict=False):
            if id(mine) in d.origins:
                out[(source.path, printed.span.line)] = d.origins[id(mine)]
    return out


def _culprits(proof: Proof, lines: dict[tuple[str, int], tuple[int, ...]]) -> set[int]:
    """The rules of the statements the program's verdicts name (`file:line: text`)."""
    out: set[int] = set()
    paths = {path for path, _ in lines}
    for c in proof.counterexamples:
        for reason in c.program.reasons:
            for path in paths:
                for m in re.finditer(re.escape(path) + r":(\d+):", reason):
                    out.update(lines.get((path, int(m.group(1))), ()))
    return out


HttpKey = tuple[tuple[str, "ir.NamespaceMatch | None", ir.Selector], ir.Direction, "str | None", ir.Peer,
                ir.PortMatch]


def http_rules(rules: Sequence[ir.Rule]) -> dict[HttpKey, frozenset[ir.HttpRule]]:
    """The L7 rules by (subject, direction, tier, peer, port): what the L4 proof cannot see."""
    out: dict[HttpKey, set[ir.HttpRule]] = {}
    for r in rules:
        if not r.http:
            continue
        subject = (r.subject.namespace, r.subject.cluster, r.subject.selector)
        for peer in r.peers:
            for port in r.ports:
                out.setdefault((subject, r.direction, r.tier, peer, port), set()).update(r.http)
    return {k: frozenset(v) for k, v in out.items()}


def _http_difference(program: ir.Program, t: Translation) -> str | None:
    mine, theirs = http_rules(program.rules), http_rules(t.rules)
    differ = sorted((k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)), key=str)
    if not differ:
        return None
    (namespace, cluster, selector), direction, _tier, peer, port = differ[0]
    where = f"namespace {namespace}" if cluster is None else f"cluster {cluster}"
    return (f"the HTTP rules of {selector} in {where}, {direction.value.lower()} {peer} on {port}, differ: the "
            f"program has {sorted(map(str, mine.get(differ[0], ())))}, the manifests "
            f"{sorted(map(str, theirs.get(differ[0], ())))}")


def _prove(out: ImportResult, t: Translation, tgt: str, objects: Sequence[SourceObject],
           directory: str | None) -> None:
    """The forms in turn (see the module's rule); the first that proves is the output."""
    failures: list[str] = []
    one_sided: set[int] = set()
    attempts: list[tuple[Form, frozenset[int]]] = [("idiomatic", frozenset())]
    while attempts:
        form, sided = attempts.pop(0)
        try:
            d = decompile(t, sided, literal=form == "literal")
        except DecompileError as exc:
            out.diagnostics.append(error("import-decompile", f"cannot write this in .seg: {exc}", None,
                                         "this is a bug in the translator (it should be an import-gap): "
                                         "please report it with the manifests"))
            return
        files = _files(d, directory)
        sources = [SourceFile(name, text) for name, text in sorted(files.items())]
        checked = check_files(sources)
        proof: Proof | None = None
        if checked.program is None:
            failures.append("the printed .seg does not check: "
                            + "; ".join(x.message for x in checked.diagnostics if x.is_error))
        else:
            try:
                proof = prove(checked.program, tgt, t.understood)
            except TooLargeError as exc:
                out.diagnostics.append(error("limit", f"cannot prove the import: {exc}"))
                return
            if proof.holds and (http := _http_difference(checked.program, t)) is not None:
                failures.append(http)
            elif proof.holds:
                out.files, out.program, out.form = files, checked.program, form
                out.sources.update({s.path: s for s in sources})
                out.diagnostics.extend(x for x in checked.diagnostics if not x.is_error)
                out.diagnostics.extend(semantic_lints(checked.program))
                return
            else:
                failures.append(proof.counterexamples[0].describe(proof.universe.topology, tgt))
        if form == "literal":
            break
        new = _culprits(proof, _lines(d, directory, sources)) - one_sided if proof is not None else set()
        rounds = len(failures)
        if new and rounds < MAX_ROUNDS:
            one_sided |= new
            attempts.append(("one-sided", frozenset(one_sided)))
        else:
            attempts.append(("literal", frozenset()))
    names = ", ".join(sorted({o.title for o in objects})[:5]) + (", ..." if len(objects) > 5 else "")
    out.diagnostics.append(error(
        "import-proof", f"no .seg program found that means exactly what {names} mean, not even the literal "
        f"form: {failures[-1]}", None,
        "the literal form says each rule on its own, so this is a bug in a translator or an evaluator: "
        "please report it with the manifests; meanwhile --partial after removing the object imports the rest"))


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
