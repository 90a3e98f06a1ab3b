"""`netdsl diff OLD NEW`: which connections a change to a program adds and removes.

OLD and NEW are .seg files, directories of them, or git revisions (`HEAD~1`, `main:policies`). Both
programs are evaluated by the program semantics over one topology - the class topology of both
(netdsl.semantics.universe: every cluster), or a cluster's with --topology - with the same port
classes, so a refactor that moves statements or renames a service or group shows no change (proven for
every cluster), and a real change shows up as classes of connections with an example each.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdsl import ir
from netdsl.compiler import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, Result, check_files, decode, read_sources
from netdsl.diagnostics import Diagnostic, error, escape_name, printable
from netdsl.explain import REPLICA, PairGroup, group_pairs
from netdsl.semantics.engine import (
    Probe,
    matrix,
    merge_topologies,
    probe_text,
    probes_for,
    sort_probes,
    with_externals,
)
from netdsl.semantics.model import Connection, Endpoint, Topology, topology_from_program
from netdsl.semantics.program import ProgramSemantics
from netdsl.semantics.universe import build, range_text
from netdsl.semantics.verify import coexist
from netdsl.source import SourceFile

MARKDOWN_ROWS = 200  # a pull-request comment has a size limit


class GitError(Exception):
    pass


def _git(args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], capture_output=True, cwd=cwd, check=False, timeout=120)


def git_revision(spec: str) -> tuple[str, str] | None:
    """(revision, subdirectory) if spec names a commit of the git repository here (`REV` or
    `REV:subdir`), else None."""
    rev, _, subdir = spec.partition(":")
    if not rev:
        return None
    try:
        found = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"])
    except (OSError, subprocess.SubprocessError):
        return None
    if found.returncode != 0:
        return None
    return rev, subdir.strip("/")


def _git_failed(shown: str, done: subprocess.CompletedProcess[bytes]) -> Diagnostic:
    return error("io-error", f"{shown}: {printable(done.stderr.decode(errors='replace').strip(), keep='')}")


def read_revision(rev: str, subdir: str) -> tuple[list[SourceFile], list[Diagnostic]]:
    """Every *.seg of the revision (below subdir), shown as `REV:path`. git's listing is read with -z,
    where no name is quoted (`café.seg`, tabs, newlines, quotes arrive as their bytes), and each file by
    its object id, so no name is parsed twice; sizes are checked against the compiler's limits first."""
    shown_spec = escape_name(f"{rev}:{subdir}" if subdir else rev)
    try:
        return _read_revision(rev, subdir, shown_spec)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], [error("io-error", f"{shown_spec}: git failed: {exc}")]


def _read_revision(rev: str, subdir: str, shown_spec: str) -> tuple[list[SourceFile], list[Diagnostic]]:
    top = _git(["rev-parse", "--show-toplevel"])
    if top.returncode != 0:
        return [], [_git_failed(shown_spec, top)]
    root = Path(os.fsdecode(top.stdout.rstrip(b"\n")))
    listing = _git(["ls-tree", "-r", "-z", "--long", "--full-tree", rev, *(["--", subdir] if subdir else [])],
                   cwd=root)
    if listing.returncode != 0:
        return [], [_git_failed(shown_spec, listing)]
    prefix = os.fsencode(subdir + "/") if subdir else b""
    blobs: list[tuple[bytes, bytes, int]] = []  # (path, object id, size)
    links: list[tuple[bytes, bytes]] = []  # (path, object id): a symbolic link's blob is its target
    for record in listing.stdout.split(b"\0"):
        meta, tab, name = record.partition(b"\t")
        fields = meta.split()
        if not tab or len(fields) != 4 or fields[1] != b"blob" or not name.endswith(b".seg"):
            continue  # also submodules (type commit)
        if subdir and name != prefix[:-1] and not name.startswith(prefix):
            continue
        if fields[0] == b"120000":
            links.append((name, fields[2]))
        else:
            blobs.append((name, fields[2], int(fields[3]) if fields[3].isdigit() else 0))
    diags: list[Diagnostic] = []
    listed = {name for name, _, _ in blobs}
    for name, oid in links:  # a link to a listed file is that file (read once, as in a working tree)
        target = _git(["cat-file", "blob", oid.decode("ascii")], cwd=root).stdout
        if posixpath.normpath(posixpath.join(posixpath.dirname(name), target)) not in listed:
            diags.append(error("io-error", f"{escape_name(rev)}:{escape_name(os.fsdecode(name))}: a symbolic "
                               "link to a file this revision does not list; netdsl reads regular files there"))
    if not blobs and not diags:
        return [], [error("io-error", f"{shown_spec}: no .seg files at this revision")]
    if len(blobs) > MAX_FILES:
        return [], [error("limit", f"{shown_spec}: more than {MAX_FILES:,} .seg files")]
    files: list[SourceFile] = []
    total = 0
    for name, oid, size in sorted(blobs):
        shown = f"{escape_name(rev)}:{escape_name(os.fsdecode(name))}"
        total += size
        if size > MAX_FILE_BYTES or total > MAX_TOTAL_BYTES:
            which = "one file" if size > MAX_FILE_BYTES else "all files together"
            limit = MAX_FILE_BYTES if size > MAX_FILE_BYTES else MAX_TOTAL_BYTES
            diags.append(error("limit", f"{shown}: larger than {limit // (1024 * 1024)} MiB, the limit for {which}"))
            if size > MAX_FILE_BYTES:
                continue
            break
        blob = _git(["cat-file", "blob", oid.decode("ascii")], cwd=root)
        if blob.returncode != 0:
            diags.append(_git_failed(shown, blob))
            continue
        source, problem = decode(shown, blob.stdout)
        if problem is not None:
            diags.append(problem)
        if source is not None:
            files.append(source)
    return files, diags


def load(spec: str, stdin: bytes | None = None) -> Result:
    """A program from a path (file or directory, `-` for standard input) or, when no such path exists,
    a git revision."""
    if spec == "-" or Path(spec).exists():
        return check_files(*read_sources([spec], stdin))
    revision = git_revision(spec)
    if revision is None:
        return check_files([], [error("io-error", f"{spec}: no such file or directory, and not a git revision")])
    return check_files(*read_revision(*revision))


# ------------------------------------------------------------------------------------------ the difference


@dataclass
class Change:
    src: Endpoint
    dst: Endpoint
    probes: list[Probe]
    was: tuple[str, ...]  # what decided under OLD
    now: tuple[str, ...]  # what decides under NEW


@dataclass
class Difference:
    old: str
    new: str
    topology: Topology
    probes: tuple[Probe, ...]
    added: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    every_cluster: bool = False  # over the class topology: the changes (or none) hold in every cluster
    services: tuple[ir.Workload, ...] = ()  # NEW's, then OLD's: names for groups of pod classes

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def counts(self) -> tuple[int, int]:
        return sum(len(c.probes) for c in self.added), sum(len(c.probes) for c in self.removed)


def difference(old: ir.Program, new: ir.Program, old_name: str, new_name: str,
               topology: Topology | None = None) -> Difference:
    """What NEW allows that OLD does not and the other way round: over the class topology of both
    programs (so "no change" holds in every cluster, and each change names a class of pods with an
    example), or over a given cluster's topology."""
    notes: list[str] = []
    if topology is None:
        universe = build([old, new])
        topology, probes, every = universe.topology, universe.probes, True
    else:  # the cluster's pods, and the addresses the programs' CIDRs are probed with
        derived, _ = merge_topologies(topology_from_program(old), topology_from_program(new))
        topology = with_externals(topology, derived)
        probes, every = probes_for([old, new], topology), False
    before, after = ProgramSemantics(old, topology), ProgramSemantics(new, topology)
    old_m, new_m = matrix(before, topology, probes), matrix(after, topology, probes)
    grouped: dict[tuple[Endpoint, Endpoint, bool], list[Probe]] = {}
    for src, dst, probe, allowed_now in new_m.differences(old_m):
        if coexist(src, dst):
            grouped.setdefault((src, dst, allowed_now), []).append(probe)
    result = Difference(old_name, new_name, topology, probes, notes=notes, every_cluster=every,
                        services=(*new.services, *old.services))
    for (src, dst, allowed_now), ports in grouped.items():
        ports = sort_probes(ports)
        conn = Connection(src, dst, *ports[0])
        change = Change(src, dst, ports, before.decide(conn).reasons, after.decide(conn).reasons)
        (result.added if allowed_now else result.removed).append(change)
    position = {e: i for i, e in enumerate(topology.endpoints)}
    for changes in (result.added, result.removed):
        changes.sort(key=lambda c: (position[c.src], position[c.dst]))
    return result


# ------------------------------------------------------------------------------------------ rendering
#
# Over the class topology one change is usually many pairs of classes: the same statements deciding the
# same ports for every namespace label set and every pod class of a service. Rendering groups them
# (netdsl.explain.group_pairs): changes with the same sign, ports and deciding statements (was and now)
# whose pairs form a product become one line that names the classes in words; nothing else is merged.
# Over a cluster's topology (--topology) the pods are real and every pair stays a line of its own.


def _ports(d: Difference, c: Change) -> str:
    return ", ".join(_port_list(d, c))


def _port_list(d: Difference, c: Change) -> list[str]:
    if d.every_cluster:  # each probe stands for its port class
        return [range_text(d.probes, p) for p in c.probes]
    return [probe_text(p) for p in c.probes]


def _pair(c: Change) -> tuple[str, str]:
    return str(c.src), (REPLICA if c.src == c.dst else str(c.dst))


_SRC, _DST = "\x00source", "\x00destination"


def _generic(c: Change, reasons: Sequence[str]) -> tuple[str, ...]:
    """The reasons with the pair's own names as placeholders (`production/api~env=x ingress is restricted
    by ...` says the same for every class of a line): what decides, apart from whom it is about."""
    names = sorted({str(c.dst): _DST, str(c.src): _SRC}.items(), key=lambda kv: -len(kv[0]))
    out = []
    for r in reasons:
        for name, mark in names:
            r = re.sub(re.escape(name) + r"(?![^\s:;,)])", mark, r)
        out.append(r)
    return tuple(out)


def _reasons(g: PairGroup[Change], reasons: Sequence[str]) -> list[str]:
    """A line's reasons (of its first pair), about the line's classes."""
    dst = g.src if g.dst == REPLICA else g.dst
    return [r.replace(_SRC, g.src).replace(_DST, dst) for r in _generic(g.members[0], reasons)]


def groups(d: Difference, changes: Sequence[Change]) -> list[PairGroup[Change]]:
    """The changes as lines: grouped over the class topology, one per pair over a cluster's."""
    if not d.every_cluster:
        return [PairGroup(*_pair(c), "", [c]) for c in changes]
    return group_pairs(changes, lambda c: (tuple(_port_list(d, c)), _generic(c, c.was), _generic(c, c.now)),
                       lambda c: (c.src, c.dst), d.topology, d.services)


def _summary(d: Difference) -> str:
    added, removed = d.counts()
    lines = len(groups(d, d.added)) + len(groups(d, d.removed))
    pairs = len(d.added) + len(d.removed)
    shown = f"; {lines} line{'s' * (lines != 1)} for {pairs} pairs of classes" if lines != pairs else ""
    return (f"{added} connection{'s' * (added != 1)} added, {removed} removed "
            f"({_scope(d)}{shown})")


def _scope(d: Difference) -> str:
    if d.every_cluster:
        return (f"in every cluster: {len(d.topology.endpoints)} classes of endpoints, "
                f"{len(d.probes)} classes of ports")
    return f"{len(d.topology.endpoints)} endpoints, {len(d.probes)} probed ports"


def render_text(d: Difference) -> str:
    out = [f"netdsl diff {d.old} {d.new}"]
    out += [f"note: {n}" for n in d.notes]
    if not d.changed:
        out.append(f"No change: both allow exactly the same connections ({_scope(d)}).")
        return "\n".join(out) + "\n"
    out.append("")
    for sign, changes in (("+", d.added), ("-", d.removed)):
        for g in groups(d, changes):
            c = g.members[0]
            where = f"  ({g.condition})" if g.condition else ""
            out.append(f"{sign} {g.src} -> {g.dst}  {_ports(d, c)}{where}")
            if sign == "+":
                out += [f"    now: {r}" for r in _reasons(g, c.now)] or ["    now: no policy applies"]
            else:
                out += [f"    was: {r}" for r in _reasons(g, c.was)] or ["    was: no policy applied"]
                out += [f"    now: {r}" for r in _reasons(g, c.now)]
    out += ["", _summary(d) + "."]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    """Inline code in a Markdown table cell."""
    text = text.replace("|", "\\|").replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if text else ""


def render_markdown(d: Difference, graph: bool = False) -> str:
    """A pull-request comment; with `graph`, a Mermaid picture of the changes (added green, removed red)."""
    out = [f"### netdsl: connectivity changes from {_md(d.old)} to {_md(d.new)}", ""]
    out += [f"> note: {n}" for n in d.notes]
    if d.notes:
        out.append("")
    if not d.changed:
        out.append(f"**No change**: both allow exactly the same connections ({_scope(d)}).")
        return "\n".join(out) + "\n"
    out += [f"**{_summary(d)}**.", "",
            "| | from | to | ports | where | why |", "|---|---|---|---|---|---|"]
    rows = 0
    lines = [(word, g) for word, changes in (("**added**", d.added), ("removed", d.removed))
             for g in groups(d, changes)]
    for word, g in lines[:MARKDOWN_ROWS]:
        rows += 1
        c = g.members[0]
        if word != "removed":
            why = "<br>".join(_md(r) for r in _reasons(g, c.now)) or "no policy applies"
        else:
            why = "<br>".join(["was: " + _md(r) for r in _reasons(g, c.was)]
                              + ["now: " + _md(r) for r in _reasons(g, c.now)])
        where = g.condition.replace("|", "\\|") or "-"
        out.append(f"| {word} | {_md(g.src)} | {_md(g.dst)} | {_ports(d, c)} | {where} | {why} |")
    if len(lines) > rows:
        out += ["", f"... and {len(lines) - rows} more lines (run `netdsl diff` locally for all of them)."]
    if graph:
        from netdsl.graph import render_diff_mermaid  # only the picture needs it

        shown = lines[:MARKDOWN_ROWS]
        added = [(g.src, g.dst, _ports(d, g.members[0])) for word, g in shown if word != "removed"]
        removed = [(g.src, g.dst, _ports(d, g.members[0])) for word, g in shown if word == "removed"]
        out += ["", "```mermaid", render_diff_mermaid(added, removed).rstrip("\n"), "```"]
    out += ["", "<details><summary>Probed ports</summary>", "",
            ", ".join(probe_text(p) for p in d.probes), "", "</details>"]
    return "\n".join(out) + "\n"


def render_json(d: Difference) -> str:
    """Fields (docs: README "Explain and diff"): `added`/`removed` list every pair of classes (or pods)
    with its ports and deciding statements (`from`, `to`, `ports`, `was`, `now`); `added_lines`/
    `removed_lines` are the grouped lines the text shows: `from`, `to` and `where` in words, `ports`,
    `was`, `now`, and `pairs`, the indexes into `added`/`removed` each line stands for."""
    def change(c: Change) -> dict[str, Any]:
        return {"from": str(c.src), "to": str(c.dst), "ports": _port_list(d, c), "was": list(c.was),
                "now": list(c.now)}

    def lines(changes: list[Change]) -> list[dict[str, Any]]:
        index = {id(c): i for i, c in enumerate(changes)}
        return [{"from": g.src, "to": g.dst, "where": g.condition, "ports": _port_list(d, g.members[0]),
                 "was": _reasons(g, g.members[0].was), "now": _reasons(g, g.members[0].now),
                 "pairs": sorted(index[id(c)] for c in g.members)} for g in groups(d, changes)]

    return json.dumps({
        "old": d.old, "new": d.new, "changed": d.changed, "every_cluster": d.every_cluster,
        "endpoints": [str(e) for e in d.topology.endpoints], "probes": [probe_text(p) for p in d.probes],
        "added": [change(c) for c in d.added], "removed": [change(c) for c in d.removed],
        "added_lines": lines(d.added), "removed_lines": lines(d.removed), "notes": d.notes,
    }, indent=2, ensure_ascii=False) + "\n"
