"""`netdsl diff OLD NEW`: connections added and removed; refactors change nothing; git revisions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

Run = Callable[..., Result]

OLD = """\
namespace production {
  isolate
  service frontend = tier=frontend
  service backend  = tier=backend
  service database = tier=database
  group tiers = frontend, backend, database
  allow dns for tiers
  frontend accepts namespace ingress-nginx on 80
  backend  accepts frontend on 8080
  database accepts backend on 5432
}
"""
# The same policy: services and the group renamed, statements reordered and split over two files.
REFACTORED = {
    "services.seg": """\
namespace production {
  service web = tier=frontend
  service api = tier=backend
  service db  = tier=database
  group everything = web, api, db
  db accepts api on 5432
}
""",
    "flows.seg": """\
namespace production {
  api accepts web on 8080
  allow dns for everything
  web accepts namespace ingress-nginx on 80
  isolate
}
""",
}
# A real change: the database also accepts 5433, frontend -> backend is gone, frontend may call out.
CHANGED = OLD.replace("on 5432", "on 5432, 5433").replace("  backend  accepts frontend on 8080\n", "").replace(
    "  allow dns", "  frontend connects to cidr 203.0.113.0/24 on 443\n  allow dns")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)
    Path("old.seg").write_text(OLD)
    Path("new").mkdir()
    for name, text in REFACTORED.items():
        Path("new", name).write_text(text)
    Path("changed.seg").write_text(CHANGED)
    return tmp_path


def test_a_refactor_changes_nothing(netdsl: Run, work: Path) -> None:
    r = netdsl("diff", "old.seg", "new")
    assert r.exit_code == 0, r.stderr
    assert "No change: both allow exactly the same connections" in r.stdout
    assert "+ " not in r.stdout and "- " not in r.stdout
    assert netdsl("diff", "old.seg", "new", "--exit-code").exit_code == 0
    assert "**No change**" in netdsl("diff", "old.seg", "new", "--format", "markdown").stdout
    data = json.loads(netdsl("diff", "old.seg", "new", "--format", "json").stdout)
    assert data["changed"] is False and data["added"] == data["removed"] == []
    # renamed pods are one pod in the merged topology, named as in NEW
    assert "production/web" in data["endpoints"] and "production/frontend" not in data["endpoints"]


def test_added_and_removed_connections(netdsl: Run, work: Path) -> None:
    r = netdsl("diff", "old.seg", "changed.seg")
    assert r.exit_code == 0
    out = r.stdout
    assert "+ production/backend -> production/database  5433/tcp\n" in out
    assert "    now: changed.seg:10: database accepts backend on 5432, 5433\n" in out
    assert "+ production/frontend -> 203.0.113.0  443/tcp\n" in out
    assert "- production/frontend -> production/backend  8080/tcp\n" in out
    assert "    was: old.seg:9: backend accepts frontend on 8080\n" in out
    assert "    now: changed.seg:2:3: isolate egress\n" in out
    assert "2 connections added, 1 removed (in every cluster:" in out  # 5433; 443 to the CIDR's addresses
    # the other way round
    back = netdsl("diff", "changed.seg", "old.seg").stdout
    assert "- production/backend -> production/database  5433/tcp" in back
    assert netdsl("diff", "old.seg", "changed.seg", "--exit-code").exit_code == 1


def test_markdown_and_json(netdsl: Run, work: Path) -> None:
    md = netdsl("diff", "old.seg", "changed.seg", "--format", "markdown").stdout
    assert md.startswith("### netdsl: connectivity changes from `old.seg` to `changed.seg`")
    assert "| | from | to | ports | where | why |" in md
    assert "| **added** | `production/backend` | `production/database` | 5433/tcp | - | " \
           "`changed.seg:10: database accepts backend on 5432, 5433 (other half)`" in md
    assert "| removed | `production/frontend` | `production/backend` | 8080/tcp | - | was: `old.seg:9:" in md
    data = json.loads(netdsl("diff", "old.seg", "changed.seg", "--format", "json").stdout)
    assert data["changed"] is True
    assert any({"from": "production/backend", "to": "production/database", "ports": ["5433/tcp"]}.items() <=
               c.items() for c in data["added"])
    assert [c["ports"] for c in data["removed"]] == [["8080/tcp"]]


def git(*args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false",
                    *args], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_revisions(netdsl: Run, work: Path) -> None:
    git("init", "-q", "-b", "main")
    Path("policies").mkdir()
    shutil.move("old.seg", "policies/app.seg")
    Path("notes.txt").write_text("not a program")
    git("add", "policies", "notes.txt")
    git("commit", "-q", "-m", "v1")
    shutil.copy("changed.seg", "policies/app.seg")
    git("add", "policies")
    git("commit", "-q", "-m", "v2")
    r = netdsl("diff", "HEAD~1", "HEAD")
    assert r.exit_code == 0, r.stderr
    assert "+ production/backend -> production/database  5433/tcp" in r.stdout
    assert "now: HEAD:policies/app.seg:10: database accepts backend on 5432, 5433" in r.stdout
    assert "was: HEAD~1:policies/app.seg:9: backend accepts frontend on 8080" in r.stdout
    # REV:subdir, a revision against the working tree
    assert "5433/tcp" in netdsl("diff", "main~1:policies", "main:policies").stdout
    assert "No change" in netdsl("diff", "HEAD", "policies").stdout
    assert "No change" in netdsl("diff", "HEAD:policies/app.seg", "changed.seg").stdout
    # a revision without programs, a revision that does not exist
    r = netdsl("diff", "HEAD:nowhere", "policies")
    assert r.exit_code == 1 and "HEAD:nowhere: no .seg files at this revision" in r.stderr
    r = netdsl("diff", "no-such-rev", "policies")
    assert r.exit_code == 1 and "no-such-rev: no such file or directory, and not a git revision" in r.stderr


def test_errors(netdsl: Run, work: Path) -> None:
    Path("broken.seg").write_text("namespace production {\n  isolate\n")
    r = netdsl("diff", "old.seg", "broken.seg")
    assert r.exit_code == 1 and "broken.seg:" in r.stderr and "Traceback" not in r.stderr
    r = netdsl("diff", "-", "-", input="")
    assert r.exit_code == 1 and "only one of OLD and NEW" in r.stderr
    r = netdsl("diff", "-", "changed.seg", input=CHANGED)
    assert r.exit_code == 0 and "No change" in r.stdout


def test_over_a_cluster_topology(netdsl: Run, work: Path) -> None:
    Path("cluster.yaml").write_text("""\
kind: Deployment
apiVersion: apps/v1
metadata: {name: db-0, namespace: production}
spec: {template: {metadata: {labels: {tier: database}}, spec: {containers: [{name: a, image: a}]}}}
---
kind: Pod
apiVersion: v1
metadata: {name: be, namespace: production, labels: {tier: backend}}
""")
    r = netdsl("diff", "old.seg", "changed.seg", "--topology", "cluster.yaml")
    assert r.exit_code == 0, r.stderr
    assert "+ production/be -> production/db-0  5433/tcp" in r.stdout
    assert "production/backend" not in r.stdout


# Names git quotes in its default output ("core.quotePath"): non-ASCII, a tab, a newline, quotes, a
# backslash, and a name that is not UTF-8. Issue 9: a commit adding such a file was "No change".
ODD_NAMES = ["café.seg", "tab\there.seg", "new\nline.seg", 'quote"d.seg', "back\\slash.seg", " space .seg"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
@pytest.mark.parametrize("name", [*ODD_NAMES, b"latin1-caf\xe9.seg"], ids=repr)
def test_git_revisions_read_files_git_would_quote(netdsl: Run, work: Path, name: str | bytes) -> None:
    git("init", "-q", "-b", "main")
    git("-c", "core.quotePath=true", "commit", "-q", "--allow-empty", "-m", "empty")
    Path("policies").mkdir()
    shutil.copy("old.seg", "policies/base.seg")
    git("add", "policies")
    git("commit", "-q", "-m", "v1")
    # the new file opens a connection: the difference must show it
    odd = Path(os.fsdecode(b"policies/" + (name if isinstance(name, bytes) else os.fsencode(name))))
    odd.write_text("namespace production {\n  database accepts frontend on 9999\n}\n")
    git("add", "policies")
    git("commit", "-q", "-m", "v2")
    r = netdsl("diff", "HEAD~1", "HEAD")
    assert r.exit_code == 0, r.stderr
    assert "+ production/frontend -> production/database  9999/tcp" in r.stdout, r.stdout
    assert "No change" not in r.stdout
    # the statement that decides is shown with the file's name, escaped for the terminal
    shown = r.stdout.split("now: HEAD:policies/")[1].split(":2:")[0]
    assert shown.isprintable(), shown
    assert "No change" in netdsl("diff", "HEAD", "policies").stdout
    assert "No change" in netdsl("diff", "HEAD~1:policies", "HEAD~1").stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_symbolic_links_are_read_once_or_reported(netdsl: Run, work: Path) -> None:
    git("init", "-q", "-b", "main")
    Path("policies").mkdir()
    shutil.move("old.seg", "policies/app.seg")
    os.symlink("app.seg", "policies/same.seg")
    os.symlink("../elsewhere.seg", "policies/outside.seg")
    git("add", "policies")
    git("commit", "-q", "-m", "v1")
    r = netdsl("diff", "HEAD:policies", "changed.seg")
    assert r.exit_code == 1
    assert "HEAD:policies/outside.seg: a symbolic link to a file this revision does not list" in r.stderr
    Path("policies/outside.seg").unlink()
    git("rm", "-q", "--cached", "policies/outside.seg")
    git("commit", "-q", "-m", "v2")
    r = netdsl("diff", "HEAD:policies", "policies/app.seg")
    assert r.exit_code == 0 and "No change" in r.stdout, r.stderr


# ---- grouping: one change is one line, however many namespace label sets and pod classes it spans

PORT_OLD = """\
namespace production {
  isolate
  service api      = app=api
  service backend  = tier=backend
  service frontend = app=frontend
  api accepts frontend on 8080
  backend accepts pods[role=monitor] in namespaces[name=kube-system] on 9100
}
"""
PORT_NEW = PORT_OLD.replace("on 8080", "on 8080, 9090")


def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("+ ", "- "))]


def test_one_port_is_one_line(netdsl: Run, work: Path) -> None:
    Path("a.seg").write_text(PORT_OLD)
    Path("b.seg").write_text(PORT_NEW)
    out = netdsl("diff", "a.seg", "b.seg").stdout
    # 3 label sets of production x 4 source classes x 4 destination classes, all decided alike
    assert _lines(out) == ["+ production/frontend -> production/api  9090/tcp  "
                           "(whatever labels namespace production has)"], out
    assert "    now: b.seg:6: api accepts frontend on 8080, 9090\n" in out
    assert "1 line for 48 pairs of classes" in out
    md = netdsl("diff", "a.seg", "b.seg", "--format", "markdown").stdout
    assert md.count("| **added** |") == 1
    assert "| **added** | `production/frontend` | `production/api` | 9090/tcp | " \
           "whatever labels namespace production has |" in md
    data = json.loads(netdsl("diff", "a.seg", "b.seg", "--format", "json").stdout)
    assert len(data["added"]) == 48  # the full detail stays
    [line] = data["added_lines"]
    assert line["from"] == "production/frontend" and line["to"] == "production/api"
    assert line["where"] == "whatever labels namespace production has" and line["ports"] == ["9090/tcp"]
    assert line["pairs"] == list(range(48))


def test_class_names_say_their_labels_not_a_number(netdsl: Run, work: Path) -> None:
    Path("a.seg").write_text(PORT_OLD)
    data = json.loads(netdsl("diff", "a.seg", "a.seg", "--format", "json").stdout)
    names = data["endpoints"]
    assert "production/api+backend{role=monitor}~name=kube-system" in names
    assert not [n for n in names if n.startswith("production/") and n[-1].isdigit()], names


def test_a_change_in_some_label_sets_says_where(netdsl: Run, work: Path) -> None:
    old = PORT_OLD.replace("pods[role=monitor] in namespaces[name=kube-system]", "namespaces[name=kube-system]")
    Path("a.seg").write_text(old)
    Path("b.seg").write_text(old.replace("on 9100", "on 9100, 9200"))
    out = netdsl("diff", "a.seg", "b.seg").stdout
    inside = [line for line in _lines(out) if line.startswith("+ production/")]
    # from production's own pods only while production has the label the selector tests
    assert inside and all(line.endswith("  (where namespace production has name=kube-system)") for line in inside), out
    assert "+ production/any pod -> production/backend  9200/tcp" not in out  # frontend's was differs


def test_different_statements_or_ports_stay_apart(netdsl: Run, work: Path) -> None:
    Path("a.seg").write_text(PORT_OLD)
    Path("b.seg").write_text(PORT_NEW.replace("  api accepts", "  backend accepts frontend on 9090\n  api accepts")
                             .replace("on 9100", "on 9100, 9101"))
    data = json.loads(netdsl("diff", "a.seg", "b.seg", "--format", "json").stdout)
    lines = data["added_lines"]
    for line in lines:  # every pair of a line has the line's ports and statements
        for i in line["pairs"]:
            assert data["added"][i]["ports"] == line["ports"]
    assert sorted(i for line in lines for i in line["pairs"]) == list(range(len(data["added"])))
    inside = [(line["from"], line["to"], tuple(line["ports"]), line["now"][-1]) for line in lines
              if line["from"].startswith("production/")]
    # api's 9090 (its statement), backend's 9090 (another statement), 9101 (another port): apart
    assert ("production/frontend", "production/(api or api{role=monitor})", ("9090/tcp",),
            "b.seg:7: api accepts frontend on 8080, 9090") in inside, inside
    assert any(to == "production/backend" and ports == ("9090/tcp",) and "backend accepts frontend on 9090" in now
               for _, to, ports, now in inside), inside
    assert any(ports == ("9101/tcp",) for _, _, ports, _ in inside), inside


@pytest.mark.parametrize("new", ["same", "refactor", "port", "some-label-sets"])
def test_no_change_exactly_when_the_matrices_are_equal(netdsl: Run, work: Path, new: str) -> None:
    from netdsl.diff import load
    from netdsl.semantics.engine import matrix
    from netdsl.semantics.program import ProgramSemantics
    from netdsl.semantics.universe import build
    from netdsl.semantics.verify import differences

    text = {"same": PORT_OLD, "refactor": PORT_OLD.replace("api ", "web ").replace("service web", "service web"),
            "port": PORT_NEW, "some-label-sets": PORT_OLD.replace("on 9100", "on 9100, 9200")}[new]
    Path("a.seg").write_text(PORT_OLD)
    Path("b.seg").write_text(text)
    a, b = load("a.seg").program, load("b.seg").program
    assert a is not None and b is not None
    u = build([a, b])
    equal = not list(differences(matrix(ProgramSemantics(a, u.topology), u.topology, u.probes),
                                 matrix(ProgramSemantics(b, u.topology), u.topology, u.probes)))
    out = netdsl("diff", "a.seg", "b.seg").stdout
    said = "No change: both allow exactly the same connections (in every cluster:" in out
    assert said == equal and equal == (new in ("same", "refactor")), out
