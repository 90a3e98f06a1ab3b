"""`netdsl alerts`: goldens per target, every expression parses as PromQL (promql-parser, Prometheus's
grammar), the rule has the PrometheusRule shape, one alert per isolated namespace, vanilla refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import pytest
import yaml
from click.testing import CliRunner

from netdsl.cli import main

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "alerts"
UPDATE = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"
THREE_TIER = "examples/three-tier.seg"

# ../shared/schemas has no monitoring.coreos.com schema: the PrometheusRule CRD's spec (prometheus-operator
# v0.7x, `monitoring.coreos.com_prometheusrules.yaml`), strict where netdsl writes
RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "additionalProperties": False,
            "properties": {"groups": {"type": "array", "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                 "(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                    "limit": {"type": "integer"},
                    "partial_response_strategy": {"type": "string"},
                    "query_offset": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "rules": {"type": "array", "items": {
                        "type": "object", "required": ["expr"], "additionalProperties": False,
                        "properties": {
                            "alert": {"type": "string"}, "record": {"type": "string"},
                            "expr": {"type": "string"},
                            "for": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
                                    "(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "keep_firing_for": {"type": "string"},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    }},
                },
            }}},
        },
    },
}

PROGRAM = """\
namespace production {
  isolate
  service web = app=web
  allow dns for web
}
namespace staging {
  isolate ingress
  service api = app=api
  api accepts namespace production on 8080
}
namespace open {
  service x = app=x
}
"""


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def rule_of(*args: str, input: str | None = None) -> dict[str, Any]:
    got = run("alerts", *args, input=input)
    assert got.exit_code == 0, got.output
    data: dict[str, Any] = yaml.safe_load(got.stdout)
    return data


@pytest.mark.parametrize("target", ["cilium", "calico"])
def test_golden(target: str) -> None:
    out = run("alerts", THREE_TIER, "--target", target).stdout
    path = GOLDEN / f"three-tier.{target}.yaml"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(out, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with NETDSL_UPDATE_GOLDEN=1"
    assert out == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("target", ["cilium", "calico"])
def test_schema_and_promql(target: str) -> None:
    rule = rule_of("-", "--target", target, "--threshold", "2.5", "--for", "10m", "--window", "1m",
                   "--severity", "critical", input=PROGRAM)
    jsonschema.validate(rule, RULE_SCHEMA)
    rules = rule["spec"]["groups"][0]["rules"]
    # one alert per isolated namespace, nothing for `open`
    assert [r["labels"]["netdsl_namespace"] for r in rules] == ["production", "staging"]
    for r in rules:
        parsed = promql_parser.parse(r["expr"])  # raises on a syntax error
        assert str(parsed)
        assert r["expr"].endswith("> 2.5") and "[1m]" in r["expr"]
        assert r["for"] == "10m" and r["labels"]["severity"] == "critical"
        ns = r["labels"]["netdsl_namespace"]
        assert f"netdsl explain - --to {ns}/<service>" in r["annotations"]["runbook"]


def test_cilium_selects_drops_by_direction_and_namespace() -> None:
    rules = rule_of("-", "--target", "cilium", input=PROGRAM)["spec"]["groups"][0]["rules"]
    production, staging = (r["expr"] for r in rules)
    assert 'reason=~"POLICY_DENIED|POLICY_DENY"' in production
    assert 'traffic_direction="ingress",destination_namespace="production"' in production
    assert 'traffic_direction="egress",source_namespace="production"' in production
    # staging isolates ingress only: its own pods' egress drops are not its isolation's
    assert 'destination_namespace="staging"' in staging and "source_namespace" not in staging


def test_calico_selects_the_policies_of_the_namespace() -> None:
    rules = rule_of("-", "--target", "calico", input=PROGRAM)["spec"]["groups"][0]["rules"]
    assert rules[0]["expr"] == 'sum(rate(calico_denied_packets{policy=~"[^|]*\\\\|production/.*"}[5m])) > 10'


def test_cluster_isolation_is_one_alert_outside_the_system_namespaces() -> None:
    src = "cluster {\n  isolate\n  allow dns\n}\n"
    rules = rule_of("-", "--target", "cilium", input=src)["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["NetdslPolicyDropsCluster"]
    assert 'destination_namespace!~"calico-apiserver|calico-system|' in rules[0]["expr"]
    promql_parser.parse(rules[0]["expr"])
    calico = rule_of("-", "--target", "calico", input=src)["spec"]["groups"][0]["rules"]
    promql_parser.parse(calico[0]["expr"])


def test_refusals() -> None:
    vanilla = run("alerts", THREE_TIER, "--target", "vanilla")
    assert vanilla.exit_code == 1
    assert "--target cilium or --target calico" in vanilla.output
    nothing = run("alerts", "-", "--target", "cilium", input="namespace a {\n  service x = app=x\n}\n")
    assert nothing.exit_code == 1 and "isolates no namespace" in nothing.output
    assert run("alerts", THREE_TIER, "--target", "cilium", "--for", "five").exit_code == 2
    assert run("alerts", THREE_TIER, "--target", "cilium", "--threshold", "0").exit_code == 2
