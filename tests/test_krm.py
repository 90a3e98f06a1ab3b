"""`netdsl krm`: the KRM function contract - a ResourceList in, the same list plus the generated objects
and results[] out, nothing else on stdout - checked directly and through the real kpt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_tool

EXAMPLE = REPO / "examples" / "three-tier.seg"


def resource_list(spec: dict[str, Any], items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "config.kubernetes.io/v1", "kind": "ResourceList", "items": items or [],
        "functionConfig": {"apiVersion": "netdsl.dev/v1alpha1", "kind": "NetdslCompile",
                           "metadata": {"name": "policies"}, "spec": spec},
    }


def run_krm(data: bytes | str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    if isinstance(data, str):
        data = data.encode()
    return subprocess.run([sys.executable, "-m", "netdsl", "krm"], input=data, cwd=cwd,
                          capture_output=True, timeout=120, check=False)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    (tmp_path / "app.seg").write_text(EXAMPLE.read_text())
    return tmp_path


OTHER = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}, "data": {"a": "b"}}


def test_appends_the_compiled_objects_and_keeps_the_rest(package: Path) -> None:
    out = run_krm(yaml.safe_dump(resource_list({"paths": ["app.seg"], "target": "calico"}, [OTHER])), package)
    assert out.returncode == 0, out.stderr
    result = yaml.safe_load(out.stdout)  # stdout is the ResourceList and nothing else
    assert result["kind"] == "ResourceList" and result["items"][0] == OTHER
    generated = result["items"][1:]
    assert {o["kind"] for o in generated} == {"NetworkPolicy"} and len(generated) == 4
    assert all(o["apiVersion"] == "projectcalico.org/v3" for o in generated)
    assert all(o["metadata"]["annotations"]["config.kubernetes.io/path"].startswith("netdsl/production/")
               for o in generated)
    assert [r["severity"] for r in result["results"]] == ["info"]


def test_running_on_its_own_output_replaces_instead_of_duplicating(package: Path) -> None:
    first = yaml.safe_load(run_krm(yaml.safe_dump(resource_list({"paths": ["app.seg"]})), package).stdout)
    again = yaml.safe_load(run_krm(yaml.safe_dump(first), package).stdout)
    assert again["items"] == first["items"]


def test_errors_are_results_with_file_and_line_and_exit_1(package: Path) -> None:
    (package / "bad.seg").write_text("namespace x {\n  a accepts\n}\n")
    out = run_krm(yaml.safe_dump(resource_list({"paths": ["bad.seg"]}, [OTHER])), package)
    assert out.returncode == 1
    result = yaml.safe_load(out.stdout)
    assert result["items"] == [OTHER]  # nothing generated
    errors = [r for r in result["results"] if r["severity"] == "error"]
    assert errors and errors[0]["file"] == {"path": "bad.seg"} and errors[0]["tags"]["line"] == "2"
    assert errors[0]["message"].startswith("bad.seg:2:")


@pytest.mark.parametrize("spec, says", [
    ({"paths": []}, "name at least one"),
    ({"paths": ["app.seg"], "target": "nope"}, "target 'nope'"),
    ({"paths": ["app.seg"], "bogus": 1}, "unknown option 'bogus'"),
    ({"paths": ["app.seg"], "widen": "maybe"}, "true or false"),
    ({"paths": ["-"]}, "standard input"),
])
def test_a_bad_function_config_is_an_error_result(package: Path, spec: dict[str, Any], says: str) -> None:
    out = run_krm(yaml.safe_dump(resource_list(spec)), package)
    assert out.returncode == 1
    assert says in yaml.safe_load(out.stdout)["results"][0]["message"]


@pytest.mark.parametrize("data", [b"\xff\xfe", b"a: [", b"just text", b"kind: List\nitems: []\n"])
def test_input_that_is_no_resource_list_gets_a_resource_list_with_an_error(package: Path, data: bytes) -> None:
    out = run_krm(data, package)
    assert out.returncode == 1 and b"Traceback" not in out.stderr
    result = yaml.safe_load(out.stdout)
    assert result["kind"] == "ResourceList" and result["results"][0]["severity"] == "error"


def test_kpt_config_map_form(package: Path) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "function-input"},
              "data": {"paths": "app.seg", "target": "cilium", "widen": "false"}}
    data = {"apiVersion": "config.kubernetes.io/v1", "kind": "ResourceList", "items": [], "functionConfig": config}
    out = run_krm(yaml.safe_dump(data), package)
    assert out.returncode == 0, out.stderr
    assert {o["apiVersion"] for o in yaml.safe_load(out.stdout)["items"]} == {"cilium.io/v2"}


def test_kpt_fn_eval_writes_the_objects_into_the_package(package: Path) -> None:
    """The real orchestrator: `kpt fn eval --exec` (run from the package directory: the function runs in
    kpt's working directory, where the .seg paths are relative to) writes generated objects where their
    path annotation says; a second run changes nothing; an error fails the run and names the line."""
    kpt = require_tool("kpt")
    (package / "other.yaml").write_text(yaml.safe_dump(OTHER))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [kpt, "fn", "eval", "--exec", f"{Path(sys.executable).parent / 'netdsl'} krm", ".", "--",
               "paths=app.seg", "target=vanilla"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False, cwd=package)
    assert first.returncode == 0, first.stderr
    written = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.yaml"))
    assert "other.yaml" in written and any(p.startswith("netdsl/production/") for p in written)
    before = {p: (package / p).read_text() for p in written}
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False, cwd=package)
    assert second.returncode == 0, second.stderr
    assert {p: (package / p).read_text() for p in written} == before
    assert sorted(p.relative_to(package).as_posix() for p in package.rglob("*.yaml")) == written
    (package / "app.seg").write_text("namespace x {\n  a accepts\n}\n")
    failed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False, cwd=package)
    assert failed.returncode != 0 and "app.seg:2:" in failed.stdout + failed.stderr


def test_kptfile_pipeline_and_the_netdsl_krm_executable(package: Path) -> None:
    """The README's Kptfile form, rendered by the real kpt, with the `netdsl-krm` executable."""
    kpt = require_tool("kpt")
    (package / "Kptfile").write_text(yaml.safe_dump({
        "apiVersion": "kpt.dev/v1", "kind": "Kptfile", "metadata": {"name": "app"},
        "pipeline": {"mutators": [{"exec": str(Path(sys.executable).parent / "netdsl-krm"),
                                   "configMap": {"paths": "app.seg", "target": "cilium"}}]},
    }))
    done = subprocess.run([kpt, "fn", "render", "--allow-exec", "."], cwd=package, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in (package / "netdsl").rglob("*.yaml")}
    assert kinds == {"CiliumNetworkPolicy"}


def test_name_prefix_option(package: Path) -> None:
    out = run_krm(yaml.safe_dump(resource_list({"paths": ["app.seg"], "namePrefix": "team-a-"})), package)
    assert out.returncode == 0, out.stderr
    assert all(o["metadata"]["name"].startswith("team-a-") for o in yaml.safe_load(out.stdout)["items"])
    bad = run_krm(yaml.safe_dump(resource_list({"paths": ["app.seg"], "namePrefix": "Team.A"})), package)
    assert bad.returncode == 1 and "not a name prefix" in yaml.safe_load(bad.stdout)["results"][0]["message"]
