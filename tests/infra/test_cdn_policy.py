"""One cache and header policy for CloudFront and the local edge: infra/cdn-policy.json. These fail on drift."""

from __future__ import annotations

import copy
import json
import re

import pytest

from tests.infra.conftest import REPO
from tests.infra.hcl import POLICY_PATH, Module, block, resolve
from tools import edge_vcl

TEMPLATE = (REPO / "stack" / "edge.vcl").read_text()


@pytest.fixture(scope="module")
def tf() -> Module:
    return Module()


def render(policy: dict) -> str:
    return edge_vcl.render(TEMPLATE, policy, origin_host="127.0.0.1", origin_port=7070)


def vcl_ttls(vcl: str) -> tuple[int, int, int]:
    default = int(re.search(r"if \(!beresp\.http\.Cache-Control && !beresp\.http\.Expires\) \{\s*"
                            r"set beresp\.ttl = (\d+)s;", vcl).group(1))  # type: ignore[union-attr]
    maximum = int(re.search(r"beresp\.ttl > (\d+)s\) \{\s*set beresp\.ttl = \1s;", vcl).group(1))  # type: ignore[union-attr]
    minimum = int(re.search(r"beresp\.ttl < (\d+)s\) \{\s*set beresp\.ttl = \1s;", vcl).group(1))  # type: ignore[union-attr]
    return minimum, default, maximum


def vcl_headers(vcl: str, sub: str) -> dict[str, str]:
    body = re.search(rf"sub {sub} \{{(.*?)\n\}}", vcl, re.S).group(1)  # type: ignore[union-attr]
    return dict(re.findall(r'set resp\.http\.([A-Za-z-]+) = \{"(.*?)"\};', body))


def test_the_policy_has_the_original_designs_values() -> None:
    policy = json.loads(POLICY_PATH.read_text())
    assert policy["ttl_seconds"] == {"min": 0, "default": 86400, "max": 604800}
    assert policy["compress"] is True and policy["price_class"] == "PriceClass_200"
    assert policy["viewer_protocol_policy"] == "redirect-to-https"


def test_the_edge_gets_the_policys_ttls_and_headers_on_every_response() -> None:
    policy = edge_vcl.load_policy()
    vcl = render(policy)
    ttl = policy["ttl_seconds"]
    assert vcl_ttls(vcl) == (ttl["min"], ttl["default"], ttl["max"])
    expected = edge_vcl.response_headers(policy)
    assert expected["X-Content-Type-Options"] == "nosniff"
    assert expected["Strict-Transport-Security"].startswith("max-age=31536000; includeSubDomains")
    for sub in ("vcl_deliver", "vcl_synth"):  # served objects and the edge's own refusals alike
        assert vcl_headers(vcl, sub) == expected, sub


def test_terraform_reads_the_same_file(tf: Module) -> None:
    assert tf.locals["cdn_policy"] == '${jsondecode(file("${path.module}/../cdn-policy.json"))}'
    cache = tf.resource("aws_cloudfront_cache_policy", "images")
    for key in ("min", "default", "max"):
        assert cache[f"{key}_ttl"] == f"${{local.cdn_policy.ttl_seconds.{key}}}"


def test_a_changed_policy_moves_both_together(tf: Module) -> None:
    """Change the file: the edge and CloudFront both follow, and their header values stay the same strings."""
    policy = copy.deepcopy(edge_vcl.load_policy())
    policy["ttl_seconds"] = {"min": 60, "default": 3600, "max": 7200}
    policy["response_headers"]["strict_transport_security"]["max_age_seconds"] = 63072000
    policy["response_headers"]["content_security_policy"] = "default-src 'none'"
    vcl = render(policy)
    assert vcl_ttls(vcl) == (60, 3600, 7200)
    cache = tf.resource("aws_cloudfront_cache_policy", "images")
    assert [resolve(cache[f"{k}_ttl"], policy) for k in ("min", "default", "max")] == [60, 3600, 7200]
    security = block(tf.resource("aws_cloudfront_response_headers_policy", "images")["security_headers_config"])
    hsts = block(security["strict_transport_security"])
    cloudfront_hsts = f"max-age={resolve(hsts['access_control_max_age_sec'], policy)}"
    if resolve(hsts["include_subdomains"], policy):
        cloudfront_hsts += "; includeSubDomains"
    if resolve(hsts["preload"], policy):
        cloudfront_hsts += "; preload"
    edge = vcl_headers(vcl, "vcl_deliver")
    assert edge["Strict-Transport-Security"] == cloudfront_hsts
    csp = block(security["content_security_policy"])["content_security_policy"]
    assert edge["Content-Security-Policy"] == resolve(csp, policy) == "default-src 'none'"
    assert edge["Referrer-Policy"] == resolve(block(security["referrer_policy"])["referrer_policy"], policy)
    assert edge["X-Frame-Options"] == resolve(block(security["frame_options"])["frame_option"], policy)


def test_no_second_source_of_ttls_or_headers() -> None:
    # The template carries placeholders only; the varnishd command lines no -t default TTL.
    assert not re.search(r"beresp\.ttl = [1-9]", TEMPLATE)  # 0s: errors are never cached
    assert "X-Content-Type-Options" not in TEMPLATE and "Strict-Transport-Security" not in TEMPLATE
    for path in ("scripts/stack.sh", "docker-compose.kafka.yml"):
        text = (REPO / path).read_text()
        assert not re.search(r"varnishd.*(-t\s+\d+|\"-t\")", text), path
    from models.settings import Settings

    assert "cdn_cache_ttl" not in Settings.model_fields  # the TTL is infrastructure, set in the policy file


def test_the_edge_refuses_what_cloudfront_is_not_configured_to_serve() -> None:
    # The edge answers GET and HEAD only (405 otherwise, stack/edge.vcl); CloudFront's allowed methods match.
    policy = edge_vcl.load_policy()
    assert set(policy["allowed_methods"]) == {"GET", "HEAD"}
    assert 'req.method != "GET" && req.method != "HEAD"' in TEMPLATE


def test_a_value_that_would_break_out_of_vcl_is_refused() -> None:
    policy = copy.deepcopy(edge_vcl.load_policy())
    policy["response_headers"]["content_security_policy"] = 'x"}; set resp.http.Evil = {"1'
    with pytest.raises(ValueError, match="cannot be put into VCL"):
        render(policy)
