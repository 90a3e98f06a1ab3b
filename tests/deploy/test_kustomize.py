"""`netdsl compile -o DIR` is a kustomize base: the real kustomize (`kubectl kustomize`) builds it into
exactly the objects `netdsl compile` prints, for every target, and an overlay can use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require_tool

EXAMPLES = {"vanilla": "three-tier.seg", "calico": "calico-tiers.seg", "cilium": "cilium-l7-fqdn.seg"}


def netdsl(*args: str, cwd: Path) -> str:
    return subprocess.run([str(Path(sys.executable).parent / "netdsl"), *args], cwd=cwd, capture_output=True,
                          text=True, check=True, timeout=300).stdout


def key(o: dict[str, object]) -> tuple[str, str, str]:
    meta = o["metadata"]
    assert isinstance(meta, dict)
    return (str(o["kind"]), str(meta.get("namespace", "")), str(meta["name"]))


@pytest.mark.parametrize("target", sorted(EXAMPLES))
def test_the_output_directory_builds_with_kustomize(target: str, tmp_path: Path) -> None:
    kubectl = require_tool("kubectl")
    example = REPO / "examples" / EXAMPLES[target]
    netdsl("compile", "-t", target, str(example), "-o", str(tmp_path / "base"), cwd=tmp_path)
    printed = [o for o in yaml.safe_load_all(netdsl("compile", "-t", target, str(example), cwd=tmp_path)) if o]
    built = subprocess.run([kubectl, "kustomize", str(tmp_path / "base")], capture_output=True, text=True,
                           check=True, timeout=120).stdout
    assert sorted(map(key, yaml.safe_load_all(built))) == sorted(map(key, printed))
    assert {key(o): o for o in yaml.safe_load_all(built)} == {key(o): o for o in printed}
    # an overlay over it, as a GitOps repository has, labelling the objects the way README says
    # (`labels` without selectors: `commonLabels` would add the label to every pod selector)
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(
        "resources: [../base]\nlabels: [{pairs: {team: payments}, includeSelectors: false}]\n")
    overlay = list(yaml.safe_load_all(subprocess.run(
        [kubectl, "kustomize", str(tmp_path / "overlay")], capture_output=True, text=True, check=True,
        timeout=120).stdout))
    assert all(o["metadata"]["labels"]["team"] == "payments" for o in overlay)
    assert [o["spec"] for o in overlay] == [o["spec"] for o in yaml.safe_load_all(built)]  # selectors untouched
