"""Import, the shared model: what a target's translator makes of existing manifests.

Rule: a translator (netdsl/importer/<target>.py) turns its target's objects into netdsl's IR - rules,
isolations, tiers, namespaces, named CIDR sets - that mean exactly what the objects mean, and a `Gap`
for every part it cannot say exactly in `.seg` (which object, where in it, why). It never guesses:
what it does not model is a Gap. `understood` is the input minus every gapped part: the objects the
imported program is proven equivalent to (netdsl.semantics.verify.prove), for every cluster.
The decompiler (netdsl/importer/decompile.py) turns a Translation into idiomatic `.seg` syntax.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netdsl import ir
from netdsl.source import Span

# IR built from manifests points here; diagnostics about it name the object instead (SourceObject.title).
IMPORTED = Span("<import>", 1, 1, 1, 1)


@dataclass(frozen=True)
class SourceObject:
    """One input object, normalized: Kubernetes' defaults applied (policyTypes, protocol TCP, the
    namespace from `-n` or `default`), `null` lists and maps read as empty."""

    body: Mapping[str, Any]
    origin: str  # where it was read: "policies/web.yaml, document 2", "-, List item 4"
    # where each part is in its file: "" (the object), "spec.ingress[1]", "spec.ingress[1].ports[0]", ...
    spans: Mapping[str, Span] = field(default_factory=dict, compare=False)

    def span(self, path: str = "") -> Span:
        """Where `path` (or the nearest enclosing part that has a position) is in the input file."""
        while path and path not in self.spans:
            path = path[: max(path.rfind("."), path.rfind("["), 0)]
        return self.spans.get(path, IMPORTED)

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def namespace(self) -> str | None:
        ns = (self.body.get("metadata") or {}).get("namespace")
        return str(ns) if ns is not None else None

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))

    @property
    def title(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass(frozen=True)
class Gap:
    """A part of an input object `.seg` cannot say exactly (yet)."""

    source: SourceObject
    path: str  # where in the object: "spec.ingress[1].ports[0]"; "" for the whole object
    reason: str  # what cannot be said: "a rule with notPorts", "ICMP", "serviceAccounts"

    @property
    def span(self) -> Span:
        return self.source.span(self.path)

    def describe(self) -> str:
        at = f" {self.path}" if self.path else ""
        return f"{self.source.title}{at} ({self.source.origin}): {self.reason}"


@dataclass
class Translation:
    """What a translator makes of its objects. Rules are in evaluation order within each tier (the
    order `.seg` statements in a tier block are written in); `ir.Rule.span` and friends are IMPORTED."""

    target: str
    namespaces: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # name -> labels
    rules: list[ir.Rule] = field(default_factory=list)
    isolations: list[ir.Isolation] = field(default_factory=list)
    tiers: list[ir.Tier] = field(default_factory=list)
    cidr_sets: dict[str, tuple[ir.CidrPeer, ...]] = field(default_factory=dict)  # a `cidrs NAME = ...`
    understood: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    # parts imported exactly that are a known pitfall (the seed's split Cilium FQDN rule): warnings
    warnings: list[Gap] = field(default_factory=list)
