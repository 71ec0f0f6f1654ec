environment             = "prod"
aws_region              = "us-east-1"
bucket_name             = "waste-analysis-prod-images"
domain_name             = "example.com"
cdn_subdomain           = "images"
app_origins             = ["https://app.example.com"]
uploads_expiration_days = 30
log_retention_days      = 365
