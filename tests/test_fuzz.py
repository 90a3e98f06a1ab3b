"""Fuzzing: generated programs, and the same programs mutated, through everything a user can run on a
program (check with its lints, explain's evaluators come from the same result, compile for every target,
with and without --widen, and the rendering of diagnostics). Whatever the input: no exception, every
diagnostic renders, and a result with errors has no manifests.

CI runs a bounded number of examples with a fixed seed (derandomized when CI is set: ~30 s on two
cores); `NETDSL_FUZZ_EXAMPLES` raises the count, and benchmarks/fuzz.py runs it for as long as you like
with fresh seeds (see CONTRIBUTING.md).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdsl.backends import Options, backend_names
from netdsl.compiler import check_with_lints, compile_paths, stream
from netdsl.diagnostics import CODES, render_json, render_text
from tests.semantics.strategies import cilium_programs, cluster_programs, ordered_programs, programs

EXAMPLES = int(os.environ.get("NETDSL_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=list(HealthCheck), database=None if os.environ.get("CI") else settings().database)

# What mutations splice in: the language's words and punctuation, and what broke netdsl before.
KEYWORDS = ["namespace", "namespaces", "service", "group", "isolate", "ingress", "egress", "allow", "dns", "for",
            "accepts", "connects", "to", "from", "allows", "denies", "passes", "pods", "all", "in", "notin",
            "cidr", "cidrs", "except", "anywhere", "fqdn", "entity", "on", "http", "GET", "ANY", "host", "header",
            "tier", "order", "otherwise deny", "cluster", "including system", "system", "labels", "expect",
            "allowed", "denied", "->"]
PUNCTUATION = ["{", "}", "[", "]", "(", ")", ",", ";", "=", "!=", "!", "\n", "#", '"', "\\\n", "/", ":", "*", "-"]
ODD = ["9" * 5000, "1-" + "9" * 4400, "a" * 2000, "٣", "é", "\x00", "\x1b[31m", "\u202e", "\ufeff", "\r\n",
       '"\\ud800"', '"\\u001b"', "/a++", "/(?#c)", "/a{,3}", "/" + "(" * 300 + "a" + ")" * 300, '"' + "(" * 50 + '"',
       "0.0.0.0/0", "::/0", "10.0.0.0/33", "65536", "0", "1-0", "999999999999", "x/y/z", "*.*", "-a", "a-",
       "acceptsb", "isolateingress", "http-alt", "53/udp", "8000-9000/sctp", "kube-system"]
TOKENS = st.sampled_from(KEYWORDS + PUNCTUATION + ODD) | st.text(max_size=8)


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[str]) -> str:
    """A generated program with a few edits: delete, duplicate or move a slice, insert a token, glue a
    character to a word, change a character."""
    text = draw(source)
    for _ in range(draw(st.integers(1, 4))):
        n = len(text)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 40)))
        op = draw(st.sampled_from(["delete", "duplicate", "insert", "insert", "glue", "replace", "move"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from([" ", ""])) + draw(TOKENS) + " " + text[i:]
        elif op == "glue":
            text = text[:i] + draw(st.sampled_from(["x", "1", "-", ".", "/", ":", "*", "_"])) + text[i:]
        elif op == "replace" and i < n:
            text = text[:i] + draw(st.characters(codec="utf-8")) + text[i + 1:]
        elif op == "move":
            piece, rest = text[i:j], text[:i] + text[j:]
            k = draw(st.integers(0, len(rest)))
            text = rest[:k] + piece + rest[k:]
    return text


GENERATED = st.one_of(programs(), ordered_programs(), cluster_programs(), cilium_programs())


def exercise(text: str) -> None:
    """Everything a user can do with one program; fails on any exception or broken contract."""
    data = text.encode("utf-8", errors="surrogatepass")
    result = check_with_lints(["-"], stdin=data)
    for d in result.diagnostics:
        assert d.code in CODES
    render_text(result.diagnostics, result.sources)
    render_json(result.diagnostics)
    if not result.ok:
        return  # compile reads the same sources and stops at the same errors
    for target in backend_names():
        for widen in (False, True):
            compiled = compile_paths(["-"], target, Options({"widen": widen}), stdin=data)
            render_text(compiled.diagnostics, compiled.sources)
            if compiled.ok:
                stream(compiled.manifests)
            else:
                assert compiled.manifests == []


@FUZZ
@given(GENERATED)
def test_generated_programs(text: str) -> None:
    exercise(text)


@FUZZ
@given(mutated(GENERATED))
def test_mutated_programs(text: str) -> None:
    exercise(text)


@FUZZ
@given(st.lists(TOKENS, max_size=40).map(" ".join))
def test_token_soup(text: str) -> None:
    exercise(text)
