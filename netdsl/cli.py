"""Command line: a thin layer over netdsl.compiler. Data on stdout, diagnostics on stderr.

Exit status: 0 success, 1 errors in the input, 2 usage errors (click's own convention).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import click

from netdsl import __version__
from netdsl.backends import Options, backend_names
from netdsl.backends.calico import DEFAULT_VERSION as DEFAULT_CALICO_VERSION
from netdsl.backends.calico import parse_version
from netdsl.compiler import STDIN, Result, check, compile_paths, stream
from netdsl.diagnostics import error, render_json, render_text, sort_key
from netdsl.output import write_directory

EXIT_INPUT = 1


def _stdin_if_needed(paths: tuple[str, ...]) -> bytes | None:
    return sys.stdin.buffer.read() if STDIN in paths else None


def _write(stream: TextIO, text: str) -> None:
    """Always UTF-8, whatever the locale (the YAML and the messages may hold any character)."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a test harness's text stream
        stream.write(text)
    else:
        stream.flush()
        buffer.write(text.encode("utf-8", errors="replace"))
        buffer.flush()


def _report(result: Result, fmt: str) -> None:
    diags = sorted(result.diagnostics, key=sort_key)
    if fmt == "json":
        _write(sys.stderr, render_json(diags))
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


def _check_version(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_version(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a version like 3.32") from None
    return value


paths_argument = click.argument("paths", nargs=-1, required=True, metavar="PATHS...")
format_option = click.option(
    "--diagnostics", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="How to print errors and warnings (on stderr).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="netdsl")
def main() -> None:
    """Compile .seg network segmentation programs to Kubernetes network policies."""


@main.command("compile")
@paths_argument
@click.option("--target", "-t", type=click.Choice(backend_names()), default="vanilla", show_default=True,
              help="Which CNI's policy API to emit.")
@click.option("--output", "-o", "output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one file per object plus kustomization.yaml into this directory "
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
@format_option
def compile_command(
    paths: tuple[str, ...], target: str, output: Path | None, fmt: str, staged: bool, calico_version: str,
    widen: bool,
) -> None:
    """Compile PATHS (.seg files, directories of them, or - for stdin) for one target."""
    options = Options({"staged": staged, "calico_version": calico_version, "widen": widen})
    result = compile_paths(paths, target, options, stdin=_stdin_if_needed(paths))
    if result.ok and output is not None:
        try:
            _written, removed = write_directory(output, result.manifests)
        except OSError as exc:
            result.diagnostics.append(error("output", str(exc)))
        else:
            for rel in removed:
                _write(sys.stderr, f"removed {output / rel} (no longer produced)\n")
    _report(result, fmt)
    if not result.ok:
        sys.exit(EXIT_INPUT)
    if output is None:
        _write(sys.stdout, stream(result.manifests))


@main.command("check")
@paths_argument
@format_option
def check_command(paths: tuple[str, ...], fmt: str) -> None:
    """Report errors and warnings in PATHS without emitting anything."""
    result = check(paths, stdin=_stdin_if_needed(paths))
    _report(result, fmt)
    if not result.ok:
        sys.exit(EXIT_INPUT)
