"""`netdsl lsp` end to end: pytest-lsp starts the server as a subprocess on stdio (the command an editor
runs) and drives it as VS Code would (its client capabilities: UTF-16 positions)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest_lsp = pytest.importorskip("pytest_lsp")  # the `test` extra installs it (and pygls)

from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

APP = """\
namespace shop {
  service web = app=web  # café
  service api = app=api, tier=back  # ü 😀
  web connects to api on 8080
  api accepts web on 9090
  allow dns for web, api
}
"""
# A syntax error at an emoji (code point 14, UTF-16 units 14-16), and an invalid header after `ü😀`
# (code point 46, UTF-16 unit 47).
SYNTAX_LINE = "  web accepts 😀ü, api on 80\n"
BROKEN_LINE = '  api accepts web on 8080 http GET /ü😀 header "bad header"\n'
OTHER = """\
cidrs office = 192.0.2.0/24
namespace billing {
  service ledger = app=ledger
  ledger accepts shop/api, office on 5432
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prog")
    (d / "app.seg").write_text(APP, encoding="utf-8")
    (d / "billing.seg").write_text(OTHER, encoding="utf-8")
    return d


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "netdsl", "lsp"]),
    scope="module", loop_scope="module",
)
async def client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    params = types.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                    initialization_options={"netdsl": {"target": "vanilla"}})
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def uri(path: Path) -> str:
    return path.as_uri()


async def open_doc(client: LanguageClient, path: Path, text: str, version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri(path), language_id="seg", version=version, text=text)))


async def diagnostics_for(client: LanguageClient, path: Path, want: bool) -> list[types.Diagnostic]:
    """The diagnostics of `path` once they are non-empty (want) or empty (not want)."""
    for _ in range(100):
        got = list(client.diagnostics.get(uri(path), ()))
        if bool(got) == want:
            return got
        await asyncio.sleep(0.1)
    got = list(client.diagnostics.get(uri(path), ()))
    raise AssertionError(f"no {'non-' if want else ''}empty diagnostics for {path}: {got}")


def at(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


def doc(path: Path) -> types.TextDocumentIdentifier:
    return types.TextDocumentIdentifier(uri=uri(path))


async def change(client: LanguageClient, path: Path, text: str, version: int) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri(path), version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


async def test_error_at_utf16_position_then_fixed(client: LanguageClient, program: Path) -> None:
    app = program / "app.seg"
    await open_doc(client, app, APP.replace("}\n", SYNTAX_LINE + "}\n"))
    got = await diagnostics_for(client, app, want=True)
    assert [d.code for d in got] == ["syntax"], got
    assert got[0].range == types.Range(start=at(6, 14), end=at(6, 16))

    await change(client, app, APP.replace("}\n", BROKEN_LINE + "}\n"), 2)
    for _ in range(50):
        got = await diagnostics_for(client, app, want=True)
        if got[0].code != "syntax":
            break
        await asyncio.sleep(0.1)
    assert [d.code for d in got] == ["invalid-http"], got
    assert BROKEN_LINE.index('"bad') == 46
    assert got[0].range == types.Range(start=at(6, 47), end=at(6, 59))
    assert "bad header" in got[0].message and got[0].source == "netdsl"
    assert got[0].severity == types.DiagnosticSeverity.Error

    # the fix (an unsaved edit) clears it, for the whole program
    await change(client, app, APP, 3)
    assert await diagnostics_for(client, app, want=False) == []


async def test_failed_expectation_is_a_diagnostic(client: LanguageClient, program: Path) -> None:
    app = program / "app.seg"
    text = APP + "expect shop/web -> shop/api:22 allowed\n"
    await change(client, app, text, 4)
    got = await diagnostics_for(client, app, want=True)
    assert any(d.code == "expectation" and d.range.start.line == 7 for d in got), got
    await change(client, app, APP, 5)
    await diagnostics_for(client, app, want=False)


async def test_definition_and_references_across_files(client: LanguageClient, program: Path) -> None:
    billing = program / "billing.seg"
    await open_doc(client, billing, OTHER)
    # `shop/api` in billing.seg (line 3): the `api` half goes to app.seg's declaration
    col = OTHER.split("\n")[3].index("shop/api") + len("shop/") + 1
    got = await client.text_document_definition_async(types.DefinitionParams(text_document=doc(billing),
                                                                              position=at(3, col)))
    assert isinstance(got, list) and len(got) == 1
    assert got[0].uri == uri(program / "app.seg") and got[0].range == types.Range(start=at(2, 10), end=at(2, 13))
    # the `shop` half is the namespace
    got = await client.text_document_definition_async(types.DefinitionParams(
        text_document=doc(billing), position=at(3, col - 3)))
    assert isinstance(got, list) and got[0].range.start == at(0, 10)
    # references of `api`: its declaration, three uses in app.seg, one in billing.seg
    refs = await client.text_document_references_async(types.ReferenceParams(
        text_document=doc(program / "app.seg"), position=at(2, 11),
        context=types.ReferenceContext(include_declaration=True)))
    assert refs is not None
    assert sorted((Path(r.uri.removeprefix("file://")).name, r.range.start.line) for r in refs) == [
        ("app.seg", 2), ("app.seg", 3), ("app.seg", 4), ("app.seg", 5), ("billing.seg", 3)]
    # a cidr set
    got = await client.text_document_definition_async(types.DefinitionParams(
        text_document=doc(billing), position=at(3, OTHER.split("\n")[3].index("office") + 2)))
    assert isinstance(got, list) and got[0].range.start == at(0, 6)


async def test_hover_on_name_and_statement(client: LanguageClient, program: Path) -> None:
    app = program / "app.seg"
    got = await client.text_document_hover_async(types.HoverParams(text_document=doc(app), position=at(3, 2)))
    assert got is not None and isinstance(got.contents, types.MarkupContent)
    assert "service" in got.contents.value and "app=web" in got.contents.value
    # on the statement (the keyword `accepts`): the vanilla object and rule, and what it allows in words
    got = await client.text_document_hover_async(types.HoverParams(text_document=doc(app), position=at(4, 7)))
    assert got is not None and isinstance(got.contents, types.MarkupContent)
    text = got.contents.value
    assert "NetworkPolicy" in text and "`shop/api`" in text and "9090" in text, text
    assert "allows ingress `shop/web` -> `shop/api` on 9090/tcp" in text, text
    assert "other half at `shop/web`: allows egress `shop/web` -> `shop/api` on 9090/tcp" in text, text


async def test_hover_says_what_check_flags(client: LanguageClient, tmp_path: Path) -> None:
    lone = tmp_path / "twice.seg"
    text = ("namespace a {\n  isolate\n  isolate\n  service x = app=x\n"
            "  x accepts cidr 10.0.0.0/8 on 80 http GET /api\n}\n")
    await open_doc(client, lone, text)
    assert "redundant" in [d.code for d in await diagnostics_for(client, lone, want=True)]
    got = await client.text_document_hover_async(types.HoverParams(text_document=doc(lone), position=at(2, 3)))
    assert got is not None and isinstance(got.contents, types.MarkupContent)
    assert "warning [redundant]: namespace `a` is already isolated" in got.contents.value, got.contents.value
    got = await client.text_document_hover_async(types.HoverParams(text_document=doc(lone), position=at(4, 5)))
    assert got is not None and isinstance(got.contents, types.MarkupContent)
    assert ("allows ingress cidr `10.0.0.0/8` -> `a/x` on 80/tcp (HTTP: GET path ~ `/api`)"
            in got.contents.value), got.contents.value


async def test_completion(client: LanguageClient, program: Path) -> None:
    app = program / "app.seg"
    got = await client.text_document_completion_async(types.CompletionParams(
        text_document=doc(app), position=at(3, 2)))
    assert isinstance(got, types.CompletionList)
    labels = {i.label for i in got.items}
    assert {"accepts", "namespace", "web", "api", "billing/ledger", "office"} <= labels
    # label keys inside a selector (line 1: `service web = app=web`, after `= `)
    got = await client.text_document_completion_async(types.CompletionParams(
        text_document=doc(app), position=at(1, 16)))
    assert isinstance(got, types.CompletionList) and {"app", "tier"} <= {i.label for i in got.items}


async def test_entity_completion_and_formatting(client: LanguageClient, tmp_path: Path) -> None:
    lone = tmp_path / "lone.seg"
    text = "namespace a {\n    service x=app=x\n  x connects to entity \n}\n"
    await open_doc(client, lone, text)
    got = await client.text_document_completion_async(types.CompletionParams(
        text_document=doc(lone), position=at(2, 23)))
    assert isinstance(got, types.CompletionList) and {"world", "kube-apiserver"} <= {i.label for i in got.items}
    # a file with a syntax error is not formatted
    edits = await client.text_document_formatting_async(types.DocumentFormattingParams(
        text_document=doc(lone), options=types.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert not edits
    fixed = "namespace a {\n    service x=app=x\n  x connects to entity world\n}\n"
    await change(client, lone, fixed, 2)
    edits = await client.text_document_formatting_async(types.DocumentFormattingParams(
        text_document=doc(lone), options=types.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert edits is not None and len(edits) == 1
    assert edits[0].range.start == at(0, 0) and edits[0].range.end == at(4, 0)
    assert edits[0].new_text == "namespace a {\n  service x = app=x\n  x connects to entity world\n}\n"


async def test_document_symbols(client: LanguageClient, program: Path) -> None:
    got = await client.text_document_document_symbol_async(types.DocumentSymbolParams(
        text_document=doc(program / "billing.seg")))
    assert got is not None
    shown = [(s.name, s.kind, [c.name for c in (s.children or [])]) for s in got
             if isinstance(s, types.DocumentSymbol)]
    assert shown == [("office", types.SymbolKind.Constant, []),
                     ("billing", types.SymbolKind.Namespace, ["ledger"])]


async def test_bad_input_never_crashes(client: LanguageClient, tmp_path: Path) -> None:
    junk = tmp_path / "junk.seg"
    await open_doc(client, junk, "namespace x { a accepts [[ on 99999999\n")
    got = await diagnostics_for(client, junk, want=True)
    assert got[0].code == "syntax"
    # requests far outside the text answer with nothing, and the server stays up
    assert await client.text_document_hover_async(types.HoverParams(text_document=doc(junk),
                                                                     position=at(500, 500))) is None
    assert await client.text_document_definition_async(types.DefinitionParams(
        text_document=doc(junk), position=at(0, 10_000))) is None
    got2 = await client.text_document_document_symbol_async(types.DocumentSymbolParams(text_document=doc(junk)))
    assert got2 == []


async def test_without_pygls_names_the_extra(tmp_path: Path) -> None:
    # a Python path where pygls cannot be imported: a package named pygls that raises ImportError
    fake = tmp_path / "pygls"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('no pygls here')\n")
    run = subprocess.run([sys.executable, "-m", "netdsl", "lsp"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                         timeout=60)
    assert run.returncode == 1
    assert "netdsl[lsp]" in run.stderr and "Traceback" not in run.stderr


async def test_expectations_and_semantic_lints_come_later(tmp_path: Path) -> None:
    """Parse and lowering diagnostics are ready at once; failed expectations (they build every target)
    only from the snapshot's late pass, and the target's objects only on request."""
    from netdsl.lsp.state import Programs

    app = tmp_path / "app.seg"
    app.write_text(APP + "expect shop/web -> shop/api:22 allowed\n", encoding="utf-8")
    snap = Programs().snapshot(str(app), {})
    assert [d.code for d in snap.diagnostics] == [] and snap.late is None
    assert snap.ready_objects("vanilla") is None
    assert [d.code for d in snap.late_diagnostics()] == ["expectation"]
    assert [d.code for d in snap.by_file()[str(app)]] == ["expectation"]
    rules, _isolations = snap.at_line(str(app), 5)
    assert [(r.subject.name, r.derived) for r in rules] == [("api", False), ("web", True)]
