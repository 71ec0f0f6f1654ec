# The CDN half of the original design, on today's practice: a private bucket that only CloudFront reads (origin
# access control, not the legacy origin access identity), TLS from ACM, an alias in Route 53, and one cache and
# header policy shared with the local edge (../cdn-policy.json, rendered into stack/edge.vcl by tools/edge_vcl.py).
#
# Files: s3.tf (bucket, logs bucket), cdn.tf (CloudFront, policies, access logs), dns.tf (certificate, records),
# outputs.tf (the service's settings). Storage events (S3 -> Kafka) live in their own file, events.tf.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  # One policy for CloudFront and the local Varnish edge: tests/infra/test_cdn_policy.py fails if they drift.
  cdn_policy = jsondecode(file("${path.module}/../cdn-policy.json"))

  name       = "waste-${var.environment}"
  cdn_domain = "${var.cdn_subdomain}.${var.domain_name}"
  account_id = data.aws_caller_identity.current.account_id

  tags = merge(var.tags, {
    project     = "waste-analysis"
    environment = var.environment
    managed-by  = "opentofu"
  })
}
