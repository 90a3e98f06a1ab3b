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
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdsl import ir
from netdsl.compiler import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, Result, check_files, decode, read_sources
from netdsl.diagnostics import Diagnostic, error, escape_name, printable
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
    result = Difference(old_name, new_name, topology, probes, notes=notes, every_cluster=every)
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


def _ports(d: Difference, c: Change) -> str:
    if d.every_cluster:  # each probe stands for its port class
        return ", ".join(range_text(d.probes, p) for p in c.probes)
    return ", ".join(probe_text(p) for p in c.probes)


def _pair(c: Change) -> tuple[str, str]:
    return str(c.src), ("another replica of it" if c.src == c.dst else str(c.dst))


def _summary(d: Difference) -> str:
    added, removed = d.counts()
    return (f"{added} connection{'s' * (added != 1)} added, {removed} removed "
            f"({_scope(d)})")


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
        for c in changes:
            src, dst = _pair(c)
            out.append(f"{sign} {src} -> {dst}  {_ports(d, c)}")
            if sign == "+":
                out += [f"    now: {r}" for r in c.now] or ["    now: no policy applies"]
            else:
                out += [f"    was: {r}" for r in c.was] or ["    was: no policy applied"]
                out += [f"    now: {r}" for r in c.now]
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
    added, removed = d.counts()
    out += [f"**{added} connection{'s' * (added != 1)} added, {removed} removed** "
            f"({_scope(d)}).", "",
            "| | from | to | ports | why |", "|---|---|---|---|---|"]
    rows = 0
    total = len(d.added) + len(d.removed)
    for word, changes in (("**added**", d.added), ("removed", d.removed)):
        for c in changes:
            if rows == MARKDOWN_ROWS:
                break
            rows += 1
            if changes is d.added:
                why = "<br>".join(_md(r) for r in c.now) or "no policy applies"
            else:
                why = "<br>".join(["was: " + _md(r) for r in c.was] + ["now: " + _md(r) for r in c.now])
            src, dst = _pair(c)
            out.append(f"| {word} | {_md(src)} | {_md(dst)} | {_ports(d, c)} | {why} |")
    if total > rows:
        out += ["", f"... and {total - rows} more pairs (run `netdsl diff` locally for all of them)."]
    if graph:
        from netdsl.graph import render_diff_mermaid  # only the picture needs it

        def triples(changes: list[Change]) -> list[tuple[str, str, str]]:
            return [(str(c.src), str(c.dst), _ports(d, c)) for c in changes]

        shown_added = d.added[:MARKDOWN_ROWS]
        shown_removed = d.removed[:max(0, MARKDOWN_ROWS - len(shown_added))]
        out += ["", "```mermaid", render_diff_mermaid(triples(shown_added), triples(shown_removed)).rstrip("\n"),
                "```"]
    out += ["", "<details><summary>Probed ports</summary>", "",
            ", ".join(probe_text(p) for p in d.probes), "", "</details>"]
    return "\n".join(out) + "\n"


def render_json(d: Difference) -> str:
    def change(c: Change) -> dict[str, Any]:
        return {"from": str(c.src), "to": str(c.dst),
                "ports": [range_text(d.probes, p) if d.every_cluster else probe_text(p) for p in c.probes],
                "was": list(c.was), "now": list(c.now)}

    return json.dumps({
        "old": d.old, "new": d.new, "changed": d.changed, "every_cluster": d.every_cluster,
        "endpoints": [str(e) for e in d.topology.endpoints], "probes": [probe_text(p) for p in d.probes],
        "added": [change(c) for c in d.added], "removed": [change(c) for c in d.removed], "notes": d.notes,
    }, indent=2, ensure_ascii=False) + "\n"
