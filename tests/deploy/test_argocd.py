"""deploy/argocd: the Config Management Plugin runs the way Argo CD's repo server runs it - `generate`
in the application's directory, only objects on stdout, logs on stderr, within Argo's 60 s default -
and its ConfigMap and sidecar patch build with the real kustomize (`kubectl kustomize`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_tool

PLUGIN = REPO / "deploy" / "argocd" / "plugin.yaml"
ARGO_TIMEOUT = 60  # server.repo.server.timeout.seconds' default


def plugin() -> dict[str, Any]:
    doc = yaml.safe_load(PLUGIN.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """An application path holding a program in a subdirectory, as in a GitOps repository."""
    (tmp_path / "policies").mkdir()
    shutil.copy(REPO / "examples" / "three-tier.seg", tmp_path / "policies" / "three-tier.seg")
    return tmp_path


def generate(app: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The plugin's generate command, run as the repo server runs it: in the application directory, with
    the build environment and the Application's variables (prefixed ARGOCD_ENV_) and parameters (PARAM_)."""
    spec = plugin()["spec"]["generate"]
    environment = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ARGOCD_APP_NAME": "policies", "ARGOCD_APP_NAMESPACE": "argocd", "ARGOCD_APP_REVISION": "abc123",
        "ARGOCD_APP_SOURCE_PATH": "apps/policies", **env,
    }
    start = time.monotonic()
    done = subprocess.run([*spec["command"], *spec["args"]], cwd=app, env=environment, capture_output=True,
                          text=True, timeout=ARGO_TIMEOUT, check=False)
    return done, time.monotonic() - start


def test_discovery_matches_a_directory_of_seg_files(app: Path) -> None:
    glob = plugin()["spec"]["discover"]["find"]["glob"]
    assert list(app.glob(glob)) and not list((REPO / "deploy").glob(glob))


def test_generate_prints_only_objects_on_stdout(app: Path) -> None:
    done, seconds = generate(app, ARGOCD_ENV_NETDSL_TARGET="calico")
    assert done.returncode == 0, done.stderr
    objects = [d for d in yaml.safe_load_all(done.stdout) if d is not None]
    assert objects and all({"apiVersion", "kind", "metadata"} <= set(o) for o in objects)
    assert {o["apiVersion"] for o in objects} == {"projectcalico.org/v3"}
    assert seconds < ARGO_TIMEOUT


def test_a_parameter_wins_over_the_environment(app: Path) -> None:
    done, _ = generate(app, ARGOCD_ENV_NETDSL_TARGET="calico", PARAM_TARGET="cilium", PARAM_PATH="policies")
    assert done.returncode == 0, done.stderr
    assert {o["apiVersion"] for o in yaml.safe_load_all(done.stdout) if o} == {"cilium.io/v2"}


def test_values_are_arguments_never_shell_code(app: Path) -> None:
    done, _ = generate(app, ARGOCD_ENV_NETDSL_TARGET="vanilla; touch pwned", PARAM_PATH="$(touch pwned2)")
    assert done.returncode != 0 and done.stdout == ""
    assert not (app / "pwned").exists() and not (app / "pwned2").exists()
    assert "vanilla; touch pwned" in done.stderr  # click names the bad value


def test_a_broken_program_fails_the_sync_with_the_line(app: Path) -> None:
    (app / "policies" / "broken.seg").write_text("namespace x {\n  a accepts\n}\n")
    done, _ = generate(app)
    assert done.returncode == 1 and done.stdout == ""
    assert "broken.seg:2:" in done.stderr


def test_the_config_map_and_the_sidecar_patch_build_with_kustomize(tmp_path: Path) -> None:
    kubectl = require_tool("kubectl")
    built = subprocess.run([kubectl, "kustomize", str(REPO / "deploy" / "argocd")], capture_output=True,
                           text=True, timeout=120, check=True).stdout
    config_map = yaml.safe_load(built)
    assert config_map["metadata"]["name"] == "netdsl-cmp-plugin"
    assert yaml.safe_load(config_map["data"]["plugin.yaml"]) == plugin()
    # The patch onto a repo server shaped like Argo CD's install.yaml.
    base = tmp_path / "argocd"
    base.mkdir()
    (base / "repo-server.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "argocd-repo-server"},
        "spec": {"selector": {"matchLabels": {"app": "repo"}}, "template": {
            "metadata": {"labels": {"app": "repo"}},
            "spec": {"containers": [{"name": "argocd-repo-server", "image": "quay.io/argoproj/argocd"}],
                     "volumes": [{"name": "var-files", "emptyDir": {}}, {"name": "plugins", "emptyDir": {}}]}}},
    }))
    shutil.copy(REPO / "deploy" / "argocd" / "repo-server-patch.yaml", base / "patch.yaml")
    (base / "kustomization.yaml").write_text(
        "resources: [repo-server.yaml]\npatches: [{path: patch.yaml}]\n")
    deployment = yaml.safe_load(subprocess.run([kubectl, "kustomize", str(base)], capture_output=True, text=True,
                                               timeout=120, check=True).stdout)
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"argocd-repo-server", "netdsl"}
    assert containers["netdsl"]["command"] == ["/var/run/argocd/argocd-cmp-server"]
    assert containers["netdsl"]["securityContext"]["runAsUser"] == 999
    volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert {"var-files", "plugins", "netdsl-cmp-plugin", "netdsl-cmp-tmp"} <= volumes


def test_a_name_prefix_parameter_prefixes_every_object(app: Path) -> None:
    done, _ = generate(app, PARAM_NAME_PREFIX="team-a-")
    assert done.returncode == 0, done.stderr
    assert all(o["metadata"]["name"].startswith("team-a-") for o in yaml.safe_load_all(done.stdout) if o)
