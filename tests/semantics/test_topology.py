"""netdsl/semantics/topology.py: a topology from Kubernetes manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdsl.ir import Protocol
from netdsl.semantics.topology import TopologyError, read_topology

NAMESPACES = """\
apiVersion: v1
kind: Namespace
metadata:
  name: production
  labels: {env: prod, team: core}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
"""

WORKLOADS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: frontend, namespace: production}
spec:
  replicas: 3
  selector: {matchLabels: {app: frontend}}
  template:
    metadata: {labels: {app: frontend, tier: web}}
    spec:
      containers:
      - name: main
        image: x
        ports:
        - {name: http, containerPort: 8080}
        - {name: dns, containerPort: 53, protocol: UDP}
        - {containerPort: 9999}
      - name: sidecar
        image: y
        ports: [{name: metrics, containerPort: 9090, protocol: TCP}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: production}
spec:
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: pg, image: p, ports: [{name: pg, containerPort: 5432}]}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: monitoring}
spec:
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: a}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs, namespace: production}
spec:
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: a, image: a, ports: [{name: sctp, containerPort: 9000, protocol: SCTP}]}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    metadata: {labels: {job: migrate}}
    spec: {containers: [{name: a, image: a}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: batch}
spec:
  jobTemplate:
    spec:
      template:
        metadata: {labels: {job: nightly}}
        spec: {containers: [{name: a, image: a}]}
---
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: production}
spec: {selector: {app: frontend}}
---
# an empty document
"""

LIST = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: debug, namespace: production, labels: {run: debug}}
  spec: {containers: [{name: a, image: a}]}
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_read_topology(tmp_path: Path) -> None:
    write(tmp_path, {"ns.yaml": NAMESPACES, "apps/workloads.yml": WORKLOADS, "apps/list.json": LIST,
                     "README.md": "not a manifest"})
    topology = read_topology(tmp_path)
    assert topology.namespaces == {"batch": {}, "default": {}, "monitoring": {},
                                   "production": {"env": "prod", "team": "core"}}
    pods = {str(p): p for p in topology.pods}
    assert sorted(pods) == ["batch/nightly", "default/migrate", "monitoring/agent", "production/db",
                            "production/debug", "production/frontend", "production/rs"]
    frontend = pods["production/frontend"]
    assert frontend.labels == {"app": "frontend", "tier": "web"}
    assert frontend.ports == {"http": (8080, Protocol.TCP), "dns": (53, Protocol.UDP),
                              "metrics": (9090, Protocol.TCP)}
    assert pods["production/rs"].ports == {"sctp": (9000, Protocol.SCTP)}
    assert pods["production/debug"].labels == {"run": "debug"}
    assert topology.externals == ()
    # one file works too
    assert [str(p) for p in read_topology(tmp_path / "apps/list.json").pods] == ["production/debug"]


@pytest.mark.parametrize(("text", "message"), [
    ("kind: Pod\nmetadata: {name: a\n", r"bad\.yaml:\d+:\d+: not valid YAML"),
    ("kind: Pod\nmetadata: {name: a, labels: {v: 1}}\n", r"bad\.yaml:1: Pod default/a label 'v': 1: .*strings"),
    ("kind: Pod\nmetadata: {labels: {}}\n", r"bad\.yaml:1: Pod without metadata.name"),
    ("- just\n- a list\n", r"bad\.yaml:1: a manifest is a mapping"),
    ("kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, ports: [{name: p, containerPort: 0}]}]}\n",
     r"containerPort 0 is not 1-65535"),
    ("kind: Pod\nmetadata: {name: a}\nspec: {containers: [{ports: [{name: p, containerPort: 1, protocol: ICMP}]}]}",
     r"protocol 'ICMP' is not TCP, UDP or SCTP"),
    ("kind: Pod\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: a}\n",
     r"bad\.yaml:4: Deployment default/a: a pod default/a is already defined at .*bad\.yaml:1"),
])
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, {"bad.yaml": text})
    with pytest.raises(TopologyError, match=message):
        read_topology(tmp_path)


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="no such file or directory"):
        read_topology(tmp_path / "nope")
    with pytest.raises(TopologyError, match=r"no \.yaml, \.yml or \.json files"):
        read_topology(tmp_path)
