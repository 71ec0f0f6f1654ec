"""infra/terraform: the properties issue 14 asks of the CDN half, read from the HCL itself, plus `tofu fmt` and checkov."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from models.settings import Settings
from tests.infra.hcl import TF_DIR, Module, block, load_tfvars, resolve


@pytest.fixture(scope="module")
def tf() -> Module:
    return Module()


def statements(tf: Module, document: str) -> list[dict]:
    return tf.data["aws_iam_policy_document"][document]["statement"]


# --- the bucket -------------------------------------------------------------------------------------------------


def test_images_bucket_blocks_every_kind_of_public_access(tf: Module) -> None:
    pab = tf.resource("aws_s3_bucket_public_access_block", "images")
    assert pab["bucket"] == "${aws_s3_bucket.images.id}"
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert pab[flag] is True, flag


def test_images_bucket_has_acls_off_and_encryption(tf: Module) -> None:
    ownership = tf.resource("aws_s3_bucket_ownership_controls", "images")
    assert block(ownership["rule"])["object_ownership"] == "BucketOwnerEnforced"
    sse = tf.resource("aws_s3_bucket_server_side_encryption_configuration", "images")
    algorithm = block(block(sse["rule"])["apply_server_side_encryption_by_default"])["sse_algorithm"]
    assert algorithm in ("AES256", "aws:kms", "aws:kms:dsse")


def test_cors_admits_the_app_and_the_cdn_domain_for_uploads_and_reads(tf: Module) -> None:
    rule = block(tf.resource("aws_s3_bucket_cors_configuration", "images")["cors_rule"])
    origins = rule["allowed_origins"]
    assert "var.app_origins" in origins and "https://${local.cdn_domain}" in origins
    assert {"POST", "GET"} <= set(rule["allowed_methods"])
    assert "PUT" not in rule["allowed_methods"] and "DELETE" not in rule["allowed_methods"]  # POST-only uploads


def test_uploads_expire_after_a_variable_number_of_days(tf: Module) -> None:
    rules = tf.resource("aws_s3_bucket_lifecycle_configuration", "images")["rule"]
    uploads = [r for r in rules if block(r["filter"]).get("prefix") == "uploads/"]
    assert len(uploads) == 1
    rule = uploads[0]
    assert rule["status"] == "Enabled"
    assert block(rule["expiration"])["days"] == "${var.uploads_expiration_days}"
    assert "abort_incomplete_multipart_upload" in rule
    # Results are cached 7 days: a photo must outlive its cached result.
    condition = block(tf.variables["uploads_expiration_days"]["validation"])["condition"]
    assert ">= 8" in condition


def test_only_this_distribution_reads_the_bucket(tf: Module) -> None:
    policy = tf.resource("aws_s3_bucket_policy", "images")
    assert policy["policy"] == "${data.aws_iam_policy_document.images.json}"
    allows = [s for s in statements(tf, "images") if s.get("effect", "Allow") == "Allow"]
    assert len(allows) == 1
    (allow,) = allows
    assert allow["actions"] == ["s3:GetObject"]
    assert allow["resources"] == ["${aws_s3_bucket.images.arn}/*"]
    principal = block(allow["principals"])
    assert principal == {"type": "Service", "identifiers": ["cloudfront.amazonaws.com"]}
    condition = block(allow["condition"])
    assert condition == {"test": "StringEquals", "variable": "AWS:SourceArn",
                         "values": ["${aws_cloudfront_distribution.cdn.arn}"]}
    denies = [s for s in statements(tf, "images") if s.get("effect") == "Deny"]
    assert any(block(s["condition"])["variable"] == "aws:SecureTransport" for s in denies)


# --- CloudFront -------------------------------------------------------------------------------------------------


def test_origin_access_control_not_the_legacy_identity(tf: Module) -> None:
    assert "aws_cloudfront_origin_access_identity" not in tf.resources
    oac = tf.resource("aws_cloudfront_origin_access_control", "images")
    assert (oac["origin_access_control_origin_type"], oac["signing_behavior"], oac["signing_protocol"]) == (
        "s3", "always", "sigv4")
    origin = block(tf.resource("aws_cloudfront_distribution", "cdn")["origin"])
    assert origin["origin_access_control_id"] == "${aws_cloudfront_origin_access_control.images.id}"
    assert origin["domain_name"] == "${aws_s3_bucket.images.bucket_regional_domain_name}"
    assert "s3_origin_config" not in origin


def test_cache_behaviour_has_the_original_ttls_compression_https_and_price_class(tf: Module) -> None:
    cache = tf.resource("aws_cloudfront_cache_policy", "images")
    assert [resolve(cache[k]) for k in ("min_ttl", "default_ttl", "max_ttl")] == [0, 86400, 604800]
    dist = tf.resource("aws_cloudfront_distribution", "cdn")
    behaviour = block(dist["default_cache_behavior"])
    assert behaviour["cache_policy_id"] == "${aws_cloudfront_cache_policy.images.id}"
    assert resolve(behaviour["compress"]) is True
    assert resolve(behaviour["viewer_protocol_policy"]) == "redirect-to-https"
    assert set(resolve(behaviour["allowed_methods"])) <= {"GET", "HEAD", "OPTIONS"}
    assert resolve(dist["price_class"]) == "PriceClass_200"
    assert dist["is_ipv6_enabled"] is True
    keys = block(cache["parameters_in_cache_key_and_forwarded_to_origin"])
    assert block(keys["query_strings_config"])["query_string_behavior"] == "none"
    assert block(keys["cookies_config"])["cookie_behavior"] == "none"


def test_response_headers_policy_sends_nosniff_and_hsts(tf: Module) -> None:
    policy = tf.resource("aws_cloudfront_response_headers_policy", "images")
    security = block(policy["security_headers_config"])
    assert resolve(block(security["content_type_options"])["override"]) is True
    hsts = block(security["strict_transport_security"])
    assert resolve(hsts["access_control_max_age_sec"]) >= 31536000  # a year, as HSTS preload lists ask
    assert resolve(hsts["include_subdomains"]) is True and resolve(hsts["preload"]) is True
    assert hsts["override"] is True
    behaviour = block(tf.resource("aws_cloudfront_distribution", "cdn")["default_cache_behavior"])
    assert behaviour["response_headers_policy_id"] == "${aws_cloudfront_response_headers_policy.images.id}"


def test_tls_certificate_from_us_east_1_validated_through_dns(tf: Module) -> None:
    aliases = {body.get("alias"): body for name, body in tf.providers}
    assert aliases["us_east_1"]["region"] == "us-east-1"
    cert = tf.resource("aws_acm_certificate", "cdn")
    assert cert["provider"] == "${aws.us_east_1}" and cert["validation_method"] == "DNS"
    assert cert["domain_name"] == "${local.cdn_domain}"
    validation = tf.resource("aws_acm_certificate_validation", "cdn")
    assert validation["provider"] == "${aws.us_east_1}"
    assert "aws_route53_record.cdn_validation" in str(validation["validation_record_fqdns"])
    viewer = block(tf.resource("aws_cloudfront_distribution", "cdn")["viewer_certificate"])
    assert viewer["acm_certificate_arn"] == "${aws_acm_certificate_validation.cdn.certificate_arn}"
    assert viewer["ssl_support_method"] == "sni-only"
    assert viewer["minimum_protocol_version"].startswith("TLSv1.2")


def test_alias_records_for_ipv4_and_ipv6(tf: Module) -> None:
    records = [r for r in tf.resources["aws_route53_record"].values() if "alias" in r]
    assert sorted(r["type"] for r in records) == ["A", "AAAA"]
    for record in records:
        assert record["name"] == "${local.cdn_domain}"
        assert block(record["alias"])["name"] == "${aws_cloudfront_distribution.cdn.domain_name}"
    assert tf.resource("aws_cloudfront_distribution", "cdn")["aliases"] == ["${local.cdn_domain}"]


def test_access_logs_of_the_cdn_and_the_bucket(tf: Module) -> None:
    source = tf.resource("aws_cloudwatch_log_delivery_source", "cdn_access_logs")
    assert source["resource_arn"] == "${aws_cloudfront_distribution.cdn.arn}"
    assert source["log_type"] == "ACCESS_LOGS" and source["provider"] == "${aws.us_east_1}"
    destination = tf.resource("aws_cloudwatch_log_delivery_destination", "cdn_access_logs")
    assert "aws_s3_bucket.logs.arn" in block(destination["delivery_destination_configuration"])[
        "destination_resource_arn"]
    assert tf.resource("aws_cloudwatch_log_delivery", "cdn_access_logs")
    logging = tf.resource("aws_s3_bucket_logging", "images")
    assert logging["target_bucket"] == "${aws_s3_bucket.logs.id}"
    logs_pab = tf.resource("aws_s3_bucket_public_access_block", "logs")
    assert all(logs_pab[f] is True for f in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                                             "restrict_public_buckets"))


# --- environments and outputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_each_environment_sets_every_required_variable_and_nothing_unknown(tf: Module, env: str) -> None:
    values = load_tfvars(TF_DIR / "environments" / f"{env}.tfvars")
    required = {name for name, spec in tf.variables.items() if "default" not in spec}
    assert required <= set(values), f"{env}.tfvars misses {sorted(required - set(values))}"
    assert set(values) <= set(tf.variables), f"{env}.tfvars sets undeclared {sorted(set(values) - set(tf.variables))}"
    assert values["environment"] == env
    backend = (TF_DIR / "environments" / f"{env}.s3.tfbackend").read_text()
    assert f'key          = "{env}/' in backend and "use_lockfile = true" in backend


def test_outputs_are_the_services_settings(tf: Module) -> None:
    for name in ("cdn_base_url", "s3_bucket_name", "aws_region"):
        assert name in tf.outputs
    settings = tf.outputs["service_settings"]["value"]
    fields = set(Settings.model_fields)
    assert {"CDN_BASE_URL", "S3_BUCKET_NAME", "AWS_REGION"} <= set(settings)
    for env_name in settings:
        assert env_name.lower() in fields, f"output names {env_name}, which is no setting"
    assert settings["CDN_BASE_URL"].startswith("https://")


def test_storage_events_are_left_to_their_own_file(tf: Module) -> None:
    # events.tf (the storage-event path) owns bucket notifications; the CDN files must not define any.
    for path in TF_DIR.glob("*.tf"):
        if path.name != "events.tf":
            assert "aws_s3_bucket_notification" not in path.read_text(), path.name


# --- tools: formatting and the security scan --------------------------------------------------------------------

SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def test_every_checkov_skip_gives_its_reason() -> None:
    skips = []
    for path in TF_DIR.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if match := SKIP.search(line):
                skips.append((path.name, match.group(1), (match.group(2) or "").strip()))
    assert skips, "no skips found: the pattern is wrong"
    for name, check, reason in skips:
        assert len(reason) >= 30, f"{name}: {check} skipped without a real reason: {reason!r}"


def test_tofu_fmt_check(tofu_bin: Path) -> None:
    result = subprocess.run([str(tofu_bin), "fmt", "-check", "-recursive", "-diff"], cwd=TF_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"tofu fmt would change:\n{result.stdout}{result.stderr}"


def test_checkov_passes_with_only_explained_skips(checkov_bin: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(checkov_bin), "-d", str(TF_DIR), "--framework", "terraform", "--output", "json", "--quiet",
         "--skip-download", "--var-file", str(TF_DIR / "environments" / "prod.tfvars")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BC_SKIP_MAPPING": "TRUE"},
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed, "\n".join(f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed)
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed >= 20, f"checkov passed only {passed} checks: did it read the files?"
    for check in (c for r in reports for c in r.get("results", {}).get("skipped_checks", [])):
        reason = (check.get("suppress_comment") or "").strip()
        assert len(reason) >= 30, f"{check['check_id']} on {check['resource']} skipped without a reason"
