"""`netdsl graph`: goldens for the three formats, each format checked by a real reader (Mermaid's own
parser under node, Graphviz `dot`, headless Chromium), and the behaviours a user sees: isolation,
deny edges, HTTP and FQDN labels, filters, collapse, a target's view, `diff --graph`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import Result

from netdsl.analysis import analyse
from netdsl.compiler import check_with_lints
from netdsl.graph import (
    Options,
    build_graph,
    edge_text,
    group_title,
    mermaid_text,
    node_title,
    render_dot,
    render_mermaid,
)
from tests.conftest import REPO, in_ci, require_tool

GOLDEN = REPO / "tests" / "golden" / "graph"
UPDATE = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"
EXAMPLES = [  # (example, target or None, golden stem)
    ("examples/three-tier.seg", None, "three-tier"),
    ("examples/cilium-l7-fqdn.seg", "cilium", "cilium-l7-fqdn.cilium"),
    ("examples/calico-tiers.seg", "calico", "calico-tiers.calico"),
]
SUFFIX = {"mermaid": "mmd", "dot": "dot", "html": "html"}


def _graph(netdsl: Callable[..., Result], example: str, target: str | None, fmt: str, *extra: str) -> str:
    args = ["graph", example, "--format", fmt, *extra, *(["--target", target] if target else [])]
    result = netdsl(*args)
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the goldens name the examples by their relative paths


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "html"])
@pytest.mark.parametrize(("example", "target", "stem"), EXAMPLES)
def test_golden(netdsl: Callable[..., Result], example: str, target: str | None, stem: str, fmt: str) -> None:
    out = _graph(netdsl, example, target, fmt)
    assert out == _graph(netdsl, example, target, fmt), "the output must be deterministic"
    path = GOLDEN / f"{stem}.{SUFFIX[fmt]}"
    if UPDATE and (not path.exists() or path.read_text(encoding="utf-8") != out):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(out, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with NETDSL_UPDATE_GOLDEN=1"
    assert out == path.read_text(encoding="utf-8"), f"{example} no longer draws {path.name}"


# ------------------------------------------------------------------------------------------ what it shows


def test_three_tier_shows_the_flows_isolation_and_dns(netdsl: Callable[..., Result]) -> None:
    out = _graph(netdsl, "examples/three-tier.seg", None, "mermaid")
    assert 'subgraph g1["production (isolated)"]' in out
    ids = dict(re.findall(r'(n\d+)\["([^"]+)"\]', out))
    by_name = {v: k for k, v in ids.items()}
    assert f'{by_name["frontend"]} -->|"8080"| {by_name["backend"]}' in out
    assert f'{by_name["backend"]} -->|"5432"| {by_name["database"]}' in out
    assert f'{by_name["database"]} -->|"53, 53/udp"| {by_name["k8s-app=kube-dns"]}' in out
    # the seed's denied pairs have no edge
    assert f'{by_name["frontend"]} -->|"5432"| {by_name["database"]}' not in out
    assert not re.search(rf'{by_name["database"]} -->\|[^|]*\| {by_name["backend"]}\b', out)
    assert "not drawn (--all-edges draws them)" in out


def test_deny_statement_is_its_own_edge_with_the_statement(netdsl: Callable[..., Result]) -> None:
    out = _graph(netdsl, "examples/calico-tiers.seg", "calico", "mermaid")
    deny = [line for line in out.splitlines() if "-.->" in line]
    assert len(deny) == 1
    assert '["deny 80: examples/calico-tiers.seg:14: all pods denies from cidr' in deny[0].replace('|"', '["')
    index = [line for line in out.splitlines() if re.search(r" -\.?->\|", line)].index(deny[0])
    assert f"linkStyle {index} stroke:#d00" in out
    assert '(["cidr 192.0.2.0/24, cidr 203.0.113.0/24"])' in out


def test_http_and_fqdn_labels_in_the_cilium_view(netdsl: Callable[..., Result]) -> None:
    out = _graph(netdsl, "examples/cilium-l7-fqdn.seg", "cilium", "mermaid")
    assert '-->|"8080 GET /api/.*; POST /api/orders"|' in out
    assert '(["fqdn *.amazonaws.com, fqdn api.stripe.com"])' in out
    assert '-->|"443"|' in out


def test_target_that_cannot_express_the_program_is_an_error(netdsl: Callable[..., Result]) -> None:
    result = netdsl("graph", "examples/calico-tiers.seg", "--target", "vanilla")
    assert result.exit_code == 1
    assert "cannot express policy tiers" in result.stderr
    assert result.stdout == ""


def test_input_errors_are_reported_without_traceback(netdsl: Callable[..., Result]) -> None:
    result = netdsl("graph", "-", input="namespace a {\n  service = \n}\n")
    assert result.exit_code == 1
    assert "error" in result.stderr and "Traceback" not in result.stderr


def test_service_filter_keeps_neighbours_only(netdsl: Callable[..., Result]) -> None:
    out = _graph(netdsl, "examples/three-tier.seg", None, "mermaid", "--service", "backend")
    labels = set(re.findall(r'n\d+\["([^"]+)"\]', out))
    assert labels == {"frontend", "backend", "database", "k8s-app=kube-dns"}
    edges = re.findall(r"\|\"([^\"]+)\"\|", out)
    assert sorted(edges) == ["53, 53/udp", "5432", "8080"]  # frontend's own DNS edge is not about backend


def test_namespace_filter_and_collapse(netdsl: Callable[..., Result]) -> None:
    out = _graph(netdsl, "examples/three-tier.seg", None, "mermaid", "--namespace", "ingress-nginx")
    assert set(re.findall(r'n\d+\["([^"]+)"\]', out)) == {"other pods", "frontend"}
    collapsed = _graph(netdsl, "examples/three-tier.seg", None, "mermaid", "--collapse", "production")
    assert '["production (4 classes) (isolated)"]' in collapsed
    assert "backend" not in collapsed
    assert '-->|"80"|' in collapsed and '-->|"53, 53/udp"|' in collapsed


def test_large_namespace_collapses_by_itself(netdsl: Callable[..., Result], tmp_path: Path) -> None:
    services = "\n".join(f"  service s{i} = app=s{i}\n  s{i} accepts s{i - 1} on {8000 + i}" for i in range(1, 16))
    source = tmp_path / "big.seg"
    source.write_text(f"namespace big {{\n  isolate\n  service s0 = app=s0\n{services}\n}}\n", encoding="utf-8")
    out = _graph(netdsl, str(source), None, "mermaid")
    assert "namespace big has 17 classes of pods: drawn as one node (--namespace big shows them)" in out
    assert "s7" not in out
    full = _graph(netdsl, str(source), None, "mermaid", "--namespace", "big")
    assert '["s7"]' in full and '-->|"8007"|' in full


def test_output_file(netdsl: Callable[..., Result], tmp_path: Path) -> None:
    target = tmp_path / "g.dot"
    result = netdsl("graph", "examples/three-tier.seg", "--format", "dot", "-o", str(target))
    assert result.exit_code == 0 and result.stdout == ""
    assert target.read_text(encoding="utf-8").startswith("digraph netdsl {")


def test_diff_markdown_graph(netdsl: Callable[..., Result], tmp_path: Path) -> None:
    old = (REPO / "examples/three-tier.seg").read_text(encoding="utf-8")
    new = old.replace("database accepts backend on 5432", "database accepts backend on 5432, 5433")
    new = new.replace("frontend accepts namespace ingress-nginx on 80", "")
    (tmp_path / "old.seg").write_text(old, encoding="utf-8")
    (tmp_path / "new.seg").write_text(new, encoding="utf-8")
    result = netdsl("diff", str(tmp_path / "old.seg"), str(tmp_path / "new.seg"), "--format", "markdown", "--graph")
    block = result.stdout.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert '-->|"+ 5433/tcp"|' in block and "stroke:#1a7f37" in block
    assert '-.->|"- 80/tcp"|' in block and "stroke:#d00" in block
    plain = netdsl("diff", str(tmp_path / "old.seg"), str(tmp_path / "new.seg"), "--format", "markdown")
    assert "```mermaid" not in plain.stdout
    wrong = netdsl("diff", str(tmp_path / "old.seg"), str(tmp_path / "new.seg"), "--graph")
    assert wrong.exit_code == 2


# ------------------------------------------------------------------------------------------ Mermaid


MERMAID_LINE = re.compile(
    r'(flowchart LR|  %% .*|  subgraph g\d+\["[^"]*"\]|    n\d+\["[^"]*"\]|  n\d+(\["[^"]*"\]|\(\["[^"]*"\]\))|  end'
    r'|  n\d+ (-->|-\.->)\|"[^"]*"\| n\d+|  linkStyle \d+ [a-z:#0-9,-]+|  classDef \w+ [a-z:#0-9 ,-]+'
    r'|  class (g|n)\d+(,n\d+)* \w+)')


def _structure(text: str) -> None:
    """The strict check used everywhere: each line one known statement, every edge between defined
    nodes, every subgraph closed, linkStyle indexes within the edges."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    for line in lines:
        assert MERMAID_LINE.fullmatch(line), line
    defined = set(re.findall(r"^\s+(n\d+)[\[(]", text, re.M))
    edges = re.findall(r"^  (n\d+) -\.?->\|\"[^\"]*\"\| (n\d+)$", text, re.M)
    assert {n for e in edges for n in e} <= defined
    assert text.count("  subgraph ") == len(re.findall(r"^  end$", text, re.M))
    assert all(int(k) < len(edges) for k in re.findall(r"linkStyle (\d+)", text))


@pytest.mark.parametrize(("example", "target", "stem"), EXAMPLES)
def test_mermaid_structure(netdsl: Callable[..., Result], example: str, target: str | None, stem: str) -> None:
    _structure(_graph(netdsl, example, target, "mermaid"))


def test_mermaid_text_escapes_what_mermaid_reads() -> None:
    text = mermaid_text('GET /a"b#c<d>&e`f\nend')
    assert not set('"<>&`\n') & set(text)
    assert text == "GET /a#34;b#35;c#60;d#62;#38;e#96;f#10;end"


MERMAID_VERSION = "11.17.2"
JSDOM_VERSION = "29.1.1"


def _mermaid_checker() -> Path:
    """A cached node project with mermaid (its own flowchart parser) and jsdom (the DOM it needs at
    import); skipped without node/npm or when npm cannot install, a failure in CI."""
    require_tool("node")
    npm = require_tool("npm")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = cache / "netdsl" / f"mermaid-{MERMAID_VERSION}"
    if not (home / "node_modules" / "mermaid").is_dir() or not (home / "node_modules" / "jsdom").is_dir():
        home.mkdir(parents=True, exist_ok=True)
        (home / "package.json").write_text('{"name": "netdsl-mermaid-check", "private": true}\n', encoding="utf-8")
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", f"mermaid@{MERMAID_VERSION}",
                               f"jsdom@{JSDOM_VERSION}"], cwd=home, capture_output=True, text=True, timeout=600,
                              check=False)
        if done.returncode != 0:
            message = f"npm could not install mermaid: {done.stderr[-500:]}"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
    shutil.copyfile(REPO / "tests" / "mermaid_check.mjs", home / "check.mjs")
    return home


def _parse_mermaid(home: Path, text: str, tmp_path: Path) -> dict[str, list[dict[str, object]]]:
    source = tmp_path / "g.mmd"
    source.write_text(text, encoding="utf-8")
    done = subprocess.run(["node", str(home / "check.mjs"), str(source)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"mermaid does not parse it: {done.stderr}\n{text}"
    parsed: dict[str, list[dict[str, object]]] = json.loads(done.stdout)
    return parsed


def test_mermaid_parses_with_mermaid(netdsl: Callable[..., Result], tmp_path: Path) -> None:
    home = _mermaid_checker()
    for example, target, _ in EXAMPLES:
        text = _graph(netdsl, example, target, "mermaid")
        parsed = _parse_mermaid(home, text, tmp_path)
        result = check_with_lints([example])
        assert result.program is not None
        analysis = analyse(result, [target] if target else [])
        graph = build_graph(result.program, analysis.topology, analysis.probes, analysis.evaluators,
                            target or "program", Options(), example)
        # every label reaches Mermaid as written (escapes decoded), every edge between the right nodes
        assert {v["id"]: v["text"] for v in parsed["vertices"]} == {
            n.id: node_title(n, graph.groups.get(n.group)) for n in graph.nodes}
        assert [(e["start"], e["end"], e["text"]) for e in parsed["edges"]] == [
            (e.src, e.dst, edge_text(e)) for e in graph.edges]
        assert [s["title"] for s in parsed["subgraphs"]] == [group_title(g) for g in graph.groups.values()]
    # a hostile label survives intact
    nasty = 'GET /a|b[c]{d}(e);%% end subgraph --> "q" #x <b>&amp; `t` \\ é'
    text = f'flowchart LR\n  n1["{mermaid_text(nasty)}"]\n  n1 -->|"{mermaid_text(nasty)}"| n1\n'
    parsed = _parse_mermaid(home, text, tmp_path)
    assert parsed["vertices"][0]["text"] == nasty and parsed["edges"][0]["text"] == nasty


def test_diff_mermaid_parses_with_mermaid(tmp_path: Path) -> None:
    from netdsl.graph import render_diff_mermaid

    home = _mermaid_checker()
    text = render_diff_mermaid([("a/x", "b/y", "80/tcp")], [("b/y", 'c"', "1-52/tcp, 53/udp")])
    parsed = _parse_mermaid(home, text, tmp_path)
    assert [e["text"] for e in parsed["edges"]] == ["+ 80/tcp", "- 1-52/tcp, 53/udp"]


# ------------------------------------------------------------------------------------------ DOT


@pytest.mark.parametrize(("example", "target", "stem"), EXAMPLES)
def test_dot_lays_out_with_graphviz(netdsl: Callable[..., Result], example: str, target: str | None, stem: str,
                                    tmp_path: Path) -> None:
    dot = require_tool("dot")
    text = _graph(netdsl, example, target, "dot")
    done = subprocess.run([dot, "-Tsvg"], input=text, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", f"graphviz warns: {done.stderr}"
    root = ElementTree.fromstring(done.stdout)  # the layout is valid XML with every node's label
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    labels = [label.replace('\\"', '"') for label in re.findall(r'^\s+n\d+ \[label="((?:[^"\\]|\\.)*)"', text, re.M)]
    assert labels and set(labels) <= texts


def test_dot_escapes_quotes_and_backslashes() -> None:
    from netdsl.graph import dot_text

    assert dot_text('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_render_functions_agree_with_the_cli(netdsl: Callable[..., Result]) -> None:
    result = check_with_lints(["examples/three-tier.seg"])
    assert result.program is not None
    analysis = analyse(result, [])
    graph = build_graph(result.program, analysis.topology, analysis.probes, analysis.evaluators, "program",
                        Options(), "examples/three-tier.seg")
    assert render_mermaid(graph) == _graph(netdsl, "examples/three-tier.seg", None, "mermaid")
    assert render_dot(graph) == _graph(netdsl, "examples/three-tier.seg", None, "dot")


# ------------------------------------------------------------------------------------------ HTML

# Collects every uncaught error and console.error into an attribute that --dump-dom shows.
ERROR_TRAP = ("<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push("
              "String(e.message))});var __ce=console.error;console.error=function(){window.__errors.push("
              "[].join.call(arguments,' '))};window.addEventListener('load',function(){document.documentElement"
              ".setAttribute('data-errors',JSON.stringify(window.__errors))});</script>")


def _chromium(args: list[str], page: Path) -> str:
    chromium = require_tool("chromium")
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           *args, page.as_uri()], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_html_is_self_contained(netdsl: Callable[..., Result]) -> None:
    page = _graph(netdsl, "examples/three-tier.seg", None, "html")
    without_svg_namespace = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_svg_namespace and "https://" not in without_svg_namespace
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\((?!#)", page)
    cells = json.loads(re.search(r'<script type="application/json" id="cells">(.*?)</script>', page, re.S)
                       .group(1))  # type: ignore[union-attr]
    frontend_backend = [v for v in cells.values() if v.startswith("production/frontend -> production/backend")]
    assert len(frontend_backend) == 1
    assert "examples/three-tier.seg:20: backend accepts frontend on 8080" in frontend_backend[0]
    assert "ALLOWED" in frontend_backend[0] and "DENIED" in frontend_backend[0]


@pytest.mark.parametrize(("example", "target", "stem"), EXAMPLES)
def test_html_opens_in_chromium_without_errors(netdsl: Callable[..., Result], example: str, target: str | None,
                                               stem: str, tmp_path: Path) -> None:
    page = tmp_path / f"{stem}.html"
    page.write_text(_graph(netdsl, example, target, "html").replace("<head>", "<head>" + ERROR_TRAP, 1),
                    encoding="utf-8")
    dom = _chromium(["--dump-dom"], page)
    errors = re.search(r'data-errors="([^"]*)"', dom)
    assert errors is not None, "the page did not finish loading"
    assert errors.group(1) == "[]", errors.group(1)
    assert "<svg" in dom and dom.count('class="node"') >= 3 and 'class="edge"' in dom
    assert '<table class="matrix">' in dom
    shot = tmp_path / "shot.png"
    _chromium(["--window-size=1200,900", f"--screenshot={shot}"], page)
    assert shot.stat().st_size > 10_000  # a picture, not a blank page
