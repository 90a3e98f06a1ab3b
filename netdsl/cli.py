"""Command line: a thin layer over netdsl.compiler. Data on stdout, diagnostics on stderr.

Exit status: 0 success, 1 errors in the input, 2 usage errors (click's own convention). A closed or
full standard stream is an error with a message (exit 1), never a traceback.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TextIO

import click
from click.shell_completion import CompletionItem

from netdsl import __version__
from netdsl.alerts import AlertError, build_rule
from netdsl.alerts import render as render_alerts
from netdsl.analysis import Analysis, analyse, default_targets
from netdsl.backends import Options, backend_names, name_prefix_problem
from netdsl.backends.calico import DEFAULT_VERSION as DEFAULT_CALICO_VERSION
from netdsl.backends.calico import parse_version
from netdsl.compiler import (
    MAX_TOTAL_BYTES,
    STDIN,
    LimitError,
    Result,
    check,
    check_with_lints,
    compile_paths,
    read_limited,
    stream,
)
from netdsl.diagnostics import error, json_safe, printable, render_json, render_text, sort_key
from netdsl.diagnostics_formats import render_github, render_sarif
from netdsl.diff import difference, load
from netdsl.diff import render_json as render_diff_json
from netdsl.diff import render_markdown as render_diff_markdown
from netdsl.diff import render_text as render_diff_text
from netdsl.explain import (
    BUG,
    MAX_MATRIX_CELLS,
    explain_connection,
    explain_matrix,
    render_connection_json,
    render_connection_text,
    render_matrix_json,
    render_matrix_text,
)
from netdsl.fmt import format_paths, write_in_place
from netdsl.output import check_directory, write_directory
from netdsl.probes import DEFAULT_IMAGE as PROBE_IMAGE
from netdsl.probes import DEFAULT_PREFIX as PROBE_PREFIX
from netdsl.probes import MismatchError, PlanError, build_plan
from netdsl.probes import render_json as render_probes_json
from netdsl.probes import render_sh as render_probes_sh
from netdsl.semantics.engine import (
    EndpointError,
    parse_probe,
    resolve_endpoint,
    split_port,
    with_externals,
)
from netdsl.semantics.matrix import Probe, probe_names
from netdsl.semantics.model import Endpoint, External, Topology, topology_from_program
from netdsl.semantics.topology import TopologyError, read_topology
from netdsl.semantics.universe import TooLargeError

EXIT_INPUT = 1


def _guard_standard_streams() -> None:
    """A standard descriptor closed at start (`<&-`, `>&-`) is taken by /dev/null, so no file netdsl
    opens later lands on it (output meant for the terminal would go into that file). Python has set the
    stream to None: reading or writing it is then an error (see _read_stdin and _write)."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, mode)
            if opened != fd:  # a lower descriptor was free too: it was taken above
                os.dup2(opened, fd)
                os.close(opened)


def _read_stdin() -> bytes:
    """Standard input, bounded like any file (compiler.MAX_FILE_BYTES)."""
    if sys.stdin is None:
        _fail("standard input is closed, but `-` asks to read it")
    try:
        return read_limited(sys.stdin.buffer, "<stdin>")
    except LimitError as exc:
        _fail(f"{exc}  [limit]")
    except OSError as exc:
        _fail(f"<stdin>: {exc.strerror or exc}")


def _stdin_if_needed(paths: tuple[str, ...]) -> bytes | None:
    return _read_stdin() if STDIN in paths else None


def _write(stream: TextIO | None, text: str, kind: str = "text") -> None:
    """Always UTF-8, whatever the locale (the YAML and the messages may hold any character). `text` is
    escaped for a terminal (diagnostics.printable), `json` keeps JSON valid while escaping the same
    characters, `data` (the YAML stream) is written as it is."""
    if kind == "text":
        text = printable(text, keep="\n\t")
    elif kind == "json":
        text = json_safe(text)
    try:
        if stream is None:  # closed when netdsl started
            raise OSError(errno.EBADF, "the stream is closed")
        buffer = getattr(stream, "buffer", None)
        if buffer is None:  # a test harness's text stream
            stream.write(text)
        else:
            stream.flush()
            buffer.write(text.encode("utf-8", errors="replace"))
            buffer.flush()
    except OSError as exc:
        _write_failed(stream, exc)


def _write_failed(stream: TextIO | None, exc: OSError) -> None:
    """Standard output closed, full (/dev/full) or a pipe whose reader left: say so (not for a broken
    pipe, whose reader is gone on purpose, as `| head` does) and exit 1. Standard error failing is not
    fatal (an error still exits 1). The descriptor then points to /dev/null, so Python's own flush at
    exit does not fail again with a traceback."""
    is_stdout = stream is sys.stdout
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is stream:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
    if not is_stdout:  # diagnostics nobody can read: the exit status still tells
        return
    if exc.errno != errno.EPIPE and sys.stderr is not None:
        try:
            sys.stderr.write(f"netdsl: error: cannot write standard output: {exc.strerror or exc}\n")
            sys.stderr.flush()
        except OSError:
            pass
    sys.exit(EXIT_INPUT)


def _note(text: str) -> None:
    _write(sys.stderr, f"netdsl: note: {text}\n")


def _report(result: Result, fmt: str) -> None:
    """Diagnostics on stderr; SARIF, a document rather than messages, is the data on stdout."""
    diags = sorted(result.diagnostics, key=sort_key)
    if fmt == "json":
        _write(sys.stderr, render_json(diags), "json")
    elif fmt == "sarif":
        _write(sys.stdout, render_sarif(diags, result.sources), "json")
    elif fmt == "github":  # escaped for the runner (%0A ...); escapes keep a terminal safe too
        _write(sys.stderr, render_github(diags), "text")
    elif diags:
        _write(sys.stderr, render_text(diags, result.sources))
        errors = sum(d.is_error for d in diags)
        warnings = len(diags) - errors
        if errors:
            files = len({d.span.path for d in diags if d.is_error and d.span})
            _write(sys.stderr,
                f"Found {errors} error{'s' * (errors != 1)}"
                + (f" in {files} file{'s' * (files != 1)}" if files else "")
                + (f" and {warnings} warning{'s' * (warnings != 1)}" if warnings else "")
                + "\n"
            )


def _check_output(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    if value is None:
        return None
    if value == "":  # not the current directory: an empty variable in a script must not write there
        raise click.BadParameter("the output directory must not be empty (use `.` for this directory)")
    return Path(value)


def _check_version(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_version(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a version like 3.32") from None
    return value


def _check_name_prefix(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Empty (also from NETDSL_NAME_PREFIX) means none."""
    if not value:
        return None
    problem = name_prefix_problem(value)
    if problem:
        raise click.BadParameter(problem)
    return value


def _complete_seg_paths(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of PATHS: the directories (with a `/`) and `*.seg` files that start with what was
    typed; hidden entries only after a `.`. When the only match is a directory, its entries are offered
    too, so the shell completes up to `dir/` and goes on into it (not `dir/ ` with a space)."""

    def entries(folder: str, start: str) -> list[str]:
        shown = folder if not folder or folder.endswith("/") else folder + "/"
        found = []
        try:
            with os.scandir(folder or ".") as it:
                for entry in it:
                    if not entry.name.startswith(start) or (entry.name.startswith(".") and not start.startswith(".")):
                        continue
                    if entry.is_dir():
                        found.append(shown + entry.name + "/")
                    elif entry.name.endswith(".seg"):
                        found.append(shown + entry.name)
        except OSError:
            return []
        return sorted(found)

    found = entries(os.path.dirname(incomplete), os.path.basename(incomplete))
    if len(found) == 1 and found[0].endswith("/"):
        found += entries(found[0], "")
    return [CompletionItem(value) for value in found]


paths_argument = click.argument("paths", nargs=-1, required=True, metavar="PATHS...",
                                shell_complete=_complete_seg_paths)
format_option = click.option(
    "--diagnostics", "fmt", type=click.Choice(["text", "json", "github", "sarif"]), default="text",
    show_default=True,
    help="How to print errors and warnings: on stderr as text, JSON or GitHub workflow commands "
         "(annotations); sarif: a SARIF 2.1.0 log on stdout (code scanning).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="netdsl")
def main() -> None:
    """Compile .seg network segmentation programs to Kubernetes network policies."""
    _guard_standard_streams()


@main.command("compile")
@paths_argument
@click.option("--target", "-t", type=click.Choice(backend_names()), default="vanilla", show_default=True,
              help="Which CNI's policy API to emit.")
@click.option("--output", "-o", "output", type=click.Path(file_okay=False), default=None,
              callback=_check_output,
              help="Write one file per object plus kustomization.yaml into this directory, all at once "
                   "(default: a YAML stream on stdout).")
@click.option("--staged", is_flag=True,
              help="Emit Calico's Staged* kinds, which report what they would do without enforcing it "
                   "(Calico 3.30 or later): preview a policy set before it bites.")
@click.option("--calico-version", default=DEFAULT_CALICO_VERSION, show_default=True, metavar="X.Y",
              callback=_check_version,
              help="The Calico release the output is for: picks policy naming in tiers (before 3.32: "
                   "<tier>.<name>) and refuses features the release lacks.")
@click.option("--widen", is_flag=True,
              help="Lower what the target cannot express to a broader rule it can (fqdn -> every external "
                   "address on the ports, HTTP rules -> their ports), with a warning for each statement. "
                   "Without it, nothing is ever widened.")
@click.option("--check", "check_only", is_flag=True,
              help="With -o DIR: write nothing; exit 1 naming every file of DIR that is missing, out of date, "
                   "no longer produced or edited by hand (CI: did someone forget to recompile?).")
@click.option("--name-prefix", default=None, envvar="NETDSL_NAME_PREFIX", show_envvar=True, metavar="PREFIX",
              callback=_check_name_prefix,
              help="Put PREFIX before every object's name (`team-a-` makes `web` `team-a-web`), so netdsl's "
                   "policies never collide with another tool's. Calico tiers keep their names.")
@format_option
def compile_command(
    paths: tuple[str, ...], target: str, output: Path | None, fmt: str, staged: bool, calico_version: str,
    widen: bool, check_only: bool, name_prefix: str | None,
) -> None:
    """Compile PATHS (.seg files, directories of them, or - for stdin) for one target."""
    if check_only and output is None:
        raise click.UsageError("--check compares an output directory: give it with -o DIR")
    if fmt == "sarif" and output is None:
        raise click.UsageError("--diagnostics sarif writes SARIF on stdout, where compile writes the YAML "
                               "stream: give -o DIR (or run `netdsl check --diagnostics sarif`)")
    options = Options({"staged": staged, "calico_version": calico_version, "widen": widen,
                       "name_prefix": name_prefix})
    result = compile_paths(paths, target, options, stdin=_stdin_if_needed(paths))
    stale = False
    if result.ok and output is not None:
        if check_only:
            stale = _check_output_directory(output, result)
        else:
            _write_output_directory(output, result)
    _report(result, fmt)
    if not result.ok or stale:
        sys.exit(EXIT_INPUT)
    if output is None:
        _write(sys.stdout, stream(result.manifests), "data")


def _write_output_directory(output: Path, result: Result) -> None:
    """`-o DIR`: switch DIR to the new output; say what changed in one line."""
    try:
        outcome = write_directory(output, result.manifests, notify=_note)
    except OSError as exc:
        result.diagnostics.append(error("output", str(exc)))
        return
    for rel in outcome.removed:
        _write(sys.stderr, f"removed {output / rel} (no longer produced)\n")
    _write(sys.stderr, f"netdsl: {len(outcome.written)} written, {outcome.unchanged} unchanged, "
                       f"{len(outcome.removed)} removed in {output}\n")


def _check_output_directory(output: Path, result: Result) -> bool:
    """`-o DIR --check`: True when DIR differs from what a compile would leave there (each difference is a
    `stale-output` error, so every --diagnostics format carries them)."""
    try:
        problems = check_directory(output, result.manifests)
    except OSError as exc:
        result.diagnostics.append(error("output", str(exc)))
        return True
    hint = f"run `netdsl compile ... -o {output}` and commit the result"
    for i, problem in enumerate(sorted(problems)):  # the hint once, under the first one shown
        result.diagnostics.append(error("stale-output", problem, None, None if i else hint))
    if not problems:
        _write(sys.stderr, f"netdsl: {output} is up to date\n")
    return bool(problems)


@main.command("check")
@paths_argument
@click.option("--topology", "dump", type=click.Path(exists=True), multiple=True, metavar="DUMP",
              help="A dump of the cluster (`kubectl get networkpolicies,... -A -o yaml`, files or directories): "
                   "warn about policies netdsl did not write where the program writes policies.")
@format_option
def check_command(paths: tuple[str, ...], dump: tuple[str, ...], fmt: str) -> None:
    """Report errors and warnings in PATHS without emitting anything."""
    result = check_with_lints(paths, stdin=_stdin_if_needed(paths))
    if dump and result.program is not None:
        from netdsl.importer.read import read  # only with --topology
        from netdsl.ownership import foreign_policies

        cluster = read(dump)
        result.sources.update(cluster.sources)
        result.diagnostics.extend(cluster.diagnostics)
        result.diagnostics.extend(foreign_policies(result.program, cluster))
    _report(result, fmt)
    if not result.ok:
        sys.exit(EXIT_INPUT)


@main.command("import")
@paths_argument
@click.option("--output", "-o", "output", type=click.Path(file_okay=False), default=None, callback=_check_output,
              help="Write one file per namespace (<namespace>.seg, cluster.seg) into this directory "
                   "(default: one stream on stdout).")
@click.option("--namespace", "-n", default=None, metavar="NAMESPACE",
              help="The namespace of objects that name none (default: `default`).")
@click.option("--partial", is_flag=True,
              help="Import what .seg can say exactly and list what was left out (default: exit 1 on any gap).")
@click.option("--target", "-t", type=click.Choice(backend_names()), default=None,
              help="The target the manifests are for (default: from their kinds).")
@click.option("--force", is_flag=True, help="Replace existing files in the output directory.")
@format_option
def import_command(paths: tuple[str, ...], output: Path | None, namespace: str | None, partial: bool,
                   target: str | None, force: bool, fmt: str) -> None:
    """Import existing manifests (files, directories of *.yaml, or - for stdin) as .seg, proven to mean
    exactly the same for every cluster."""
    from netdsl.importer import import_manifests, write_files  # imported on use: the others never need it

    imported = import_manifests(paths, namespace, target, partial, _stdin_if_needed(paths),
                                None if output is None else str(output))
    result = Result(sources=imported.sources, diagnostics=imported.diagnostics)
    if result.ok and output is not None:
        result.diagnostics.extend(write_files(imported.files, force))
    _report(result, fmt)
    if not result.ok:
        sys.exit(EXIT_INPUT)
    if output is None:
        _write(sys.stdout, imported.text, "data")
    objects = len(imported.translation.understood) if imported.translation else 0
    how = {"idiomatic": "as flows", "one-sided": "as flows, and one-sided rules where the input holds half a flow",
           "literal": "rule by rule (one-sided rules: no flow form proved)"}.get(imported.form or "", "")
    _note(f"imported {objects} object{'s' * (objects != 1)} {how}; proven to mean the same for every cluster")


# ------------------------------------------------------------------------------------------ explain, diff

EXIT_MISMATCH = 3  # a target's output does not mean what the program means: a compiler bug


def _fail(message: str) -> NoReturn:
    _write(sys.stderr, f"netdsl: error: {message}\n")
    sys.exit(EXIT_INPUT)


def _topology_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option("--topology", "topology_dir", type=click.Path(path_type=Path), default=None,
                        metavar="DIR", help=help_text)


def _read_topology(topology_dir: Path) -> Topology:
    try:
        return read_topology(topology_dir)
    except TopologyError as exc:
        _fail(str(exc))


def _probes(port: str, dst: Endpoint | None, analysis: Analysis) -> tuple[Probe, ...]:
    """The probes for `--to B:PORT`: a number, or a named port - of B's container ports in a given
    topology, in the class topology at every port class B may bind it to."""
    word, _, proto = port.partition("/")
    if analysis.every_cluster and not word.isdigit():
        protocol = parse_probe("1" + ("/" + proto if proto else ""))[0]
        named = tuple(p for p in analysis.probes if p[0] is protocol and word in probe_names(p))
        if not named:
            raise EndpointError(f"no statement mentions a port named {word!r}")
        return named
    return (parse_probe(port, dst),)


@main.command("explain")
@paths_argument
@click.option("--from", "src_text", metavar="A",
              help="Source: ns/pod, a pod name, a service of the program, or an IP address.")
@click.option("--to", "dst_text", metavar="B[:PORT[/PROTO]]",
              help="Destination, optionally with a port (a number or a named port of B; TCP unless /udp or "
                   "/sctp). Without a port: every probed port.")
@_topology_option("Kubernetes manifests (Namespaces, Pods, Deployments, ...) to evaluate over, instead of the "
                  "pods the program models (one per service, one unlabelled pod per namespace).")
@click.option("--target", "-t", "targets", multiple=True, type=click.Choice(backend_names()),
              help="Judge this target's output too (repeatable; default: every target netdsl can evaluate).")
@click.option("--format", "out_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--width", type=click.IntRange(40), default=100, show_default=True,
              help="Terminal width for the matrix.")
def explain_command(paths: tuple[str, ...], src_text: str | None, dst_text: str | None,
                    topology_dir: Path | None, targets: tuple[str, ...], out_format: str, width: int) -> None:
    """Explain what PATHS allow: one connection (--from A --to B[:PORT]) with the statements and emitted
    rules that decide it, everything from A or to B, or the whole connectivity matrix.

    Each target's output is judged on its own; a target whose verdict differs from the program's is a
    compiler bug, reported loudly with exit status 3."""
    result = check_with_lints(paths, stdin=_stdin_if_needed(paths))
    if result.program is None:
        _report(result, "text")
        sys.exit(EXIT_INPUT)
    program = result.program
    given = None
    if topology_dir is not None:
        given = with_externals(_read_topology(topology_dir), topology_from_program(program))
    try:
        analysis = analyse(result, list(dict.fromkeys(targets)) or default_targets(), given)
    except TooLargeError as exc:
        _fail(f"cannot explain: the program has {exc}, the limit\nhint: {TooLargeError.HINT}")
    topology = analysis.topology
    try:
        src = dst = None
        port: str | None = None
        if src_text is not None:
            host, src_port = split_port(src_text)
            if src_port is not None:
                raise EndpointError(f"--from {src_text}: a source has no port (give it with --to)")
            src = resolve_endpoint(host, topology, program)
        if dst_text is not None:
            host, port = split_port(dst_text)
            dst = resolve_endpoint(host, topology, program)
        if src is not None and dst is not None:
            if isinstance(src, External) and isinstance(dst, External):
                raise EndpointError("both ends are external addresses: no policy applies between them")
            probes = _probes(port, dst, analysis) if port else analysis.probes
        elif port:
            raise EndpointError(f"--to {dst_text}: a port needs --from too")
    except EndpointError as exc:
        _fail(str(exc))
    n = len(topology.endpoints)
    if src is None and dst is None and n * n > MAX_MATRIX_CELLS:  # its text alone grows with n * n
        _fail(f"the whole matrix has {n} rows and {n} columns, more than explain shows ({MAX_MATRIX_CELLS:,} "
              "cells)\nhint: give --from or --to (a service, `ns/service` or an address) to see one row or "
              "column; `netdsl check` and `netdsl compile` still prove the program")
    outside = tuple(e for e in (src, dst) if isinstance(e, External) and e not in topology.externals)
    if outside:  # an address the topology does not probe: add it
        topology = Topology(topology.namespaces, topology.pods, (*topology.externals, *outside), topology.variants)
    evs = analysis.evaluators
    if src is not None and dst is not None:
        report = explain_connection(evs, src, dst, probes, port_given=bool(port))
        render = render_connection_json if out_format == "json" else render_connection_text
        _write(sys.stdout, render(report), out_format)
        if report.mismatches:
            _write(sys.stderr, f"netdsl: error: MISMATCH between the program and a target: {BUG}\n")
            sys.exit(EXIT_MISMATCH)
        return
    matrix_report = explain_matrix(evs, topology, analysis.probes,
                                   sources=None if src is None else [src],
                                   destinations=None if dst is None else [dst],
                                   every_cluster=analysis.every_cluster and not outside,
                                   services=program.services)
    if out_format == "json":
        _write(sys.stdout, render_matrix_json(matrix_report), "json")
    else:
        _write(sys.stdout, render_matrix_text(matrix_report, width))
    if matrix_report.mismatches:
        _write(sys.stderr, f"netdsl: error: MISMATCH between the program and a target: {BUG}\n")
        sys.exit(EXIT_MISMATCH)


def _check_duration(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", value):
        raise click.BadParameter(f"{value!r} is not a Prometheus duration (5m, 30s, 1h30m)")
    return value


@main.command("probes")
@paths_argument
@click.option("--target", "-t", type=click.Choice(backend_names()), default="vanilla", show_default=True,
              help="The CNI the cluster runs: expected results are what its emitted policies mean.")
@click.option("--format", "out_format", type=click.Choice(["sh", "json"]), default="sh", show_default=True,
              help="sh: a POSIX shell script that runs the plan with kubectl; json: the plan as data.")
@click.option("--image", default=PROBE_IMAGE, show_default=True,
              help="The probe pods' image: it needs sh, nc, socat and nslookup.")
@click.option("--pod-prefix", default=PROBE_PREFIX, show_default=True, metavar="PREFIX",
              help="Put PREFIX before every probe pod's name.")
@click.option("--calico-version", default=DEFAULT_CALICO_VERSION, show_default=True, metavar="X.Y",
              callback=_check_version, help="With --target calico: the Calico release the policies are for.")
def probes_command(paths: tuple[str, ...], target: str, out_format: str, image: str, pod_prefix: str,
                   calico_version: str) -> None:
    """A connectivity test plan for a real cluster: probe pods standing in for each service, every allowed
    flow and a denied neighbour of each, the `expect` lines and DNS, with the results the target's
    emitted policies must give (proven, like compile's own check)."""
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30})?", pod_prefix):
        raise click.BadParameter("at most 31 lowercase letters, digits and -, starting with a letter or digit",
                                 param_hint="--pod-prefix")
    options = Options({"calico_version": calico_version})
    result = compile_paths(paths, target, options, stdin=_stdin_if_needed(paths))
    _report(result, "text")
    if not result.ok:
        sys.exit(EXIT_INPUT)
    try:
        plan = build_plan(result, target, options, pod_prefix, image)
    except TooLargeError as exc:
        _fail(f"cannot plan: the program has {exc}, the limit\nhint: {TooLargeError.HINT}")
    except MismatchError as exc:
        _write(sys.stderr, f"netdsl: error: MISMATCH between the program and {target}: {BUG}\n{exc}\n")
        sys.exit(EXIT_MISMATCH)
    except PlanError as exc:
        _fail(str(exc))
    if out_format == "json":
        _write(sys.stdout, render_probes_json(plan), "json")
    else:
        _write(sys.stdout, render_probes_sh(plan, paths))


@main.command("alerts")
@paths_argument
@click.option("--target", "-t", type=click.Choice(backend_names()), required=True,
              help="The CNI whose drop metric to watch (cilium: Hubble; calico: Calico Enterprise/Cloud).")
@click.option("--threshold", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="Fire above this many dropped packets per second in a namespace.")
@click.option("--for", "hold", default="5m", show_default=True, callback=_check_duration,
              help="How long the rate must stay above the threshold (a Prometheus duration).")
@click.option("--window", default="5m", show_default=True, callback=_check_duration,
              help="The rate() window (a Prometheus duration).")
@click.option("--severity", default="warning", show_default=True, help="The alerts' severity label.")
@click.option("--name", "rule_name", default="netdsl-policy-drops", show_default=True,
              help="The PrometheusRule's name.")
@click.option("--rule-namespace", default="monitoring", show_default=True,
              help="The namespace the PrometheusRule lives in (where Prometheus Operator looks for rules).")
def alerts_command(paths: tuple[str, ...], target: str, threshold: float, hold: str, window: str, severity: str,
                   rule_name: str, rule_namespace: str) -> None:
    """A PrometheusRule (monitoring.coreos.com/v1) with one alert per namespace the program isolates, on the
    metric the target's CNI exports for packets dropped by policy."""
    result = check_with_lints(paths, stdin=_stdin_if_needed(paths))
    if result.program is None:
        _report(result, "text")
        sys.exit(EXIT_INPUT)
    try:
        rule = build_rule(result.program, target, paths, threshold, hold, window, severity, rule_name,
                          rule_namespace)
    except AlertError as exc:
        _fail(str(exc))
    _write(sys.stdout, render_alerts(rule, target), "data")


@main.command("diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("--format", "out_format", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help="markdown: a pull-request comment.")
@_topology_option("Kubernetes manifests to evaluate over, instead of the pods both programs model.")
@click.option("--exit-code", is_flag=True, help="Exit with status 1 when connectivity changes (like git diff).")
@click.option("--graph", "with_graph", is_flag=True,
              help="With --format markdown: add a Mermaid picture of the changes (added green, removed red).")
def diff_command(old: str, new: str, out_format: str, topology_dir: Path | None, exit_code: bool,
                 with_graph: bool) -> None:
    """Which connections NEW allows that OLD does not, and the other way round.

    OLD and NEW are .seg files, directories, or git revisions of the repository here (`HEAD~1`, `main`,
    `main:policies` for the *.seg below policies/ at main)."""
    if old == STDIN and new == STDIN:
        _fail("only one of OLD and NEW can be standard input")
    stdin = _read_stdin() if STDIN in (old, new) else None
    before, after = load(old, stdin), load(new, stdin)
    if before.program is None or after.program is None:
        both = Result(sources={**before.sources, **after.sources},
                      diagnostics=[d for d in (*before.diagnostics, *after.diagnostics) if d.is_error])
        _report(both, "text")
        sys.exit(EXIT_INPUT)
    topology = None if topology_dir is None else _read_topology(topology_dir)
    try:
        d = difference(before.program, after.program, old, new, topology)
    except TooLargeError as exc:
        _fail(f"cannot compare: the programs have {exc}, the limit\nhint: {TooLargeError.HINT}")
    if with_graph and out_format != "markdown":
        raise click.UsageError("--graph draws a Mermaid picture into the Markdown: give --format markdown")
    if out_format == "markdown":
        text = render_diff_markdown(d, graph=with_graph)
    else:
        text = {"text": render_diff_text, "json": render_diff_json}[out_format](d)
    _write(sys.stdout, text, "json" if out_format == "json" else "text")
    if exit_code and d.changed:
        sys.exit(EXIT_INPUT)


# ------------------------------------------------------------------------------------------ graph


@main.command("graph")
@paths_argument
@click.option("--target", "-t", "target", type=click.Choice(backend_names()), default=None,
              help="Show this target's view: its evaluator over the objects netdsl emits for it (default: the "
                   "program's meaning).")
@click.option("--format", "out_format", type=click.Choice(["mermaid", "dot", "html"]), default="mermaid",
              show_default=True,
              help="mermaid: a flowchart for Markdown and pull requests; dot: Graphviz; html: one self-contained "
                   "page with the picture and the connectivity matrix, each cell explained.")
@click.option("--namespace", "-n", "namespaces", multiple=True, metavar="NS",
              help="Only these namespaces' nodes, their neighbours and the edges that touch them (repeatable).")
@click.option("--service", "-s", "services", multiple=True, metavar="NAME",
              help="Only this service (`name` or `ns/name`), its neighbours and its edges (repeatable).")
@click.option("--collapse", multiple=True, metavar="NS",
              help="Draw namespace NS as one node (repeatable). Namespaces with more than "
                   "12 classes of pods collapse by themselves.")
@click.option("--all-edges", is_flag=True,
              help="Also draw the edges between endpoints outside the program's namespaces that carry every port.")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Write the picture to FILE instead of standard output.")
def graph_command(paths: tuple[str, ...], target: str | None, out_format: str, namespaces: tuple[str, ...],
                  services: tuple[str, ...], collapse: tuple[str, ...], all_edges: bool, output: Path | None) -> None:
    """Draw who may talk to whom in PATHS: services grouped by namespace, external peers, edges labelled
    with ports (and HTTP requests), isolation and deny statements visible. It holds in every cluster
    (the class topology, as `netdsl explain`)."""
    from netdsl.graph import Options as GraphOptions  # imported on use: the other commands never need it
    from netdsl.graph import build_graph, render_dot, render_html, render_mermaid
    from netdsl.semantics.engine import Unavailable

    result = check_with_lints(paths, stdin=_stdin_if_needed(paths))
    if result.program is None:
        _report(result, "text")
        sys.exit(EXIT_INPUT)
    try:
        analysis = analyse(result, [target] if target else [])
    except TooLargeError as exc:
        _fail(f"cannot draw: the program has {exc}, the limit\nhint: {TooLargeError.HINT}")
    view = target or "program"
    chosen = analysis.evaluators[view]
    if isinstance(chosen, Unavailable):
        _fail(f"target {target}: {chosen}")
    title = " ".join(paths)
    graph = build_graph(result.program, analysis.topology, analysis.probes, analysis.evaluators, view,
                        GraphOptions(namespaces, services, collapse, all_edges), title)
    render = {"mermaid": render_mermaid, "dot": render_dot, "html": render_html}[out_format]
    text = render(graph)
    if output is None:
        _write(sys.stdout, text, "data")
        return
    try:
        temporary = output.with_name(f".{output.name}.netdsl-{os.getpid()}")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, output)
    except OSError as exc:
        _fail(f"{output}: {exc.strerror or exc}")


# ------------------------------------------------------------------------------------------ fmt


@main.command("fmt")
@paths_argument
@click.option("--check", "check_only", is_flag=True,
              help="Write nothing; list the files that would change and exit 1 if there are any.")
@click.option("--diff", "show_diff", is_flag=True,
              help="Write nothing; print the changes as a unified diff and exit 1 if there are any.")
@format_option
def fmt_command(paths: tuple[str, ...], check_only: bool, show_diff: bool, fmt: str) -> None:
    """Rewrite PATHS (.seg files, directories of them) in the canonical layout, keeping comments.

    `-` reads standard input and writes the formatted text to standard output. A file with syntax
    errors is reported and nothing is written."""
    formatted, diags, sources = format_paths(paths, _stdin_if_needed(paths))
    if diags:
        _report(Result(sources=sources, diagnostics=diags), fmt)
        sys.exit(EXIT_INPUT)
    changed = [f for f in formatted if f.changed]
    if show_diff:
        _write(sys.stdout, "".join(f.diff() for f in changed), "data")
    elif check_only:
        _write(sys.stdout, "".join(f"{f.path}\n" for f in changed))
    else:
        for f in formatted:
            if f.location is None:
                _write(sys.stdout, f.after, "data")
        for f in changed:
            if f.location is None:
                continue
            try:
                write_in_place(f)
            except OSError as exc:
                _fail(f"{f.path}: cannot write: {exc.strerror or exc}")
            _write(sys.stderr, f"reformatted {f.path}\n")
        return
    if changed:
        sys.exit(EXIT_INPUT)


# ------------------------------------------------------------------------------------------ krm


@main.command("krm")
def krm_command() -> None:
    """Run as a KRM function (kustomize, kpt): a ResourceList on stdin, the same list with the
    compiled objects and results[] on stdout.

    The functionConfig names the .seg paths and options (see README, "Use in CI and GitOps")."""
    from netdsl import krm  # only this command needs it

    if sys.stdin is None:
        _fail("standard input is closed; a KRM function reads a ResourceList there")
    try:
        data = read_limited(sys.stdin.buffer, "<stdin>", MAX_TOTAL_BYTES)
    except LimitError as exc:
        data = b""
        out, status = krm.failure(str(exc))
    except OSError as exc:
        _fail(f"<stdin>: {exc.strerror or exc}")
    else:
        out, status = krm.run(data)
    _write(sys.stdout, krm.dump(out), "data")
    for r in out.get("results", []):  # the orchestrator shows results; a person running it sees them too
        if r.get("severity") == "error":
            _write(sys.stderr, f"netdsl: error: {r['message']}\n")
    if status:
        sys.exit(EXIT_INPUT)


def krm_main() -> None:
    """`netdsl-krm`: the KRM function as one executable, for orchestrators whose exec form takes a path
    and no arguments (kustomize's `exec: {path: ...}`)."""
    main(["krm"], prog_name="netdsl-krm")


@main.command("lsp")
def lsp_command() -> None:
    """Run the language server on stdin/stdout (for editors; needs `pip install 'netdsl[lsp]'`)."""
    from netdsl.lsp import main as lsp_main  # only this command needs it (and pygls)

    sys.exit(lsp_main())


# ------------------------------------------------------------------------------------------ infer


@main.command("infer")
@click.argument("flows", nargs=-1, required=True, metavar="FLOWS...")
@click.option("--against", "against", multiple=True, metavar="PATHS",
              help="A .seg program (files or directories, repeatable): print only the statements it lacks "
                   "for the observed traffic.")
@click.option("--target", "-t", type=click.Choice(backend_names()), default="vanilla", show_default=True,
              help="The target the proposal is for: cilium gets fqdn and entity peers, others CIDRs.")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Write the proposal to FILE instead of standard output.")
def infer_command(flows: tuple[str, ...], against: tuple[str, ...], target: str, output: Path | None) -> None:
    """Propose .seg from observed traffic: FLOWS are Hubble (`hubble observe -o json`), Calico flow-log or
    Inspektor Gadget trace_network JSON files, or - for stdin.

    The proposal isolates each observed namespace and allows exactly the observed connections (forwarded,
    or AUDIT) and DNS. With --against, only what that program would block."""
    from netdsl.infer import InferError, infer, program_modules, read_inputs
    from netdsl.infer.formats import FlowError

    if STDIN in against and STDIN in flows:
        _fail("only one of FLOWS and --against can be standard input")
    stdin = _read_stdin() if STDIN in flows or STDIN in against else None
    base = None
    if against:
        result = check(list(against), stdin=stdin if STDIN in against else None)
        if result.program is None:
            _report(result, "text")
            sys.exit(EXIT_INPUT)
        base = (result.program, program_modules(list(result.sources.values())))
    try:
        outcome = infer(read_inputs(flows, stdin if STDIN in flows else None), target, base)
    except (FlowError, InferError) as exc:
        _fail(str(exc))
    for note in outcome.notes:
        _note(note)
    if output is None:
        _write(sys.stdout, outcome.text)
        return
    try:
        temporary = output.with_name(f".{output.name}.netdsl-{os.getpid()}")
        temporary.write_text(outcome.text, encoding="utf-8")
        os.replace(temporary, output)
    except OSError as exc:
        _fail(f"{output}: {exc.strerror or exc}")
