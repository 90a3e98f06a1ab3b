"""Source files and spans: where every syntax node, IR node and diagnostic points to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Span:
    """A region of one source file. Lines and columns are 1-based; `end_column` is exclusive."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(self.path, self.line, self.column, other.end_line, other.end_column)

    @property
    def sort_key(self) -> tuple[str, int, int]:
        return (self.path, self.line, self.column)


@dataclass(frozen=True)
class SourceFile:
    """One .seg file as read: its display path and its text."""

    path: str
    text: str
    lines: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Only "\n" ends a line, as in the grammar (str.splitlines would also split on \f, U+2028, ...).
        object.__setattr__(self, "lines", tuple(line.rstrip("\r") for line in self.text.split("\n")))

    def line(self, number: int) -> str:
        return self.lines[number - 1] if 0 < number <= len(self.lines) else ""
