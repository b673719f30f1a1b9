terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Local state (the bucket that holds remote state cannot keep its own state): the file's
  # path comes from the backend config that `ml-demo infra render` writes.
  backend "local" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}
