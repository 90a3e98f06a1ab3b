"""`netdsl krm`: netdsl as a KRM function (the kustomize/kpt function specification).

Rule: a `config.kubernetes.io/v1` ResourceList comes in on standard input; the same ResourceList goes
out on standard output - and nothing else does - with the objects compiled from the `.seg` paths its
`functionConfig` names appended, and `results[]` carrying every diagnostic (severity, message, file and
line). Objects an earlier run generated (label `app.kubernetes.io/managed-by: netdsl`) are replaced,
never duplicated, so the function can run on its own output (kpt writes generated objects into the
package). With an error nothing is generated, the input items go back unchanged and the exit status is 1.

functionConfig is either
    apiVersion: netdsl.dev/v1alpha1, kind: NetdslCompile, spec: {paths: [...], target: ..., ...}
or the ConfigMap kpt makes of `kpt fn eval --exec netdsl-krm -- paths=policies/ target=calico`
(values are strings; several paths separated by commas or spaces).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from netdsl.backends import Options, backend_names, name_prefix_problem
from netdsl.compiler import compile_paths
from netdsl.diagnostics import Diagnostic, Severity

CONFIG_API_VERSION = "netdsl.dev/v1alpha1"
CONFIG_KIND = "NetdslCompile"
RESOURCE_LIST = ("config.kubernetes.io/v1", "ResourceList")
MANAGED_BY = ("app.kubernetes.io/managed-by", "netdsl")
# The options a functionConfig may set, with their defaults (the `netdsl compile` flags of the same name).
DEFAULTS: Mapping[str, Any] = {"paths": [], "target": "vanilla", "calicoVersion": None, "staged": False,
                               "widen": False, "namePrefix": ""}
PATH_ANNOTATION = "config.kubernetes.io/path"


class FunctionError(Exception):
    """The input is not a ResourceList this function can work on; the message says why."""


@dataclass(frozen=True)
class Config:
    paths: tuple[str, ...]
    target: str
    options: Options


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise FunctionError(f"functionConfig {key}: expected true or false, got {value!r}")


def read_config(function_config: Any) -> Config:
    """The compile options a functionConfig asks for (NetdslCompile spec or ConfigMap data)."""
    if not isinstance(function_config, Mapping):
        raise FunctionError(
            f"the ResourceList has no functionConfig: give a {CONFIG_KIND} (apiVersion {CONFIG_API_VERSION}) "
            "with spec.paths, or `kpt fn eval --exec netdsl-krm -- paths=DIR`")
    kind = function_config.get("kind")
    if kind == CONFIG_KIND:
        settings = function_config.get("spec")
    elif kind == "ConfigMap":
        settings = function_config.get("data")
    else:
        raise FunctionError(f"functionConfig is a {kind!r}; expected {CONFIG_KIND} or ConfigMap")
    if not isinstance(settings, Mapping):
        raise FunctionError(f"functionConfig has no {'spec' if kind == CONFIG_KIND else 'data'}")
    unknown = sorted(set(map(str, settings)) - set(DEFAULTS))
    if unknown:
        raise FunctionError(f"functionConfig: unknown option {unknown[0]!r} (known: {', '.join(DEFAULTS)})")
    values = {**DEFAULTS, **settings}
    raw_paths = values["paths"]
    if isinstance(raw_paths, str):
        paths = tuple(p for p in re.split(r"[,\s]+", raw_paths) if p)
    elif isinstance(raw_paths, Sequence) and all(isinstance(p, str) for p in raw_paths):
        paths = tuple(raw_paths)
    else:
        raise FunctionError("functionConfig paths: expected a list of .seg files or directories")
    if not paths:
        raise FunctionError("functionConfig paths: name at least one .seg file or directory")
    if "-" in paths:
        raise FunctionError("functionConfig paths: standard input carries the ResourceList, not a .seg file")
    target = str(values["target"])
    if target not in backend_names():
        raise FunctionError(f"functionConfig target {target!r}: expected one of {', '.join(backend_names())}")
    extra: dict[str, Any] = {"staged": _as_bool("staged", values["staged"]),
                             "widen": _as_bool("widen", values["widen"])}
    if values["calicoVersion"] is not None:
        extra["calico_version"] = str(values["calicoVersion"])
    prefix = str(values["namePrefix"] or "")
    if prefix:
        problem = name_prefix_problem(prefix)
        if problem:
            raise FunctionError(f"functionConfig namePrefix: {problem}")
        extra["name_prefix"] = prefix
    return Config(paths, target, Options(extra))


def _severity(d: Diagnostic) -> str:
    return {Severity.ERROR: "error", Severity.WARNING: "warning"}.get(d.severity, "info")


def result_of(d: Diagnostic) -> dict[str, Any]:
    """One diagnostic as a KRM function result: file and line where the spec has room for them."""
    where = f"{d.span.path}:{d.span.line}:{d.span.column}: " if d.span else ""
    hint = f" (hint: {d.hint})" if d.hint else ""
    out: dict[str, Any] = {"message": f"{where}{d.message} [{d.code}]{hint}", "severity": _severity(d),
                           "tags": {"code": d.code}}
    if d.span:
        out["file"] = {"path": d.span.path}
        out["tags"].update(line=str(d.span.line), column=str(d.span.column))
    return out


def _ours(item: Any) -> bool:
    labels = ((item or {}).get("metadata") or {}).get("labels") or {}
    return isinstance(labels, Mapping) and labels.get(MANAGED_BY[0]) == MANAGED_BY[1]


def _with_path(body: Mapping[str, Any]) -> dict[str, Any]:
    """A generated object with the file kpt should write it to (kustomize ignores the annotation)."""
    meta = dict(body.get("metadata") or {})
    name = f"{str(body.get('kind', 'object')).lower()}-{meta.get('name', '')}.yaml"
    namespace = meta.get("namespace")
    annotations = dict(meta.get("annotations") or {})
    annotations[PATH_ANNOTATION] = f"netdsl/{namespace}/{name}" if namespace else f"netdsl/{name}"
    meta["annotations"] = annotations
    return {**body, "metadata": meta}


def run(data: bytes) -> tuple[dict[str, Any], int]:
    """The ResourceList to write and the exit status, for the bytes read from standard input."""
    try:
        resource_list = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _failure({}, f"standard input is not a YAML ResourceList: {reason}")
    if not isinstance(resource_list, dict) or (
            resource_list.get("apiVersion"), resource_list.get("kind")) != RESOURCE_LIST:
        return _failure({}, "standard input is not a config.kubernetes.io/v1 ResourceList")
    items = resource_list.get("items") or []
    if not isinstance(items, list):
        return _failure(resource_list, "ResourceList items is not a list")
    try:
        config = read_config(resource_list.get("functionConfig"))
    except FunctionError as exc:
        return _failure(resource_list, str(exc))
    result = compile_paths(config.paths, config.target, config.options)
    results = [result_of(d) for d in result.diagnostics]
    out = dict(resource_list)
    if not result.ok:
        out["results"] = results
        return out, 1
    kept = [item for item in items if not _ours(item)]
    out["items"] = kept + [_with_path(m.body) for m in result.manifests]
    results.append({"message": f"netdsl: {len(result.manifests)} {config.target} objects from "
                               f"{', '.join(config.paths)}", "severity": "info"})
    out["results"] = results
    return out, 0


def failure(message: str) -> tuple[dict[str, Any], int]:
    """An empty ResourceList carrying one error: for input that could not even be read."""
    return _failure({}, message)


def _failure(resource_list: Mapping[str, Any], message: str) -> tuple[dict[str, Any], int]:
    out = {"apiVersion": RESOURCE_LIST[0], "kind": RESOURCE_LIST[1], "items": [], **resource_list}
    out["results"] = [{"message": message, "severity": "error"}]
    return out, 1


def dump(resource_list: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(resource_list), sort_keys=False, allow_unicode=True, default_flow_style=False)
