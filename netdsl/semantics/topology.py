"""A topology read from Kubernetes manifests: what a cluster (or a Helm/kustomize rendering of one) runs.

`read_topology(path)` reads every *.yaml / *.yml / *.json file below a directory (or one file):

* `Namespace`: its labels;
* `Pod`: its labels and named container ports;
* `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet`, `ReplicationController`, `Job` (and
  `CronJob`): one pod named after the workload, with the labels and named container ports of its pod
  template (replicas of a workload are alike, so one stands for all);
* `List` (as `kubectl get -o yaml` prints): its items.

Everything else (Services, ConfigMaps, policies, ...) is skipped. Namespaced objects without a
namespace are in `default`; a namespace that holds pods but has no Namespace document is added without
labels. Problems are `TopologyError`s that name the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from netdsl.ir import Protocol
from netdsl.semantics.model import Pod, Topology

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job")
SUFFIXES = (".yaml", ".yml", ".json")

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TopologyError(ValueError):
    """A manifest that cannot be read as part of a topology; the message starts with `file:line:`."""


@dataclass(frozen=True)
class _Doc:
    path: str
    line: int
    body: Any

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _documents(path: Path, shown: str) -> Iterator[_Doc]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{shown}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            yield _Doc(shown, node.start_mark.line + 1, loader.construct_document(node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
        raise TopologyError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{shown}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise TopologyError(f"{root}: no such file or directory")
    found = sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if not found:
        raise TopologyError(f"{root}: no .yaml, .yml or .json files in this directory")
    return found


def _expand(doc: _Doc) -> Iterator[_Doc]:
    if isinstance(doc.body, Mapping) and doc.body.get("kind") == "List":
        for item in doc.body.get("items") or ():
            yield from _expand(_Doc(doc.path, doc.line, item))
    elif doc.body is not None:
        yield doc


def _labels(value: Any, doc: _Doc, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TopologyError(f"{doc.where()}: {what} labels must be a mapping")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TopologyError(f"{doc.where()}: {what} label {k!r}: {v!r}: label keys and values are strings "
                                "(quote values like `\"1\"` or `\"true\"`)")
        out[k] = v
    return out


def _ports(pod_spec: Any, doc: _Doc, what: str) -> dict[str, tuple[int, Protocol]]:
    ports: dict[str, tuple[int, Protocol]] = {}
    if not isinstance(pod_spec, Mapping):
        return ports
    for container in pod_spec.get("containers") or ():
        if not isinstance(container, Mapping):
            continue
        for port in container.get("ports") or ():
            if not isinstance(port, Mapping) or not port.get("name"):
                continue
            name, number, protocol = port["name"], port.get("containerPort"), port.get("protocol", "TCP")
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
                raise TopologyError(f"{doc.where()}: {what} port {name!r}: containerPort {number!r} is not 1-65535")
            if protocol not in Protocol._value2member_map_:
                raise TopologyError(f"{doc.where()}: {what} port {name!r}: protocol {protocol!r} is not TCP, UDP "
                                    "or SCTP")
            ports[str(name)] = (number, Protocol(protocol))
    return ports


def _pod_template(body: Mapping[str, Any]) -> Any:
    spec = body.get("spec") or {}
    if body.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return spec.get("template") or {}


def read_topology(path: str | Path) -> Topology:
    """The namespaces and pods the manifests under path describe (see the module's documentation)."""
    root = Path(path)
    namespaces: dict[str, dict[str, str]] = {}
    pods: dict[tuple[str, str], tuple[Pod, str]] = {}
    for file in _files(root):
        shown = file.as_posix()
        for top in _documents(file, shown):
            for doc in _expand(top):
                body = doc.body
                if not isinstance(body, Mapping):
                    raise TopologyError(f"{doc.where()}: a manifest is a mapping with apiVersion and kind")
                kind = body.get("kind")
                meta = body.get("metadata") or {}
                if not isinstance(meta, Mapping):
                    raise TopologyError(f"{doc.where()}: metadata must be a mapping")
                if kind not in ("Namespace", "Pod", "CronJob", *WORKLOADS):
                    continue
                name = meta.get("name")
                if not isinstance(name, str) or not name:
                    raise TopologyError(f"{doc.where()}: {kind} without metadata.name")
                if kind == "Namespace":
                    namespaces[name] = {**namespaces.get(name, {}), **_labels(meta.get("labels"), doc, kind)}
                    continue
                namespace = meta.get("namespace") or "default"
                what = f"{kind} {namespace}/{name}"
                if kind == "Pod":
                    labels, spec = meta.get("labels"), body.get("spec")
                else:
                    template = _pod_template(body)
                    if not isinstance(template, Mapping):
                        raise TopologyError(f"{doc.where()}: {what}: spec.template must be a mapping")
                    labels, spec = (template.get("metadata") or {}).get("labels"), template.get("spec")
                pod = Pod(str(namespace), name, _labels(labels, doc, what), _ports(spec, doc, what))
                key = (pod.namespace, pod.name)
                if key in pods:
                    raise TopologyError(f"{doc.where()}: {what}: a pod {pod} is already defined at {pods[key][1]}")
                pods[key] = (pod, doc.where())
    for namespace, _name in pods:
        namespaces.setdefault(namespace, {})
    return Topology(dict(sorted(namespaces.items())), tuple(sorted((p for p, _ in pods.values()), key=str)))
