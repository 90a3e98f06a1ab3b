"""netdsl/importer/read.py: the forms manifests come in, positions, and errors with a position."""

from __future__ import annotations

from pathlib import Path

from netdsl.importer.read import read

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {name}
{ns}spec:
  podSelector: {{}}
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: web
"""


def policy(name: str = "p", ns: str | None = None) -> str:
    return POLICY.format(name=name, ns=f"  namespace: {ns}\n" if ns else "")


def test_multi_document_stream_and_empty_documents() -> None:
    got = read(["-"], stdin=("---\n" + policy("a") + "---\n---\n" + policy("b")).encode())
    assert not got.diagnostics
    assert [o.name for o in got.objects] == ["a", "b"]
    assert got.objects[1].origin == "<stdin>, document 3"


def test_namespace_defaults_to_default_or_dash_n() -> None:
    assert read(["-"], stdin=policy().encode()).objects[0].namespace == "default"
    assert read(["-"], "shop", stdin=policy().encode()).objects[0].namespace == "shop"
    assert read(["-"], "shop", stdin=policy(ns="prod").encode()).objects[0].namespace == "prod"


def test_kubectl_list_nested_and_noise_dropped() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: List
  items:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata:
      name: inner
      namespace: n
      resourceVersion: "12"
      managedFields: [{manager: kubectl}]
      annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
    spec: {podSelector: {}}
    status: {}
"""
    got = read(["-"], stdin=text.encode())
    assert not got.diagnostics
    (obj,) = got.objects
    assert obj.body == {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": {"name": "inner", "namespace": "n"}, "spec": {"podSelector": {}}}
    assert obj.origin.endswith("item 1, item 1")
    assert obj.span().line == 7


def test_spans_of_rules_and_peers() -> None:
    obj = read(["-"], stdin=policy().encode()).objects[0]
    assert obj.span("spec.ingress[0]").line == 8
    assert obj.span("spec.ingress[0].from[0]").line == 9
    assert obj.span("spec.ingress[0].from[0].podSelector.matchLabels.app").line == 11
    assert obj.span("spec.egress[3]").line == 6  # the nearest part that exists: spec (its value)


def test_directories_recursive_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yml").write_text(policy("z"))
    (tmp_path / "a.yaml").write_text(policy("a"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    got = read([str(tmp_path)])
    assert [o.name for o in got.objects] == ["a", "z"]


def test_namespace_objects_give_labels() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {env: prod}}\n---\n" + policy()
    got = read(["-"], stdin=text.encode())
    assert got.namespace_labels == {"prod": {"env": "prod"}}
    assert [o.kind for o in got.objects] == ["NetworkPolicy"]


def test_errors_have_positions() -> None:
    cases = {
        "a: [\n": "import-yaml",
        "- 1\n- 2\n": "import-object",
        "apiVersion: v1\nmetadata: {name: x}\n": "import-object",
        "apiVersion: v1\nkind: NetworkPolicy\nmetadata: {}\n": "import-object",
        policy("d") + "---\n" + policy("d"): "import-duplicate",
    }
    for text, code in cases.items():
        got = read(["-"], stdin=text.encode())
        assert [d.code for d in got.diagnostics] == [code], text
        assert got.diagnostics[0].span is not None and got.diagnostics[0].span.path == "<stdin>"


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    assert [d.code for d in read([str(tmp_path / "nope.yaml")]).diagnostics] == ["io-error"]
    assert [d.code for d in read([str(tmp_path)]).diagnostics] == ["io-error"]
