"""Backends turn the IR into manifests for one target. Every backend has the same interface:

* `name` and `capabilities` (what the target can express), checked against what the program needs
  before anything is emitted, so an inexpressible statement is an error at its line, never a drop;
* `build(program, options)` -> `Manifest`s, each holding the intended object as plain data;
* its templates under templates/<name>/, which lay each object out as YAML.

`render_and_check` renders every manifest and parses the text back: if the YAML does not read back as
exactly the intended object, netdsl refuses to write it (an internal error, never a silent mistake).
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import yaml

from netdsl import ir
from netdsl.diagnostics import Diagnostic, error
from netdsl.render import environment
from netdsl.source import Span

# libyaml's loader when PyYAML has it (it is several times faster), else the pure-Python one.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Capability(str, Enum):
    """A kind of statement a target may or may not be able to express."""

    ALLOW = "allow rules"
    ISOLATION = "default deny"
    NAMED_PORTS = "named ports"
    PORT_RANGES = "port ranges"
    SCTP = "SCTP"
    CIDR_EXCEPT = "CIDR except blocks"
    DENY = "deny rules"
    PASS = "pass rules (handing traffic to the next tier)"
    TIERS = "policy tiers"
    CLUSTER_WIDE = "cluster-wide statements"
    FQDN = "egress to DNS names (fqdn)"
    L7_HTTP = "HTTP (L7) rules"
    ENTITIES = "Cilium entities"


MANAGED_BY = {"app.kubernetes.io/managed-by": "netdsl"}
SOURCE_ANNOTATION = "netdsl.dev/source"
WIDENED_ANNOTATION = "netdsl.dev/widened"
# Flux's post-build substitution rewrites `${...}` and `$$` in every object it applies, which would
# corrupt a regular expression such as `^/api/v1$`; this annotation makes Flux leave the object alone.
FLUX_SUBSTITUTE_ANNOTATION = "kustomize.toolkit.fluxcd.io/substitute"


def object_annotations(spans: Iterable[Span], rules: Iterable[ir.Rule] = ()) -> dict[str, str]:
    """The annotations of an object: where it comes from, and what --widen did to its rules."""
    out = {SOURCE_ANNOTATION: source_annotation(spans)}
    widened = dict.fromkeys(f"{r.span.path}:{r.span.line}: {r.widened}" for r in rules if r.widened)
    if widened:
        out[WIDENED_ANNOTATION] = "; ".join(widened)
    return out


@dataclass(frozen=True)
class Options:
    """Target-independent emission options (backends may read more from `extra`)."""

    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    body: dict[str, Any]
    template: str
    context: dict[str, Any]
    text: str = ""
    rank: int = 1  # orders objects of one kind and namespace: default deny (0) before the rest

    @property
    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.namespace or "", KIND_ORDER.get(self.kind, 50), self.rank, self.name, self.kind)

    @property
    def filename(self) -> str:
        folder = self.namespace or "_cluster"
        return f"{folder}/{self.kind.lower()}-{self.name}.yaml"


# Cluster-wide objects first (a Tier must exist before policies in it), then policies.
KIND_ORDER = {"Tier": 0, "GlobalNetworkSet": 1, "NetworkSet": 2}


class Backend(abc.ABC):
    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    @abc.abstractmethod
    def build(self, program: ir.Program, options: Options) -> list[Manifest]:
        """The manifests for `program`, as data plus the template and context that lay each out."""

    def check_options(self, program: ir.Program, options: Options) -> list[Diagnostic]:
        """Errors for what the options make impossible (an old version, say). None by default."""
        return []

    def prefixed_name(self, manifest: Manifest, prefix: str) -> str | None:
        """The object's name under `--name-prefix`; None: it keeps its name (an object other objects
        refer to by name, shared on purpose)."""
        return prefix + manifest.name

    def unsupported(self, program: ir.Program) -> list[Diagnostic]:
        """An error for every statement this target cannot express."""
        out: list[Diagnostic] = []
        reported: set[tuple[Span, Capability]] = set()
        needs = [(cap, span) for rule in program.rules for cap, span in required_capabilities(rule)]
        needs += [(Capability.CLUSTER_WIDE, i.span) for i in program.isolations if i.cluster is not None]
        needs += [(Capability.TIERS, t.span) for t in program.tiers]
        for cap, span in needs:
            if cap in self.capabilities or (span, cap) in reported:
                continue
            reported.add((span, cap))
            able = [n for n in backend_names() if cap in BACKENDS[n].capabilities]
            out.append(error(
                "unsupported", f"target `{self.name}` cannot express {cap.value}", span,
                f"targets that can: {', '.join(able)}" if able else
                "no target netdsl has can express it yet",
            ))
        return sorted(out, key=lambda d: d.span.sort_key if d.span else ("", 0, 0))


def label_selector(selector: ir.Selector, extra: Iterable[ir.Requirement] = ()) -> dict[str, Any]:
    """metav1.LabelSelector (Kubernetes, Cilium): key=value requirements as matchLabels, the rest as
    matchExpressions."""
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for r in [*selector.requirements, *extra]:
        if r.operator is ir.Operator.IN and len(r.values) == 1 and r.key not in match_labels:
            match_labels[r.key] = r.values[0]
        else:
            expr: dict[str, Any] = {"key": r.key, "operator": r.operator.value}
            if r.values:
                expr["values"] = list(r.values)
            expressions.append(expr)
    out: dict[str, Any] = {}
    if match_labels:
        out["matchLabels"] = match_labels
    if expressions:
        out["matchExpressions"] = expressions
    return out


def rule_comment(r: ir.Rule) -> str:
    """The comment above an emitted rule: which statement it comes from."""
    where = f"{r.span.path}:{r.span.line}"
    return f"{where}: other half of `{r.text}`" if r.derived else f"{where}: {r.text}"


def digest(text: str) -> str:
    """A short stable hash for names that must be unique (a statement, a cluster scope)."""
    return hashlib.sha256(text.encode()).hexdigest()[:6]


@dataclass
class IsolationGroup:
    """The isolations one default-deny object carries: one scope (a namespace, or a cluster block's
    namespaces), one subject (None: every pod there), both directions or one."""

    namespace: str
    cluster: ir.NamespaceMatch | None
    subject: ir.Workload | None
    directions: list[ir.Direction]
    spans: list[Span]
    name: str  # unique among the objects of its scope (see isolation_groups)


def isolation_groups(program: ir.Program) -> list[IsolationGroup]:
    """The program's isolations grouped by scope and subject, in the order first written, each named:
    `default-deny[-ingress|-egress]` for a whole scope, `isolate[-ingress|-egress]-SERVICE` for
    `isolate for SERVICE`. Policies of workloads are named after the workload, so an isolation name that
    a workload (or another isolation) of the same scope also has gets a digest of its selector and
    directions: names stay unique and stable."""
    grouped: dict[tuple[str, ir.NamespaceMatch | None, ir.Workload | None], list[ir.Isolation]] = {}
    for i in program.isolations:
        grouped.setdefault((i.namespace, i.cluster, i.subject), []).append(i)
    out: list[IsolationGroup] = []
    for (namespace, cluster, subject), items in grouped.items():
        directions = [d for d in ir.Direction if any(i.direction is d for i in items)]
        which = "" if len(directions) == 2 else f"-{directions[0].value.lower()}"
        name = f"default-deny{which}" if subject is None else f"isolate{which}-{subject.name}"
        out.append(IsolationGroup(namespace, cluster, subject, directions, [i.span for i in items], name))
    workloads = {(w.namespace, w.cluster, w.name) for w in program.services}
    workloads |= {(r.subject.namespace, r.subject.cluster, r.subject.name) for r in program.rules}
    names: dict[tuple[str, ir.NamespaceMatch | None, str], int] = {}
    for g in out:
        names[(g.namespace, g.cluster, g.name)] = names.get((g.namespace, g.cluster, g.name), 0) + 1
    for g in out:
        key = (g.namespace, g.cluster, g.name)
        if g.subject is not None and (key in workloads or names[key] > 1):
            what = f"{g.subject.selector}|{','.join(d.value for d in g.directions)}"
            g.name = f"{g.name}-{digest('isolate ' + what)}"
    return out


def required_capabilities(rule: ir.Rule) -> Iterable[tuple[Capability, Span]]:
    if rule.action is ir.Action.ALLOW:
        yield Capability.ALLOW, rule.span
    elif rule.action is ir.Action.DENY:
        yield Capability.DENY, rule.span
    else:
        yield Capability.PASS, rule.span
    if rule.tier is not None:
        yield Capability.TIERS, rule.span
    if rule.subject.cluster is not None:
        yield Capability.CLUSTER_WIDE, rule.span
    for p in rule.ports:
        if p.name is not None:
            yield Capability.NAMED_PORTS, rule.span
        if p.end_port is not None:
            yield Capability.PORT_RANGES, rule.span
        if p.protocol is ir.Protocol.SCTP:
            yield Capability.SCTP, rule.span
    for peer in rule.peers:
        if isinstance(peer, ir.CidrPeer) and peer.excepts:
            yield Capability.CIDR_EXCEPT, rule.span
        elif isinstance(peer, ir.FqdnPeer):
            yield Capability.FQDN, rule.span
        elif isinstance(peer, ir.EntityPeer):
            yield Capability.ENTITIES, rule.span
    if rule.http:
        yield Capability.L7_HTTP, rule.span


def source_annotation(spans: Iterable[Span]) -> str:
    """Where the statements that made an object are: `a.seg:3,7; b.seg:2` (source order, no repeats)."""
    lines: dict[str, dict[int, None]] = {}
    for s in sorted(spans, key=lambda s: s.sort_key):
        lines.setdefault(s.path, {})[s.line] = None
    return "; ".join(f"{path}:{','.join(map(str, nums))}" for path, nums in lines.items())


MAX_NAME = 253  # an object name is a DNS-1123 subdomain (NetworkPolicy, Calico and Cilium policies, sets)


_NAME_PREFIX = re.compile(r"[a-z0-9][-a-z0-9]*\Z")
MAX_NAME_PREFIX = 63


def name_prefix_problem(value: str) -> str | None:
    """Why `value` cannot prefix object names, or None. DNS-1123 label characters only (no `.`: Calico
    reads `a.b` as tier `a`), so every prefixed name is still a valid object name."""
    if len(value) > MAX_NAME_PREFIX or not _NAME_PREFIX.match(value):
        return (f"{value!r} is not a name prefix: use at most {MAX_NAME_PREFIX} lowercase letters, digits and '-', "
                "starting with a letter or digit (like `team-a-`)")
    return None


def apply_name_prefix(backend: Backend, manifests: Sequence[Manifest], prefix: str) -> list[Diagnostic]:
    """Prefix every object's name (the backend says how, and which keep theirs); an error for a name the
    prefix pushes past MAX_NAME. A common prefix keeps names unique and their order (Calico breaks ties
    in `order` by name) unchanged."""
    problems: list[Diagnostic] = []
    for m in manifests:
        name = backend.prefixed_name(m, prefix)
        if name is None:
            continue
        if len(name) > MAX_NAME:
            problems.append(error(
                "invalid-name", f"with --name-prefix {prefix!r}, the {m.kind} {m.name!r} would be named with "
                f"{len(name)} characters, more than Kubernetes allows ({MAX_NAME})", None,
                "use a shorter prefix, or a shorter service or tier name",
            ))
            continue
        m.name = m.body["metadata"]["name"] = name
    return problems


def duplicate_objects(manifests: Sequence[Manifest]) -> list[Diagnostic]:
    """An internal error for every two objects with the same API group, kind, namespace and name: the
    cluster (and `-o DIR`) would keep only one of them, silently."""
    first: dict[tuple[str, str, str, str], Manifest] = {}
    problems: list[Diagnostic] = []
    for m in manifests:
        key = (m.api_version.rpartition("/")[0], m.kind, m.namespace or "", m.name)
        if key in first:
            problems.append(error(
                "internal", f"two different {m.kind} objects are named {m.namespace or ''}/{m.name}: one "
                "would replace the other", None, "this is a bug in netdsl; please report it with the program",
            ))
        else:
            first[key] = m
    return problems


def _has_dollar(value: Any) -> bool:
    if isinstance(value, str):
        return "$" in value
    if isinstance(value, dict):
        return any(_has_dollar(k) or _has_dollar(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_dollar(v) for v in value)
    return False


def protect_from_flux(manifests: Sequence[Manifest]) -> None:
    """Mark every object holding a `$` (an HTTP path or host pattern, a file name in an annotation) so
    that Flux's variable substitution does not rewrite it (the templates lay out body["metadata"])."""
    for m in manifests:
        if _has_dollar(m.body):
            m.body["metadata"].setdefault("annotations", {})[FLUX_SUBSTITUTE_ANNOTATION] = "disabled"


def render_and_check(backend: Backend, manifests: Sequence[Manifest]) -> list[Diagnostic]:
    """Render every manifest and parse it back; refuse objects that share an identity, or YAML that does
    not read back as the intended object."""
    problems = duplicate_objects(manifests)
    if problems:
        return problems
    protect_from_flux(manifests)
    env = environment(backend.name)
    for m in manifests:
        try:
            m.text = env.get_template(m.template).render(m.context)
        except Exception as exc:  # a template bug must surface as a diagnostic, never a traceback
            return [error("internal", f"{m.kind} {m.namespace or ''}/{m.name}: template {m.template} "
                          f"failed: {type(exc).__name__}: {exc}")]
    # One parse for the whole stream is much faster than one per document.
    stream = "".join("---\n" + m.text for m in manifests)
    try:
        docs = list(yaml.load_all(stream, Loader=_Loader))
    except yaml.YAMLError as exc:
        return [error("internal", f"rendered YAML does not parse: {exc}")]
    if len(docs) != len(manifests):
        return [error("internal", f"rendered {len(docs)} YAML documents for {len(manifests)} objects")]
    for m, doc in zip(manifests, docs, strict=False):
        if doc != m.body:
            problems.append(error(
                "internal",
                f"{m.kind} {m.namespace or ''}/{m.name}: the rendered YAML does not read back as the "
                "intended object",
            ))
    return problems


def _registry() -> dict[str, type[Backend]]:
    from netdsl.backends.calico import CalicoBackend
    from netdsl.backends.cilium import CiliumBackend
    from netdsl.backends.vanilla import VanillaBackend

    return {b.name: b for b in (VanillaBackend, CalicoBackend, CiliumBackend)}


BACKENDS: dict[str, type[Backend]] = {}


def get_backend(name: str) -> Backend:
    if not BACKENDS:
        BACKENDS.update(_registry())
    return BACKENDS[name]()


def backend_names() -> list[str]:
    if not BACKENDS:
        BACKENDS.update(_registry())
    return sorted(BACKENDS)
