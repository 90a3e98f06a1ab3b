"""The TextMate grammar (editors/vscode/syntaxes/seg.tmLanguage.json) tokenized as VS Code tokenizes it:
vscode-textmate + vscode-oniguruma (npm) in a node helper (tests/editors/tokenize.js).

`npm ci` installs the helper's two packages once into a cached directory (like the NCA venv of
tests/nca.py): `$NETDSL_TEXTMATE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/netdsl/textmate-<lock digest>`,
under a lock, finished by a marker file. Without node or npm the tests skip on a developer's machine
and fail in CI (require_tool)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool

HERE = Path(__file__).resolve().parent
GRAMMAR = REPO / "editors" / "vscode" / "syntaxes" / "seg.tmLanguage.json"
EXAMPLES = sorted(REPO.glob("examples/**/*.seg"))
HELPER_FILES = ("package.json", "package-lock.json", "tokenize.js")

Tokens = list[list[dict[str, object]]]


def _cache_dir() -> Path:
    if os.environ.get("NETDSL_TEXTMATE_DIR"):
        return Path(os.environ["NETDSL_TEXTMATE_DIR"])
    digest = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in HELPER_FILES)).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "netdsl" / f"textmate-{digest}"


@pytest.fixture(scope="module")
def helper() -> Path:
    """The directory with tokenize.js and its node_modules (npm ci once, then cached)."""
    require_tool("node")
    npm = require_tool("npm")
    target = _cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = target / ".installed"
        if not marker.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            for f in HELPER_FILES:
                shutil.copy(HERE / f, target / f)
            run = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=target,
                                 capture_output=True, text=True, timeout=600)
            if run.returncode != 0:
                pytest.fail(f"npm ci failed for the TextMate test helper:\n{run.stderr[-3000:]}")
            marker.write_text("ok\n")
    return target


def tokenize(helper: Path, *files: Path) -> dict[str, Tokens]:
    run = subprocess.run(["node", str(helper / "tokenize.js"), str(GRAMMAR), *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got: dict[str, Tokens] = json.loads(run.stdout)
    return got


def scopes_of(lines: Tokens, line: int, text: str, nth: int = 0) -> list[str]:
    """The scopes of the nth token on 1-based `line` whose text (stripped) is `text`."""
    found = [t for t in lines[line - 1] if str(t["text"]).strip() == text]
    assert len(found) > nth, f"no token {text!r} on line {line}: {lines[line - 1]}"
    scopes = found[nth]["scopes"]
    assert isinstance(scopes, list)
    return [str(s) for s in scopes]


def innermost(lines: Tokens, line: int, text: str, nth: int = 0) -> str:
    return scopes_of(lines, line, text, nth)[-1]


@pytest.fixture(scope="module")
def examples(helper: Path) -> dict[str, Tokens]:
    return tokenize(helper, *EXAMPLES)


def ex(examples: dict[str, Tokens], name: str) -> Tokens:
    return examples[str(REPO / "examples" / name)]


def test_every_example_tokenizes_and_comments_stay_comments(examples: dict[str, Tokens]) -> None:
    assert len(examples) == len(EXAMPLES) >= 5
    for path, lines in examples.items():
        text = Path(path).read_text(encoding="utf-8").split("\n")
        assert len(lines) == len(text)
        for number, (tokens, source) in enumerate(zip(lines, text, strict=True), 1):
            assert "".join(str(t["text"]) for t in tokens) == source
            for t in tokens:
                scopes = [str(s) for s in t["scopes"]]  # type: ignore[attr-defined]
                assert scopes[0] == "source.seg"
                if str(t["text"]).startswith("#"):
                    assert scopes[-1] == "comment.line.number-sign.seg", (path, number, t)
            # a keyword of the language is never left unscoped outside comments
            for t in tokens:
                word = str(t["text"]).strip()
                if word in ("accepts", "connects", "isolate", "expect", "namespace", "service"):
                    assert str(t["scopes"][-1]).startswith("keyword."), (path, number, t)  # type: ignore[index]


def test_representative_lines(examples: dict[str, Tokens]) -> None:
    three = ex(examples, "three-tier.seg")
    assert innermost(three, 1, three[0][0]["text"].strip()) == "comment.line.number-sign.seg"  # type: ignore[union-attr]
    assert innermost(three, 9, "namespace") == "keyword.control.declaration.seg"
    assert innermost(three, 9, "production") == "entity.name.namespace.seg"
    assert innermost(three, 10, "isolate") == "keyword.control.seg"
    assert innermost(three, 12, "frontend") == "entity.name.type.service.seg"
    assert innermost(three, 12, "tier") == "entity.other.attribute-name.label-key.seg"
    assert innermost(three, 12, "frontend", 1) == "string.unquoted.label-value.seg"
    assert innermost(three, 15, "tiers") == "entity.name.type.group.seg"
    assert innermost(three, 20, "accepts") == "keyword.control.action.seg"
    assert innermost(three, 20, "8080") == "constant.numeric.port.seg"
    assert innermost(three, 25, "->") == "keyword.operator.arrow.seg"
    assert innermost(three, 25, "8080") == "constant.numeric.port.seg"
    assert innermost(three, 25, "allowed") == "constant.language.expectation.seg"

    cilium = ex(examples, "cilium-l7-fqdn.seg")
    assert innermost(cilium, 16, "api.stripe.com") == "string.unquoted.fqdn.seg"
    assert innermost(cilium, 16, "*.amazonaws.com") == "string.unquoted.fqdn.seg"
    assert innermost(cilium, 17, "GET") == "support.function.http-method.seg"
    assert innermost(cilium, 17, "/api/.*") == "string.unquoted.http-path.seg"
    assert innermost(cilium, 17, "/api/orders") == "string.unquoted.http-path.seg"

    calico = ex(examples, "calico-tiers.seg")
    assert innermost(calico, 12, "security") == "entity.name.section.tier.seg"
    assert innermost(calico, 14, "denies") == "keyword.control.action.seg"
    assert innermost(calico, 14, "192.0.2.0/24") == "constant.numeric.cidr.ipv4.seg"
    assert innermost(calico, 18, "cluster") == "keyword.control.seg"

    office = ex(examples, "seed/3.4-allow-from-office.seg")
    assert innermost(office, 3, "office") == "entity.name.constant.cidrs.seg"
    assert innermost(office, 3, "except") == "keyword.control.seg"
    assert innermost(office, 3, "203.0.113.100/32") == "constant.numeric.cidr.ipv4.seg"


SAMPLE = """\
pod networks = 10.0.0.0/8, fd00::/8
system namespaces = kube-system
namespace shop labels team="web shop", env=prod {
  service api = app in (api, "api v2"), !legacy, tier!=db
  api accepts pods[role=client] in namespaces[env notin (dev)] on 8080-8090, 53/udp
  api connects to entity kube-apiserver, cidr 2001:db8::/32 on 443
  api accepts all pods on 80 http POST /v1/orders host shop.example.com header "X-Env: prod"
}
tier sec order 10 otherwise deny {
  cluster including system { isolate ingress }
}
expect 203.0.113.5 -> shop/api:8080/tcp denied
"""


def test_constructs_the_examples_do_not_show(helper: Path, tmp_path: Path) -> None:
    sample = tmp_path / "sample.seg"
    sample.write_text(SAMPLE, encoding="utf-8")
    lines = tokenize(helper, sample)[str(sample)]
    assert innermost(lines, 1, "pod networks") == "keyword.control.declaration.seg"
    assert innermost(lines, 1, "fd00::/8") == "constant.numeric.cidr.ipv6.seg"
    assert innermost(lines, 2, "system namespaces") == "keyword.control.declaration.seg"
    assert innermost(lines, 3, "labels") == "keyword.control.seg"
    assert innermost(lines, 3, "team") == "entity.other.attribute-name.label-key.seg"
    assert innermost(lines, 3, "web shop") == "string.quoted.double.seg"
    assert innermost(lines, 4, "in") == "keyword.operator.set.seg"
    assert innermost(lines, 4, "api", 1) == "string.unquoted.label-value.seg"
    assert innermost(lines, 4, "!") == "keyword.operator.logical.seg"
    assert innermost(lines, 4, "legacy") == "entity.other.attribute-name.label-key.seg"
    assert innermost(lines, 4, "!=") == "keyword.operator.comparison.seg"
    assert innermost(lines, 5, "role") == "entity.other.attribute-name.label-key.seg"
    assert innermost(lines, 5, "client") == "string.unquoted.label-value.seg"
    assert innermost(lines, 5, "notin") == "keyword.operator.set.seg"
    assert innermost(lines, 5, "8080-8090") == "constant.numeric.port.seg"
    assert innermost(lines, 5, "53") == "constant.numeric.port.seg"
    assert innermost(lines, 5, "/udp") == "storage.modifier.protocol.seg"
    assert innermost(lines, 6, "kube-apiserver") == "support.constant.entity.seg"
    assert innermost(lines, 6, "2001:db8::/32") == "constant.numeric.cidr.ipv6.seg"
    assert innermost(lines, 7, "POST") == "support.function.http-method.seg"
    assert innermost(lines, 7, "/v1/orders") == "string.unquoted.http-path.seg"
    assert innermost(lines, 7, "shop.example.com") == "string.unquoted.http-host.seg"
    assert "string.quoted.double.seg" in scopes_of(lines, 7, "X-Env: prod")
    assert innermost(lines, 9, "otherwise") == "keyword.control.seg"
    assert innermost(lines, 9, "deny") == "keyword.control.action.seg"
    assert innermost(lines, 10, "including system") == "keyword.control.seg"
    assert innermost(lines, 12, "203.0.113.5") == "constant.numeric.ip.seg"
    assert innermost(lines, 12, "/tcp") == "storage.modifier.protocol.seg"


def test_vscode_extension_manifest_points_at_the_grammar() -> None:
    manifest = json.loads((REPO / "editors" / "vscode" / "package.json").read_text(encoding="utf-8"))
    contributes = manifest["contributes"]
    assert contributes["languages"][0]["extensions"] == [".seg"]
    grammar = contributes["grammars"][0]
    assert grammar["scopeName"] == "source.seg"
    assert (REPO / "editors" / "vscode" / grammar["path"]).resolve() == GRAMMAR
    assert "vscode-languageclient" in manifest["dependencies"]
    config = json.loads((REPO / "editors" / "vscode" / "language-configuration.json").read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
