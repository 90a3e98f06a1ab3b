"""Positions between netdsl's spans and LSP's.

Rule: a netdsl Span is 1-based with columns in code points (end exclusive); an LSP Position is 0-based
with `character` in the code units of the negotiated encoding, UTF-16 unless client and server agreed
on another (LSP 3.17 `positionEncoding`). A character outside the Basic Multilingual Plane (an emoji)
is two UTF-16 units and four UTF-8 units; a lone surrogate (a byte that was not UTF-8) counts as one
UTF-16 unit. Columns past the line's end are clamped to it.
"""

from __future__ import annotations

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"


def units(text: str, encoding: str = UTF16) -> int:
    """The length of `text` in code units."""
    if encoding == UTF32:
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", errors="surrogatepass"))
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def to_client(line_text: str, column: int, encoding: str = UTF16) -> int:
    """A 1-based code point column on `line_text` -> a 0-based `character` in code units."""
    return units(line_text[: max(0, column - 1)], encoding)


def from_client(line_text: str, character: int, encoding: str = UTF16) -> int:
    """A 0-based `character` in code units -> a 1-based code point column (a position inside a
    character's units maps to that character)."""
    if encoding == UTF32:
        return min(character, len(line_text)) + 1
    seen = 0
    for i, ch in enumerate(line_text):
        if seen >= character:
            return i + 1
        seen += units(ch, encoding)
    return len(line_text) + 1
