"""`netdsl probes`: the plan's checks and expected results, the seed's §7.2 checks, goldens, and the
generated script run against a fake kubectl that answers from the engine (pass and fail paths)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from netdsl.backends import Options
from netdsl.cli import main
from netdsl.compiler import compile_paths
from netdsl.probes import MANAGED_BY, build_plan, render_json, render_sh

REPO = Path(__file__).resolve().parents[1]
THREE_TIER = "examples/three-tier.seg"
GOLDEN = REPO / "tests" / "golden" / "probes"
UPDATE = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"
TARGETS = ("vanilla", "calico", "cilium")


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def plan_json(target: str = "vanilla", path: str = THREE_TIER) -> dict[str, Any]:
    got = run("probes", path, "--target", target, "--format", "json")
    assert got.exit_code == 0, got.output
    data: dict[str, Any] = json.loads(got.stdout)
    return data


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with NETDSL_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"the plan for {THREE_TIER} changed: compare with {path}"


def test_golden_script_and_json() -> None:
    sh = run("probes", THREE_TIER)
    assert sh.exit_code == 0, sh.output
    _golden("three-tier.sh", sh.stdout)
    _golden("three-tier.json", json.dumps(plan_json(), indent=2, ensure_ascii=False) + "\n")


def _find(checks: list[dict[str, Any]], src_labels: dict[str, str], dst_labels: dict[str, str], port: int,
          namespace: str = "production") -> list[dict[str, Any]]:
    return [c for c in checks
            if c["source"]["namespace"] == namespace and c["destination"].get("namespace") == namespace
            and {k: v for k, v in c["source"]["labels"].items() if k != MANAGED_BY[0]} == src_labels
            and {k: v for k, v in c["destination"]["labels"].items() if k != MANAGED_BY[0]} == dst_labels
            and c["port"] == port and c["protocol"] == "TCP"]


@pytest.mark.parametrize("target", TARGETS)
def test_seed_7_2_checks_with_their_expected_results(target: str) -> None:
    """Seed §7.2: `allowed-client` (the frontend) reaches backend:8080, `denied-client` (a pod of no
    service, the seed's `role: untrusted`) does not. The seed labels its client `role: frontend`, which
    §6.1's policies never select; the plan labels it as the program's frontend (`tier: frontend`)."""
    checks = plan_json(target)["checks"]
    allowed = _find(checks, {"tier": "frontend"}, {"tier": "backend"}, 8080)
    denied = _find(checks, {}, {"tier": "backend"}, 8080)
    assert [c["expected"] for c in allowed] == ["allowed"]
    assert [c["expected"] for c in denied] == ["denied"]
    assert denied[0]["source"]["stands_for"] == "a pod of no service"
    assert any("backend accepts frontend on 8080" in s for s in allowed[0]["why"]["program"])
    assert allowed[0]["why"][target], "the emitted rule that allows it"


def test_plan_covers_flows_neighbours_expectations_and_dns() -> None:
    checks = plan_json()["checks"]
    origins = [c["origin"] for c in checks]
    # every `expect` line of the example is a check
    for line in (25, 26, 27, 28):
        assert f"expect {THREE_TIER}:{line}" in origins
    # every allowed flow between probe pods, each with a denied neighbour on another port and client
    flows = [c for c in checks if c["expected"] == "allowed" and c["kind"] != "dns"]
    assert {(c["destination"]["stands_for"], c["port"]) for c in flows} == {
        ("service frontend", 80), ("service backend", 8080), ("service database", 5432)}
    for c in flows:
        dst = c["destination"]["pod"]
        same_dst = [d for d in checks if d["kind"] != "dns" and d["destination"]["pod"] == dst
                    and d["destination"]["namespace"] == c["destination"]["namespace"]]
        assert any(d["expected"] == "denied" and d["port"] != c["port"] and d["source"] == c["source"]
                   for d in same_dst), c
        assert any(d["expected"] == "denied" and d["port"] == c["port"] and d["source"] != c["source"]
                   for d in same_dst), c
    dns = {c["source"]["stands_for"]: c["expected"] for c in checks if c["kind"] == "dns"}
    assert dns == {"service frontend": "allowed", "service backend": "allowed", "service database": "allowed",
                   "a pod of no service": "denied"}


@pytest.mark.parametrize("target", TARGETS)
def test_expected_results_are_the_target_evaluators_and_the_programs(target: str) -> None:
    """Each check's expected result equals the program's verdict (translation validation) - the plan
    would have been refused otherwise - and the checks are the same on every target here."""
    options = Options({})
    result = compile_paths((THREE_TIER,), target, options)
    plan = build_plan(result, target, options)
    vanilla = build_plan(compile_paths((THREE_TIER,), "vanilla", options), "vanilla", options)
    assert [(c.text(), c.expected) for c in plan.checks] == [(c.text(), c.expected) for c in vanilla.checks]
    for c in plan.checks:
        assert c.statements or not c.expected or c.destination is None


def test_probe_pods_carry_the_service_labels_and_never_become_ready() -> None:
    data = plan_json()
    pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in data["pods"]}
    backend = pods[("production", "netdsl-probe-backend")]
    assert backend["metadata"]["labels"] == {"tier": "backend", MANAGED_BY[0]: MANAGED_BY[1]}
    container = backend["spec"]["containers"][0]
    assert container["image"] == "nicolaka/netshoot"
    assert "socat TCP-LISTEN:8080,fork,reuseaddr" in container["command"][2]
    assert container["readinessProbe"]["exec"]["command"] == ["false"]  # out of the backend Service
    assert {n["name"] for n in data["namespaces"]} == {"production", "ingress-nginx"}  # no system namespace


def test_errors_and_options() -> None:
    bad = run("probes", "-", "--target", "vanilla", input="namespace a {\n  isolate\n")
    assert bad.exit_code == 1
    assert run("probes", THREE_TIER, "--pod-prefix", "Bad_").exit_code == 2
    cannot = run("probes", "examples/cilium-l7-fqdn.seg", "--target", "vanilla")
    assert cannot.exit_code == 1 and "cilium" in cannot.output
    prefixed = plan_json()["pods"][0]["metadata"]["name"]
    assert prefixed.startswith("netdsl-probe-")


def test_script_parses_with_sh_and_shellcheck() -> None:
    script = run("probes", THREE_TIER).stdout
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, text=True, check=True)


# ------------------------------------------------------------------------------------------ the fake cluster


def _run_script(tmp_path: Path, target: str, flip: str | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests' / 'fake_kubectl.py'} \"$@\"\n")
    kubectl.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    script = tmp_path / "probes.sh"
    script.write_text(run("probes", THREE_TIER, "--target", target).stdout)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_STATE": str(state),
           "FAKE_SEG": str(REPO / THREE_TIER), "FAKE_TARGET": target, "SETTLE_SECONDS": "0"}
    env.pop("KUBECTL", None)
    if flip is not None:
        env["FAKE_FLIP"] = flip
    return subprocess.run(["sh", str(script), *args], env=env, text=True, capture_output=True, timeout=600)


def _state(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "state" / "state.json").read_text())
    return data


def test_script_against_a_fake_cluster_passes(tmp_path: Path) -> None:
    got = _run_script(tmp_path, "vanilla")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "FAIL" not in got.stdout
    checks = len(plan_json()["checks"])
    assert f"all {checks} checks passed" in got.stdout
    state = _state(tmp_path)
    # namespaces created with the marker label, and removed again with the pods (the trap)
    assert state["namespaces"]["production"] == {MANAGED_BY[0]: MANAGED_BY[1]}
    deleted = [argv for argv in state["log"] if argv[0] == "delete"]
    assert ["delete", "namespace", "production", "--ignore-not-found", "--wait=false"] in deleted
    assert any(argv[:4] == ["delete", "pod", "-n", "production"] for argv in deleted)


def test_script_against_a_fake_cluster_fails_on_one_wrong_answer(tmp_path: Path) -> None:
    # the fake gives the frontend's connection to the backend on 8080 the wrong answer
    got = _run_script(tmp_path, "vanilla", flip="production/netdsl-probe-frontend 10.0.0.3 8080")
    assert got.returncode == 1, got.stdout + got.stderr
    failed = [line for line in got.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "netdsl-probe-frontend -> production/netdsl-probe-backend:8080/tcp" in failed[0]
    assert "allowed   denied" in failed[0]
    assert "FAIL: 1 of" in got.stdout
    assert any(argv[0] == "delete" for argv in _state(tmp_path)["log"])  # cleaned up on failure too


def test_keep_leaves_the_pods(tmp_path: Path) -> None:
    got = _run_script(tmp_path, "vanilla", None, "--keep")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "--keep" in got.stderr
    assert not any(argv[0] == "delete" for argv in _state(tmp_path)["log"])


def test_render_functions_match_the_cli() -> None:
    options = Options({})
    plan = build_plan(compile_paths((THREE_TIER,), "vanilla", options), "vanilla", options)
    assert render_json(plan) == run("probes", THREE_TIER, "--format", "json").stdout
    assert render_sh(plan, (THREE_TIER,)) == run("probes", THREE_TIER).stdout
