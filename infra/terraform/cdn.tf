# --- CloudFront in front of the private bucket ----------------------------------------------------------------
# TTLs, compression, protocol policy, price class, methods and response headers all come from
# ../cdn-policy.json (local.cdn_policy), the same values the local Varnish edge is rendered with.

resource "aws_cloudfront_origin_access_control" "images" {
  name                              = "${local.name}-images"
  description                       = "CloudFront signs every origin request to the images bucket (SigV4)."
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

# One cache entry per object key: no cookies, headers or query strings in the key or forwarded to S3
# (pre-signed GET signatures would otherwise split the cache).
resource "aws_cloudfront_cache_policy" "images" {
  name        = "${local.name}-images"
  comment     = "TTL min/default/max from infra/cdn-policy.json"
  min_ttl     = local.cdn_policy.ttl_seconds.min
  default_ttl = local.cdn_policy.ttl_seconds.default
  max_ttl     = local.cdn_policy.ttl_seconds.max

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = local.cdn_policy.compress
    enable_accept_encoding_brotli = local.cdn_policy.compress

    cookies_config {
      cookie_behavior = "none"
    }

    headers_config {
      header_behavior = "none"
    }

    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_response_headers_policy" "images" {
  #checkov:skip=CKV_AWS_259:HSTS is enforced (max-age one year, includeSubDomains, preload, override), but its values come from infra/cdn-policy.json through jsondecode(file()), which checkov does not evaluate; tests/infra/test_terraform.py asserts each of them.
  name    = "${local.name}-images"
  comment = "Security headers from infra/cdn-policy.json (the local edge sends the same)"

  security_headers_config {
    content_type_options {
      override = local.cdn_policy.response_headers.content_type_options_nosniff
    }

    strict_transport_security {
      access_control_max_age_sec = local.cdn_policy.response_headers.strict_transport_security.max_age_seconds
      include_subdomains         = local.cdn_policy.response_headers.strict_transport_security.include_subdomains
      preload                    = local.cdn_policy.response_headers.strict_transport_security.preload
      override                   = true
    }

    content_security_policy {
      content_security_policy = local.cdn_policy.response_headers.content_security_policy
      override                = true
    }

    referrer_policy {
      referrer_policy = local.cdn_policy.response_headers.referrer_policy
      override        = true
    }

    frame_options {
      frame_option = local.cdn_policy.response_headers.frame_options
      override     = true
    }
  }
}

resource "aws_cloudfront_distribution" "cdn" {
  #checkov:skip=CKV_AWS_68:WAF is optional (var.web_acl_arn): the CDN serves immutable images by unguessable keys, only GET/HEAD, and a web ACL costs $5/month plus $0.60 per million requests; prod.tfvars sets one when the traffic warrants it.
  #checkov:skip=CKV2_AWS_47:Same as CKV_AWS_68: no web ACL unless var.web_acl_arn is set; nothing behind this origin runs Java (Log4j).
  #checkov:skip=CKV_AWS_86:Access logs are on, through CloudFront standard logging v2 (aws_cloudwatch_log_delivery.cdn_access_logs below), which checkov does not recognise; the legacy logging_config would need ACLs on the log bucket.
  #checkov:skip=CKV_AWS_310:One origin on purpose: when the CDN fails, the worker itself falls back to S3 GetObject (streams/fetch.py); an origin group would need a second bucket and replication.
  #checkov:skip=CKV_AWS_305:No default root object: the CDN serves image keys only; "/" is refused by S3 (403) and the local edge alike.
  #checkov:skip=CKV_AWS_374:No geo restriction: the app's users are wherever the app is published; PriceClass_200 already limits the edge locations paid for.
  enabled         = true
  is_ipv6_enabled = true
  http_version    = "http2and3"
  comment         = "${local.name}: waste photos (${local.cdn_domain})"
  aliases         = [local.cdn_domain]
  price_class     = local.cdn_policy.price_class
  web_acl_id      = var.web_acl_arn

  origin {
    origin_id                = "images-s3"
    domain_name              = aws_s3_bucket.images.bucket_regional_domain_name
    origin_access_control_id = aws_cloudfront_origin_access_control.images.id
  }

  default_cache_behavior {
    target_origin_id           = "images-s3"
    allowed_methods            = local.cdn_policy.allowed_methods
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = local.cdn_policy.viewer_protocol_policy
    compress                   = local.cdn_policy.compress
    cache_policy_id            = aws_cloudfront_cache_policy.images.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.images.id
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    acm_certificate_arn      = aws_acm_certificate_validation.cdn.certificate_arn
    ssl_support_method       = "sni-only"
    minimum_protocol_version = "TLSv1.2_2021"
  }
}

# --- CloudFront standard logs (v2): delivered as Parquet into the logs bucket, configured in us-east-1 --------

resource "aws_cloudwatch_log_delivery_source" "cdn_access_logs" {
  provider     = aws.us_east_1
  name         = "${local.name}-cdn-access-logs"
  log_type     = "ACCESS_LOGS"
  resource_arn = aws_cloudfront_distribution.cdn.arn
}

resource "aws_cloudwatch_log_delivery_destination" "cdn_access_logs" {
  provider      = aws.us_east_1
  name          = "${local.name}-cdn-access-logs"
  output_format = "parquet"

  delivery_destination_configuration {
    destination_resource_arn = "${aws_s3_bucket.logs.arn}/cloudfront"
  }
}

resource "aws_cloudwatch_log_delivery" "cdn_access_logs" {
  provider                 = aws.us_east_1
  delivery_source_name     = aws_cloudwatch_log_delivery_source.cdn_access_logs.name
  delivery_destination_arn = aws_cloudwatch_log_delivery_destination.cdn_access_logs.arn

  depends_on = [aws_s3_bucket_policy.logs]
}
