"""Diagnostics are data: a stable code, a severity, a message, a span and an optional hint.

Every code netdsl can emit is listed in `CODES` with a one-line description; docs/diagnostics.md is
checked against this table by the tests, so the two never drift apart.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from netdsl.source import SourceFile, Span


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


CODES: Mapping[str, str] = {
    # reading and syntax
    "io-error": "A path does not exist, could not be read, or is a directory without .seg files.",
    "limit": "An input is larger than netdsl reads: a file, the number of files, all files together, a word.",
    "encoding": "A file is not valid UTF-8.",
    "syntax": "The text does not follow the .seg grammar.",
    # names
    "duplicate-name": "A service, group, cidr set or namespace label is declared twice.",
    "unknown-name": "A name is used that no declaration defines.",
    "invalid-name": "A name is not a valid Kubernetes name (DNS-1123 label).",
    "reserved-name": "A name is reserved (for example `all-pods`, which netdsl uses itself).",
    # values
    "invalid-label": "A label key or value breaks the Kubernetes label syntax.",
    "invalid-port": "A port is not 1-65535, a range, a protocol or a valid port name.",
    "invalid-cidr": "A CIDR is malformed, or an `except` block lies outside its CIDR.",
    "conflict": "Two statements or requirements contradict each other.",
    "invalid-http": "An HTTP rule has an invalid regular expression or header.",
    "invalid-tier": "A tier's order is not a whole number, or a statement cannot be used in a tier.",
    "cluster-peer": "In a `cluster` block, a peer without `in ...` (`all pods`, `pods[...]`, a service of the block).",
    "pass-outside-tier": "`passes` outside a tier, where it would fall through to an allow.",
    "system-namespaces": "A cluster-wide isolation also cuts off the system namespaces (DNS, CNI).",
    # target capabilities
    "unsupported": "The chosen target cannot express a statement.",
    # lints (warnings)
    "egress-without-dns": "Egress is restricted but DNS is not allowed, so name resolution fails.",
    "selects-nothing": "A selector matches nothing the program declares.",
    "namespace-name-label": "Namespaces selected by a `name` label, which Kubernetes never sets.",
    "cidr-may-match-pods": "A CIDR covers a private range where pods may live, and no `pod networks` are declared.",
    "deny-isolates": "A deny statement outside tiers isolates its pods: what nothing allows is denied.",
    "redundant": "A statement repeats one that already says the same, or changes nothing at all.",
    "unused": "A service is declared but no statement uses it.",
    "blocked-flow": "A flow statement's connections are denied elsewhere (a deny, a tier), so it does not work.",
    "empty-group": "A group or service list is empty.",
    "expectation": "An `expect` statement does not hold for the program or an emitted target.",
    "widened": "--widen lowered a statement to a broader one the target can express.",
    # import
    "import-yaml": "`netdsl import`: an input is not valid YAML.",
    "import-object": "`netdsl import`: a document is not a Kubernetes object (mapping, kind, name), or none is.",
    "import-duplicate": "`netdsl import`: the same kind, namespace and name twice.",
    "import-skipped": "`netdsl import`: an object that is not a network policy was skipped.",
    "import-unsupported": "`netdsl import`: a kind of policy that cannot be imported yet.",
    "import-target": "`netdsl import`: objects of another target than --target, or of several targets.",
    "import-gap": "`netdsl import`: a part of an object .seg cannot say exactly.",
    "import-proof": "`netdsl import`: no .seg program was proven to mean exactly what the objects mean.",
    "import-pitfall": "`netdsl import`: a part imported exactly that is a known pitfall (kept as it is).",
    "import-decompile": "`netdsl import`: the translation holds something the decompiler cannot write (a bug).",
    # output
    "output": "The output directory could not be written.",
    "foreign-policy": "`check --topology`: a policy netdsl did not write applies where the program writes policies.",
    "stale-output": "`compile -o DIR --check`: a file of DIR is missing, out of date, no longer produced or edited.",
    "internal": "netdsl produced output that failed its own checks (a bug: please report it).",
    "translation": "The emitted objects do not allow exactly what the program allows in every cluster (a bug).",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span | None = None
    hint: str | None = None

    def __post_init__(self) -> None:
        assert self.code in CODES, f"undocumented diagnostic code {self.code!r}"
        if "\n" in self.message:  # one diagnostic, one line
            object.__setattr__(self, "message", " ".join(self.message.split()))

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_json(self) -> dict[str, object]:
        span = self.span
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "file": span.path if span else None,
            "line": span.line if span else None,
            "column": span.column if span else None,
            "end_line": span.end_line if span else None,
            "end_column": span.end_column if span else None,
            "hint": self.hint,
        }


def error(code: str, message: str, span: Span | None = None, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, message, span, hint)


def warning(code: str, message: str, span: Span | None = None, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, message, span, hint)


class CompileError(Exception):
    """Raised to abandon a compile; carries every diagnostic collected so far."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(d.message for d in self.diagnostics))


# ------------------------------------------------------------------------------------------ terminal safety


def _escape(ch: str) -> str:
    n = ord(ch)
    if 0xDC80 <= n <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogate escape)
        return f"\\x{n - 0xDC00:02x}"
    return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(ch) or (
        f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")


def _unsafe(ch: str) -> bool:
    """A character a terminal may act on or that hides text: controls (C0, C1: ESC, CSI), format
    characters (bidirectional overrides, zero-width), line separators, surrogates."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Cn", "Zl", "Zp")


def printable(text: str, keep: str = "\n") -> str:
    """Text for a terminal: every unsafe character but those in `keep` written as an escape (`\\x1b`)."""
    if text.isprintable() or text.translate(dict.fromkeys(map(ord, keep))).isprintable():  # common, fast
        return text  # (a whole explain matrix is megabytes of lines: no Python loop per character)
    return "".join(_escape(ch) if ch not in keep and _unsafe(ch) else ch for ch in text)


def escape_name(name: str) -> str:
    """A file name for messages: like `printable`, and a backslash is doubled, so two different names
    (bytes) are never shown alike."""
    return "".join(_escape(ch) if _unsafe(ch) else "\\\\" if ch == "\\" else ch for ch in name)


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    if d.span is None:
        return ("", 0, 0, d.message)
    return (d.span.path, d.span.line, d.span.column, d.message)


def render_text(diagnostics: Iterable[Diagnostic], sources: Mapping[str, SourceFile]) -> str:
    """mypy --pretty style: `file:line:col: error: message [code]`, the source line, a caret. What the
    input wrote (names, source lines) reaches the terminal only through `printable`."""
    out: list[str] = []
    for d in diagnostics:
        span = d.span
        where = f"{span.path}:{span.line}:{span.column}: " if span else "netdsl: "
        out.append(printable(f"{where}{d.severity.value}: {d.message}  [{d.code}]", keep=""))
        if span is not None and span.path in sources:
            text = sources[span.path].line(span.line)
            if text.strip():
                shown = text.expandtabs(1).rstrip()
                width = 1
                if span.end_line == span.line and span.end_column > span.column:
                    width = span.end_column - span.column
                width = max(1, min(width, len(shown) - span.column + 1))
                # escapes are wider than the characters they stand for: measure the caret on the escaped text
                before = printable(shown[: span.column - 1], keep="")
                under = printable(shown[span.column - 1: span.column - 1 + width], keep="")
                out.append("    " + printable(shown, keep=""))
                out.append("    " + " " * len(before) + "^" + "~" * (max(1, len(under)) - 1))
        if d.hint:
            out.append(printable(f"{where}note: {d.hint}" if span else f"  hint: {d.hint}", keep=""))
    return "\n".join(out) + ("\n" if out else "")


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json_safe(json.dumps([d.to_json() for d in diagnostics], indent=2, ensure_ascii=False) + "\n")


def json_safe(text: str) -> str:
    """JSON text with the characters `printable` escapes written as \\uXXXX: the same JSON value (JSON
    escapes C0 controls itself; C1 controls and format characters would reach the terminal raw)."""
    if all(ch == "\n" or not _unsafe(ch) for ch in text):
        return text
    return "".join(_json_escape(ch) if ch != "\n" and _unsafe(ch) else ch for ch in text)


def _json_escape(ch: str) -> str:
    n = ord(ch)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"
