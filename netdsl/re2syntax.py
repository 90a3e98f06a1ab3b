"""Is an HTTP path, host or header pattern a regular expression Cilium and Envoy accept, meaning what it
means in Python? Cilium checks L7 rules with Go's `regexp` and Envoy matches them with RE2: both read
RE2 syntax, which is not Python's. The rule: RE2 itself (the `google-re2` binding, the RE2 library
Envoy uses) must compile the pattern, and on top of it what Go's `regexp` refuses but RE2 accepts, and
what RE2 accepts with another meaning than Python's, is refused too.

`re2_problem(pattern)` is None for a good pattern, else one sentence for a diagnostic. It never
recurses on the pattern (a pattern nested 100,000 deep is an answer, not a RecursionError) and takes
time linear in the pattern's length.
"""

from __future__ import annotations

import re

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

# RE2's own compile-time bounds (a repeat count over 1000 is refused by RE2 itself); Go's `regexp`
# refuses nesting deeper than 1000 ("expression nests too deeply"), which RE2 allows.
MAX_NESTING = 1000

_OPEN_BRACE_UP_TO = re.compile(r"\{,(\d*)\}")

# RE2's message names what it stopped at; for Python's spellings, say what they are and what to write.
_PERL_OPERATORS = (
    ("(?>", "an atomic group `(?>...)`: RE2 has none; write `(?:...)`"),
    ("(?#", "a comment `(?#...)`: RE2 has none; remove it"),
    ("(?(", "a conditional `(?(1)...|...)`: RE2 has none"),
    ("(?=", "lookahead `(?=...)`: RE2 has no lookaround"),
    ("(?!", "lookahead `(?!...)`: RE2 has no lookaround"),
    ("(?<=", "lookbehind `(?<=...)`: RE2 has no lookaround"),
    ("(?<!", "lookbehind `(?<!...)`: RE2 has no lookaround"),
    ("(?P=", "a backreference `(?P=name)`: RE2 has none"),
    ("(?P", "a backreference `(?P=name)`: RE2 has none (its named groups are `(?P<name>...)`)"),
)


def _python_spelling(message: str) -> str | None:
    kind, _, what = message.partition(": ")
    if kind == "bad repetition operator" and what.endswith("+"):
        return f"a possessive quantifier `{what}`: RE2 has none; drop the last `+`"
    if kind == "invalid repetition size":
        return f"the repeat count `{what}`: RE2 repeats at most 1000 times, nested repeats included"
    if kind == "invalid perl operator":
        for start, why in _PERL_OPERATORS:
            if what.startswith(start):
                return why
        if "x" in what:
            return "verbose mode `(?x)`: RE2 has none"
    if kind == "invalid escape sequence":
        if what[1:2].isdigit():
            return f"a backreference `{what}`: RE2 has none"
        if what == "\\Z":
            return "`\\Z`: RE2 has none; write `\\z` (end of text)"
        if what[1:2] in ("u", "U", "N"):
            return f"`{what}`: RE2 writes a code point as `\\x{{263a}}`"
    return None


def re2_problem(pattern: str) -> str | None:
    """None if Cilium (Go's regexp) and Envoy (RE2) accept `pattern` and read it as Python does; else why
    not, as a phrase for `invalid regular expression ...: <problem>`."""
    scan = _scan(pattern)
    if scan is not None:
        return scan
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own message on standard error
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else str(exc)
        message = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return _python_spelling(message) or f"RE2 refuses it: {message}"
    return None


def _scan(pattern: str) -> str | None:
    """What RE2 accepts but Go's regexp refuses or reads otherwise than Python, in one pass over the
    text: nesting depth, `\\C`, and `{,n}` / `{,}` (Python: 0 to n times; RE2 and Go: that literal text)."""
    depth = 0
    in_class = False
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1: i + 2]
            if nxt == "Q":  # \Q...\E: literal text
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            if nxt == "C" and not in_class:
                return "`\\C` (any byte): Go's regexp refuses it, and in RE2 it can split a character"
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            elif ch == "[" and pattern[i + 1: i + 2] == ":":  # [:alpha:] inside a class
                end = pattern.find(":]", i + 2)
                if end > 0:
                    i = end + 2
                    continue
            i += 1
            continue
        if ch == "[":
            in_class = True
            i += 1
            if pattern[i: i + 1] == "^":
                i += 1
            if pattern[i: i + 1] == "]":  # a leading ] is a literal
                i += 1
            continue
        if ch == "(":
            depth += 1
            if depth > MAX_NESTING:
                return f"groups nested more than {MAX_NESTING} deep: Go's regexp refuses it"
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "{" and (m := _OPEN_BRACE_UP_TO.match(pattern, i)):
            times = f"0 to {m.group(1)} times" if m.group(1) else "any number of times"
            return (f"`{m.group()}`: RE2 reads it as the literal text {m.group()!r}, Python as {times}; "
                    f"write `{{0,{m.group(1)}}}` (or `\\{{` for a literal brace)")
        i += 1
    return None
