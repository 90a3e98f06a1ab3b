"""`expect` over classes of pods, checked in every cluster: a service's pods whatever else they carry,
`pods[...] in ...`, `any pod in ...`, services of cluster blocks; allowed = every member, denied = none."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdsl.compiler import check, compile_paths

KAFKA = """\
namespace kafka {
  isolate
  allow dns
  service broker = app=broker
  broker accepts broker on 9092
  broker accepts namespace shop, pods[kafka-client=true] in namespaces[tenant=a] on 9092
}
"""


def errors(text: str, tmp_path: Path, target: str | None = None) -> list[str]:
    path = tmp_path / "p.seg"
    path.write_text(text)
    result = compile_paths([str(path)], target) if target else check([str(path)])
    return [d.message for d in result.diagnostics if d.is_error]


@pytest.mark.parametrize("target", [None, "vanilla", "calico", "cilium"])
def test_classes_that_hold_in_every_cluster(tmp_path: Path, target: str | None) -> None:
    text = KAFKA + (
        "expect any pod in namespace shop -> kafka/broker:9092 allowed\n"
        "expect any pod in namespace shop -> kafka/broker on 9093 denied\n"
        "expect kafka/broker -> kafka/broker:9092 allowed\n"  # replicas of the broker
        "expect pods[kafka-client=true] in namespaces[tenant=a] -> kafka/broker:9093 denied\n"
    )
    assert errors(text, tmp_path, target) == []


def test_allowed_means_every_member(tmp_path: Path) -> None:
    # every kafka-client pod in a tenant=a namespace gets in, the broker's own namespace included (its
    # other half there is conditioned on kafka carrying tenant=a)
    assert errors(KAFKA + "expect pods[kafka-client=true] in namespaces[tenant=a] -> kafka/broker:9092 allowed\n",
                  tmp_path) == []
    # but not every pod of a tenant=a namespace: one without the label is a member that is denied
    got = errors(KAFKA + "expect any pod in namespaces[tenant=a] -> kafka/broker:9092 allowed\n", tmp_path)
    assert len(got) == 1 and "is denied" in got[0] and "kafka-client" not in got[0].split("->")[0]


def test_denied_means_no_member(tmp_path: Path) -> None:
    # namespace `other` is not mentioned, but it may carry tenant=a, and a kafka client there gets in
    got = errors(KAFKA + "expect any pod in namespace other -> kafka/broker:9092 denied\n", tmp_path)
    assert len(got) == 1 and "namespace other{tenant=a}" in got[0] and "is allowed" in got[0]


def test_a_service_of_a_cluster_block_is_its_pods_in_every_namespace(tmp_path: Path) -> None:
    text = ("cluster {\n  isolate ingress\n  service web = app=web\n  web accepts namespace ingress-nginx on 80\n"
            "  expect any pod in namespace ingress-nginx -> web:80 allowed\n"
            "  expect any pod in namespace ingress-nginx -> web:81 denied\n}\n")
    assert errors(text, tmp_path) == []
    assert errors(text, tmp_path, "calico") == []


def test_one_port_per_expectation(tmp_path: Path) -> None:
    got = errors(KAFKA + "expect any pod in namespace shop -> kafka/broker:9092 on 9093 allowed\n", tmp_path)
    assert got == ["an expectation names one port"]
