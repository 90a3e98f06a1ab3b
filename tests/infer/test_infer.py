"""netdsl infer: formats, workloads, the proposal's meaning (allows every observed needed connection and,
without --against, nothing else between the observed workloads but DNS), --against, the CLI."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from netdsl import ir, parse
from netdsl.infer import infer, read_inputs
from netdsl.infer.formats import CALICO, GADGET, HUBBLE, FlowError, read_flows
from netdsl.infer.model import Observed, Workload, connections, observe, topology
from netdsl.lower import lower
from netdsl.semantics.model import Connection, Pod
from netdsl.semantics.program import ProgramSemantics
from netdsl.source import SourceFile

FIXTURES = Path(__file__).parent / "fixtures"
CASES = [("hubble", "vanilla"), ("hubble", "cilium"), ("hubble", "calico"), ("calico", "vanilla"),
         ("calico", "calico"), ("gadget", "vanilla"), ("gadget", "cilium")]


def _read(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def _lower(*texts: str) -> ir.Program:
    modules = []
    for i, text in enumerate(texts):
        module, errors = parse.parse(SourceFile(f"<{i}>", text))
        assert module is not None, errors
        modules.append(module)
    program, diags = lower(modules)
    assert not [d for d in diags if d.is_error], [d.message for d in diags]
    return program


# ------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize(("name", "kind"), [("hubble", HUBBLE), ("calico", CALICO), ("gadget", GADGET)])
def test_each_format_is_detected(name: str, kind: str) -> None:
    reading = read_flows(f"{name}.json", _read(name))
    assert reading.format == kind
    assert reading.flows


@pytest.mark.parametrize(("data", "line", "wanted"), [
    (b'{"apiVersion": "v1", "kind": "Pod"}\n', 1, "expected Hubble"),
    (b"hello world\n", 1, "not JSON"),
    (b"", None, "no flow records"),
    (b"[1, 2]", 1, "no flow record"),
    (b'{"flow": {"source": {}, "l4": {"TCP": {"destination_port": 0}}}}\n', 1, "port 1-65535"),
    (b'{"flow": {"source": {}, "verdict": "MAYBE"}}\n', 1, "`verdict` should be one of"),
    (b'{"flow": {"source": {"labels": ["k8s:bad key=x"]}, "l4": {"TCP": {"destination_port": 80}}}}\n', 1,
     "not a Kubernetes label"),
    (_read("hubble").split(b"\n")[0] + b"\n" + _read("calico").split(b"\n")[0] + b"\n", 2, "one format per file"),
    (b"\xff\xfe", 1, "not UTF-8"),
])
def test_junk_and_malformed_records_say_where_and_what_was_expected(data: bytes, line: int | None,
                                                                     wanted: str) -> None:
    with pytest.raises(FlowError) as exc:
        read_flows("f.json", data)
    assert exc.value.line == line
    assert str(exc.value).startswith(f"f.json:{line}: " if line else "f.json: ")
    assert wanted in str(exc.value)


def test_hubble_skips_replies_and_icmp_and_learns_dns_names() -> None:
    reading = read_flows("h", _read("hubble"))
    assert reading.skipped["replies"] == 1
    assert any("ICMP" in k for k in reading.skipped)
    assert any(names == {"api.github.com"} for names in reading.dns.values())


def test_calico_reported_by_both_ends_counts_once() -> None:
    observed = observe([read_flows("c", _read("calico"))])
    ledger = next(o for o in observed.observations if o.port == 9000 and isinstance(o.client, Workload)
                  and o.client.name == "checkout")
    assert ledger.flows == 1


# ------------------------------------------------------------------------------------------ workloads


def test_replicas_collapse_into_one_workload_without_varying_labels() -> None:
    observed = observe([read_flows("h", _read("hubble"))])
    frontends = [w for w in observed.workloads if w.name == "frontend"]
    assert frontends == [Workload("shop", "frontend", (("app", "frontend"),))]
    assert sum(1 for (ns, _pod), (w, _) in observed.pods.items() if w == frontends[0]) == 2
    text = infer([read_flows("h", _read("hubble"))], "vanilla").text
    for varying in ("pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io"):
        assert varying not in text
    assert "service db = app=db" in text  # the StatefulSet pod db-0


def test_identity_label_order_and_unlabelled_pods() -> None:
    observed = observe([read_flows("h", _read("hubble"))])
    by_name = {w.name: w for w in observed.workloads}
    assert by_name["api"].selector == (("app.kubernetes.io/name", "api"),)
    # the pod without labels: picked out by the absence of every identity key of its namespace
    assert by_name["debug"].selector == (("app", None), ("app.kubernetes.io/name", None), ("k8s-app", None))
    calico = observe([read_flows("c", _read("calico"))])
    assert any(w.name == "reporting-cron-28590120" and all(v is None for _, v in w.selector)
               for w in calico.workloads)


# ------------------------------------------------------------------------------------------ the proposal's meaning


def _semantics(observed: Observed, program: ir.Program, target: str) -> ProgramSemantics:
    return ProgramSemantics(program, topology(observed, target == "cilium", [n.name for n in program.namespaces]))


@pytest.mark.parametrize(("name", "target"), CASES)
def test_proposal_allows_every_needed_observed_connection(name: str, target: str) -> None:
    readings = [read_flows(name, _read(name))]
    outcome = infer(readings, target)
    program = _lower(outcome.text)
    semantics = _semantics(outcome.observed, program, target)
    checked = 0
    for o, conn in connections(outcome.observed, target == "cilium"):
        if o.needed and o.key not in outcome.proposal.unwritten:
            assert semantics.decide(conn).allowed, str(conn)
            checked += 1
        if not o.needed and not o.dns:  # only ever dropped: not allowed by the proposal
            assert not semantics.decide(conn).allowed, str(conn)
    assert checked


@pytest.mark.parametrize(("name", "target"), CASES)
def test_proposal_denies_what_was_not_observed_except_dns(name: str, target: str) -> None:
    readings = [read_flows(name, _read(name))]
    outcome = infer(readings, target)
    observed = outcome.observed
    program = _lower(outcome.text)
    semantics = _semantics(observed, program, target)
    seen = {(o.client, o.server, o.port, o.protocol) for o in observed.observations if o.needed}
    pods = [p for p in semantics.topology.pods if p.namespace != "kube-system"]
    workload = {pod: observed.pods[(pod.namespace, pod.name)][0] for pod in semantics.topology.pods}
    ports = sorted({(o.port, o.protocol) for o in observed.observations} | {(1234, "TCP"), (53, "TCP"),
                                                                             (8080, "UDP")})
    probed = 0
    for src in pods:
        for dst in [*pods, *semantics.topology.externals]:
            for port, proto in ports:
                conn = Connection(src, dst, ir.Protocol(proto), port)
                server = workload[dst] if isinstance(dst, Pod) else None
                if server is not None and (workload[src], server, port, proto) in seen:
                    continue
                if server is None and any(c == workload[src] and not isinstance(s, Workload) and p == port
                                          and pr == proto for c, s, p, pr in seen):
                    continue  # an observed external on an observed port (addresses of one name share it)
                probed += 1
                assert not semantics.decide(conn).allowed, str(conn)
    # and from outside: nothing reaches an observed pod unless observed
    for ext in semantics.topology.externals:
        for dst in pods:
            for port, proto in ports:
                if any(s == workload[dst] and not isinstance(c, Workload) and p == port and pr == proto
                       for c, s, p, pr in seen):
                    continue
                assert not semantics.decide(Connection(ext, dst, ir.Protocol(proto), port)).allowed
    assert probed
    # DNS stays allowed for every workload of an isolated namespace, observed or not
    dns = next(p for p in semantics.topology.pods if p.namespace == "kube-system") if any(
        p.namespace == "kube-system" for p in semantics.topology.pods) else Pod("kube-system", "coredns",
                                                                                 {"k8s-app": "kube-dns"})
    for src in pods:
        for proto in ("UDP", "TCP"):
            assert semantics.decide(Connection(src, dns, ir.Protocol(proto), 53)).allowed, src


def test_audit_flows_are_allowed_and_noted_and_dropped_ones_listed() -> None:
    text = infer([read_flows("h", _read("hubble"))], "vanilla").text
    lines = text.split("\n")
    i = lines.index("  db accepts api on 5432")
    assert "AUDIT" in lines[i - 1]
    assert "#   shop/frontend -> shop/db on 5432: 1 flow observed, 1 DROPPED" in lines
    assert "shop/db accepts frontend" not in text


def test_fqdn_for_cilium_cidrs_otherwise_and_entities() -> None:
    cilium = infer([read_flows("h", _read("hubble"))], "cilium").text
    vanilla = infer([read_flows("h", _read("hubble"))], "vanilla").text
    assert "api connects to fqdn api.github.com on 443" in cilium
    assert "api accepts entity host on 8080" in cilium
    assert "api connects to entity kube-apiserver on 6443" in cilium
    assert "cidrs ext-api-github-com = 140.82.112.3/32, 140.82.112.4/32" in vanilla
    assert "api connects to ext-api-github-com on 443" in vanilla
    assert "cidrs ext-10-0-1-1 = 10.0.1.1/32" in vanilla  # the host, by its address


def test_output_is_deterministic_whatever_the_order_of_the_records() -> None:
    lines = _read("hubble").decode().strip().split("\n")
    first = infer([read_flows("h", _read("hubble"))], "cilium").text
    for seed in range(3):
        shuffled = lines[:]
        random.Random(seed).shuffle(shuffled)
        assert infer([read_flows("h", ("\n".join(shuffled) + "\n").encode())], "cilium").text == first


# ------------------------------------------------------------------------------------------ --against

PARTIAL = """namespace shop {
  service web = app=frontend
  service api = app.kubernetes.io/name=api
  isolate ingress
  api accepts web on 8080
}
"""


@pytest.mark.parametrize("target", ["vanilla", "cilium"])
def test_against_prints_only_what_is_missing_and_then_everything_is_allowed(target: str) -> None:
    readings = [read_flows("h", _read("hubble"))]
    base = _lower(PARTIAL)
    modules = [m for m in [parse.parse(SourceFile("<0>", PARTIAL))[0]] if m is not None]
    outcome = infer(readings, target, (base, modules))
    text = outcome.text
    assert "isolate" not in text.replace("# ", "")  # adds no isolation
    assert "api accepts web on 8080" not in text and "frontend" not in text.split("namespace shop")[1].split(
        "8443")[0].replace("shop/frontend", "")  # the flow it has is not repeated
    assert "web accepts ext-203-0-113-50 on 8443" in text  # the program's service name is reused
    combined = _lower(PARTIAL, text)
    semantics = _semantics(outcome.observed, combined, target)
    for o, conn in connections(outcome.observed, target == "cilium"):
        if o.needed and o.key not in outcome.proposal.unwritten:
            assert semantics.decide(conn).allowed, str(conn)
    # nothing the program left open is restricted: frontend's egress stays unrestricted
    frontend = next(p for p in semantics.topology.pods if p.name.startswith("frontend"))
    anywhere = Connection(frontend, next(iter(semantics.topology.externals)), ir.Protocol.TCP, 4444)
    assert semantics.decide(anywhere).allowed


def test_against_a_complete_program_prints_nothing() -> None:
    readings = [read_flows("h", _read("hubble"))]
    full = infer(readings, "vanilla").text
    modules = [m for m in [parse.parse(SourceFile("<0>", full))[0]] if m is not None]
    outcome = infer(readings, "vanilla", (_lower(full), modules))
    assert outcome.text == ""
    assert outcome.notes and "already allows all" in outcome.notes[0]


def test_against_with_a_client_restricted_egress_writes_connects_to() -> None:
    program = "namespace shop {\n  service api = app.kubernetes.io/name=api\n  isolate egress\n}\n"
    readings = [read_flows("h", _read("hubble"))]
    modules = [m for m in [parse.parse(SourceFile("<0>", program))[0]] if m is not None]
    text = infer(readings, "vanilla", (_lower(program), modules)).text
    assert "api connects to db on 5432" in text
    assert "db accepts api" not in text
    assert "allow dns for" in text  # the blocked DNS lookups


# ------------------------------------------------------------------------------------------ CLI


def test_cli_writes_the_proposal_and_reads_stdin(netdsl: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "proposal.seg"
    r = netdsl("infer", str(FIXTURES / "gadget.json"), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "mysql accepts wordpress on 3306" in out.read_text()
    r = netdsl("infer", "-", "--target", "cilium", input=_read("gadget"))
    assert r.exit_code == 0
    assert r.output == infer(read_inputs([str(FIXTURES / "gadget.json")]), "cilium").text
    r = netdsl("check", str(out))
    assert r.exit_code == 0, r.output


def test_cli_refuses_junk_with_file_and_line(netdsl: Callable[..., Result]) -> None:
    r = netdsl("infer", str(FIXTURES / "junk.json"))
    assert r.exit_code == 1
    assert "junk.json:1: a JSON object that is no flow record" in r.output
    r = netdsl("infer", str(FIXTURES / "malformed.json"))
    assert r.exit_code == 1
    assert "malformed.json:2:" in r.output and "Traceback" not in r.output
    r = netdsl("infer", str(FIXTURES / "nonexistent.json"))
    assert r.exit_code == 1 and "nonexistent.json" in r.output


def test_cli_against(netdsl: Callable[..., Result], tmp_path: Path) -> None:
    program = tmp_path / "app.seg"
    program.write_text(PARTIAL)
    r = netdsl("infer", str(FIXTURES / "hubble.json"), "--against", str(program))
    assert r.exit_code == 0, r.output
    assert r.output.startswith("# Missing from the program")
    combined = tmp_path / "missing.seg"
    combined.write_text(r.output)
    assert netdsl("check", str(program), str(combined)).exit_code == 0


def test_json_array_input_is_read_like_lines() -> None:
    records = [json.loads(line) for line in _read("calico").decode().strip().split("\n")]
    as_array = read_flows("a", json.dumps(records).encode())
    as_lines = read_flows("l", _read("calico"))
    assert [(f.port, f.verdict) for f in as_array.flows] == [(f.port, f.verdict) for f in as_lines.flows]
