"""Whatever the input, the CLI reports diagnostics in the documented format and exits 0, 1 or (for usage
errors only) 2 - never a Python traceback. Plus one test per semantic error kind, with its position."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdsl.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").rglob("*.seg"))
THREE_TIER = REPO / "examples" / "three-tier.seg"


def target_for(example: Path) -> str:
    """The first target that can express an example (tiers need Calico, DNS names and HTTP Cilium)."""
    text = example.read_text(encoding="utf-8")
    if "fqdn " in text or " http " in text:
        return "cilium"
    if "tier " in text or "cluster" in text:
        return "calico"
    return "vanilla"

ERROR_LINE = re.compile(r"^[^:]+:\d+:\d+: error: .+ \[[a-z-]+\]$")
WARNING_LINE = re.compile(r"^[^:]+:\d+:\d+: warning: .+ \[[a-z-]+\]$")
NOTE_LINE = re.compile(r"^[^:]+:\d+:\d+: note: .+$")
UNPLACED_ERROR_LINE = re.compile(r"^netdsl: error: .+ \[[a-z-]+\]$")
SUMMARY_LINE = re.compile(r"^Found \d+ errors?( in \d+ files?)?( and \d+ warnings?)?$")


def check_output(result: Result, allow_usage: bool = False) -> list[str]:
    """Assert the contract on one CLI run; return its error lines."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("the CLI raised") from result.exception
    allowed = (0, 1, 2) if allow_usage else (0, 1)
    assert result.exit_code in allowed, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    if result.exit_code == 2:  # click's usage message
        assert "Usage:" in result.stdout + result.stderr
        return []
    errors: list[str] = []
    for line in result.stderr.split("\n"):
        if line == "" or line.startswith("    ") or line.startswith("  hint: ") or SUMMARY_LINE.match(line):
            continue
        if ERROR_LINE.match(line) or UNPLACED_ERROR_LINE.match(line):
            errors.append(line)
        else:
            assert WARNING_LINE.match(line) or NOTE_LINE.match(line), f"malformed diagnostic line {line!r}"
    if result.exit_code == 1:
        assert errors, f"exit status 1 without an error line:\n{result.stderr}"
    if result.exit_code == 0:
        assert errors == []
    return errors


def cli(*args: str, input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def run_file(tmp_path: Path, data: bytes | str, command: str = "check", name: str = "t.seg") -> Result:
    path = tmp_path / name
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    return cli(command, str(path))


def diagnostics_json(tmp_path: Path, text: str, command: str = "check") -> tuple[int, list[dict[str, Any]]]:
    path = tmp_path / "t.seg"
    path.write_text(text, encoding="utf-8")
    result = cli(command, "--diagnostics", "json", str(path))
    check_output_json(result)
    return result.exit_code, json.loads(result.stderr)


def check_output_json(result: Result) -> None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("the CLI raised") from result.exception
    assert result.exit_code in (0, 1)
    data = json.loads(result.stderr)
    assert isinstance(data, list)
    for d in data:
        assert set(d) == {
            "code",
            "severity",
            "message",
            "file",
            "line",
            "column",
            "end_line",
            "end_column",
            "hint",
        }
    assert (result.exit_code == 1) == any(d["severity"] == "error" for d in data)


# ------------------------------------------------------------------------------ mangled examples


def test_there_are_examples() -> None:
    assert EXAMPLES


def _cut_points(size: int, limit: int = 30) -> list[int]:
    step = max(1, size // limit)
    return sorted({*range(0, size, step), size - 1, size})


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_compile(example: Path) -> None:
    result = cli("compile", "--target", target_for(example), str(example))
    check_output(result)
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_truncated_examples(tmp_path: Path, example: Path) -> None:
    data = example.read_bytes()
    for cut in _cut_points(len(data)):
        check_output(run_file(tmp_path, data[:cut], "compile"))


@pytest.mark.parametrize("example", EXAMPLES[:3], ids=[p.name for p in EXAMPLES[:3]])
def test_examples_with_lines_dropped_or_doubled(tmp_path: Path, example: Path) -> None:
    lines = example.read_text(encoding="utf-8").splitlines(keepends=True)
    for i in range(len(lines)):
        check_output(run_file(tmp_path, "".join(lines[:i] + lines[i + 1 :]), "compile"))
        check_output(run_file(tmp_path, "".join(lines[: i + 1] + lines[i:]), "check"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    check_output(run_file(tmp_path, data))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_random_text(tmp_path: Path, text: str) -> None:
    check_output(run_file(tmp_path, text, "compile"))


def test_invalid_utf8_is_an_encoding_error_at_its_position(tmp_path: Path) -> None:
    result = run_file(tmp_path, b"namespace n {\n  a accepts b\xc3\x28\n}\n")
    (line,) = check_output(result)
    assert line.endswith("t.seg:2:14: error: not valid UTF-8 (byte 0xc3)  [encoding]")
    assert result.exit_code == 1


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\x00n\x00s\x00",
        b"namespace n {\x00}\n",
        b"\x00",
        b"\x80\x81\x82",
        b"\xef\xbb\xbf\xef\xbb\xbf",
    ],
    ids=["utf16", "nul", "only-nul", "continuation-bytes", "double-bom"],
)
def test_binary_data(tmp_path: Path, data: bytes) -> None:
    result = run_file(tmp_path, data)
    check_output(result)
    assert result.exit_code == 1


def test_bom_is_ignored(tmp_path: Path) -> None:
    result = run_file(tmp_path, "\ufeffnamespace n {\n  isolate ingress\n}\n")
    check_output(result)
    assert result.exit_code == 0


# ------------------------------------------------------------------------------ odd inputs

NS = "namespace n {{\n  service a = app=a\n  service b = app=b\n  {}\n}}\n"

ODD_INPUTS: dict[str, str] = {
    "empty": "",
    "only-comments": "# nothing\n   # here\n#",
    "only-newlines": "\n\n\n;;\n",
    "huge-port": NS.format("a accepts b on 99999999999999999999"),
    "huge-range": NS.format("a accepts b on 1-99999999999999999999999999999999"),
    "cidr-prefix-999": NS.format("a connects to cidr 10.0.0.0/999"),
    "cidr-huge-prefix": NS.format("a connects to cidr 10.0.0.0/99999999999999999999999"),
    "cidr-huge-octet": NS.format("a connects to cidr 99999999999999999999.0.0.0/8"),
    "rtl-mark-in-comment": NS.format("a accepts b  # \u202eevil\u202c"),
    "rtl-mark-in-name": NS.format("a accepts b\u200f"),
    "rtl-mark-in-string": NS.format('service c = app="\u200fweb"'),
    "emoji": NS.format("a accepts b on 80 \U0001f600"),
    "emoji-in-string": NS.format('service c = app="\U0001f600"'),
    "combining": NS.format("service ca\u0301 = app=x"),
    "combining-in-string": NS.format('service c = app="e\u0301"'),
    "line-separator": NS.format("a accepts b\u2028a accepts b"),
    "paragraph-separator": "namespace n {\u2029}\n",
    "line-separator-in-comment": "# x \u2028 y\nnamespace n {\n  a accepts b c\n}\n",
    "form-feed": "namespace n {\f\n  a accepts b c\n}\n",
    "vertical-tab": NS.format("a accepts\x0bb"),
    "nel": NS.format("a accepts b\x85"),
    "fullwidth-name": NS.format("service \uff57\uff45\uff42 = app=web"),
    "fullwidth-keyword": "\uff4eamespace n {\n}\n",
    "fullwidth-digits": NS.format("a accepts b on \uff18\uff10"),
    "nbsp": NS.format("a\u00a0accepts b"),
    "zero-width-space": NS.format("a accepts\u200bb"),
    "lone-cr": "namespace n {\r  isolate\r}\r",
    "crlf": "namespace n {\r\n  a accepts b c\r\n}\r\n",
    "tabs": "namespace n {\n\tservice a = app=a\n\ta\taccepts\tb\tc\n}\n",
    "unterminated-string": NS.format('service c = app="abc'),
    "string-over-lines": NS.format('service c = app="a\nb"'),
    "bad-escape": NS.format('service c = app="\\q\\u12"'),
    "nul-escape": NS.format('service c = app="\\u0000"'),
    "surrogate-escape": NS.format('service c = app="\\ud800"'),
    "single-quotes": NS.format("service c = app='x'"),
    "long-line": NS.format("a accepts " + ", ".join(["b"] * 5000)),
    "long-name": NS.format("service " + "c" * 10000 + " = app=x"),
    "long-label-value": NS.format(f'service c = app="{"v" * 10000}"'),
    "long-comment": "#" + "x" * 200_000 + "\n",
    "long-word": "x" * 100_000,
    "many-ports": NS.format("a accepts b on " + ", ".join(str(p) for p in range(1, 600))),
    "repeated-statements": "namespace n {\n  service a = app=a\n" + "  a accepts a on 80\n" * 2000 + "}\n",
    "repeated-errors": "namespace n {\n" + "  a accepts b c\n" * 500 + "}\n",
    "repeated-blocks": "".join(f"namespace n{i} {{\n  isolate\n  allow dns\n}}\n" for i in range(300)),
    "unclosed-blocks": "namespace n {\n" * 200,
    "closing-braces": "}\n" * 200,
    "nested-parens": NS.format("service c = app in " + "(" * 200 + "x" + ")" * 200),
    "backslash-at-eof": "namespace n {\n  a accepts b \\",
    "mixed-mistakes": "cidrs x = 10.0.0.1/8\nnamespace N {\n  a accepts b c\n}\nnamespace m {\n  a b\n}\n",
}


@pytest.mark.parametrize("text", ODD_INPUTS.values(), ids=ODD_INPUTS.keys())
def test_odd_inputs(tmp_path: Path, text: str) -> None:
    check_output(run_file(tmp_path, text, "compile"))
    result = cli("check", "--diagnostics", "json", str(tmp_path / "t.seg"))
    check_output_json(result)


def test_empty_and_comment_only_files_are_fine(tmp_path: Path) -> None:
    for text in ("", "# nothing\n", "\n\n"):
        result = run_file(tmp_path, text, "compile")
        check_output(result)
        assert result.exit_code == 0
        assert result.stdout == ""


def test_huge_numbers_are_range_errors(tmp_path: Path) -> None:
    errors = check_output(run_file(tmp_path, ODD_INPUTS["huge-port"]))
    assert errors == [
        f"{tmp_path / 't.seg'}:4:18: error: port 99999999999999999999 is out of range  [invalid-port]"
    ]
    errors = check_output(run_file(tmp_path, ODD_INPUTS["cidr-prefix-999"]))
    (line,) = errors
    assert ":4:22: error: invalid CIDR '10.0.0.0/999'" in line and line.endswith("[invalid-cidr]")


def test_every_syntax_error_of_a_file_is_reported(tmp_path: Path) -> None:
    errors = check_output(run_file(tmp_path, ODD_INPUTS["mixed-mistakes"]))
    assert [re.search(r":(\d+):\d+:", e).group(1) for e in errors] == ["3", "6"]  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ paths and usage


def test_missing_path(tmp_path: Path) -> None:
    result = cli("check", str(tmp_path / "nope.seg"))
    (line,) = check_output(result)
    assert line == f"netdsl: error: {tmp_path / 'nope.seg'}: no such file or directory  [io-error]"
    assert result.exit_code == 1


@pytest.mark.parametrize("name", ["a" * 5000, "a/" * 3000 + "x.seg"], ids=["long-name", "long-path"])
def test_path_too_long_is_an_io_error(tmp_path: Path, name: str) -> None:
    # stat() fails with ENAMETOOLONG, which pathlib's is_dir()/exists() do not swallow.
    result = cli("compile", str(tmp_path / name))
    (line,) = check_output(result)
    assert line.startswith("netdsl: error: ") and line.endswith("  [io-error]")
    assert result.exit_code == 1


def test_directory_without_seg_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hello\n", encoding="utf-8")
    (tmp_path / "sub.seg").mkdir()  # a directory named like a .seg file is not one
    result = cli("compile", str(tmp_path))
    (line,) = check_output(result)
    assert line == f"netdsl: error: {tmp_path}: no .seg files in this directory  [io-error]"
    assert result.exit_code == 1


def test_directory_of_seg_files_reports_errors_in_each(tmp_path: Path) -> None:
    (tmp_path / "a.seg").write_text("namespace a {\n  x accepts y z\n}\n", encoding="utf-8")
    (tmp_path / "deeper").mkdir()
    (tmp_path / "deeper" / "b.seg").write_text("namespace b {\n  isolate both\n}\n", encoding="utf-8")
    result = cli("check", str(tmp_path))
    errors = check_output(result)
    assert len(errors) == 2
    assert "2 errors in 2 files" in result.stderr


def test_missing_and_present_paths_together(tmp_path: Path) -> None:
    good = tmp_path / "good.seg"
    good.write_text("namespace n {\n  a accepts b c\n}\n", encoding="utf-8")
    result = cli("check", str(tmp_path / "missing.seg"), str(good))
    errors = check_output(result)
    assert len(errors) == 2  # the io-error does not hide the syntax error of the file that exists


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["check"],
        ["compile"],
        ["frobnicate"],
        ["compile", "--target", "nope", "x.seg"],
        ["check", "--diagnostics", "xml", "x.seg"],
        ["check", "--bogus", "x.seg"],
    ],
    ids=[
        "nothing",
        "check-no-paths",
        "compile-no-paths",
        "unknown-command",
        "unknown-target",
        "unknown-format",
        "unknown-option",
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = cli(*args)
    check_output(result, allow_usage=True)
    assert result.exit_code == 2


def test_output_into_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    result = cli("compile", "-o", str(tmp_path / "file"), str(THREE_TIER))
    check_output(result, allow_usage=True)
    assert result.exit_code == 2


def test_output_directory_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    result = cli("compile", "-o", str(tmp_path / "file" / "sub"), str(THREE_TIER))
    (line,) = check_output(result)
    assert line.startswith("netdsl: error: ") and line.endswith("[output]")
    assert result.exit_code == 1


def test_stdin_in_process() -> None:
    result = cli("check", "-", input=b"namespace n {\n  a accepts b c\n}\n")
    (line,) = check_output(result)
    assert line.startswith("<stdin>:2:15: error: unexpected `c`")
    result = cli("check", "-", input=b"\xff\xfe\x00")
    check_output(result)
    assert result.exit_code == 1


def _subprocess(*args: str, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "netdsl", *args], input=input, capture_output=True, timeout=60, check=False
    )


def _check_subprocess(proc: subprocess.CompletedProcess[bytes], status: int) -> list[str]:
    stderr = proc.stderr.decode("utf-8")
    assert b"Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == status, stderr
    return [line for line in stderr.split("\n") if ": error: " in line]


def test_subprocess_stdin_errors() -> None:
    proc = _subprocess("check", "-", input=b"namespace n {\n  a accepts b c\n  isolate both\n}\n")
    errors = _check_subprocess(proc, 1)
    assert [e.split(": error:")[0] for e in errors] == ["<stdin>:2:15", "<stdin>:3:11"]
    assert all(ERROR_LINE.match(e) for e in errors)


def test_subprocess_stdin_compiles() -> None:
    proc = _subprocess("compile", "-", input=THREE_TIER.read_bytes())
    _check_subprocess(proc, 0)
    assert proc.stdout.startswith(b"---\n")


def test_subprocess_binary_stdin_and_usage() -> None:
    _check_subprocess(_subprocess("check", "-", input=bytes(range(256))), 1)
    _check_subprocess(_subprocess("check"), 2)


def test_subprocess_missing_file(tmp_path: Path) -> None:
    errors = _check_subprocess(_subprocess("compile", str(tmp_path / "nope.seg")), 1)
    assert len(errors) == 1 and UNPLACED_ERROR_LINE.match(errors[0])


# ------------------------------------------------------------------------------ semantic errors

SEMANTIC: list[tuple[str, str, str, int, int, str]] = [
    # id, program, code, line, column, message fragment
    (
        "duplicate-service",
        "namespace n {\n  service a = app=a\n  service a = app=b\n}\n",
        "duplicate-name",
        3,
        11,
        "`a` is already declared in namespace `n`",
    ),
    (
        "duplicate-group",
        "namespace n {\n  service a = app=a\n  group a = a\n}\n",
        "duplicate-name",
        3,
        9,
        "`a` is already declared",
    ),
    (
        "duplicate-cidrs",
        "cidrs x = 10.0.0.0/8\ncidrs x = 10.0.0.0/8\n",
        "duplicate-name",
        2,
        7,
        "declared twice",
    ),
    (
        "service-named-like-cidrs",
        "cidrs x = 10.0.0.0/8\nnamespace n {\n  service x = app=x\n}\n",
        "duplicate-name",
        3,
        11,
        "already the name of a cidr set",
    ),
    (
        "unknown-subject",
        "namespace n {\n  service a = app=a\n  ghost accepts a\n}\n",
        "unknown-name",
        3,
        3,
        "no service or group `ghost`",
    ),
    (
        "unknown-peer",
        "namespace n {\n  service a = app=a\n  a accepts ghost\n}\n",
        "unknown-name",
        3,
        13,
        "no service, group or cidr set named `ghost`",
    ),
    (
        "unknown-group-member",
        "namespace n {\n  service a = app=a\n  group g = a, ghost\n}\n",
        "unknown-name",
        3,
        16,
        "no service or group `ghost`",
    ),
    (
        "unknown-namespace",
        "namespace n {\n  service a = app=a\n  a accepts other/svc\n}\n",
        "unknown-name",
        3,
        13,
        "namespace `other` is not declared",
    ),
    (
        "unknown-remote-service",
        "namespace o {\n}\nnamespace n {\n  service a = app=a\n  a accepts o/svc\n}\n",
        "unknown-name",
        5,
        13,
        "no service or group `svc` in namespace `o`",
    ),
    (
        "invalid-namespace-name",
        "namespace Prod {\n}\n",
        "invalid-name",
        1,
        11,
        "invalid namespace name 'Prod'",
    ),
    (
        "invalid-service-name",
        "namespace n {\n  service Web = app=a\n}\n",
        "invalid-name",
        2,
        11,
        "invalid service name 'Web'",
    ),
    (
        "long-service-name",
        "namespace n {\n  service " + "a" * 64 + " = app=a\n}\n",
        "invalid-name",
        2,
        11,
        "at most 63",
    ),
    ("invalid-cidrs-name", "cidrs My_Set = 10.0.0.0/8\n", "invalid-name", 1, 7, "invalid cidr set name"),
    (
        "invalid-scope-name",
        "namespace n {\n  service a = app=a\n  a accepts namespace Other\n}\n",
        "invalid-name",
        3,
        23,
        "invalid namespace name 'Other'",
    ),
    (
        "reserved-all-pods",
        "namespace n {\n  service all-pods = app=a\n}\n",
        "reserved-name",
        2,
        11,
        "`all-pods` is a name netdsl uses",
    ),
    (
        "reserved-default-deny",
        "namespace n {\n  group default-deny = x\n}\n",
        "reserved-name",
        2,
        9,
        "`default-deny` is a name netdsl uses",
    ),
    (
        "invalid-label-key",
        "namespace n {\n  service a = _app=a\n}\n",
        "invalid-label",
        2,
        15,
        "invalid label key '_app'",
    ),
    (
        "invalid-label-prefix",
        "namespace n {\n  service a = Example.com/app=a\n}\n",
        "invalid-label",
        2,
        15,
        "the prefix 'Example.com' must be a DNS subdomain",
    ),
    (
        "invalid-label-template",
        'namespace n {\n  service a = app="{{x}}"\n}\n',
        "invalid-label",
        2,
        19,
        "invalid label value '{{x}}'",
    ),
    (
        "invalid-label-yaml",
        'namespace n {\n  service a = app="a: #b"\n}\n',
        "invalid-label",
        2,
        19,
        "invalid label value 'a: #b'",
    ),
    (
        "invalid-label-long",
        f"namespace n {{\n  service a = app={'v' * 64}\n}}\n",
        "invalid-label",
        2,
        19,
        "at most 63",
    ),
    (
        "invalid-namespace-label",
        'namespace n labels team="a b"\n',
        "invalid-label",
        1,
        25,
        "invalid label value 'a b'",
    ),
    ("empty-in-list", "namespace n {\n  service a = app in ()\n}\n", "invalid-label", 2, 15, "`in ()` needs"),
    (
        "invalid-label-in-peer",
        'namespace n {\n  service a = app=a\n  a accepts pods[x="y z"]\n}\n',
        "invalid-label",
        3,
        20,
        "invalid label value 'y z'",
    ),
    (
        "port-0",
        "namespace n {\n  service a = app=a\n  a accepts a on 0\n}\n",
        "invalid-port",
        3,
        18,
        "port 0 is out of range",
    ),
    (
        "port-70000",
        "namespace n {\n  service a = app=a\n  a accepts a on 70000\n}\n",
        "invalid-port",
        3,
        18,
        "port 70000 is out of range",
    ),
    (
        "port-range-reversed",
        "namespace n {\n  service a = app=a\n  a accepts a on 9000-8000\n}\n",
        "invalid-port",
        3,
        18,
        "the range 9000-8000 ends before it starts",
    ),
    (
        "port-range-0",
        "namespace n {\n  service a = app=a\n  a accepts a on 0-80\n}\n",
        "invalid-port",
        3,
        18,
        "port 0 is out of range",
    ),
    (
        "port-bad-name",
        "namespace n {\n  service a = app=a\n  a accepts a on Http\n}\n",
        "invalid-port",
        3,
        18,
        "invalid port 'Http'",
    ),
    (
        "port-name-too-long",
        "namespace n {\n  service a = app=a\n  a accepts a on abcdefghijklmnop\n}\n",
        "invalid-port",
        3,
        18,
        "at most 15 characters",
    ),
    (
        "port-bad-protocol",
        "namespace n {\n  service a = app=a\n  a accepts a on 80/icmp\n}\n",
        "invalid-port",
        3,
        18,
        "unknown protocol 'icmp'",
    ),
    (
        "cidr-malformed",
        "namespace n {\n  service a = app=a\n  a connects to cidr 10.0.0.300/8\n}\n",
        "invalid-cidr",
        3,
        22,
        "invalid CIDR '10.0.0.300/8'",
    ),
    (
        "cidr-host-bits",
        "namespace n {\n  service a = app=a\n  a connects to cidr 10.0.0.1/8\n}\n",
        "invalid-cidr",
        3,
        22,
        "has host bits set",
    ),
    (
        "cidr-except-outside",
        "namespace n {\n  service a = app=a\n  a connects to cidr 10.0.0.0/8 except 11.0.0.0/16\n}\n",
        "invalid-cidr",
        3,
        40,
        "`except 11.0.0.0/16` is not strictly inside `10.0.0.0/8`",
    ),
    (
        "cidr-except-equal",
        "cidrs x = 10.0.0.0/8 except (10.0.0.0/8)\n",
        "invalid-cidr",
        1,
        30,
        "not strictly inside",
    ),
    (
        "cidr-except-other-family",
        "cidrs x = 10.0.0.0/8 except 2001:db8::/32\n",
        "invalid-cidr",
        1,
        29,
        "not strictly inside",
    ),
    (
        "contradictory-selector",
        "namespace n {\n  service a = app=a, app=b\n}\n",
        "conflict",
        2,
        15,
        "can never match",
    ),
    (
        "contradictory-in-notin",
        "namespace n {\n  service a = app in (x), app notin (x)\n}\n",
        "conflict",
        2,
        15,
        "can never match",
    ),
    (
        "contradictory-exists",
        "namespace n {\n  service a = app=a\n  a accepts pods[x, !x]\n}\n",
        "conflict",
        3,
        17,
        "can never match",
    ),
    (
        "conflicting-namespace-labels",
        "namespace n labels env=a\nnamespace n labels env=b {\n}\n",
        "conflict",
        2,
        20,
        "namespace `n` is labelled `env=a` elsewhere; it cannot also be `env=b`",
    ),
    (
        "namespace-name-label",
        "namespace n labels kubernetes.io/metadata.name=m\n",
        "conflict",
        1,
        20,
        "Kubernetes sets `kubernetes.io/metadata.name=n`",
    ),
    (
        "group-contains-itself",
        "namespace n {\n  group g = h\n  group h = g\n}\n",
        "conflict",
        2,
        13,
        "contains itself",
    ),
]


@pytest.mark.parametrize(
    ("program", "code", "line", "column", "fragment"), [s[1:] for s in SEMANTIC], ids=[s[0] for s in SEMANTIC]
)
def test_semantic_error(
    tmp_path: Path, program: str, code: str, line: int, column: int, fragment: str
) -> None:
    status, diags = diagnostics_json(tmp_path, program)
    assert status == 1
    errors = [d for d in diags if d["severity"] == "error"]
    assert [(d["code"], d["line"], d["column"]) for d in errors if d["code"] == code][:1] == [
        (code, line, column)
    ], diags
    (first,) = [d for d in errors if (d["line"], d["column"]) == (line, column)]
    assert fragment in first["message"]
    assert first["file"] == str(tmp_path / "t.seg")
    # The same diagnostic in text form.
    text = cli("check", str(tmp_path / "t.seg"))
    errors_text = check_output(text)
    assert any(
        e.startswith(f"{tmp_path / 't.seg'}:{line}:{column}: error: ") and e.endswith(f"[{code}]")
        for e in errors_text
    )


def test_all_semantic_codes_are_covered() -> None:
    covered = {s[2] for s in SEMANTIC}
    assert covered >= {
        "duplicate-name",
        "unknown-name",
        "invalid-name",
        "reserved-name",
        "invalid-label",
        "invalid-port",
        "invalid-cidr",
        "conflict",
    }


MANY_MISTAKES = """\
cidrs office = 10.0.0.0/8
cidrs office = 192.168.0.0/16
namespace Prod {
}
namespace n labels env=a, team="{{x}}"
namespace n labels env=b
namespace n {
  service web = app=web
  service web = app=web2
  service Api = app=api
  service all-pods = app=x
  group g = web, nope
  service bad = _app=x
  service bad2 = app="a: #b"
  service never = app=a, app=b
  web accepts ghost on 0
  web accepts pods[app=x] on 70000, 9000-8000, Http, 80/icmp
  web connects to cidr 10.0.0.300/8, cidr 10.0.0.1/8, cidr 10.0.0.0/8 except 11.0.0.0/16
  nobody accepts web
}
"""

MANY_EXPECTED = [
    (2, 7, "duplicate-name"),
    (3, 11, "invalid-name"),
    (5, 32, "invalid-label"),
    (6, 20, "conflict"),
    (9, 11, "duplicate-name"),
    (10, 11, "invalid-name"),
    (11, 11, "reserved-name"),
    (12, 18, "unknown-name"),
    (13, 17, "invalid-label"),
    (14, 22, "invalid-label"),
    (15, 19, "conflict"),
    (16, 15, "unknown-name"),
    (16, 24, "invalid-port"),
    (17, 30, "invalid-port"),
    (17, 37, "invalid-port"),
    (17, 48, "invalid-port"),
    (17, 54, "invalid-port"),
    (18, 24, "invalid-cidr"),
    (18, 43, "invalid-cidr"),
    (18, 78, "invalid-cidr"),
    (19, 3, "unknown-name"),
]


def test_a_file_with_many_mistakes_reports_all_of_them(tmp_path: Path) -> None:
    status, diags = diagnostics_json(tmp_path, MANY_MISTAKES)
    assert status == 1
    got = [(d["line"], d["column"], d["code"]) for d in diags if d["severity"] == "error"]
    assert got == MANY_EXPECTED
    result = run_file(tmp_path, MANY_MISTAKES)
    assert len(check_output(result)) == len(MANY_EXPECTED)
    assert f"Found {len(MANY_EXPECTED)} errors in 1 file" in result.stderr


def test_mistakes_in_several_files_are_all_reported(tmp_path: Path) -> None:
    (tmp_path / "a.seg").write_text("namespace a {\n  service A = x=y\n}\n", encoding="utf-8")
    (tmp_path / "b.seg").write_text(
        "namespace b {\n  service b = x=y\n  b accepts ghost\n}\n", encoding="utf-8"
    )
    result = cli("check", "--diagnostics", "json", str(tmp_path))
    check_output_json(result)
    diags = json.loads(result.stderr)
    assert [(Path(d["file"]).name, d["line"], d["code"]) for d in diags if d["severity"] == "error"] == [
        ("a.seg", 2, "invalid-name"),
        ("b.seg", 3, "unknown-name"),
    ]


# ------------------------------------------------------------------------------ issue 9: hostile input

SERVICES = "namespace n {\n service a = app=a\n service b = app=b\n"


@pytest.mark.parametrize("statement", [
    "a accepts b on {n}",  # a port
    "a accepts b on 1-{n}",  # a range
    "service c = app={n}",  # a label value
    "a accepts b on {n}/udp",
])
def test_integer_words_of_any_length(tmp_path: Path, statement: str) -> None:
    """Python refuses to convert more than 4,300 digits; no word may be longer than 1,000 characters."""
    for digits in (999, 4301, 100_000):
        text = SERVICES + " " + statement.format(n="9" * digits) + "\n}\n"
        errors = check_output(run_file(tmp_path, text, "compile"))
        assert len(errors) == 1
        if digits > 1000:
            assert "a word of" in errors[0] and errors[0].endswith("[limit]")


def test_tier_order_of_any_length(tmp_path: Path) -> None:
    text = "tier t order " + "1" * 5000 + " {\n namespace n {\n  isolate\n }\n}\n"
    (error,) = check_output(run_file(tmp_path, text, "compile"))
    assert error.endswith("[limit]")


def _explain(tmp_path: Path, to: str) -> Result:
    path = tmp_path / "t.seg"
    path.write_text(SERVICES + " b accepts a on 80\n}\n", encoding="utf-8")
    return cli("explain", str(path), "--from", "n/a", "--to", to)


@pytest.mark.parametrize("port", ["٣", "٨٠", "8٠", "³", "9" * 5000])
def test_explain_port_must_be_ascii_digits(tmp_path: Path, port: str) -> None:
    result = _explain(tmp_path, f"n/b:{port}")
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert result.stderr.startswith("netdsl: error: ") and "Traceback" not in result.stderr
    assert "1-65535" in result.stderr or "not a port number" in result.stderr
    assert _explain(tmp_path, "n/b:80").exit_code == 0


def _shell(command: str, stdin: bytes | None = b"") -> subprocess.CompletedProcess[bytes]:
    """`netdsl ...` in a shell, for redirections a test harness cannot make (`<&-`, `>/dev/full`)."""
    netdsl = f"{sys.executable} -m netdsl"
    return subprocess.run(["bash", "-c", command.replace("netdsl", netdsl)], input=stdin, capture_output=True,
                          timeout=120, check=False, cwd=REPO)


@pytest.mark.skipif(sys.platform != "linux", reason="/dev/full, /dev/zero and bash redirections")
@pytest.mark.parametrize("command, message", [
    ("netdsl check - <&-", "standard input is closed"),
    ("netdsl compile - <&-", "standard input is closed"),
    ("netdsl diff - examples/three-tier.seg <&-", "standard input is closed"),
    ("netdsl compile examples/three-tier.seg >/dev/full", "cannot write standard output: No space left"),
    ("netdsl compile examples/three-tier.seg >&-", "cannot write standard output"),
    ("netdsl explain examples/three-tier.seg >/dev/full", "cannot write standard output"),
    ("netdsl check /dev/zero", "/dev/zero: larger than 8 MiB, the limit for one file  [limit]"),
    ("netdsl check - </dev/zero", "<stdin>: larger than 8 MiB, the limit for one file  [limit]"),
    ("mkfifo $T/f.seg && (yes 'namespace n {}' >$T/f.seg &) && netdsl check $T/f.seg",
     "f.seg: larger than 8 MiB, the limit for one file  [limit]"),
])
def test_closed_full_and_endless_streams(tmp_path: Path, command: str, message: str) -> None:
    proc = _shell(f"T={tmp_path}; ulimit -v 2000000; {command}", stdin=None)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert message in stderr, stderr


@pytest.mark.skipif(sys.platform != "linux", reason="bash redirections")
def test_closed_stdout_does_not_hand_its_descriptor_to_an_output_file(tmp_path: Path) -> None:
    """With fd 1 closed the first file netdsl opens would get it, and the YAML stream would go there."""
    proc = _shell(f"netdsl compile examples/three-tier.seg -o {tmp_path}/out >&-")
    assert proc.returncode == 0, proc.stderr
    files = [f for f in (tmp_path / "out").rglob("*") if f.is_file()]
    assert files and all(f.read_text().count("---\n") <= 1 for f in files)


def test_standard_input_over_the_limit_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from netdsl import compiler

    monkeypatch.setattr(compiler, "MAX_FILE_BYTES", 100)
    result = cli("check", "-", input=b"#" * 101)
    assert result.exit_code == 1 and "larger than" in result.stderr
    assert cli("check", "-", input=b"#" * 100).exit_code == 0


def test_limits_on_files_and_in_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netdsl import compiler

    for i in range(4):
        (tmp_path / f"{i}.seg").write_text("# " + "x" * 60 + "\n")
    monkeypatch.setattr(compiler, "MAX_FILES", 3)
    (error,) = check_output(cli("check", str(tmp_path)))
    assert "more than 3 .seg files" in error and error.endswith("[limit]")
    monkeypatch.setattr(compiler, "MAX_FILES", 10)
    monkeypatch.setattr(compiler, "MAX_TOTAL_BYTES", 200)
    (error,) = check_output(cli("check", str(tmp_path)))
    assert "larger than" in error and "in all" in error
    monkeypatch.setattr(compiler, "MAX_TOTAL_BYTES", 10_000)
    assert cli("check", str(tmp_path)).exit_code == 0


def test_directory_symlink_loops_end(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.seg").write_text(SERVICES + "}\n")
    (tmp_path / "d" / "loop").symlink_to("..")
    result = cli("check", str(tmp_path / "d"))
    assert result.exit_code == 0, result.stderr


# Files are told apart by their bytes, and shown with escapes.


@pytest.mark.skipif(sys.platform != "linux", reason="file names that are not UTF-8")
def test_two_files_whose_names_show_alike_are_both_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """b'a\\xff.seg' and b'a\\xfe.seg' both used to show as 'a\\ufffd.seg', and one was dropped."""
    monkeypatch.chdir(tmp_path)
    Path(os.fsdecode(b"a\xff.seg")).write_text(SERVICES + "}\n")
    Path(os.fsdecode(b"a\xfe.seg")).write_text("namespace n {\n b accepts a on 80\n c accepts a\n}\n")
    result = cli("check", ".")
    (error,) = check_output(result)
    assert error.startswith("a\\xfe.seg:3:2: error: ") and "unknown" in error  # `c`; `a` and `b` were found
    result = cli("compile", ".")
    assert "a\\xfe.seg" in result.stderr and "\ufffd" not in result.stderr


@pytest.mark.parametrize("name, shown", [
    ("x\x1b[31mred.seg", "x\\x1b[31mred.seg"),
    ("tab\there.seg", "tab\\there.seg"),
    ("back\\slash.seg", "back\\\\slash.seg"),  # doubled: `tab\\there.seg` names another file
    ("bidi\u202etxt.seg", "bidi\\u202etxt.seg"),
    ("café.seg", "café.seg"),
])
def test_file_names_are_shown_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, shown: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path(name).write_text("namespace n {\n isolate both\n}\n")
    result = cli("check", name)
    (error,) = check_output(result)
    assert error.split(":2:")[0] == shown


def test_source_lines_and_messages_are_escaped_and_the_caret_still_points(tmp_path: Path) -> None:
    text = 'namespace n {\n service a = app="x\x1b]0;owned\x07" b\n isolate both # \x9b2J\n}\n'
    result = run_file(tmp_path, text)
    stderr = result.stderr
    assert "\x1b" not in stderr and "\x07" not in stderr and "\x9b" not in stderr
    lines = stderr.split("\n")
    source = lines.index('     service a = app="x\\x1b]0;owned\\x07" b')
    assert lines[source + 1].index("^") == lines[source].index(" b") + 1
    assert "     isolate both # \\x9b2J" in lines
    result = cli("check", "--diagnostics", "json", str(tmp_path / "t.seg"))
    assert "\x9b" not in result.stderr and "\x1b" not in result.stderr
    assert json.loads(result.stderr)


# HTTP regular expressions: RE2's syntax, checked by netdsl.re2syntax.re2_problem.
# The table follows RE2's syntax reference (github.com/google/re2/wiki/Syntax): NOT SUPPORTED rows and
# Go's regexp differences first, then supported rows.
RE2_REFUSES = {
    "a++": "possessive", "a*+": "possessive", "a?+": "possessive", "a{2}+": "possessive",
    r"a\Z": r"\Z", "(?#comment)a": "comment", "(?(1)a|b)": "conditional", r"(a)\1": "backreference",
    "(?P<n>a)(?P=n)": "backreference", "(?=a)": "lookahead", "(?!a)": "lookahead", "(?<=a)b": "lookbehind",
    "(?<!a)b": "lookbehind", "(?>a)": "atomic", "(?x) a": "verbose", r"\u0041": r"\u", r"\N{DIGIT ONE}": r"\N",
    "a{1001}": "1000", "(a{100}){100}": "1000", "a{,3}": "literal text", "a{,}": "literal text",
    r"\C": "Go's regexp", "(" * 1001 + ")" * 1001: "nested", "(" * 100_000 + ")" * 100_000: "nested",
    r"\e": "RE2", r"\R": "RE2", r"\K": "RE2", r"\X": "RE2", r"\h": "RE2", r"\cK": "RE2", r"\G": "RE2",
    "(?|a|b)": "RE2", "(?R)": "RE2", "(?1)": "RE2", "(?&n)": "RE2", r"\g<1>": "RE2", "[z-a]": "RE2",
    "a**": "RE2", "(": "RE2", "[a": "RE2", r"\p{NotAScript}": "RE2", "a{2,1}": "RE2",
}
RE2_ACCEPTS = [
    "/api/.*", "", r"\A/x\z", r"\b\B\d\s\w\D\S\W", "[[:alpha:]]", "[[:^alpha:]]", r"\pN", r"\p{Greek}", r"\PN",
    r"\p{^Greek}", "(?i)a", "(?i:a)", "(?m)^a$", "(?s).", "(?U)a*", "(?P<n>a)", "a*?", "a{2,5}?",
    r"\Qa.b{,3}\E", r"\x{10FFFF}", r"\x41", r"\123", r"\a\f\t\n\r\v", r"[\d]", "a{1000}", "a{0,1000}",
    "x{2,}", r"a\{,3}", "[{,3}]", "a{", "{", "a{x}", "(" * 1000 + ")" * 1000, "/café/[^/]+",
]


@pytest.mark.parametrize("pattern, why", RE2_REFUSES.items(), ids=[p[:20] for p in RE2_REFUSES])
def test_re2_refuses(pattern: str, why: str) -> None:
    from netdsl.re2syntax import re2_problem

    problem = re2_problem(pattern)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize("pattern", RE2_ACCEPTS, ids=[p[:20] for p in RE2_ACCEPTS])
def test_re2_accepts(pattern: str) -> None:
    from netdsl.re2syntax import re2_problem

    assert re2_problem(pattern) is None


@pytest.mark.parametrize("pattern", ["/a++", "/x(?#c)", "/a{,3}", "/" + "(" * 2000 + "a" + ")" * 2000])
def test_http_patterns_are_checked_with_re2(tmp_path: Path, pattern: str) -> None:
    text = SERVICES + f' b accepts a on 80 http GET "{pattern}"\n}}\n'
    result = run_file(tmp_path, text, "compile")
    (error,) = check_output(result)
    assert error.endswith("[invalid-http]")
