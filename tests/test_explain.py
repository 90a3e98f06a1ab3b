"""`netdsl explain`: one connection with what decides it, rows/columns, the whole matrix, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from netdsl.semantics import engine
from netdsl.semantics.model import Connection, Verdict
from netdsl.semantics.vanilla import VanillaSemantics

Run = Callable[..., Result]

APP = """\
namespace production {
  isolate
  service frontend = tier=frontend
  service backend  = tier=backend
  service database = tier=database
  allow dns for frontend, backend
  frontend accepts namespace ingress-nginx on 80
  backend accepts frontend on 8080
  database accepts backend on 5432
}
"""
TIERED = APP + "tier security order 100 {\n  namespace production { all pods denies from cidr 192.0.2.0/24 }\n}\n"

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: production, labels: {env: prod}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-7f9c, namespace: production}
spec:
  template:
    metadata: {labels: {tier: frontend}}
    spec: {containers: [{name: w, image: w}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: production}
spec:
  template:
    metadata: {labels: {tier: backend}}
    spec: {containers: [{name: a, image: a, ports: [{name: http, containerPort: 8080}]}]}
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.seg").write_text(APP)
    return tmp_path / "app.seg"


def run(netdsl: Run, *args: str) -> Result:
    return netdsl("explain", *args)


def test_one_connection_shows_the_deciding_lines_and_resources(netdsl: Run, app: Path) -> None:
    r = run(netdsl, "app.seg", "--from", "frontend", "--to", "backend:8080")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert out.startswith("production/frontend -> production/backend 8080/tcp\n")
    assert "program  ALLOWED" in out
    assert "app.seg:8: backend accepts frontend on 8080 (other half)" in out  # frontend's egress
    assert "app.seg:8: backend accepts frontend on 8080\n" in out  # backend's ingress
    assert "NetworkPolicy production/backend ingress[0]" in out
    assert "NetworkPolicy production/frontend egress[" in out
    assert "calico   ALLOWED" in out and "vanilla  ALLOWED" in out
    assert "MISMATCH" not in out


def test_a_denied_connection_says_what_isolates_it(netdsl: Run, app: Path) -> None:
    r = run(netdsl, "app.seg", "--from", "production/frontend", "--to", "production/database:5432")
    assert r.exit_code == 0
    assert "program  DENIED" in r.stdout
    assert "app.seg:2:3: isolate egress" in r.stdout
    assert "production/frontend egress is isolated by NetworkPolicy" in r.stdout


def test_a_connection_denied_by_isolate_for_names_the_service(netdsl: Run, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.seg").write_text("namespace shop {\n  service web = app=web\n  isolate ingress for web\n}\n")
    r = run(netdsl, "one.seg", "--from", "shop/unlabelled", "--to", "shop/web:80")
    assert r.exit_code == 0, r.stderr
    assert "one.seg:3:3: isolate ingress for web" in r.stdout
    assert "shop/web ingress is isolated by NetworkPolicy isolate-ingress-web" in r.stdout
    r = run(netdsl, "one.seg", "--from", "shop/web", "--to", "shop/unlabelled:80")
    assert "program  ALLOWED" in r.stdout  # web's egress and the other pods' ingress stay open


def test_without_a_port_every_probe_is_grouped_by_verdict(netdsl: Run, app: Path) -> None:
    r = run(netdsl, "app.seg", "--from", "frontend", "--to", "backend")
    assert r.exit_code == 0
    assert "(no port given: " in r.stdout
    assert "ALLOWED  8080/tcp\n" in r.stdout
    assert "DENIED  1/tcp, 53/tcp, 54/tcp, 80/tcp" in r.stdout  # each port stands for its class


def test_external_sources_udp_and_ipv6(netdsl: Run, app: Path) -> None:
    r = run(netdsl, "app.seg", "--from", "2001:db8::1", "--to", "frontend:80")
    assert r.exit_code == 0 and "program  DENIED" in r.stdout
    r = run(netdsl, "app.seg", "--from", "frontend", "--to", "[2001:db8::1]:53/udp")
    assert r.exit_code == 0 and r.stdout.startswith("production/frontend -> 2001:db8::1 53/udp")


def test_json_connection(netdsl: Run, app: Path) -> None:
    r = run(netdsl, "app.seg", "--from", "frontend", "--to", "backend:8080", "--format", "json")
    data = json.loads(r.stdout)
    assert data["from"] == "production/frontend" and data["mismatches"] == []
    (conn,) = data["connections"]
    assert conn["protocol"] == "TCP" and conn["port"] == 8080
    assert set(conn["verdicts"]) >= {"program", "vanilla", "calico"}
    assert conn["verdicts"]["vanilla"]["allowed"] is True
    assert "NetworkPolicy production/backend ingress[0]" in conn["verdicts"]["vanilla"]["reasons"]


def test_a_target_that_refuses_the_program(netdsl: Run, app: Path) -> None:
    app.write_text(TIERED)
    r = run(netdsl, "app.seg", "--from", "192.0.2.1", "--to", "frontend:80", "--target", "vanilla",
            "--target", "calico")
    assert r.exit_code == 0
    assert "vanilla  cannot express this program: app.seg:11:6: target `vanilla`" in r.stdout
    assert "cannot express policy tiers" in r.stdout
    assert "app.seg:12: all pods denies from cidr 192.0.2.0/24" in r.stdout
    r = run(netdsl, "app.seg", "--target", "vanilla", "--format", "json")
    assert "cannot express policy tiers" in json.loads(r.stdout)["evaluators"]["vanilla"]["cannot_express"]


def test_the_matrix_fits_100_columns(netdsl: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    services = "\n".join(f"  service a-very-long-service-name-{i} = app=s{i}" for i in range(45))
    flows = "\n".join(f"  a-very-long-service-name-{i} accepts a-very-long-service-name-{i + 1} on {8000 + i}"
                      for i in range(0, 44, 3))
    Path("big.seg").write_text(f"namespace a-long-namespace-name {{\n  isolate\n  allow dns\n{services}\n{flows}\n}}\n")
    r = run(netdsl, "big.seg")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].startswith("Connectivity: rows are sources, columns destinations")
    assert any(line.startswith("*  every probed port") for line in lines)
    assert "vanilla: the emitted policies allow exactly what the program allows" in r.stdout
    assert "~" in r.stdout  # long names are abbreviated in the rows ...
    assert " a-long-namespace-name/a-very-long-service-name-10" in r.stdout  # ... and spelled out below


def test_the_matrix_legend(netdsl: Run, app: Path) -> None:
    r = run(netdsl, "app.seg")
    assert r.exit_code == 0
    legend = {line[0]: line[3:] for line in r.stdout.splitlines() if len(line) > 3 and line[1:3] == "  "}
    assert "8080/tcp" in legend.values() and "5432/tcp" in legend.values() and "53/tcp, 53/udp" in legend.values()
    row = next(line for line in r.stdout.splitlines() if "production/frontend" in line)
    code = next(k for k, v in legend.items() if v == "8080/tcp")
    assert code in row.split("production/frontend", 1)[1]


def test_matrix_json(netdsl: Run, app: Path) -> None:
    data = json.loads(run(netdsl, "app.seg", "--format", "json").stdout)
    assert "production/frontend" in [e["name"] for e in data["endpoints"]]
    assert {"from": "production/frontend", "to": "production/backend", "ports": ["8080/tcp"]} in \
        data["evaluators"]["program"]["allowed"]
    assert data["evaluators"]["vanilla"] == {"agrees": True, "differences": []}


def test_from_only_and_to_only(netdsl: Run, app: Path) -> None:
    r = run(netdsl, "app.seg", "--from", "frontend")
    assert r.exit_code == 0
    assert r.stdout.startswith("production/frontend may connect to (")
    assert "  production/backend" in r.stdout and "8080/tcp" in r.stdout
    r = run(netdsl, "app.seg", "--to", "database")
    assert r.stdout.startswith("production/database accepts connections from (")
    assert "production/backend" in r.stdout and "production/frontend" not in r.stdout
    r = run(netdsl, "app.seg", "--from", "10.9.9.9")  # an address the topology does not probe
    assert r.exit_code == 0 and r.stdout.startswith("10.9.9.9 may connect to (")
    assert "production/frontend" not in r.stdout and "production/database" not in r.stdout
    r = run(netdsl, "app.seg", "--to", "database", "--format", "json")
    assert json.loads(r.stdout)["evaluators"]["program"]["allowed"] == [
        {"from": "production/backend", "to": "production/database", "ports": ["5432/tcp"]}]


def test_over_a_cluster_topology(netdsl: Run, app: Path) -> None:
    Path("cluster").mkdir()
    Path("cluster/apps.yaml").write_text(CLUSTER)
    r = run(netdsl, "app.seg", "--topology", "cluster", "--from", "frontend", "--to", "backend:http")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("production/web-7f9c -> production/api 8080/tcp")
    assert "program  ALLOWED" in r.stdout
    r = run(netdsl, "app.seg", "--topology", "cluster")
    assert r.exit_code == 0 and "production/web-7f9c" in r.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "frontnd", "--to", "backend"], "netdsl: error: unknown endpoint 'frontnd'"),
    (["--from", "frontend", "--to", "backend:http"], "no statement mentions a port named 'http'"),
    (["--from", "frontend", "--to", "unlabelled"], "'unlabelled' names "),
    (["--from", "frontend:80", "--to", "backend"], "a source has no port"),
    (["--from", "10.0.0.1", "--to", "10.0.0.2"], "both ends are external"),
    (["--from", "frontend", "--to", "backend:99999"], "port 99999 is not 1-65535"),
    (["--to", "backend:80"], "a port needs --from too"),
    (["--topology", "missing"], "netdsl: error: missing: no such file or directory"),
])
def test_errors_exit_1_without_traceback(netdsl: Run, app: Path, args: list[str], message: str) -> None:
    r = run(netdsl, "app.seg", *args)
    assert r.exit_code == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_errors_in_the_program_and_topology(netdsl: Run, app: Path) -> None:
    app.write_text("namespace production {\n  isolate\n")
    r = run(netdsl, "app.seg")
    assert r.exit_code == 1 and "app.seg:" in r.stderr and "error:" in r.stderr
    app.write_text(APP)
    Path("bad.yaml").write_text("kind: Pod\nmetadata: {name: [\n")
    r = run(netdsl, "app.seg", "--topology", "bad.yaml")
    assert r.exit_code == 1 and r.stderr.startswith("netdsl: error: bad.yaml:")


class Widening(VanillaSemantics):
    """A broken translation: everything to the database is open."""

    def decide(self, conn: Connection) -> Verdict:
        if "database" in str(conn.dst):
            return Verdict(True, ("NetworkPolicy production/oops ingress[0]",))
        return super().decide(conn)


def test_a_target_that_disagrees_is_reported_loudly(netdsl: Run, app: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(engine.EVALUATOR_BY_TARGET, "vanilla", Widening)
    r = run(netdsl, "app.seg", "--from", "frontend", "--to", "database:5432")
    assert r.exit_code == 3
    assert "!!! MISMATCH" in r.stdout and "the program denies it, vanilla allows it" in r.stdout
    assert "compiler bug" in r.stderr
    r = run(netdsl, "app.seg")
    assert r.exit_code == 3
    assert "vanilla: !!! MISMATCH with the program" in r.stdout
    assert re.search(r"-> production/database \S+: the program denies it, vanilla allows it", r.stdout)
    assert re.search(r"!!!   \.\.\. and \d+ more", r.stdout)  # the first 20 differences are listed
    data: dict[str, Any] = json.loads(run(netdsl, "app.seg", "--format", "json").stdout)
    assert data["evaluators"]["vanilla"]["agrees"] is False


def test_a_pod_to_itself_is_traffic_between_replicas(netdsl: Run, app: Path) -> None:
    r = run(netdsl, "app.seg", "--from", "backend", "--to", "backend:8080")
    assert r.exit_code == 0, r.stderr
    assert "program  DENIED" in r.stdout  # isolated: replicas of backend do not reach each other


def test_a_failing_expectation_does_not_stop_explain(netdsl: Run, app: Path) -> None:
    Path("app.seg").write_text(APP + "expect production/frontend -> production/database:5432 allowed\n")
    r = run(netdsl, "app.seg", "--from", "frontend", "--to", "backend:8080")
    assert r.exit_code == 0, r.stderr
    assert "program  ALLOWED" in r.stdout
    for target in ("vanilla", "calico", "cilium"):  # the targets are judged, not refused
        assert re.search(rf"{target}\s+ALLOWED", r.stdout), r.stdout


def test_a_listing_groups_label_sets_and_pod_classes(netdsl: Run, tmp_path: Path) -> None:
    # production has 3 label sets (name absent, kube-system, another value) and 4 classes of api's pods
    (tmp_path / "app.seg").write_text("""\
namespace production {
  isolate
  service api      = app=api
  service backend  = tier=backend
  service frontend = app=frontend
  api accepts frontend on 8080
  backend accepts pods[role=monitor] in namespaces[name=kube-system] on 9100
}
""")
    out = netdsl("explain", str(tmp_path / "app.seg"), "--from", "production/frontend", "--target", "vanilla").stdout
    assert "  production/api  8080/tcp\n" in out, out
    assert "~name=" not in out  # no row per label set of production: the source has one
    out = netdsl("explain", str(tmp_path / "app.seg"), "--to", "production/api", "--target", "vanilla").stdout
    assert "  production/frontend  8080/tcp\n" in out, out
    data = json.loads(netdsl("explain", str(tmp_path / "app.seg"), "--format", "json", "--target", "vanilla").stdout)
    # the classes are named by their labels, never by a number
    assert "production/api+backend{role=monitor}~name=kube-system" in [e["name"] for e in data["endpoints"]]
