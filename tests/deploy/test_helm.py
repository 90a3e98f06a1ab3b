"""deploy/helm/netdsl-post-renderer follows Helm's post-renderer contract: manifests in on stdin, the
same manifests plus netdsl's objects out on stdout, non-zero (and nothing applied) on an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

SCRIPT = REPO / "deploy" / "helm" / "netdsl-post-renderer"
CHART_OUTPUT = """---
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: nginx}]}}"""


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **env}
    return subprocess.run([str(SCRIPT)], input=CHART_OUTPUT, cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=120, check=False)


def test_appends_the_policies_to_the_chart_output(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    shutil.copy(REPO / "examples" / "three-tier.seg", tmp_path / "policies")
    done = run(tmp_path, NETDSL_TARGET="calico")
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert docs[0]["kind"] == "Deployment"
    assert len(docs) > 1 and {d["apiVersion"] for d in docs[1:]} == {"projectcalico.org/v3"}


def test_a_broken_program_fails_the_release(tmp_path: Path) -> None:
    (tmp_path / "bad.seg").write_text("namespace x {\n  a accepts\n}\n")
    done = run(tmp_path, NETDSL_PATHS="bad.seg")
    assert done.returncode == 1 and "bad.seg:2:" in done.stderr
