"""Jinja2 environment for the backends' templates, and the YAML-safe scalar filter they all use.

Templates only lay data out; every interpolated value goes through `q`, which writes a YAML scalar that
reads back as exactly the same value under YAML 1.1 (PyYAML, many tools) and YAML 1.2 (Go's yaml.v3,
kubectl, Argo CD, Flux) alike.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import jinja2

# A plain (unquoted) scalar is only written when it cannot be read as anything but this string.
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_./-]*$")
# Words that YAML 1.1 or 1.2 resolves to booleans or null (any case), plus the .inf/.nan family,
# which _PLAIN already excludes because it must start with a letter.
_SPECIAL_WORDS = frozenset(
    ["y", "n", "yes", "no", "true", "false", "on", "off", "null", "nil", "none"]
)
# Characters a YAML stream may not contain literally, or that YAML 1.1 reads as line breaks (NEL,
# U+2028/U+2029), or that some readers strip (BOM): they are escaped in quoted scalars and replaced in
# comments. YAML's printable set: tab, LF, CR, 0x20-0x7E, 0x85, 0xA0-0xD7FF, 0xE000-0xFFFD, 0x10000+.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]"
)
_NEEDS_ESCAPE = re.compile('[\\\\"\n\t\r]|' + _UNSAFE.pattern)
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _double_quoted(value: str) -> str:
    """A YAML double-quoted scalar. Unlike JSON's escaping, characters beyond the BMP stay literal
    (JSON would write surrogate pairs, which YAML does not join)."""
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _escape(m.group()), value) + '"'


@functools.lru_cache(maxsize=65536)
def yaml_scalar(value: object) -> str:
    """`value` as a YAML flow scalar that reads back as the same value and type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"yaml_scalar: unsupported type {type(value).__name__}")
    if _PLAIN.fullmatch(value) and value.lower() not in _SPECIAL_WORDS:  # fullmatch: `$` allows a final \n
        return value
    return _double_quoted(value)


def chomp(text: str) -> str:
    """Drop the final newline of a macro's output, so a call on its own template line adds none."""
    return text[:-1] if text.endswith("\n") else text


def comment_text(value: object) -> str:
    """Text safe to place after `# ` on one line: no line breaks, no control characters."""
    return _UNSAFE.sub("?", str(value).replace("\r", " ").replace("\n", " "))


@functools.cache
def environment(target: str) -> jinja2.Environment:
    root = resources.files("netdsl.templates")
    env = jinja2.Environment(
        # the target's own templates, then the layouts all targets share (Kubernetes metadata, ...)
        loader=jinja2.FileSystemLoader([str(root.joinpath(target)), str(root.joinpath("common"))]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = yaml_scalar
    env.filters["comment"] = comment_text
    env.filters["chomp"] = chomp
    return env
