"""Near-linear cost in every dimension of input size (issue 9, class 5), checked without timing.

Each test runs a command in-process on benchmarks/scale.py's generated program at N and 4N under
cProfile and compares the number of Python function calls: linear work grows ~4x, quadratic ~16x.
The bound (GROWTH) sits between them, so a return to quadratic behaviour fails deterministically
whatever the machine's load. A warm-up run first keeps one-off work (the grammar) out of the count.
"""

from __future__ import annotations

import cProfile
import importlib.util
import ipaddress
import pstats
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from netdsl import ir
from netdsl.backends.calico import exact_nets
from netdsl.cli import main
from netdsl.ir import Protocol
from netdsl.netset import NetSet, PortSet, net_set_of
from netdsl.semantics.universe import ABSENT, MAX_DISJOINT_KEYS, Space, example, refine

ROOT = Path(__file__).resolve().parent.parent
GROWTH = 6.0  # of the call count from N to 4N: linear ~4, quadratic ~16


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_bench", ROOT / "benchmarks" / "scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scale = _bench()


def _run(tmp: Path, dim: str, command: str, n: int) -> tuple[int, str]:
    a, b = tmp / f"{dim}{n}a.seg", tmp / f"{dim}{n}b.seg"
    a.write_text(scale.program(dim, n))
    b.write_text(scale.program(dim, n, changed=True))
    profile = cProfile.Profile()
    profile.enable()
    result = CliRunner().invoke(main, scale.args_for(command, a, b))
    profile.disable()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return pstats.Stats(profile).total_calls, result.output  # type: ignore[attr-defined]


def growth(tmp: Path, dim: str, command: str, n: int) -> float:
    _run(tmp, dim, command, 2)  # warm-up: grammar, caches
    small, _ = _run(tmp, dim, command, n)
    large, _ = _run(tmp, dim, command, 4 * n)
    return large / small


@pytest.mark.parametrize("command", ["explain", "compile-calico", "compile-vanilla"])
def test_except_blocks_cost_linear(tmp_path: Path, command: str) -> None:
    # every address class was tested against every except block (1,000 excepts: explain 18 s)
    assert growth(tmp_path, "excepts", command, 60) < GROWTH


def test_net_set_membership() -> None:
    nets = [ipaddress.ip_network(t) for t in ("10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24", "fd00::/64")]
    s = NetSet(nets)
    for text, inside in [("10.0.0.0", True), ("10.0.1.255", True), ("10.0.2.0", False), ("10.0.3.7", True),
                         ("9.255.255.255", False), ("10.0.4.0", False), ("fd00::1", True), ("fd01::", False)]:
        assert (ipaddress.ip_address(text) in s) is inside, text
    assert "10.0.0.1" not in s  # not an address object
    assert not NetSet(()) and s
    texts = ["192.0.2.0/25", "192.0.2.128/25"]
    assert net_set_of(texts) is net_set_of(texts)  # parsed once per list
    assert ipaddress.ip_address("192.0.2.200") in net_set_of(texts)


@pytest.mark.parametrize("command", ["check", "explain", "compile-calico"])
def test_port_list_cost_linear(tmp_path: Path, command: str) -> None:
    # every port class was tested against every listed port, and the port list hashed per lookup
    # (16,000 ports: check 38 s)
    assert growth(tmp_path, "ports", command, 60) < GROWTH


def test_port_set_membership() -> None:
    s = PortSet([(Protocol.TCP, 80, None), (Protocol.TCP, 8000, 8080), (None, 53, None), (Protocol.UDP, None, None)])
    for protocol, port, inside in [(Protocol.TCP, 80, True), (Protocol.TCP, 81, False), (Protocol.TCP, 8080, True),
                                   (Protocol.TCP, 8081, False), (Protocol.SCTP, 53, True),
                                   (Protocol.UDP, 9, True), (Protocol.SCTP, 80, False)]:
        assert s.contains(protocol, port) is inside, (protocol, port)
    assert PortSet([(None, None, None)]).contains(Protocol.SCTP, 1)


@pytest.mark.parametrize("command", ["check", "compile-vanilla", "explain"])
def test_selector_requirements_cost_linear(tmp_path: Path, command: str) -> None:
    # the outside classes of a selector with n requirements carried n*n/2 label constraints
    # (16,000 requirements: compile 43 s; 4,000: 1.7 GB)
    assert growth(tmp_path, "requirements", command, 60) < GROWTH


def test_large_selector_classes_stay_small_and_cover() -> None:
    # past MAX_DISJOINT_KEYS the outside parts restrict one key each: total size linear, and every
    # part is entirely outside the selector, and together with the inside part they cover the space
    n = 200
    selector = ir.Selector.of([ir.Requirement(f"k{i}", ir.Operator.IN, ("v",)) for i in range(n)])
    space = Space()
    for i in range(n):
        space.mention(f"k{i}", "v")
    constraint = space.constraint(selector)
    assert constraint is not None
    cells = refine([{}], constraint, space)
    assert len(cells) == n + 1
    assert sum(len(c) for c in cells) <= n + MAX_DISJOINT_KEYS * MAX_DISJOINT_KEYS + 2 * n
    inside = [c for c in cells if selector.matches(example(c, space))]
    assert len(inside) == 1
    for i in range(n):  # a pod failing only requirement i lies in some outside part
        labels = {f"k{j}": "v" for j in range(n) if j != i}
        assert any(all(_atom(labels, key) in atoms for key, atoms in c.items()) for c in cells if c is not inside[0])


def _atom(labels: dict[str, str], key: str) -> str:
    return labels.get(key, ABSENT)


@pytest.mark.parametrize("command", ["compile-vanilla", "diff"])
def test_services_cost_linear(tmp_path: Path, command: str) -> None:
    assert growth(tmp_path, "services", command, 50) < GROWTH


def test_pod_classes_are_named_from_their_own_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every pod class was named by testing it against every service of every namespace: selector tests
    # while building the class topology grew with services x services
    from netdsl.compiler import check
    from netdsl.semantics.universe import build

    counted = [0]
    original = ir.Selector.matches

    def matches(self: ir.Selector, labels: dict[str, str]) -> bool:
        counted[0] += 1
        return original(self, labels)

    def tests(n: int) -> int:
        path = tmp_path / f"s{n}.seg"
        path.write_text(scale.program("services", n))
        program = check([str(path)]).program
        assert program is not None
        counted[0] = 0
        with monkeypatch.context() as m:
            m.setattr(ir.Selector, "matches", matches)
            build(program)
        return counted[0]

    assert tests(400) / tests(100) < GROWTH


def test_huge_class_topology_is_refused_early(tmp_path: Path) -> None:
    # 17 independent labels: 2**17 pod classes. Refused as a `limit` error with a hint - no traceback,
    # and before the classes are built (the refinement stops at the limit): the call count stays small
    lines = ["namespace big {", "  isolate", "  allow dns"]
    lines += [f"  service s{i} = k{i}=x" for i in range(17)]
    lines += [f"  s{i} accepts s{i - 1} on 80" for i in range(1, 17)]
    path = tmp_path / "huge.seg"
    path.write_text("\n".join([*lines, "}"]) + "\n")
    for args in (["compile", str(path)], ["explain", str(path)], ["diff", str(path), str(path)]):
        profile = cProfile.Profile()
        profile.enable()
        result = CliRunner().invoke(main, args)
        profile.disable()
        assert result.exit_code == 1, (args, result.output)
        assert isinstance(result.exception, SystemExit)
        assert "more than 60000 endpoint classes" in result.output and "hint:" in result.output
        assert pstats.Stats(profile).total_calls < 5_000_000  # type: ignore[attr-defined]


def test_exact_nets_is_the_complement_and_linear() -> None:
    # a network set has no except: the CIDR minus its excepts as CIDRs, computed from the gaps between
    # the sorted excepts (cutting each except out of every piece so far was quadratic)
    rng = random.Random(7)
    for _ in range(200):
        cidr = ipaddress.ip_network(f"10.{rng.randrange(4)}.0.0/16")
        excepts = tuple(
            ipaddress.ip_network(f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(0, 256, 16)}"
                                 f"/{rng.choice([20, 24, 28])}", strict=False)
            for _ in range(rng.randrange(6)))
        got = [ipaddress.ip_network(t) for t in exact_nets(ir.CidrPeer(cidr, excepts))]
        inside = [e for e in excepts if e.subnet_of(cidr)]
        for probe in range(0, 65536, 7):
            address = cidr.network_address + probe
            expected = not any(address in e for e in inside)
            assert any(address in n for n in got) is expected, (cidr, excepts, address)
    many = tuple(ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/25") for i in range(0, 4000, 2))
    calls = _calls(lambda: exact_nets(ir.CidrPeer(ipaddress.ip_network("10.0.0.0/8"), many)))
    fewer = _calls(lambda: exact_nets(ir.CidrPeer(ipaddress.ip_network("10.0.0.0/8"), many[:500])))
    assert calls / fewer < 6


def _calls(run: Callable[[], object]) -> int:
    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    calls: int = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return calls


@pytest.mark.parametrize("command", ["compile-calico", "diff"])
def test_selector_requirements_cost_linear_on_calico_and_diff(tmp_path: Path, command: str) -> None:
    # host endpoints (one per pod label class) all hashed alike; pod classes were named with a copy of
    # every name taken; the program's rules and peers were matched against a pod once per connection
    assert growth(tmp_path, "requirements", command, 60) < GROWTH


def test_whole_matrix_past_its_limit_asks_for_from_or_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # explain's whole matrix is classes x classes characters: past MAX_MATRIX_CELLS it is refused with a
    # hint (a 4,000-requirement selector: 12,013 classes, 28 s and 3 GB of text before)
    import netdsl.cli

    path = tmp_path / "p.seg"
    path.write_text(scale.program("requirements", 20))
    monkeypatch.setattr(netdsl.cli, "MAX_MATRIX_CELLS", 100)
    result = CliRunner().invoke(main, ["explain", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "more than explain shows (100 cells)" in result.output and "hint: give --from or --to" in result.output
    assert CliRunner().invoke(main, ["explain", str(path), "--from", "app/web"]).exit_code == 0
