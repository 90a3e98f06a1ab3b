"""Unique object identity: no two emitted objects share API group, kind, namespace and name."""

from __future__ import annotations

import pytest

from netdsl import ir
from netdsl.backends import Manifest, Options, duplicate_objects
from netdsl.compiler import check_files, compile_checked
from netdsl.lower.halves import derived_name
from netdsl.source import SourceFile


def compiled(text: str, target: str, **extra: object) -> list[Manifest]:
    result = compile_checked(check_files([SourceFile("t.seg", text)]), target, Options(extra=extra))
    assert result.ok, [d.message for d in result.diagnostics]
    return result.manifests


def keys(manifests: list[Manifest]) -> list[tuple[str, str, str, str]]:
    return [(m.api_version, m.kind, m.namespace or "", m.name) for m in manifests]


NEGATION = """
namespace prod {
  isolate
  service a = app=a
  a accepts pods[app=x] on 80
  a accepts pods[app notin (x)] on 81
}
"""


@pytest.mark.parametrize("target", ["vanilla", "calico", "cilium"])
def test_a_selector_and_its_negation_get_different_policies(target: str) -> None:
    manifests = compiled(NEGATION, target)
    assert len(keys(manifests)) == len(set(keys(manifests)))
    egress = [m for m in manifests if m.name.startswith("pods-app-x")]
    assert len(egress) == 2  # one each, never merged under the first selector


def sel(*reqs: tuple[str, ir.Operator, tuple[str, ...]]) -> ir.Selector:
    return ir.Selector.of([ir.Requirement(k, op, v) for k, op, v in reqs])


IN, NOT_IN = ir.Operator.IN, ir.Operator.NOT_IN


def test_derived_names_are_readable_only_when_they_read_back_as_one_selector() -> None:
    assert derived_name(sel(("app", IN, ("web",)), ("role", IN, ("db",)))) == "pods-app-web-role-db"
    # these all read `pods-app-web-role-db`; each gets its own digest
    lookalikes = [
        sel(("app", IN, ("web-role-db",))),
        sel(("app", IN, ("web",)), ("role", NOT_IN, ("db",))),
        sel(("example.com/app", IN, ("web",)), ("role", IN, ("db",))),
        sel(("app-web-role", IN, ("db",))),
    ]
    names = [derived_name(s) for s in lookalikes]
    assert len(set(names)) == len(names) and "pods-app-web-role-db" not in names
    assert all("--" in n and len(n) <= 63 for n in names)
    # a service with the readable name: the derived workload steps aside
    assert derived_name(sel(("app", IN, ("web",))), lambda n: n == "pods-app-web") != "pods-app-web"
    long = sel(*((f"k{i}", IN, ("v" * 10,)) for i in range(8)))
    assert len(derived_name(long)) <= 63


TIER_COLLISION = """
tier security order 100 {
  namespace prod {
    web accepts pods[app=a] on 80
  }
}
namespace prod {
  service web = app=web
  service security-web = app=sw
  security-web accepts pods[app=b] on 81
}
"""


@pytest.mark.parametrize("version", ["3.31", "3.32"])
def test_a_tier_policy_never_takes_a_default_tier_policys_name(version: str) -> None:
    manifests = compiled(TIER_COLLISION, "calico", calico_version=version)
    assert len(keys(manifests)) == len(set(keys(manifests)))
    by_tier = {(m.body["spec"].get("tier"), m.name) for m in manifests if m.kind == "NetworkPolicy"}
    assert (None, "security-web") in by_tier  # the default-tier name is kept
    assert len([n for tier, n in by_tier if tier == "security"]) == 1


def test_the_tier_policy_name_is_stable() -> None:
    first = keys(compiled(TIER_COLLISION, "calico", calico_version="3.32"))
    assert first == keys(compiled(TIER_COLLISION, "calico", calico_version="3.32"))


def manifest(kind: str, name: str, namespace: str | None, api: str = "projectcalico.org/v3") -> Manifest:
    return Manifest(api, kind, name, namespace, {}, "x.j2", {})


def test_two_objects_with_one_identity_are_an_internal_error() -> None:
    same = [manifest("NetworkPolicy", "web", "prod"), manifest("NetworkPolicy", "web", "prod")]
    [problem] = duplicate_objects(same)
    assert problem.code == "internal" and "prod/web" in problem.message
    different = [
        manifest("NetworkPolicy", "web", "prod"), manifest("NetworkPolicy", "web", "dev"),
        manifest("GlobalNetworkPolicy", "web", None), manifest("NetworkPolicy", "web", "prod", "networking.k8s.io/v1"),
    ]
    assert duplicate_objects(different) == []
    # the group decides, not the version
    versions = [manifest("NetworkPolicy", "web", "prod", "cilium.io/v2"), manifest("NetworkPolicy", "web", "prod",
                                                                                   "cilium.io/v3")]
    assert len(duplicate_objects(versions)) == 1
