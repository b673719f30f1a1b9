terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Remote state in the bootstrap bucket; bucket, key, region and locking come from the
  # backend config that `ml-demo infra render` writes (build/infra/base.backend.hcl).
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}
