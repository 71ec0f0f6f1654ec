environment             = "dev"
aws_region              = "us-east-1"
bucket_name             = "waste-analysis-dev-images"
domain_name             = "dev.example.com"
cdn_subdomain           = "images"
app_origins             = ["https://app.dev.example.com"]
uploads_expiration_days = 14
log_retention_days      = 30
