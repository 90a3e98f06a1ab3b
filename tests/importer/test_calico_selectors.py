"""Calico selectors are parsed once (netdsl.semantics.calico.parse) and read two ways: as a predicate
(parse_selector, what the semantic engine evaluates) and as alternatives of conjunctions (the importer's
parse_dnf, what becomes IR selectors).

Rule: for every selector text both readings select the same label sets, and a text neither can read is
the same error in both (SelectorError in the engine, an import gap with the same message)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from netdsl import ir
from netdsl.importer.calico import Dnf, UnsupportedError, parse_dnf
from netdsl.semantics.calico import And, Compare, Has, Not, Or, SelectorError, parse, parse_selector

KEYS = ("a", "b", "app.io/c")
VALUES = ("x", "y", "")
SPACE = st.sampled_from(["", " ", "  "])


def _quoted(value: str) -> st.SearchStrategy[str]:
    return st.sampled_from([f"'{value}'", f'"{value}"'])


@st.composite
def _atoms(draw: st.DrawFn) -> str:
    key, sp = draw(st.sampled_from(KEYS)), draw(SPACE)
    kind = draw(st.sampled_from(["==", "!=", "in", "not in", "has", "!has", "all"]))
    if kind in ("==", "!="):
        return f"{key}{sp}{kind}{sp}{draw(_quoted(draw(st.sampled_from(VALUES))))}"
    if kind in ("in", "not in"):
        values = draw(st.lists(st.sampled_from(VALUES), max_size=3))
        inner = f",{sp}".join(draw(_quoted(v)) for v in values)
        return f"{key} {kind} {{{sp}{inner}{sp}}}"
    if kind == "all":
        return f"all({sp})"
    return f"{kind}({sp}{key}{sp})"


def _combined(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, SPACE, inner).map(lambda t: f"{t[0]}{t[1]}&&{t[1]}{t[2]}"),
        st.tuples(inner, SPACE, inner).map(lambda t: f"{t[0]}{t[1]}||{t[1]}{t[2]}"),
        inner.map(lambda s: f"!{s}"),
        st.tuples(SPACE, inner).map(lambda t: f"({t[0]}{t[1]}{t[0]})"),
    )


SELECTORS = st.recursive(_atoms(), _combined, max_leaves=8)
LABELS = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=len(KEYS))


def _dnf_matches(dnf: Dnf, labels: dict[str, str]) -> bool:
    """The DNF as the importer reads it: all() is true, every other atom an IR requirement."""
    return any(
        all(op == "all" or ir.Requirement(key, ir.Operator(op), values).matches(labels) for key, op, values in term)
        for term in dnf
    )


@given(SELECTORS, st.lists(LABELS, min_size=1, max_size=8))
def test_predicate_and_dnf_agree(text: str, label_sets: list[dict[str, str]]) -> None:
    predicate = parse_selector(text)
    try:
        dnf = parse_dnf(text)
    except UnsupportedError:
        assume(False)  # more alternatives than MAX_TERMS: a gap, never a guess
        raise
    for labels in label_sets:
        assert predicate(labels) == _dnf_matches(dnf, labels), (text, labels, dnf)


def test_the_tree() -> None:
    assert parse("!has(a) && (b in {'y', 'x', 'x'} || c != 'z')") == And((
        Not(Has("a")),
        Or((Compare("b", "in", ("x", "y")), Compare("c", "!=", ("z",)))),
    ))


def test_keywords_without_parenthesis_are_keys() -> None:
    # Calico's tokenizer reads `has(`, `all(` and `global(` as functions; alone they are label names
    assert parse("has == 'x'") == Compare("has", "==", ("x",))
    assert parse_selector("all == 'x'")({"all": "x"})
    assert parse_dnf("global != 'x'") == [frozenset({("global", "NotIn", ("x",))})]


@pytest.mark.parametrize("text", [
    "a contains 'x'", "a starts with 'x'", "a == x", "(a == 'x'", "a == 'x')", "a == 'x' &&", "a ~ 'x'",
    "a in {'x'", "has(a", "",
])
def test_unreadable_selectors_are_the_same_error_in_both(text: str) -> None:
    with pytest.raises(SelectorError) as engine:
        parse_selector(text)
    if not text:
        assert parse_dnf(text) == [frozenset()]  # an absent selector is all() for the importer
        return
    with pytest.raises(UnsupportedError) as importer:
        parse_dnf(text)
    assert str(importer.value) == str(engine.value)
