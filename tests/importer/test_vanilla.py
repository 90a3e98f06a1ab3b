"""netdsl/importer/vanilla.py: what real NetworkPolicy files contain imports exactly (each import is
proven equivalent by import_manifests) or is a gap."""

from __future__ import annotations

import pytest

from tests.importer.helpers import errors, imported

HEAD = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: n}\n"


def spec(text: str) -> str:
    return HEAD + "spec:\n" + "".join(f"  {line}\n" for line in text.strip("\n").split("\n"))


# (spec, a line the import must contain)
FORMS = [
    ("podSelector: {matchLabels: {app: web}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: api}}",
     "web accepts api"),  # policyTypes absent: Ingress
    ("podSelector: {matchLabels: null}\ningress:\n- {}", "all pods accepts anywhere"),  # the empty rule
    ("podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {}", "all pods accepts all namespaces"),
    ("podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {}\n    podSelector: {matchLabels: {app: x}}",
     "all pods accepts pods[app=x] in all namespaces"),
    ("podSelector: {}\ningress:\n- ports:\n  - port: 80", "all pods accepts anywhere on 80"),  # no protocol: TCP
    ("podSelector: {}\ningress:\n- ports:\n  - protocol: UDP", "all pods accepts anywhere on udp"),
    ("podSelector: {}\ningress:\n- ports:\n  - port: http\n  - port: 8000\n    endPort: 9000",
     "all pods accepts anywhere on 8000-9000, http"),
    ("podSelector: {}\negress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.0.0/16]}\n"
     "  - ipBlock: {cidr: '2001:db8::/32'}",
     "all pods connects to cidr 10.0.0.0/8 except (10.1.0.0/16, 10.2.0.0/16), cidr 2001:db8::/32"),
    ("podSelector:\n  matchExpressions:\n  - {key: app, operator: In, values: [a, b]}\n  - {key: legacy, operator: "
     "DoesNotExist}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: mon}}",
     "a-b accepts namespace mon"),
    ("podSelector: {}\npolicyTypes: [Ingress, Egress]", "isolate"),
    ("podSelector: {}\npolicyTypes: [Egress]\negress: []", "isolate egress"),
    ("podSelector: {}\ningress: null\negress:\n- to:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata."
     "name: kube-system}}\n    podSelector: {matchLabels: {k8s-app: kube-dns}}\n  ports:\n  - {port: 53, protocol: UDP}"
     "\n  - {port: 53, protocol: TCP}", "allow dns"),
]


@pytest.mark.parametrize(("text", "line"), FORMS, ids=[f[1] for f in FORMS])
def test_real_file_forms_import_and_prove(text: str, line: str) -> None:
    result = imported(spec(text))
    assert not errors(result), errors(result)
    assert f"  {line}\n" in result.text, result.text


def test_namespace_less_policy_goes_to_default() -> None:
    text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n"
    assert imported(text).text == "namespace default {\n  isolate ingress\n}\n"


def test_udp_only_dns_imports_faithfully_with_the_check_warning() -> None:
    result = imported(spec("podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: "
                           "{matchLabels: {kubernetes.io/metadata.name: kube-system}}\n  ports:\n  - {port: 53, "
                           "protocol: UDP}"))
    assert not errors(result)
    assert "all pods connects to namespace kube-system on 53/udp" in result.text
    assert "egress-without-dns" in {d.code for d in result.diagnostics}


@pytest.mark.parametrize(("text", "reason"), [
    ("podSelector: {}\ningress:\n- from:\n  - {}", "an empty peer"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: 80, protocol: ICMP}", "protocol"),
    ("podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}",
     "not strictly inside"),
    ("podSelector: {matchExpressions: [{key: a, operator: Like}]}", "unknown operator"),
])
def test_gaps_are_errors_with_a_position_unless_partial(text: str, reason: str) -> None:
    result = imported(spec(text))
    (gap,) = [d for d in result.diagnostics if d.code == "import-gap"]
    assert gap.is_error and reason in gap.message and gap.span is not None and gap.span.line > 3
    assert not result.files
    partial = imported(spec(text), partial=True)
    assert not errors(partial), errors(partial)
    assert [d.severity.value for d in partial.diagnostics if d.code == "import-gap"] == ["warning"]


def test_partial_leaves_out_only_the_gapped_peer() -> None:
    result = imported(spec("podSelector: {}\ningress:\n- from:\n  - {}\n  - podSelector: {matchLabels: {app: a}}"),
                      partial=True)
    assert "all pods accepts a\n" in result.text


def test_one_service_isolated_in_one_direction() -> None:
    result = imported(spec("podSelector: {matchLabels: {app: web}}\ningress: []"))
    assert not errors(result), errors(result)
    assert "  isolate ingress for web\n" in result.text
