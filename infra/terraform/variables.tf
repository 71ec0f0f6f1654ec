variable "environment" {
  description = "Deployment name, part of every resource name (dev, prod)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment: 2-16 lowercase letters, digits or dashes."
  }
}

variable "aws_region" {
  description = "Region of the images bucket, the workers and the API (the service's AWS_REGION)."
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "Name of the private images bucket (the service's S3_BUCKET_NAME). Globally unique."
  type        = string
}

variable "domain_name" {
  description = "Route 53 public hosted zone the CDN's name is made in, e.g. example.com."
  type        = string
}

variable "cdn_subdomain" {
  description = "The CDN answers at <cdn_subdomain>.<domain_name> (the original design: images)."
  type        = string
  default     = "images"
}

variable "app_origins" {
  description = "Browser origins of the app and its web page, allowed by the bucket's CORS (pre-signed POST uploads) besides the CDN's own domain."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for o in var.app_origins : can(regex("^https://[^/*]+$", o))])
    error_message = "app_origins: https:// origins without a path or wildcard."
  }
}

variable "uploads_expiration_days" {
  description = "Days an uploaded photo (uploads/) is kept. Results are cached 7 days (CACHE_TTL_SECONDS); a result's image_url stops working after this."
  type        = number
  default     = 30

  validation {
    condition     = var.uploads_expiration_days >= 8
    error_message = "uploads_expiration_days must outlive the 7-day result cache (>= 8)."
  }
}

variable "log_retention_days" {
  description = "Days the CDN's and the bucket's access logs are kept."
  type        = number
  default     = 90
}

variable "web_acl_arn" {
  description = "Optional AWS WAF web ACL (scope CLOUDFRONT) to attach to the distribution; null attaches none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
