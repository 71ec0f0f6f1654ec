# What the service needs, named as its settings (README "Settings"). `tofu output -json service_settings`
# gives them as one object, e.g. for an env file or a secret store.

output "cdn_base_url" {
  description = "CDN_BASE_URL: {CDN_BASE_URL}/{key} is an object's public URL (no bucket in the path: CloudFront's origin is the bucket)."
  value       = "https://${local.cdn_domain}"
}

output "s3_bucket_name" {
  description = "S3_BUCKET_NAME"
  value       = aws_s3_bucket.images.id
}

output "aws_region" {
  description = "AWS_REGION"
  value       = var.aws_region
}

output "cloudfront_distribution_id" {
  description = "For invalidations (aws cloudfront create-invalidation) and the CloudFront metrics of this distribution."
  value       = aws_cloudfront_distribution.cdn.id
}

output "cloudfront_domain_name" {
  description = "The distribution's own *.cloudfront.net name (works before DNS has propagated)."
  value       = aws_cloudfront_distribution.cdn.domain_name
}

output "logs_bucket_name" {
  description = "Where the CDN's (cloudfront/) and the bucket's (s3/) access logs land."
  value       = aws_s3_bucket.logs.id
}

output "service_settings" {
  description = "The service's environment for this deployment (S3_ENDPOINT_URL empty = AWS itself)."
  value = {
    CDN_ENABLED     = "true"
    CDN_BASE_URL    = "https://${local.cdn_domain}"
    S3_BUCKET_NAME  = aws_s3_bucket.images.id
    AWS_REGION      = var.aws_region
    S3_ENDPOINT_URL = ""
  }
}
