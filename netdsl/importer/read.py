"""Reading manifests for `netdsl import`: files, directories, standard input -> SourceObjects.

Rule: every YAML document of every input (files as given; directories as every *.yaml / *.yml below
them, sorted; `-` as standard input) is a Kubernetes object, or a `List` (`kubectl get -A -o yaml`,
lists nested in lists) whose items are. Empty documents are skipped (kustomize and Helm leave them).
Each object keeps only what decides its meaning: apiVersion, kind, metadata.name / namespace / labels
and spec; status, managedFields, resourceVersion, annotations (kubectl's last-applied copy) and the
like are noise. A namespaced object without metadata.namespace gets `-n NAMESPACE` (or `default`), as
`kubectl apply` would; cluster-scoped kinds keep none. Positions come from PyYAML's compose nodes:
SourceObject.spans maps "" (the object) and every path below it ("spec.ingress[0].from[1]") to where
it is. Problems are diagnostics with a position: not YAML, a document that is not a mapping, no kind,
no name, the same kind/namespace/name twice. Reading is bounded as `compile` is (read_limited).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from netdsl.compiler import Inputs, read_inputs
from netdsl.diagnostics import Diagnostic, error, warning
from netdsl.importer.model import SourceObject
from netdsl.source import SourceFile, Span

# Kinds without a namespace: they never get `-n` / `default`.
CLUSTER_SCOPED = frozenset({
    "Namespace", "GlobalNetworkPolicy", "StagedGlobalNetworkPolicy", "GlobalNetworkSet", "Tier",
    "CiliumClusterwideNetworkPolicy", "HostEndpoint",
})
# metadata fields that decide meaning; the rest (uid, resourceVersion, managedFields, annotations...) is noise
_KEEP_METADATA = ("name", "namespace", "labels")
_KEEP_TOP = ("apiVersion", "kind", "metadata", "spec")


@dataclass
class Input:
    """Everything read: the objects (sorted as read), Namespace objects' labels, the files (for
    diagnostics with source lines) and what went wrong."""

    objects: list[SourceObject] = field(default_factory=list)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    sources: dict[str, SourceFile] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


# Directories given to `netdsl import` contribute their YAML files (compiler.read_inputs walks them).
YAML_INPUTS = Inputs((".yaml", ".yml"), "YAML files", ".yaml or .yml files")


def read_files(paths: Sequence[str], stdin: bytes | None = None) -> tuple[list[SourceFile], list[Diagnostic]]:
    """The text of every input, read and bounded as `compile` reads `.seg` files."""
    return read_inputs(paths, YAML_INPUTS, stdin)


def _span(path: str, node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    if end.line > start.line and end.column == 0:  # a block ends at the start of the next line
        return Span(path, start.line + 1, start.column + 1, start.line + 1, start.column + 2)
    return Span(path, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def _spans(file: str, node: yaml.Node, path: str, out: dict[str, Span]) -> None:
    out[path] = _span(file, node)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                _spans(file, value, f"{path}.{key.value}" if path else str(key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _spans(file, item, f"{path}[{i}]", out)


def _key_node(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v  # type: ignore[no-any-return]
    return None


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: body[k] for k in _KEEP_TOP if k in body}
    meta = body.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: meta[k] for k in _KEEP_METADATA if meta.get(k) is not None}
    return out


def read(paths: Sequence[str], namespace: str | None = None, stdin: bytes | None = None) -> Input:
    """Every object of every input (see the module's rule)."""
    result = Input()
    files, diags = read_files(paths, stdin)
    result.diagnostics.extend(diags)
    seen: dict[tuple[str, str, str, str], SourceObject] = {}
    for f in files:
        result.sources[f.path] = f
        for obj_node, data, origin in _documents(f, result.diagnostics):
            obj = _object(f, obj_node, data, origin, namespace or "default", result.diagnostics)
            if obj is None:
                continue
            if obj.kind == "Namespace":
                labels = (obj.body.get("metadata") or {}).get("labels") or {}
                result.namespace_labels[obj.name] = {str(k): str(v) for k, v in labels.items()}
                continue
            key = (obj.api_version.partition("/")[0], obj.kind, obj.namespace or "", obj.name)
            if key in seen:
                result.diagnostics.append(error(
                    "import-duplicate", f"{obj.title} is defined twice (first in {seen[key].origin})",
                    obj.span(), "keep one of them: Kubernetes stores one object per kind, namespace and name"))
                continue
            seen[key] = obj
            result.objects.append(obj)
    return result


def _documents(f: SourceFile, diags: list[Diagnostic]) -> Iterator[tuple[yaml.Node, Any, str]]:
    """(node, value, origin) of every object: documents, and the items of (nested) Lists."""
    loader = yaml.SafeLoader(f.text)
    number = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            number += 1
            if node is None:
                continue
            data = loader.construct_document(node)
            yield from _items(f, node, data, f"{f.path}, document {number}", diags)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        span = Span(f.path, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2) if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        diags.append(error("import-yaml", f"not valid YAML: {problem}", span))
    finally:
        loader.dispose()


def _items(f: SourceFile, node: yaml.Node, data: Any, origin: str,
           diags: list[Diagnostic]) -> Iterator[tuple[yaml.Node, Any, str]]:
    if data is None:
        return  # an empty document
    if not isinstance(data, dict):
        diags.append(error("import-object", "this document is not a Kubernetes object (a mapping)",
                           _span(f.path, node)))
        return
    if data.get("kind") == "List" or (str(data.get("kind", "")).endswith("List") and "items" in data):
        items_node = _key_node(node, "items")
        items = data.get("items") or []
        if not isinstance(items, list) or not isinstance(items_node, yaml.SequenceNode | type(None)):
            diags.append(error("import-object", "the `items` of a List must be a list", _span(f.path, node)))
            return
        for i, item in enumerate(items):
            assert items_node is not None
            yield from _items(f, items_node.value[i], item, f"{origin}, item {i + 1}", diags)
        return
    yield node, data, origin


def _object(f: SourceFile, node: yaml.Node, data: dict[str, Any], origin: str, namespace: str,
            diags: list[Diagnostic]) -> SourceObject | None:
    where = _span(f.path, node)
    kind, meta = data.get("kind"), data.get("metadata")
    if not isinstance(kind, str) or not kind:
        diags.append(error("import-object", "this object has no `kind`", where))
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        diags.append(error("import-object", f"this {kind} has no `metadata.name`", where))
        return None
    body = _clean(data)
    if kind not in CLUSTER_SCOPED and not body["metadata"].get("namespace"):
        body["metadata"]["namespace"] = namespace
    spans: dict[str, Span] = {}
    _spans(f.path, node, "", spans)
    return SourceObject(body, origin, spans)


def skipped(obj: SourceObject) -> Diagnostic:
    """A warning for an object that is not a network policy (a Deployment in a kustomize build)."""
    return warning("import-skipped", f"{obj.title} is not a network policy: skipped", obj.span())
