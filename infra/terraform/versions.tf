# OpenTofu >= 1.8 (or Terraform >= 1.6 with the same providers). `tofu fmt -check -recursive` runs in `make test`.
terraform {
  required_version = ">= 1.8.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80.0, < 7.0.0"
    }
  }

  # State per environment in S3 with native locking: tofu init -backend-config=environments/<env>.s3.tfbackend
  backend "s3" {}
}
