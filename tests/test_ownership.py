"""`netdsl check --topology DUMP` warns about policies netdsl did not write where the program writes
policies (its namespaces, or anywhere for cluster-wide objects and cluster blocks), at their place in
the dump; netdsl's own objects and other namespaces stay quiet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from click.testing import Result

from tests.conftest import REPO

DUMP = {
    "apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "legacy", "namespace": "production"}, "spec": {"podSelector": {}, "ingress": [{}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "frontend", "namespace": "production",
                      "labels": {"app.kubernetes.io/managed-by": "netdsl"}}, "spec": {"podSelector": {}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "other", "namespace": "elsewhere"}, "spec": {"podSelector": {}}},
        {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "world"},
         "spec": {"endpointSelector": {}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "production"}},
    ],
}


def test_foreign_policies_are_warned_about_where_the_program_writes(
        netdsl: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "dump.yaml").write_text(yaml.safe_dump(DUMP, sort_keys=False))
    result = netdsl("check", str(REPO / "examples" / "three-tier.seg"), "--topology", str(tmp_path / "dump.yaml"))
    assert result.exit_code == 0  # warnings
    lines = [line for line in result.output.splitlines() if "[foreign-policy]" in line]
    assert len(lines) == 2, result.output
    assert "NetworkPolicy production/legacy" in lines[0] and "dump.yaml:4:3:" in lines[0]
    assert "CiliumClusterwideNetworkPolicy world" in lines[1]


def test_without_a_dump_nothing_is_said(netdsl: Callable[..., Result]) -> None:
    assert "foreign-policy" not in netdsl("check", str(REPO / "examples" / "three-tier.seg")).output
